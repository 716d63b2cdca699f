"""The connection pool: one async SQLAlchemy engine (psycopg 3) per application."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from app.settings import Settings


def create_engine(settings: Settings) -> AsyncEngine:
    return create_async_engine(
        settings.sqlalchemy_url,
        pool_size=settings.database.pool_size,
        max_overflow=settings.database.pool_size,
        pool_pre_ping=True,
        pool_timeout=10,
        connect_args={
            "connect_timeout": 5,
            "application_name": "observatory",
            "options": f"-c statement_timeout={settings.database.statement_timeout_ms}"
            " -c max_parallel_workers_per_gather=0",
        },
    )
