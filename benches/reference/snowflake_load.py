"""Reference for the Snowflake backfill benchmark: the Python Snowflake connector
loading the same rows into the same emulator server with PUT + COPY INTO (its bulk
path; its executemany would take most of an hour for a million rows).

Usage: python snowflake_load.py <base url> <database> <csv file>
Prints the seconds taken by CREATE TABLE + PUT + COPY INTO, and the rows loaded.
"""

import sys
import time
from urllib.parse import urlparse

import snowflake.connector


def main() -> None:
    url, database, csv = urlparse(sys.argv[1]), sys.argv[2], sys.argv[3]
    con = snowflake.connector.connect(
        user="bench",
        password="unused by the emulator",
        account="bench",
        host=url.hostname,
        port=url.port,
        protocol=url.scheme,
        database=database,
        schema="PUBLIC",
        session_parameters={},
    )
    cur = con.cursor()
    start = time.perf_counter()
    cur.execute(
        "CREATE OR REPLACE TABLE reference (id NUMBER(38,0), i NUMBER(38,0), f FLOAT, n NUMBER(12,2), "
        "s VARCHAR, ts TIMESTAMP_TZ(6), b BOOLEAN, j VARIANT, u VARCHAR)"
    )
    cur.execute("CREATE STAGE IF NOT EXISTS reference_stage")
    cur.execute(f"PUT file://{csv} @reference_stage AUTO_COMPRESS=FALSE")
    cur.execute(
        "COPY INTO reference FROM @reference_stage "
        "FILE_FORMAT = (TYPE = CSV FIELD_OPTIONALLY_ENCLOSED_BY = '\"')"
    )
    elapsed = time.perf_counter() - start
    rows = cur.execute("SELECT COUNT(*) FROM reference").fetchone()[0]
    print(f"{elapsed:.3f} {rows}")


if __name__ == "__main__":
    main()
