"""Report definitions: parsed from a request, stored as versions, the shipped ones loaded."""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from app.core.errors import InvalidParameter, NotFound
from app.core.settings import DATA_DIR
from app.models import report_definition
from app.schemas.reports import (
    ReportDefinition,
    ReportDefinitionRecord,
    load_report_definition,
)
from app.services import definitions

DEFAULTS_DIR = DATA_DIR / "reports"


# --- definitions --------------------------------------------------------------------------


def _record(row: Any) -> ReportDefinitionRecord:
    return ReportDefinitionRecord(
        code=row.code,
        version=row.version,
        title=row.definition.get("title", ""),
        audience=row.definition.get("audience", "analyst"),
        created_by=row.created_by,
        created_at=row.created_at,
        definition=row.definition,
    )


def parse_definition(body: bytes, content_type: str | None) -> ReportDefinition:
    """A JSON or YAML request body → a validated definition (InvalidParameter: 422)."""
    kind = (content_type or "").split(";")[0].strip().lower()
    if kind not in ("application/json", "application/yaml", "text/yaml", "application/x-yaml"):
        raise InvalidParameter(
            f"send the definition as application/json or application/yaml (got {kind or 'none'})"
        )
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidParameter(f"the definition is not valid UTF-8 ({exc.reason})") from exc
    if not text.strip():
        raise InvalidParameter("the request body is empty: send a report definition")
    definition = load_report_definition(text)
    # PostgreSQL's JSONB cannot hold NUL (YAML's "\0", JSON's "\u0000").
    if "\\u0000" in definition.model_dump_json():
        raise InvalidParameter("the definition must not contain NUL characters")
    return definition


async def store_definition(
    conn: AsyncConnection, definition: ReportDefinition, actor: str
) -> ReportDefinitionRecord:
    """Store ``definition`` as the next version of its code (its ``name``), audited."""
    return _record(await definitions.store_version(conn, report_definition, definition, actor))


async def list_definitions(
    conn: AsyncConnection, *, include_analyst: bool
) -> list[ReportDefinitionRecord]:
    """The latest version of every report definition (analyst ones if ``include_analyst``)."""
    records = [_record(r) for r in await definitions.latest_rows(conn, report_definition)]
    return [r for r in records if include_analyst or r.audience == "public"]


async def get_definition(
    conn: AsyncConnection, code: str, version: int | None = None, *, include_analyst: bool
) -> ReportDefinitionRecord:
    """One version of a report definition (the latest when ``version`` is None);
    NotFound (also for an analyst definition the caller may not read)."""
    row = await definitions.get_row(conn, report_definition, code, version)
    record = None if row is None else _record(row)
    if record is None or (record.audience != "public" and not include_analyst):
        which = f"report definition {code!r}" + (f" version {version}" if version else "")
        raise NotFound(f"no {which}")
    return record


async def load_default_definitions(engine: AsyncEngine, *, actor: str) -> list[str]:
    """Store each shipped definition (app/data/reports) as version 1 unless its code
    exists. Returns the codes stored now."""
    return await definitions.load_shipped(
        engine, report_definition, DEFAULTS_DIR, load_report_definition, actor=actor
    )
