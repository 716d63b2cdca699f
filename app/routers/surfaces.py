"""Density surfaces and evaluation (analyst and above): the quartic KDE of the incidents as a
GeoTIFF or as hot-area polygons, and PAI / RRI of hot spot methods, all stored as runs a
worker computes (app.services.jobs). ``GET /analyses/kde.tif`` and ``/kde/areas`` stay one
GET for QGIS and scripts: they reuse or queue a run and wait for it."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request, Response
from pydantic import ValidationError

from app.core.errors import Conflict, InvalidParameter, NotFound
from app.deps import Analyst, ConnDep, EngineDep, SettingsDep
from app.files.exports import csv_text
from app.params import split_list
from app.schemas.analyses import AnalysisFilters, AnalysisRunPublic
from app.schemas.surfaces import EvaluationPublic, EvaluationRequest, KdeQuery, KdeRequest
from app.services import jobs
from app.services import surfaces as service
from app.services.evaluation import ROW_COLUMNS
from app.services.hotspots import check_grid_size
from app.sql import analyses as sql

router = APIRouter(prefix="/analyses", tags=["analyses"])

GEOJSON = "application/geo+json"
TIFF = "image/tiff"
SEXES = ("female", "male", "unknown")


async def kde_query(
    category: Annotated[list[str] | None, Query(description="codes, comma-separated")] = None,
    occurred_from: Annotated[datetime | None, Query(description="inclusive")] = None,
    occurred_to: Annotated[datetime | None, Query(description="exclusive")] = None,
    victim_sex: Annotated[list[str] | None, Query(description="female, male, unknown")] = None,
    age_min: Annotated[int | None, Query(ge=0, le=120)] = None,
    age_max: Annotated[int | None, Query(ge=0, le=120)] = None,
    unit: Annotated[str | None, Query(description="unit code, any level, e.g. BZ-CY")] = None,
    source: Annotated[list[str] | None, Query(description="reporting agencies")] = None,
    bandwidth_m: Annotated[
        float | None, Query(gt=0, description="search radius, metres; default: ArcGIS's rule")
    ] = None,
    cell_size_m: Annotated[
        float | None, Query(gt=0, description="cell side, metres; default: ArcGIS's rule")
    ] = None,
    victims: Annotated[bool, Query(description="weight each incident by its victims")] = False,
) -> KdeQuery:
    """The filters of ``GET /incidents`` and the kernel's scale, parsed and checked."""
    sexes = split_list(victim_sex)
    if bad := [s for s in sexes if s not in SEXES]:
        raise InvalidParameter(f"victim_sex must be female, male or unknown (got {', '.join(bad)})")
    if age_min is not None and age_max is not None and age_min > age_max:
        raise InvalidParameter("age_min must not exceed age_max")
    try:
        filters = AnalysisFilters(
            categories=list(split_list(category)),
            occurred_from=occurred_from,
            occurred_to=occurred_to,
            victim_sex=list(sexes),
            age_min=age_min,
            age_max=age_max,
            unit=unit,
            sources=list(split_list(source)),
        )
    except ValidationError as exc:  # pragma: no cover - the checks above cover the fields
        raise InvalidParameter(str(exc)) from None
    return KdeQuery(
        filters=filters, bandwidth_m=bandwidth_m, cell_size_m=cell_size_m, victims=victims
    )


KdeQueryDep = Annotated[KdeQuery, Depends(kde_query)]
PercentileQuery = Annotated[
    float, Query(ge=0, lt=100, description="of the non-zero cell densities")
]


def _sorted(body: KdeRequest) -> KdeRequest:
    """The request with its lists in one order: equal requests share a stored run."""
    f = body.filters
    filters = f.model_copy(
        update={k: sorted(getattr(f, k)) for k in ("categories", "victim_sex", "sources")}
    )
    return body.model_copy(update={"filters": filters})


def _kde_links(request: Request, run_id: int) -> list[dict[str, str]]:
    run = str(request.url_for("get_analysis", run_id=run_id))
    return [
        {"rel": "self", "type": TIFF, "href": str(request.url_for("get_run_kde", run_id=run_id))},
        {
            "rel": "alternate",
            "type": GEOJSON,
            "href": str(request.url_for("get_run_kde_areas", run_id=run_id)),
            "title": "hot areas at the run's percentile",
        },
        {"rel": "describedby", "type": "application/json", "href": f"{run}?format=run"},
    ]


def _run_response(
    request: Request, run: Mapping[str, Any], status_code: int, location: str
) -> Response:
    """A KDE run as JSON, with the URL to poll in ``Location``."""
    public = AnalysisRunPublic(**run, links=_kde_links(request, run["id"]))
    return Response(
        public.model_dump_json(),
        status_code=status_code,
        media_type="application/json",
        headers={"Location": location},
    )


async def _kde_file(
    request: Request, engine, run_id: int, name: str, *, wait_s: float = 0
) -> Response:
    """A KDE run's file (``kde.tif`` or ``areas.geojson``) once it ended within
    ``wait_s``; 202 with the run and its Location while it goes on."""
    route = "get_run_kde" if name == service.SURFACE_FILE else "get_run_kde_areas"
    location = str(request.url_for(route, run_id=run_id))
    if wait_s:
        await jobs.wait_for_run(engine, run_id, wait_s, max_pause_s=0.25)
    run = await jobs.read_run(engine, run_id, "kde")
    if run["status"] == "running":
        return _run_response(request, run, 202, location)
    if name == service.AREAS_FILE and (reason := run["summary"].get("areas_error")):
        raise jobs.AnalysisFailed(reason, run_id=run_id)
    data, media_type = await jobs.read_file(engine, run_id, name)
    filename = "kde.tif" if name == service.SURFACE_FILE else f"kde-{run_id}-areas.geojson"
    disposition = "attachment" if name == service.SURFACE_FILE else "inline"
    describedby = f"{request.url_for('get_analysis', run_id=run_id)}?format=run"
    return Response(
        data,
        media_type=media_type,
        headers={
            "Content-Disposition": f'{disposition}; filename="{filename}"',
            "Link": f'<{describedby}>; rel="describedby"',
        },
    )


async def _read_through(
    request: Request, engine, settings, who, body: KdeRequest, name: str
) -> Response:
    """A GET of a surface: the stored run on the same data, or a new one, waited for
    ``analysis.read_wait_s``."""
    await service.check_kde_request(engine, settings, body)  # 422 before anything is stored
    body = _sorted(body)
    run_id = await jobs.reuse_or_enqueue(
        request.app.state.queue, engine, who.actor, "kde", "quartic", body.model_dump(mode="json")
    )
    return await _kde_file(request, engine, run_id, name, wait_s=settings.analysis.read_wait_s)


_READ_RESPONSES: dict[int | str, dict[str, Any]] = {
    202: {"description": "Still computing after analysis.read_wait_s: poll the Location"},
    422: {"description": "No incidents, a raster too large, bad filters"},
}


@router.get(
    "/kde.tif",
    summary="Kernel density (quartic, incidents per km²) as a GeoTIFF in the projected CRS",
    responses={200: {"content": {TIFF: {}}}, **_READ_RESPONSES},
)
async def get_kde_geotiff(
    request: Request, who: Analyst, engine: EngineDep, settings: SettingsDep, query: KdeQueryDep
) -> Response:
    """The kernel density of the filtered incidents as a GeoTIFF (analyst key): quartic
    kernel, incidents per km², cells of ``cell_size_m`` in the territory's projected CRS.

    A worker computes it as a KDE run; this GET reuses the run with the same parameters
    on the same data when one is stored, or queues one and waits up to
    ``analysis.read_wait_s`` (30 s): the file, or 202 with the run and the ``Location``
    of its GeoTIFF to poll. 422 when no incident matches or the raster would be too
    large."""
    body = KdeRequest(**query.model_dump())
    return await _read_through(request, engine, settings, who, body, service.SURFACE_FILE)


@router.get(
    "/kde/areas",
    summary="Hot areas: polygons of the density above a percentile (GeoJSON, EPSG:4326)",
    responses={200: {"content": {GEOJSON: {}}}, **_READ_RESPONSES},
)
async def get_kde_areas(
    request: Request,
    who: Analyst,
    engine: EngineDep,
    settings: SettingsDep,
    query: KdeQueryDep,
    percentile: PercentileQuery = 95,
) -> Response:
    """Hot areas (analyst key): the polygons where the density of ``/analyses/kde.tif``
    exceeds the given percentile of its non-zero cells, as GeoJSON in EPSG:4326. Computed
    by a KDE run and answered as ``/analyses/kde.tif`` is (the same run at the default
    percentile, 95)."""
    body = KdeRequest(**query.model_dump(), percentile=percentile)
    return await _read_through(request, engine, settings, who, body, service.AREAS_FILE)


@router.post(
    "/kde",
    status_code=201,
    response_model=AnalysisRunPublic,
    summary="A KDE run: the density surface (GeoTIFF) and its hot areas, stored",
    responses={
        202: {"description": "Still running: poll the Location"},
        422: {"description": "No incidents, a raster too large, bad filters"},
    },
)
async def create_kde(
    request: Request, body: KdeRequest, engine: EngineDep, settings: SettingsDep, who: Analyst
) -> Response:
    """Queue a KDE run (analyst key), always a new one, and answer the run: 201 when it
    ended within ``analysis.wait_s``, else 202; its ``Location`` is the GeoTIFF (202 while
    it runs), its links name the hot areas."""
    await service.check_kde_request(engine, settings, body)  # 422 before anything is stored
    run_id, _ = await jobs.launch_run(
        request.app.state.queue, engine, settings, who.actor, "kde", "quartic",
        body.model_dump(mode="json"), body.model_dump(mode="json", exclude_unset=True),
    )  # fmt: skip
    run = await jobs.read_run(engine, run_id, "kde")
    location = str(request.url_for("get_run_kde", run_id=run_id))
    return _run_response(request, run, 202 if run["status"] == "running" else 201, location)


@router.get(
    "/runs/{run_id:int}/kde.tif",
    summary="A KDE run's surface (GeoTIFF); 202 while it runs",
    responses={200: {"content": {TIFF: {}}}, 202: {"description": "Still running"}},
)
async def get_run_kde(request: Request, run_id: int, engine: EngineDep, _: Analyst) -> Response:
    """The GeoTIFF a KDE run stored (analyst key); 202 with the run while it runs, 422
    when it failed (with the reason), 409 when it was cancelled."""
    return await _kde_file(request, engine, run_id, service.SURFACE_FILE)


@router.get(
    "/runs/{run_id:int}/areas",
    summary="A KDE run's hot areas at its percentile (GeoJSON); 202 while it runs",
    responses={200: {"content": {GEOJSON: {}}}, 202: {"description": "Still running"}},
)
async def get_run_kde_areas(
    request: Request, run_id: int, engine: EngineDep, _: Analyst
) -> Response:
    """The hot areas a KDE run stored, above the run's percentile (analyst key); as
    ``/analyses/runs/{run_id}/kde.tif`` otherwise."""
    return await _kde_file(request, engine, run_id, service.AREAS_FILE)


def _links(request: Request, run_id: int) -> list[dict[str, str]]:
    url = str(request.url_for("get_evaluation", run_id=run_id))
    run = str(request.url_for("get_analysis", run_id=run_id))
    return [
        {"rel": "self", "type": "application/json", "href": url},
        {"rel": "alternate", "type": "text/csv", "href": f"{url}?format=csv"},
        {"rel": "describedby", "type": "application/json", "href": f"{run}?format=run"},
        {"rel": "item", "type": GEOJSON, "href": run, "title": "the selected units"},
    ]


async def _evaluation(request: Request, conn, run_id: int) -> EvaluationPublic:
    row = (await conn.execute(sql.select_run(run_id))).mappings().first()
    if row is None or row["kind"] != "evaluation":
        raise NotFound(f"no evaluation run {run_id}")
    return EvaluationPublic(
        **row, rows=row["summary"].get("table", []), links=_links(request, run_id)
    )


def _evaluation_response(
    run: EvaluationPublic, format: str, *, status_code: int = 200, location: bool = False
) -> Response:
    headers = {"Location": run.links[0]["href"]} if location else {}
    if format == "csv":
        lines = ([getattr(r, c) for c in ROW_COLUMNS] for r in run.rows)
        headers["Content-Disposition"] = f'attachment; filename="evaluation-{run.id}.csv"'
        return Response(
            csv_text(ROW_COLUMNS, lines),
            status_code=status_code,
            media_type="text/csv; charset=utf-8",
            headers=headers,
        )
    return Response(
        run.model_dump_json(),
        status_code=status_code,
        media_type="application/json",
        headers=headers,
    )


@router.post(
    "/evaluate",
    status_code=201,
    response_model=EvaluationPublic,
    summary="PAI and RRI of hot spot methods: select on one period, score on the next",
    responses={
        202: {"description": "Still running: poll the Location"},
        201: {"content": {"text/csv": {}}},
    },
)
async def create_evaluation(
    request: Request,
    body: EvaluationRequest,
    engine: EngineDep,
    settings: SettingsDep,
    who: Analyst,
    format: Literal["json", "csv"] = "json",
) -> Response:
    """Queue an evaluation of hot spot methods (analyst key): each method selects areas on
    one period and is scored on the next by PAI and RRI. 201 with the table when it ended
    within ``analysis.wait_s``, else 202 with its ``Location``."""
    await check_grid_size(engine, settings, body)  # 422 before anything is stored
    parameters = body.model_dump(mode="json", by_alias=True)
    method = "+".join(body.methods)
    sent = body.model_dump(mode="json", by_alias=True, exclude_unset=True)
    run_id, done = await jobs.launch_run(
        request.app.state.queue, engine, settings, who.actor, "evaluation", method, parameters,
        sent,
    )  # fmt: skip
    async with engine.connect() as conn:
        run = await _evaluation(request, conn, run_id)
    if run.status == "failed":
        raise jobs.AnalysisFailed(run.message or "the evaluation failed", run_id=run_id)
    if not done:
        return _evaluation_response(run, "json", status_code=202, location=True)
    return _evaluation_response(run, format, status_code=201, location=True)


@router.get(
    "/evaluations/{run_id:int}",
    response_model=EvaluationPublic,
    summary="An evaluation run and its table (JSON, CSV); 202 while it runs",
    responses={200: {"content": {"text/csv": {}}}},
)
async def get_evaluation(
    request: Request,
    run_id: int,
    conn: ConnDep,
    _: Analyst,
    format: Literal["json", "csv"] = "json",
) -> Response:
    """An evaluation run and its table as JSON or CSV (analyst key); 202 while it runs,
    422 when it failed, 409 when it was cancelled."""
    run = await _evaluation(request, conn, run_id)
    if run.status == "running":
        return _evaluation_response(run, "json", status_code=202)
    if run.status == "failed":
        raise jobs.AnalysisFailed(run.message or "the evaluation failed", run_id=run_id)
    if run.status == "cancelled":
        raise Conflict(f"evaluation run {run_id} was cancelled", run_id=run_id)
    return _evaluation_response(run, format)
