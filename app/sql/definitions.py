"""SQL of versioned definitions: one table per kind (code, version, definition JSONB,
created_by, created_at; unique code and version), the same statements for each.

Index and monitor definitions still carry their own copies (app.sql.indexes,
app.sql.monitors); report definitions use these, and the others may move here.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Insert, Select, Table, func, insert, select

__all__ = ["insert_definition", "lock_code", "next_version", "select_definition", "select_latest"]


def _columns(table: Table) -> tuple:
    c = table.c
    return (c.code, c.version, c.definition, c.created_by, c.created_at)


def next_version(table: Table, code: str) -> Select:
    """The next version number of ``code`` (1 when it does not exist)."""
    return select(func.coalesce(func.max(table.c.version), 0) + 1).where(table.c.code == code)


def lock_code(table: Table, code: str) -> Select:
    """A transaction-scoped advisory lock so that two posts of one code do not race."""
    return select(func.pg_advisory_xact_lock(func.hashtext(f"{table.name}:{code}")))


def insert_definition(
    table: Table, code: str, version: int, definition: dict[str, Any], actor: str
) -> Insert:
    """INSERT one version of a definition; returns the stored row."""
    return (
        insert(table)
        .values(code=code, version=version, definition=definition, created_by=actor)
        .returning(*_columns(table))
    )


def select_definition(table: Table, code: str, version: int | None = None) -> Select:
    """One version of ``code`` (the latest when ``version`` is None)."""
    stmt = select(*_columns(table)).where(table.c.code == code)
    if version is not None:
        return stmt.where(table.c.version == version)
    return stmt.order_by(table.c.version.desc()).limit(1)


def select_latest(table: Table) -> Select:
    """The latest version of every code, by code."""
    c = table.c
    latest = select(c.code, func.max(c.version).label("version")).group_by(c.code).subquery()
    return (
        select(*_columns(table))
        .join_from(table, latest, (latest.c.code == c.code) & (latest.c.version == c.version))
        .order_by(c.code)
    )
