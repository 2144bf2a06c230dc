"""Reference for the files backfill benchmark: DuckDB's postgres scanner
writing the table to one Parquet or CSV file.

Usage: python postgres_to_files.py '<libpq dsn>' <output file> parquet|csv
Prints the seconds taken by ATTACH + COPY (SELECT * FROM pg.public.t) TO the
file, and the rows written. The extension is loaded from the
duckdb-extension-postgres-scanner wheel (no download).
"""

import sys
import time

import duckdb
import duckdb_extensions


def main() -> None:
    dsn, path, fmt = sys.argv[1], sys.argv[2], sys.argv[3]
    con = duckdb.connect()
    duckdb_extensions.import_extension("postgres_scanner", con=con)
    con.execute("LOAD postgres_scanner")
    options = "FORMAT parquet, COMPRESSION snappy" if fmt == "parquet" else "FORMAT csv, HEADER"
    start = time.perf_counter()
    con.execute(f"ATTACH '{dsn}' AS pg (TYPE postgres, READ_ONLY)")
    con.execute(f"COPY (SELECT * FROM pg.public.t) TO '{path}' ({options})")
    elapsed = time.perf_counter() - start
    reader = "read_parquet" if fmt == "parquet" else "read_csv"
    rows = con.execute(f"SELECT count(*) FROM {reader}('{path}')").fetchone()[0]
    print(f"{elapsed:.3f} {rows}")


if __name__ == "__main__":
    main()
