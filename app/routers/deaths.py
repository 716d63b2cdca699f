"""Deaths from three agencies (issue 21): the import of an agency's death records
(linker), the consolidated register, its disagreements and summary, and the data quality
scorecard of every agency (analyst and above; no identifier of the deceased in any of
them).

The scorecard follows the Bogotá Protocol's criteria on homicide data and the ESS quality
dimensions (``app.services.quality``, the README's "Deaths from three agencies").
"""

from __future__ import annotations

from typing import Annotated, Literal

import orjson
from fastapi import APIRouter, File, Form, Query, Request, Response, UploadFile

from app.access import sees_identifiers
from app.core.errors import InvalidParameter, NotFound
from app.deps import Analyst, ConnDep, EngineDep, SettingsDep, require
from app.files.exports import CSV, csv_text, download
from app.files.uploads import saved_upload
from app.schemas.imports import ImportBatchDetail
from app.schemas.linkage import DeathPage, DeathPublic, DeathSummary, Discrepancies, QualityReport
from app.security import Principal
from app.services import deaths as service
from app.services import linkage as linkage_service
from app.services.death_imports import import_deaths
from app.services.incident_rows import FORMATS, ReadOptions
from app.services.quality import CRITERIA, quality, quality_csv_rows, scorecard_svg
from app.sql import imports as imports_sql
from app.sql import linkage as sql

router = APIRouter(tags=["deaths"])

Linker = Annotated[Principal, require("linker")]
Period = Annotated[
    str | None, Query(description="2024, 2024-Q3 (or 2024Q3) or 2024-03; default: every death")
]
Unit = Annotated[str | None, Query(description="a unit code, e.g. BZ-BZ")]
Run = Annotated[int | None, Query(description="a linkage run id; default: the latest completed")]
Format = Annotated[Literal["json", "csv"], Query(description="json or csv")]
REJECTIONS_SHOWN = 1_000


def _columns(columns: str | None) -> dict[str, str]:
    if not columns:
        return {}
    try:
        mapping = orjson.loads(columns)
    except orjson.JSONDecodeError:
        mapping = None
    if not isinstance(mapping, dict) or not all(isinstance(v, str) for v in mapping.values()):
        raise InvalidParameter(
            'columns must be a JSON object mapping our names to yours, e.g. {"death_date": "fecha"}'
        )
    return mapping


@router.post(
    "/deaths/records",
    status_code=201,
    response_model=ImportBatchDetail,
    summary="Import an agency's death records",
)
async def import_death_records(
    request: Request,
    engine: EngineDep,
    conn: ConnDep,
    settings: SettingsDep,
    who: Linker,
    file: Annotated[UploadFile, File(description="CSV, GeoJSON or GeoPackage")],
    source: Annotated[
        str | None, Form(description="the agency (police, forensic, health) if no source column")
    ] = None,
    format: Annotated[str | None, Form(description="csv, geojson or gpkg")] = None,
    crs: Annotated[str | None, Form(description="CRS of the coordinates, e.g. EPSG:32616")] = None,
    columns: Annotated[str | None, Form(description='JSON: {"death_date": "fecha", …}')] = None,
    delimiter: Annotated[str, Form(max_length=1)] = ",",
    encoding: Annotated[str, Form()] = "utf-8",
    layer: Annotated[str | None, Form(description="GeoPackage layer")] = None,
) -> Response:
    """Import one file of an agency's death records as one batch (kind ``deaths``):
    valid rows upserted on (source, source_id), every rejected row kept with its reasons
    (``GET /imports/{id}``, linker and admin only: the rows hold names). Columns:
    source, source_id, given_name, family_name, person_key, sex, age, birth_date,
    death_date, registered_at, longitude/latitude or wkt, location_precision, unit_code,
    manner (the agency's own coding), icd10, iccs; others are kept as attributes. With
    ``linkage.hash_names`` the names are stored as HMAC tokens. Linker key (or admin)."""
    options = ReadOptions(
        source=source,
        format=format,
        columns=_columns(columns),
        crs=crs,
        layer=layer,
        delimiter=delimiter,
        encoding=encoding,
    )
    suffixes = tuple(FORMATS) if format is None else (*FORMATS, ".dat")
    with saved_upload(file, max_mb=settings.api.max_upload_mb, suffixes=suffixes) as path:
        report = await import_deaths(
            engine, settings, path, options, actor=who.actor, filename=file.filename or path.name
        )
    batch = (await conn.execute(imports_sql.select_batch(report.batch_id))).mappings().one()
    rows = (
        (await conn.execute(imports_sql.select_rejections(report.batch_id, REJECTIONS_SHOWN + 1)))
        .mappings()
        .all()
    )
    url = str(request.url_for("get_import", batch_id=report.batch_id))
    rejections = str(request.url_for("get_import_rejections", batch_id=report.batch_id))
    detail = ImportBatchDetail(
        **batch,
        links=[
            {"rel": "self", "type": "application/json", "href": url},
            {"rel": "rejections", "type": "text/csv", "href": rejections},
        ],
        rejections=[dict(r) for r in rows[:REJECTIONS_SHOWN]],
        rejections_truncated=len(rows) > REJECTIONS_SHOWN,
    )
    return Response(
        detail.model_dump_json(), status_code=201, media_type="application/json",
        headers={"Location": url},
    )  # fmt: skip


async def _register(conn, settings, period, unit, run):
    label, start, end = service.period_bounds(period, settings.territory.timezone)
    run_id = await linkage_service.require_run(conn, run)
    deaths = await service.select_deaths(conn, run_id, start, end, unit)
    return label, run_id, deaths


@router.get("/deaths", response_model=DeathPage, summary="The consolidated register of deaths")
async def list_deaths(
    conn: ConnDep,
    settings: SettingsDep,
    _: Analyst,
    period: Period = None,
    unit: Unit = None,
    run: Run = None,
    format: Format = "json",
    limit: Annotated[int | None, Query(ge=1, description="a page (JSON); default: all")] = None,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> Response:
    """One line per death (a cluster of the agencies' records) dated in the period: the
    agencies that recorded it, each one's manner, the consolidated manner (forensic
    wins, else police, else health) and where it came from, date and unit, by date. From
    the latest linkage run; ``records_not_linked_yet`` counts records it has not seen.
    JSON pages with ``limit``/``offset`` (``numberMatched``: all of them); CSV has all.
    Analyst key and above; no identifier of the deceased."""
    label, run_id, deaths = await _register(conn, settings, period, unit, run)
    if format == "csv":
        columns = list(deaths[0]) if deaths else list(DeathPublic.model_fields)
        table = csv_text(columns, ([d[c] for c in columns] for d in deaths))
        return download(table, CSV, f"deaths-{label or 'all'}.csv")
    behind = (await conn.execute(sql.count_records_since(run_id))).scalar_one()
    page = DeathPage(
        period=label,
        unit=unit,
        run_id=run_id,
        records_not_linked_yet=behind,
        numberMatched=len(deaths),
        deaths=service.death_models(deaths[offset : None if limit is None else offset + limit]),
    )
    return Response(page.model_dump_json(), media_type="application/json")


@router.get(
    "/deaths/discrepancies",
    response_model=Discrepancies,
    summary="Deaths the agencies disagree on, line by line",
)
async def list_death_discrepancies(
    conn: ConnDep,
    settings: SettingsDep,
    who: Analyst,
    period: Period = None,
    unit: Unit = None,
    run: Run = None,
    format: Format = "json",
) -> Response:
    """The deaths whose manner differs between agencies (police homicide vs forensic
    undetermined, …), each with every agency's own coding, for the Inter-Agency Group
    to go through line by line; and the deaths one agency alone recorded, by agency.
    Analyst key and above; the agencies' record ids only for linker keys and admins."""
    label, run_id, deaths = await _register(conn, settings, period, unit, run)
    identifiers = sees_identifiers(who)
    differ, single = await service.discrepancy_lines(conn, run_id, deaths, identifiers=identifiers)
    if format == "csv":
        lines = [("manner_differs", line) for line in differ]
        lines += [(f"only_{s}", line) for s, group in single.items() for line in group]
        rows = (
            [kind, *(getattr(line, c) for c in _LINE_COLUMNS), _codings_text(line.codings)]
            for kind, line in lines
        )
        body = csv_text(["kind", *_LINE_COLUMNS, "codings"], rows)
        return download(body, CSV, f"deaths-discrepancies-{label or 'all'}.csv")
    answer = Discrepancies(
        period=label, unit=unit, run_id=run_id, manner_differs=differ, single_source=single
    )
    return Response(answer.model_dump_json(), media_type="application/json")


_LINE_COLUMNS = (
    "cluster_id", "death_date", "unit_code", "sources", "manner", "manner_from",
    "manner_police", "manner_forensic", "manner_health",
)  # fmt: skip


def _codings_text(codings) -> str:
    """Every agency's coding of a death on one CSV cell."""
    return "; ".join(_coding_text(c) for c in codings)


def _coding_text(coding) -> str:
    codes = [
        f"ICD-10 {coding.icd10}" if coding.icd10 else "",
        f"ICCS {coding.iccs}" if coding.iccs else "",
    ]
    extra = ", ".join(c for c in codes if c)
    own = coding.manner_raw or "-"
    ident = f" #{coding.source_id}" if coding.source_id else ""
    return f"{coding.source}{ident}: {own} → {coding.manner or '?'}" + (
        f" ({extra})" if extra else ""
    )


@router.get("/deaths/summary", response_model=DeathSummary, summary="Deaths by agencies and manner")
async def get_death_summary(
    conn: ConnDep,
    settings: SettingsDep,
    _: Analyst,
    period: Period = None,
    unit: Unit = None,
    run: Run = None,
) -> DeathSummary:
    """The deaths found by all three agencies, by two (which), by one (which); each
    agency's count; the consolidated count by manner with its rule; counts by unit; and
    the multiple-systems (capture-recapture) estimate of all deaths, those every agency
    missed included (log-linear models on the three lists' overlaps). Analyst key and
    above."""
    label, run_id, deaths = await _register(conn, settings, period, unit, run)
    return DeathSummary(period=label, unit=unit, run_id=run_id, **service.summary(deaths))


async def _coherence_run(conn, run: int | None) -> int | None:
    """The run the scorecard's coherence comes from: ``run``, else the latest; None
    when no run has completed yet (coherence is then null)."""
    try:
        return await linkage_service.require_run(conn, run)
    except NotFound:
        if run is not None:
            raise
        return None


@router.get("/quality", response_model=QualityReport, summary="Data quality of every agency")
async def get_quality(
    conn: ConnDep,
    settings: SettingsDep,
    _: Analyst,
    period: Annotated[str, Query(description="2024, 2024-Q3 (or 2024Q3) or 2024-03")],
    run: Run = None,
    format: Format = "json",
    f: Annotated[Literal["json", "csv"] | None, Query(description="same as format")] = None,
) -> Response:
    """The scorecard of every agency's death records of the period: completeness of each
    field, share georeferenced and at what precision, share placed in a unit, timeliness
    (the reporting delay) and coherence with the other agencies (share linked, share with
    the same manner), after the Bogotá Protocol's criteria on homicide data and the ESS
    quality dimensions (``criteria`` says which score answers which). Coherence comes from
    the latest linkage run (none yet: null). JSON, or CSV with ``format=csv``. Analyst
    key and above."""
    label, start, end = service.period_bounds(period, settings.territory.timezone)
    if label is None or start is None or end is None:
        raise InvalidParameter("period is required, e.g. 2024-Q3")
    run_id = await _coherence_run(conn, run)
    sources = await quality(conn, start, end, run_id, tuple(settings.linkage.sources))
    if (f or format) == "csv":
        header, rows = quality_csv_rows(sources)
        return download(csv_text(header, rows), CSV, f"quality-{label}.csv")
    report = QualityReport(period=label, run_id=run_id, criteria=CRITERIA, sources=sources)
    return Response(report.model_dump_json(), media_type="application/json")


@router.get(
    "/quality/chart.svg",
    summary="The data quality scorecard as a chart (one panel per agency)",
    response_class=Response,
    responses={200: {"content": {"image/svg+xml": {}}}},
)
async def get_quality_chart(
    conn: ConnDep,
    settings: SettingsDep,
    _: Analyst,
    period: Annotated[str, Query(description="2024, 2024-Q3 (or 2024Q3) or 2024-03")],
    source: Annotated[
        str | None, Query(description="one agency (police, forensic, health); default: all")
    ] = None,
    run: Run = None,
) -> Response:
    """The scorecard of ``GET /quality`` drawn per agency: the share of its records with
    each field, georeferenced, registered in time, linked to another agency and agreeing
    on the manner, as SVG (for reports and dashboards). Analyst key and above."""
    label, start, end = service.period_bounds(period, settings.territory.timezone)
    if label is None or start is None or end is None:
        raise InvalidParameter("period is required, e.g. 2024-Q3")
    agencies = tuple(settings.linkage.sources)
    if source is not None and source not in agencies:
        raise InvalidParameter(f"source must be one of {', '.join(agencies)} (got {source!r})")
    run_id = await _coherence_run(conn, run)
    sources = await quality(conn, start, end, run_id, (source,) if source else agencies)
    return Response(scorecard_svg(sources, label), media_type="image/svg+xml")
