"""Versioned definitions (reports; index and monitor definitions follow the same
pattern): a definition is stored as the next version of its code, audited, and the
shipped ones (YAML files) are stored as version 1 unless their code exists."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from sqlalchemy import Row, Table
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from app.sql import audit as audit_sql
from app.sql import definitions as sql

__all__ = ["get_row", "latest_rows", "load_shipped", "store_version"]


async def store_version(
    conn: AsyncConnection, table: Table, definition: BaseModel, actor: str
) -> Row:
    """Store ``definition`` (a model with ``name`` and ``version``) as the next version of
    its code, in the audit log too; returns the stored row."""
    code = definition.name  # type: ignore[attr-defined]
    await conn.execute(sql.lock_code(table, code))
    version = (await conn.execute(sql.next_version(table, code))).scalar_one()
    stored = definition.model_copy(update={"version": version}).model_dump(mode="json")
    row = (await conn.execute(sql.insert_definition(table, code, version, stored, actor))).one()
    await conn.execute(
        audit_sql.insert_audit(actor, "create", table.name, f"{code}:{version}", None, stored)
    )
    return row


async def get_row(
    conn: AsyncConnection, table: Table, code: str, version: int | None = None
) -> Row | None:
    """One version of ``code`` (the latest when ``version`` is None), or None."""
    return (await conn.execute(sql.select_definition(table, code, version))).first()


async def latest_rows(conn: AsyncConnection, table: Table) -> list[Row]:
    """The latest version of every code."""
    return list((await conn.execute(sql.select_latest(table))).all())


async def load_shipped(
    engine: AsyncEngine,
    table: Table,
    directory: Path,
    parse: Callable[[str], Any],
    *,
    actor: str,
) -> list[str]:
    """Store each ``*.yaml`` of ``directory`` (read by ``parse``) as version 1 unless its
    code exists. Returns the codes stored now (loading twice stores nothing)."""
    stored = []
    for path in sorted(directory.glob("*.yaml")):
        definition = parse(path.read_text(encoding="utf-8"))
        async with engine.begin() as conn:
            await conn.execute(sql.lock_code(table, definition.name))
            if await get_row(conn, table, definition.name) is None:
                await store_version(conn, table, definition, actor)
                stored.append(definition.name)
    return stored
