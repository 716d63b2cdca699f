"""Building and storing a report: a run, the schedule's builds, and the CLI's."""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncEngine

from app.core.errors import InvalidParameter, ProblemError
from app.core.settings import Settings
from app.services.jobs import JobProgress
from app.services.reports.definitions import (
    get_definition,
    list_definitions,
    load_default_definitions,
)
from app.services.reports.document import build_document, check_request, data_version
from app.services.reports.files import render_files, summary_of
from app.services.reports.periods import last_complete_period, parse_report_period
from app.sql import reports as sql
from reports.document import ReportDocument

log = logging.getLogger("observatory")


async def build_report(
    engine: AsyncEngine,
    settings: Settings,
    code: str,
    period_text: str,
    *,
    version: int | None = None,
    actor: str,
    run_id: int | None = None,
    progress: JobProgress | None = None,
) -> tuple[int, bool]:
    """Build the report of ``code`` for the period and store it, unless the same
    definition version, period and data are stored already. Returns (report id, whether
    it was built now)."""
    async with engine.connect() as conn:
        record = await get_definition(conn, code, version, include_analyst=True)
        period = parse_report_period(period_text, settings.territory.timezone)
        check_request(settings, record, period)
        data = await data_version(conn)
        found = (
            await conn.execute(sql.find_report(code, record.version, period.label, data))
        ).first()
        if found is not None:
            return found.id, False
        if progress is not None:
            await progress(0.1, "computing the report's figures")
        doc = await build_document(conn, settings, record, period, data=data)
    if progress is not None:
        await progress(0.6, "rendering")
    html, pdf, bundle = await asyncio.to_thread(render_files, doc)
    values = {
        "definition": code,
        "definition_version": record.version,
        "period": period.label,
        "language": doc.language,
        "audience": doc.audience,
        "data_version": data,
        "run_id": run_id,
        "html": html,
        "pdf": pdf,
        "bundle": bundle,
        "summary": summary_of(doc, record.title),
        "created_by": actor,
    }
    async with engine.begin() as conn:
        stored = (await conn.execute(sql.insert_report(values))).scalar()
        if stored is None:  # built twice at once: the first one stands
            found = (
                await conn.execute(sql.find_report(code, record.version, period.label, data))
            ).one()
            return found.id, False
    return stored, True


async def run_report(
    engine: AsyncEngine, settings: Settings, parameters: dict, run_id: int, progress: JobProgress
) -> dict:
    """An analysis run of kind ``report`` (``POST /reports``, a worker's job): build and
    store the report of ``parameters`` (definition, version, period); the run's summary
    names the stored report."""
    report_id, built = await build_report(
        engine, settings, parameters["definition"], parameters["period"],
        version=parameters.get("version"), actor=f"run:{run_id}", run_id=run_id,
        progress=progress,
    )  # fmt: skip
    return {"report_id": report_id, "built": built}


async def build_scheduled(
    engine: AsyncEngine, settings: Settings, now: datetime | None = None
) -> list[dict]:
    """Build every stored report definition (the shipped ones stored first) for its
    latest period that has ended, unless stored for the same data already; a definition
    that fails is logged and the others are built."""
    from app.services.jobs import run_here

    await load_default_definitions(engine, actor="shipped")
    async with engine.connect() as conn:
        records = await list_definitions(conn, include_analyst=True)
    out = []
    tz = settings.territory.timezone
    for record in records:
        kind = record.definition.get("period", "quarter")
        period = last_complete_period(kind, tz, now)
        parameters = {"definition": record.code, "version": record.version, "period": period.label}
        try:
            run_id = await run_here(
                engine, "report", record.code, parameters, "schedule",
                lambda rid, progress, p=parameters: run_report(engine, settings, p, rid, progress),
            )  # fmt: skip
        except ProblemError as exc:
            log.warning("scheduled report %s %s failed: %s", record.code, period.label, exc)
            out.append({**parameters, "error": str(exc)})
            continue
        out.append({**parameters, "run_id": run_id})
    return out


async def build_here(
    engine: AsyncEngine,
    settings: Settings,
    code: str,
    period_text: str,
    *,
    kind: str | None = None,
    language: str | None = None,
) -> ReportDocument:
    """The report document of ``code`` for the period, computed in this process (the
    CLI), not stored; ``language`` overrides the definition's; ``kind``: the period kind
    the command asked for (another is a 422)."""
    await load_default_definitions(engine, actor="shipped")
    async with engine.connect() as conn:
        record = await get_definition(conn, code, include_analyst=True)
        period = parse_report_period(period_text, settings.territory.timezone)
        if kind is not None and period.kind != kind:
            raise InvalidParameter(f"{period_text} is a {period.kind}, not a {kind}")
        check_request(settings, record, period)
        if language is not None:
            changed = {**record.definition, "language": language}
            record = record.model_copy(update={"definition": changed})
        return await build_document(conn, settings, record, period)
