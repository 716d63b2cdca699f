"""The periodic situational report (issue 20): built on demand as a job, stored with the
data version it was built from, read as PDF, HTML or a zip of its tables (CSV/XLSX).

Analysts build reports (``POST /reports``) of any definition; anyone reads the stored
reports of a ``public`` definition, whose every figure is the one ``/stats``,
``/rankings`` and ``/alerts`` give a caller without a key; analyst reports are for
analysts only (a public caller is told no such report exists). Admins store report
definitions (YAML or JSON), versioned like index and monitor definitions.
"""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query, Request, Response

from app import access
from app.core.errors import NotFound
from app.deps import Admin, Analyst, ConnDep, EngineDep, PrincipalDep, SettingsDep
from app.schemas.reports import (
    ReportDefinitionList,
    ReportDefinitionRecord,
    ReportList,
    ReportRecord,
    ReportRequest,
)
from app.services import jobs
from app.services import reports as service
from app.sql import analyses as run_sql
from app.sql import reports as sql

router = APIRouter(prefix="/reports", tags=["reports"])

ReportId = Annotated[int, Path(ge=1, le=2_147_483_647, description="the report's id")]
_FILES = {
    "pdf": ("pdf", "application/pdf"),
    "html": ("html", "text/html; charset=utf-8"),
    "zip": ("bundle", "application/zip"),
}
_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": {"type": "object"}},
            "application/yaml": {"schema": {"type": "string"}},
        },
    }
}


def _audiences(who) -> tuple[str, ...]:
    return ("public",) if access.sees_published_view(who) else ("public", "analyst")


def _report(request: Request, row) -> ReportRecord:
    base = str(request.url_for("get_report", report_id=row.id))
    formats = [f for f, has in (("html", row.has_html), ("pdf", row.has_pdf),
                                ("zip", row.has_zip)) if has]  # fmt: skip
    links = [{"rel": "self", "type": "application/json", "href": base}]
    links += [
        {"rel": "alternate", "type": _FILES[f][1].split(";")[0], "href": f"{base}.{f}"}
        for f in formats
    ]
    return ReportRecord(
        id=row.id,
        definition=row.definition,
        definition_version=row.definition_version,
        period=row.period,
        language=row.language,
        audience=row.audience,
        data_version=row.data_version,
        run_id=row.run_id,
        created_by=row.created_by,
        created_at=row.created_at,
        summary=row.summary,
        formats=formats,
        links=links,
    )


@router.get(
    "/definitions",
    response_model=ReportDefinitionList,
    summary="Latest version of every report definition",
)
async def list_report_definitions(
    engine: EngineDep, conn: ConnDep, who: PrincipalDep
) -> ReportDefinitionList:
    """The latest version of every report definition (analyst definitions for analysts
    only); the shipped ones are stored on first use."""
    await service.load_default_definitions(engine, actor="shipped")
    include = not access.sees_published_view(who)
    return ReportDefinitionList(items=await service.list_definitions(conn, include_analyst=include))


@router.post(
    "/definitions",
    response_model=ReportDefinitionRecord,
    status_code=201,
    summary="Store a new version of a report definition (JSON or YAML); admin only",
    openapi_extra=_BODY,
)
async def post_report_definition(
    request: Request, conn: ConnDep, who: Admin
) -> ReportDefinitionRecord:
    """Store a JSON or YAML report definition as the next version of its code (422 names
    every invalid field); audited."""
    definition = service.parse_definition(await request.body(), request.headers.get("content-type"))
    return await service.store_definition(conn, definition, who.actor)


@router.post(
    "",
    response_model=ReportRecord,
    status_code=201,
    summary="Build a report of a definition for a period (analyst key): a job",
    responses={
        200: {"description": "The same report is stored already (same data): returned"},
        202: {"description": "Building: poll the run's Location (GET /analyses/{id}?format=run)"},
        422: {"description": "Unknown or malformed period, a period not ended yet"},
    },
)
async def post_report(
    request: Request,
    body: ReportRequest,
    engine: EngineDep,
    settings: SettingsDep,
    who: Analyst,
) -> Response:
    """Build the report of ``definition`` (its latest version unless ``version``) for
    ``period`` (2024Q3, 2024-07, 2024H2, 2024). The same definition version, period and
    data give the stored report (200, nothing rebuilt). Else a job builds it: 201 with the
    report when it ended within ``analysis.wait_s``, else 202 with the run to poll."""
    await service.load_default_definitions(engine, actor="shipped")
    async with engine.connect() as conn:
        record = await service.get_definition(
            conn, body.definition, body.version, include_analyst=True
        )
        period = service.parse_report_period(body.period, settings.territory.timezone)
        service.check_request(settings, record, period)
        data = await service.data_version(conn)
        found = (
            await conn.execute(sql.find_report(record.code, record.version, period.label, data))
        ).first()
    if found is not None:
        return _json(_report(request, found), 200)
    parameters = {"definition": record.code, "version": record.version, "period": period.label}
    run_id, done = await jobs.launch_run(
        request.app.state.queue, engine, settings, who.actor, "report", record.code,
        parameters, parameters,
    )  # fmt: skip
    async with engine.connect() as conn:
        run = (await conn.execute(run_sql.select_run(run_id))).mappings().one()
        if run["status"] == "failed":
            raise jobs.AnalysisFailed(run["message"] or "the report failed", run_id=run_id)
        report_id = (run["summary"] or {}).get("report_id")
        row = (
            None
            if report_id is None
            else (await conn.execute(sql.select_report(report_id))).first()
        )
    if done and row is not None:
        answer = _report(request, row)
        return _json(answer, 201, answer.links[0]["href"])
    location = str(request.url_for("get_analysis", run_id=run_id)) + "?format=run"
    return Response(
        f'{{"run_id": {run_id}, "status": "running", "links": [{{"rel": "monitor", '
        f'"href": "{location}"}}]}}',
        status_code=202,
        media_type="application/json",
        headers={"Location": location},
    )


def _json(record: ReportRecord, status: int, location: str | None = None) -> Response:
    headers = {"Location": location} if location else {}
    return Response(
        record.model_dump_json(), status_code=status, media_type="application/json",
        headers=headers,
    )  # fmt: skip


@router.get("", response_model=ReportList, summary="Stored reports, newest first")
async def list_reports(
    request: Request,
    conn: ConnDep,
    who: PrincipalDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> ReportList:
    """Stored reports with their definition, period, language, data version and headline
    figures (public reports only without an analyst key)."""
    rows = (await conn.execute(sql.select_reports(_audiences(who), limit))).all()
    return ReportList(items=[_report(request, r) for r in rows])


@router.get("/{report_id}.{fmt}", summary="A stored report as PDF, HTML or a zip of its tables")
async def get_report_file(
    report_id: ReportId,
    fmt: Literal["pdf", "html", "zip"],
    conn: ConnDep,
    who: PrincipalDep,
) -> Response:
    """The report's PDF, its HTML, or the zip of every table of the report (CSV and XLSX).
    404 for an analyst report without an analyst key."""
    column, media = _FILES[fmt]
    row = (await conn.execute(sql.select_report_file(report_id, column))).first()
    if row is None or row.audience not in _audiences(who):
        raise NotFound(f"no report {report_id}")
    content = row[1]
    if content is None:
        raise NotFound(f"report {report_id} has no {fmt} (it was stored without a renderer)")
    body = content.encode() if isinstance(content, str) else bytes(content)
    disposition = "inline" if fmt != "zip" else "attachment"
    return Response(
        body,
        media_type=media,
        headers={"Content-Disposition": f'{disposition}; filename="report-{report_id}.{fmt}"'},
    )


@router.get("/{report_id}", response_model=ReportRecord, summary="A stored report's metadata")
async def get_report(
    request: Request, report_id: ReportId, conn: ConnDep, who: PrincipalDep
) -> ReportRecord:
    """What the report was built from (definition version, period, language, audience,
    data version, run) and its headline figures; links to its files."""
    row = (await conn.execute(sql.select_report(report_id))).first()
    if row is None or row.audience not in _audiences(who):
        raise NotFound(f"no report {report_id}")
    return _report(request, row)
