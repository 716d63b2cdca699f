"""The connection pool: one async SQLAlchemy engine (psycopg 3) per application."""

from __future__ import annotations

import select
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial
from typing import Any

import pandas as pd
import psycopg
import pyarrow as pa
import pyarrow.csv as pa_csv
from psycopg.pq import ConnStatus
from sqlalchemy import ClauseElement, Dialect, event, exc
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import ConnectionPoolEntry, PoolProxiedConnection

from app.core.errors import ServiceUnavailable
from app.core.settings import Settings

POOL_TIMEOUT_S = 5
CONNECT_TIMEOUT_S = 2
# A pooled connection idle for longer than this is pinged (a round trip) on checkout;
# one used more recently is only checked for a hang-up on its socket (no round trip).
PING_IDLE_S = 30.0


def create_engine(settings: Settings) -> AsyncEngine:
    """The application's async engine: a bounded pool whose connections are checked
    for life on checkout, so a restarted database is reconnected on the next request."""
    engine = create_async_engine(
        settings.sqlalchemy_url,
        pool_size=settings.database.pool_size,
        max_overflow=settings.database.pool_size,
        # Faults (issue 7): a pooled connection is tested on checkout (``_check_alive``),
        # so after a database restart the pool replaces its dead connections by itself on
        # the next request. Not SQLAlchemy's ``pool_pre_ping``: its SELECT 1 is a round
        # trip on every checkout, as long as a sparse tile's whole query.
        # A request waits at most this long for a free connection, then gets a 503
        # (app.core.errors) instead of hanging behind a saturated pool.
        pool_timeout=POOL_TIMEOUT_S,
        # The most recently used connection first: a sequential client keeps meeting the
        # same warm backend, and the connections a burst opened age out unused (LIFO got
        # 20-27 pages/s at concurrency 1 after a burst, FIFO 17-19; bench/serving.py).
        pool_use_lifo=True,
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
    dialect = engine.sync_engine.dialect

    def ping(dbapi_connection) -> bool:
        try:
            return bool(dialect.do_ping(dbapi_connection))
        except dialect.loaded_dbapi.Error:
            return False

    event.listen(engine.sync_engine.pool, "checkout", partial(_check_alive, ping))
    event.listen(engine.sync_engine.pool, "checkin", _note_checkin)
    return engine


def _note_checkin(dbapi_connection, record: ConnectionPoolEntry) -> None:
    record.info["checked_in"] = time.monotonic()


def _check_alive(
    ping: Callable[[object], bool],
    dbapi_connection,
    record: ConnectionPoolEntry,
    _: PoolProxiedConnection,
) -> None:
    """Pool checkout: refuse a connection whose server went away, as ``pool_pre_ping``
    would, without its round trip when the connection was used recently.

    A server that stops or restarts (or a backend that is killed) closes its sockets:
    the pooled connections' sockets turn readable (the server's goodbye, then the end of
    the stream), while a healthy idle connection has nothing to read. So a readable
    socket, or a connection idle for more than ``PING_IDLE_S`` (a peer gone without a
    word, e.g. a host that rebooted), gets a real ping; a failed ping invalidates the
    pool, exactly as a failed pre-ping (SQLAlchemy then checks out a fresh connection,
    once; a database that is down answers 503, ``app.core.errors``)."""
    checked_in = record.info.get("checked_in")
    if checked_in is None:
        return  # fresh from connect()
    conn = dbapi_connection.driver_connection
    if conn.closed or conn.pgconn.status != ConnStatus.OK:
        raise exc.InvalidatePoolError()
    idle = time.monotonic() - checked_in > PING_IDLE_S
    if (idle or _readable(conn.pgconn.socket)) and not ping(dbapi_connection):
        raise exc.InvalidatePoolError()


def _readable(fd: int) -> bool:
    try:
        return bool(select.select([fd], [], [], 0)[0])
    except (OSError, ValueError):
        return True


# --- the driver itself, for the hot paths (tiles, pages) -----------------------------------


@dataclass(frozen=True)
class DriverStatement:
    """A SQLAlchemy statement compiled once for psycopg: its SQL text and its parameters,
    already processed (JSON serialised, IN lists expanded). Run it with
    :func:`driver_connection`, the values of the late parameters (``z``, ``x``, ``y``,
    ``after``) replaced in ``params``."""

    sql: str
    params: dict[str, Any]


def driver_statement(statement: ClauseElement, dialect: Dialect, **late: Any) -> DriverStatement:
    """Compile ``statement``; ``late`` gives placeholder values of parameters bound on each
    execution (they must take no processing: integers, text)."""
    compiled = statement.compile(dialect=dialect)
    state = compiled.construct_expanded_state(late)
    params = {}
    for name, value in state.parameters.items():
        bind = compiled.binds.get(name)
        # The dialect's own type, as SQLAlchemy's execution uses: JSON becomes psycopg's
        # Json/Jsonb wrapper there (the generic type's processor would leave a dict).
        process = None if bind is None else bind.type.dialect_impl(dialect).bind_processor(dialect)
        params[name] = value if process is None or value is None else process(value)
    return DriverStatement(state.statement, params)


@asynccontextmanager
async def driver_connection(engine: AsyncEngine) -> AsyncIterator[psycopg.AsyncConnection]:
    """A pooled connection's psycopg connection, for the hot paths that SQLAlchemy's
    execution layer would slow down (~0.3 ms a query, and no binary results or chunked
    streaming). Its errors leave wrapped as SQLAlchemy's (``DBAPIError`` subclasses), as
    ``app.core.errors`` expects; after a disconnect the connection is invalidated."""
    async with engine.connect() as conn:
        raw = await conn.get_raw_connection()
        try:
            yield raw.driver_connection
        except psycopg.Error as err:
            dialect = engine.dialect
            lost = dialect.is_disconnect(err, raw.dbapi_connection, None)
            if lost:
                await conn.invalidate(err)
            raise exc.DBAPIError.instance(
                None, None, err, psycopg.Error, connection_invalidated=lost, dialect=dialect
            ) from err


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


async def wait_for_lock(conn: AsyncConnection, statement: ClauseElement, busy: str) -> None:
    """Run a lock ``statement``; a statement timeout while waiting for the lock is a 503
    saying ``busy`` (why the wait was long and what to do), not a database fault."""
    try:
        await conn.execute(statement)
    except exc.DBAPIError as error:
        if not isinstance(error.orig, psycopg.errors.QueryCanceled):
            raise
        raise ServiceUnavailable(busy) from error
