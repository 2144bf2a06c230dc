"""Reference for the DuckDB backfill benchmark: DuckDB's own postgres scanner.

Usage: python postgres_scanner.py '<libpq dsn>' <duckdb file> [key]
Prints the seconds taken (and the CPU seconds this process used meanwhile, all its threads) by ATTACH + CREATE TABLE t AS SELECT * FROM pg.public.t + CHECKPOINT
and closing the file, as pg_replicate's time includes closing its sink. With `key`, the
primary key pg_replicate builds too is added before the checkpoint
(ALTER TABLE t ADD PRIMARY KEY (id)).
The extension is loaded from the duckdb-extension-postgres-scanner wheel (no download).
"""

import sys
import time

import duckdb
import duckdb_extensions


def main() -> None:
    dsn, path = sys.argv[1], sys.argv[2]
    with_key = len(sys.argv) > 3 and sys.argv[3] == "key"
    con = duckdb.connect(path)
    duckdb_extensions.import_extension("postgres_scanner", con=con)
    con.execute("LOAD postgres_scanner")
    start = time.perf_counter()
    cpu_start = time.process_time()
    con.execute(f"ATTACH '{dsn}' AS pg (TYPE postgres, READ_ONLY)")
    con.execute("CREATE TABLE t AS SELECT * FROM pg.public.t")
    if with_key:
        con.execute("ALTER TABLE t ADD PRIMARY KEY (id)")
    con.execute("CHECKPOINT")
    con.close()
    elapsed = time.perf_counter() - start
    cpu = time.process_time() - cpu_start
    con = duckdb.connect(path, read_only=True)
    rows = con.execute("SELECT count(*) FROM t").fetchone()[0]
    print(f"{elapsed:.3f} {rows} {cpu:.3f}")


if __name__ == "__main__":
    main()
