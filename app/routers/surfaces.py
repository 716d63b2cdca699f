"""Density surfaces and evaluation (analyst and above): the quartic KDE of the incidents as a
GeoTIFF or as hot-area polygons, and PAI / RRI of hot spot methods stored as runs."""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Annotated, Literal

import orjson
from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import FileResponse
from pydantic import ValidationError
from starlette.background import BackgroundTask

from app.core.errors import Conflict, InvalidParameter, NotFound
from app.deps import Analyst, ConnDep, EngineDep, SettingsDep
from app.files.exports import csv_text
from app.params import split_list
from app.schemas.analyses import AnalysisFilters
from app.schemas.surfaces import EvaluationPublic, EvaluationRequest, KdeQuery
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


@router.get(
    "/kde.tif",
    response_class=FileResponse,
    summary="Kernel density (quartic, incidents per km²) as a GeoTIFF in the projected CRS",
    responses={200: {"content": {TIFF: {}}}, 422: {"description": "no incidents, too large"}},
)
async def get_kde_geotiff(
    _: Analyst, engine: EngineDep, settings: SettingsDep, query: KdeQueryDep
) -> FileResponse:
    """The kernel density of the filtered incidents as a GeoTIFF (analyst key): quartic
    kernel, incidents per km², cells of ``cell_size_m`` in the territory's projected CRS.
    422 when no incident matches or the raster would be too large."""
    surface = await service.kde_surface(engine, settings, query)
    crs = settings.territory.projected_crs
    path = await asyncio.to_thread(service.geotiff_file, surface, crs)
    return FileResponse(
        path,
        media_type=TIFF,
        filename="kde.tif",
        background=BackgroundTask(path.unlink, missing_ok=True),
    )


@router.get(
    "/kde/areas",
    summary="Hot areas: polygons of the density above a percentile (GeoJSON, EPSG:4326)",
    responses={200: {"content": {GEOJSON: {}}}},
)
async def get_kde_areas(
    _: Analyst,
    engine: EngineDep,
    settings: SettingsDep,
    query: KdeQueryDep,
    percentile: Annotated[
        float, Query(ge=0, lt=100, description="of the non-zero cell densities")
    ] = 95,
) -> Response:
    """Hot areas (analyst key): the polygons where the density of ``/analyses/kde.tif``
    exceeds the given percentile of its non-zero cells, as GeoJSON in EPSG:4326."""
    surface = await service.kde_surface(engine, settings, query)
    crs = settings.territory.projected_crs
    collection = await asyncio.to_thread(service.hot_area_collection, surface, percentile, crs)
    return Response(orjson.dumps(collection), media_type=GEOJSON)


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
