"""Analyses (analyst and above): hot spots as stored, reproducible runs served as layers."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request, Response

from app.core.errors import Conflict, InvalidParameter, NotFound
from app.deps import Analyst, ConnDep, EngineDep, SettingsDep
from app.files.exports import CSV, csv_text, download
from app.schemas.analyses import (
    AnalysisRunList,
    AnalysisRunPublic,
    EmergingRequest,
    HotspotRequest,
)
from app.schemas.near_repeat import NearRepeatRequest
from app.services import jobs
from app.services.emerging import check_cube_size
from app.services.hotspots import check_grid_size
from app.sql import analyses as sql

router = APIRouter(prefix="/analyses", tags=["analyses"])

GEOJSON = "application/geo+json"


def _links(request: Request, run: Mapping[str, Any]) -> list[dict[str, str]]:
    """Where a run's result is: its cells (GeoJSON, CSV) here, or the files of a KDE run
    and the bands of a sensitivity run at their own routes."""
    url = str(request.url_for("get_analysis", run_id=run["id"]))
    described = {"rel": "describedby", "type": "application/json", "href": f"{url}?format=run"}
    if run["kind"] == "kde":
        tif = str(request.url_for("get_run_kde", run_id=run["id"]))
        areas = str(request.url_for("get_run_kde_areas", run_id=run["id"]))
        return [
            {"rel": "self", "type": "application/json", "href": url},
            {"rel": "enclosure", "type": "image/tiff", "href": tif, "title": "kde.tif"},
            {"rel": "alternate", "type": GEOJSON, "href": areas, "title": "hot areas"},
            described,
        ]
    if run["kind"] == "sensitivity":
        code = run["parameters"].get("code", "")
        bands = request.url_for("get_sensitivity_run", code=code, run_id=run["id"])
        return [
            {"rel": "self", "type": "application/json", "href": url},
            {"rel": "alternate", "type": "application/json", "href": str(bands),
             "title": "rank bands"},
            described,
        ]  # fmt: skip
    return [
        {"rel": "self", "type": GEOJSON, "href": url},
        {"rel": "alternate", "type": "text/csv", "href": f"{url}?format=csv"},
        described,
    ]


async def _run_public(request: Request, conn, run_id: int) -> AnalysisRunPublic:
    row = (await conn.execute(sql.select_run(run_id))).mappings().first()
    if row is None:
        raise NotFound(f"no analysis run {run_id}")
    return AnalysisRunPublic(**row, links=_links(request, row))


async def start_run(request: Request, engine, settings, *args) -> Response:
    """``launch_run``, answered with the run: 201 when done, 202 while it goes on."""
    run_id, done = await jobs.launch_run(request.app.state.queue, engine, settings, *args)
    async with engine.connect() as conn:
        run = await _run_public(request, conn, run_id)
    if run.status == "failed":
        raise jobs.AnalysisFailed(run.message or "the analysis failed", run_id=run_id)
    return Response(
        run.model_dump_json(),
        status_code=201 if done else 202,
        media_type="application/json",
        headers={"Location": run.links[0]["href"]},
    )


@router.post(
    "/hotspots",
    status_code=201,
    response_model=AnalysisRunPublic,
    summary="Hot spots: Gi* (ArcGIS Pro semantics) or Local Moran on H3, a grid or admin units",
    responses={
        202: {"description": "Still running: poll the Location"},
        422: {"description": "Invalid request, e.g. a grid beyond analysis.max_cells"},
    },
)
async def create_hotspots(
    request: Request, body: HotspotRequest, engine: EngineDep, settings: SettingsDep, who: Analyst
) -> Response:
    """Queue a hot spot run (analyst key) and answer the run: 201 when it ended within
    ``analysis.wait_s``, else 202 with its ``Location`` to poll. A grid beyond
    ``analysis.max_cells`` is a 422 before anything is stored."""
    await check_grid_size(engine, settings, body)  # 422 before anything is stored
    return await start_run(
        request, engine, settings, who.actor, "hotspots", body.method,
        body.model_dump(mode="json"), body.model_dump(mode="json", exclude_unset=True),
    )  # fmt: skip


@router.post(
    "/emerging-hotspots",
    status_code=201,
    response_model=AnalysisRunPublic,
    summary="Emerging hot spots (ArcGIS Pro categories) on a space-time cube",
    responses={
        202: {"description": "Still running: poll the Location"},
        422: {"description": "Invalid request, e.g. a grid beyond analysis.max_cells"},
    },
)
async def create_emerging_hotspots(
    request: Request, body: EmergingRequest, engine: EngineDep, settings: SettingsDep, who: Analyst
) -> Response:
    """Queue an emerging hot spot run on a space-time cube (analyst key); answered like
    ``POST /analyses/hotspots``. A cube beyond ``analysis.max_cube_bins`` is a 422."""
    cells = await check_grid_size(engine, settings, body)  # 422 before anything is stored
    if cells is not None:
        await check_cube_size(engine, settings, body, cells)
    return await start_run(
        request, engine, settings, who.actor, "emerging", "space_time_gi_star",
        body.model_dump(mode="json"), body.model_dump(mode="json", exclude_unset=True),
    )  # fmt: skip


@router.post(
    "/near-repeat",
    status_code=201,
    response_model=AnalysisRunPublic,
    summary="Near repeat: Knox test per distance x time band, with risk zones if asked",
    responses={
        202: {"description": "Still running: poll the Location"},
        422: {"description": "Invalid bands, too few incidents, or too many pairs"},
    },
)
async def create_near_repeat(
    request: Request,
    body: NearRepeatRequest,
    engine: EngineDep,
    settings: SettingsDep,
    who: Analyst,
) -> Response:
    """Queue a near-repeat run (analyst key), answered like ``POST /analyses/hotspots``.
    Its summary holds the band table (Knox ratio, observed and expected pairs, p-value
    per distance band x time band); ``GET /analyses/{id}?format=csv`` gives it as CSV.
    With ``risk_zones`` a significant result draws risk zones (layers ``risk_zones``)."""
    return await start_run(
        request, engine, settings, who.actor, "near_repeat", "knox",
        body.model_dump(mode="json"), body.model_dump(mode="json", exclude_unset=True),
    )  # fmt: skip


@router.get("", response_model=AnalysisRunList, summary="Analysis runs, newest first")
async def list_analyses(
    request: Request,
    conn: ConnDep,
    _: Analyst,
    kind: str | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> AnalysisRunList:
    """The analysis runs, newest first (analyst key), each with its status, progress and
    links; ``kind`` keeps one kind (``hotspots``, ``emerging``, ``evaluation``)."""
    rows = (await conn.execute(sql.select_runs(kind, limit, offset))).mappings().all()
    return AnalysisRunList(runs=[AnalysisRunPublic(**r, links=_links(request, r)) for r in rows])


@router.get(
    "/{run_id:int}", summary="A run's units with count, statistics and class (GeoJSON, CSV)"
)
async def get_analysis(
    request: Request,
    run_id: int,
    conn: ConnDep,
    _: Analyst,
    format: Literal["geojson", "csv", "run"] = "geojson",
) -> Response:
    """A run's units or cells with count, statistics and class as GeoJSON (or CSV; or
    ``format=run`` for the run alone), analyst key. 202 while it runs, 422 when it
    failed (with the reason), 409 when it was cancelled."""
    run = await _run_public(request, conn, run_id)
    if format == "run":
        return Response(run.model_dump_json(), media_type="application/json")
    if run.status == "running":
        return Response(run.model_dump_json(), status_code=202, media_type="application/json")
    if run.status == "failed":
        raise jobs.AnalysisFailed(run.message or "the analysis failed", run_id=run_id)
    if run.status == "cancelled":
        raise Conflict(f"analysis run {run_id} was cancelled", run_id=run_id)
    if run.kind in ("kde", "sensitivity"):  # files or bands at their own routes (links)
        if format == "csv":
            where = ", ".join(link["href"] for link in run.links[1:-1])
            raise InvalidParameter(f"a {run.kind} run has no table of cells: see {where}")
        return Response(run.model_dump_json(), media_type="application/json")
    if run.kind == "near_repeat":  # a band table, no cells (app.services.near_repeat)
        if format != "csv":
            return Response(run.model_dump_json(), media_type="application/json")
        bands = run.summary.get("bands", [])
        columns = list(bands[0]) if bands else []
        table = csv_text(columns, ([b[c] for c in columns] for b in bands))
        return download(table, CSV, f"near-repeat-{run_id}.csv")
    if format == "csv":
        result = await conn.execute(sql.select_cells_table(run_id))
        table = csv_text(list(result.keys()), result.all())
        return download(table, CSV, f"analysis-{run_id}.csv")
    features = (await conn.execute(sql.select_cells_geojson(run_id))).scalar_one()
    body = (
        f'{{"type":"FeatureCollection","run":{run.model_dump_json()},'
        f'"numberMatched":{run.summary.get("units", 0)},"features":{features}}}'
    )
    return Response(body, media_type=GEOJSON)


@router.post(
    "/{run_id:int}/cancel",
    response_model=AnalysisRunPublic,
    summary="Cancel a running run: its queued job never starts, a running one is stopped",
    responses={409: {"description": "The run has ended already"}},
)
async def cancel_analysis(
    request: Request, run_id: int, engine: EngineDep, _: Analyst
) -> AnalysisRunPublic:
    """Cancel a run still running: its job is cancelled (queued) or aborted (running), the
    run ends ``cancelled``. A run that has ended already is a 409."""
    await jobs.cancel_run(request.app.state.queue, engine, run_id)
    async with engine.connect() as conn:
        return await _run_public(request, conn, run_id)
