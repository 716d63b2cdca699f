"""The connection pool: one async SQLAlchemy engine (psycopg 3) per application."""

from __future__ import annotations

import pandas as pd
import pyarrow as pa
import pyarrow.csv as pa_csv
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from app.settings import Settings

POOL_TIMEOUT_S = 5
CONNECT_TIMEOUT_S = 2


def create_engine(settings: Settings) -> AsyncEngine:
    return create_async_engine(
        settings.sqlalchemy_url,
        pool_size=settings.database.pool_size,
        max_overflow=settings.database.pool_size,
        # Faults (issue 7): a pooled connection is tested on checkout, so after a database
        # restart the pool replaces its dead connections by itself on the next request.
        pool_pre_ping=True,
        # A request waits at most this long for a free connection, then gets a 503
        # (app.errors) instead of hanging behind a saturated pool.
        pool_timeout=POOL_TIMEOUT_S,
        connect_args={
            # A stopped server refuses at once; an unreachable host (network partition)
            # fails after this many seconds (libpq's minimum is 2).
            "connect_timeout": CONNECT_TIMEOUT_S,
            # A server that vanished under a running query is noticed by TCP keepalives
            # within ~25 s instead of the kernel's two hours.
            "keepalives": 1,
            "keepalives_idle": 10,
            "keepalives_interval": 5,
            "keepalives_count": 3,
            "application_name": "observatory",
            "options": f"-c statement_timeout={settings.database.statement_timeout_ms}"
            # Small tile and page queries lose 3x to parallel plans on 2 cores, generic
            # plans of tiles ignore their real bounds (DESIGN.md section 7), and JIT
            # compiled for 150-200 ms inside a 300 ms dense tile (bench/serving.py).
            " -c max_parallel_workers_per_gather=0 -c plan_cache_mode=force_custom_plan"
            " -c jit=off",
        },
    )


def frame_to_csv(frame: pd.DataFrame) -> bytes:
    """A frame as COPY CSV data. pyarrow's writer is ~7x faster than pandas' ``to_csv``;
    empty unquoted fields are NULL, and strings are always quoted, so "" stays ''."""
    out = pa.BufferOutputStream()
    table = pa.Table.from_pandas(frame, preserve_index=False)
    pa_csv.write_csv(table, out, pa_csv.WriteOptions(include_header=False))
    return out.getvalue().to_pybytes()


async def copy_csv(conn: AsyncConnection, statement: str, data: bytes) -> None:
    """Run ``COPY … FROM STDIN WITH (FORMAT csv)`` on the connection's own transaction."""
    raw = (await conn.get_raw_connection()).driver_connection
    async with raw.cursor() as cur, cur.copy(statement) as copy:
        await copy.write(data)
