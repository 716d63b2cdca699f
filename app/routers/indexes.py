"""Composite indexes: versioned definitions (admins post; anyone reads them, as the public
description of what a published ranking means), the periods they can cover, results per
unit with rank and rank change (analysts: they carry raw indicator values), and Monte Carlo
rank uncertainty. Results as JSON, GeoJSON (unit geometry), CSV and XLSX (written by
:mod:`app.files.exports`)."""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

import orjson
from fastapi import APIRouter, Query, Request, Response
from sqlalchemy.ext.asyncio import AsyncEngine

from app.core.errors import NotFound
from app.deps import Admin, Analyst, ConnDep, EngineDep, SettingsDep
from app.files.exports import CSV, XLSX, about_rows, csv_text, download, xlsx_bytes
from app.schemas.analyses import AnalysisRunPublic
from app.schemas.indexes import (
    IndexDefinitionList,
    IndexDefinitionRecord,
    IndexPeriods,
    IndexResults,
    IndexSensitivity,
    SensitivityBody,
)
from app.services import indexes as service
from app.services import jobs

router = APIRouter(prefix="/indexes", tags=["indexes"])

GEOJSON = "application/geo+json"
# The definition's settings listed on the "about" sheet of a results workbook.
_METHOD_KEYS = ("unit_level", "period", "imputation", "treatment", "normalisation",
                "aggregation", "classes")  # fmt: skip

_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": {"type": "object"}},
            "application/yaml": {"schema": {"type": "string"}},
        },
    }
}


@router.post(
    "",
    response_model=IndexDefinitionRecord,
    status_code=201,
    summary="Store a new version of an index definition (JSON or YAML); admin only",
    openapi_extra=_BODY,
)
async def post_index(
    request: Request, conn: ConnDep, who: Admin, response: Response
) -> IndexDefinitionRecord:
    """Store a JSON or YAML definition as the next version of its code (422 names every
    invalid field)."""
    definition = service.parse_definition(await request.body(), request.headers.get("content-type"))
    record = await service.store_definition(conn, definition, who.actor)
    response.headers["Location"] = str(request.url_for("get_index", code=record.code))
    return record


# Definitions are public: they say what a published ranking measures and how (indicators,
# weights, method), and hold no data.
@router.get("", response_model=IndexDefinitionList, summary="Latest version of every index")
async def list_indexes(conn: ConnDep) -> IndexDefinitionList:
    """The latest version of every index definition."""
    return IndexDefinitionList(items=await service.list_definitions(conn))


@router.get("/{code}", response_model=IndexDefinitionRecord, summary="One index definition")
async def get_index(
    code: str,
    conn: ConnDep,
    version: Annotated[int | None, Query(ge=1, description="default: the latest")] = None,
) -> IndexDefinitionRecord:
    """One version of an index definition: what a published ranking measures and how."""
    return await service.get_definition(conn, code, version)


@router.get(
    "/{code}/periods",
    response_model=IndexPeriods,
    summary="The periods the index can be computed for (public), oldest first",
)
async def get_periods(code: str, conn: ConnDep, settings: SettingsDep) -> IndexPeriods:
    """The periods with incidents up to the latest complete one, oldest first."""
    record = await service.get_definition(conn, code, None)
    granularity = record.definition.get("period", "year")
    periods = await service.available_periods(conn, settings, granularity)
    return IndexPeriods(
        code=record.code,
        period=granularity,
        periods=periods,
        latest=periods[-1] if periods else None,
    )


@router.get(
    "/{code}/results",
    response_model=IndexResults,
    summary="Scores, ranks, classes and contributions per unit for one period",
    responses={200: {"content": {"text/csv": {}, GEOJSON: {}, XLSX: {}}}},
)
async def get_results(
    code: str,
    conn: ConnDep,
    settings: SettingsDep,
    who: Analyst,
    period: Annotated[str, Query(description="one period of the index's kind, e.g. 2024")],
    version: Annotated[int | None, Query(ge=1, description="default: the latest")] = None,
    format: Literal["json", "geojson", "csv", "xlsx"] = "json",
) -> Response:
    """Per unit: indicator values at each step, score, rank, class, contributions and the
    values the outlier treatment changed; the rule that applied and what each indicator
    counts (per whom, census year, smoothing)."""
    results = await service.compute_results(conn, settings, who, code, period, version)
    stem = f"{results.code}-v{results.version}-{results.period}"
    if format == "json":
        return Response(results.model_dump_json(by_alias=True), media_type="application/json")
    columns, rows = _table(results)
    if format == "csv":
        return download(csv_text(columns, rows), CSV, f"{stem}.csv")
    if format == "xlsx":
        record = await service.get_definition(conn, results.code, results.version)
        parameters = {key: record.definition.get(key) for key in _METHOD_KEYS}
        parameters["weights"] = results.weights
        about = about_rows(
            results.code,
            results.version,
            results.period,
            parameters,
            [*(f"Indicator {i.statement}" for i in results.indicators), *results.notes],
            title=results.title,
        )
        return download(xlsx_bytes(columns, rows, about), XLSX, f"{stem}.xlsx")
    geometries = await service.unit_geometries(conn, [r.unit_code for r in results.rows])
    features = [
        {
            "type": "Feature",
            "id": row[columns.index("unit_code")],
            "geometry": geometries.get(row[columns.index("unit_code")]),
            "properties": dict(zip(columns, row, strict=True)),
        }
        for row in rows
    ]
    collection = {"type": "FeatureCollection", "features": features}
    return Response(json.dumps(collection, allow_nan=False), media_type=GEOJSON)


_SENSITIVITY_RESPONSES: dict[int | str, dict[str, Any]] = {
    202: {"description": "Still computing: poll the Location"},
    422: {"description": "A bad period or runs; data the index cannot use"},
}


def _sensitivity_links(request: Request, code: str, run_id: int) -> list[dict[str, str]]:
    run = str(request.url_for("get_analysis", run_id=run_id))
    url = str(request.url_for("get_sensitivity_run", code=code, run_id=run_id))
    return [
        {"rel": "self", "type": "application/json", "href": url},
        {"rel": "describedby", "type": "application/json", "href": f"{run}?format=run"},
    ]


async def _sensitivity_answer(
    request: Request, engine: AsyncEngine, code: str, run_id: int, *, created: bool = False
) -> Response:
    """The run's bands once it ended (200, or 201 for a POST); 202 with the run and the
    ``Location`` of its bands while it runs; 422 when it failed, 409 when cancelled."""
    run = await jobs.read_run(engine, run_id, "sensitivity")
    links = _sensitivity_links(request, code, run_id)
    headers = {"Location": links[0]["href"]}
    if run["status"] == "running" or created:
        public = AnalysisRunPublic(**run, links=links)
        status = 202 if run["status"] == "running" else 201
        return Response(
            public.model_dump_json(), status_code=status, media_type="application/json",
            headers=headers,
        )  # fmt: skip
    headers = {"Link": f'<{links[1]["href"]}>; rel="describedby"'}
    return Response(
        orjson.dumps(run["summary"]["sensitivity"]), media_type="application/json", headers=headers
    )


@router.get(
    "/{code}/sensitivity",
    response_model=IndexSensitivity,
    summary="Median rank and 5-95 % rank band per unit over Monte Carlo runs",
    responses=_SENSITIVITY_RESPONSES,
)
async def get_sensitivity(
    request: Request,
    code: str,
    engine: EngineDep,
    settings: SettingsDep,
    who: Analyst,
    period: Annotated[str, Query(description="one period of the index's kind, e.g. 2024")],
    runs: Annotated[
        int | None,
        Query(ge=1, le=service.MAX_RUNS, description="default: the definition's (1,000)"),
    ] = None,
    seed: Annotated[
        int | None, Query(ge=0, description="default: the definition's (1), so bands repeat")
    ] = None,
    version: Annotated[int | None, Query(ge=1, description="default: the latest")] = None,
) -> Response:
    """Rank bands over Monte Carlo runs, and each unit's score and rank with and without
    outlier treatment; runs and seed default to the definition's, as in ``/rankings``.

    A worker computes them as a sensitivity run; this GET reuses the run with the same
    parameters on the same data when one is stored, or queues one and waits up to
    ``analysis.read_wait_s`` (30 s): the bands, or 202 with the run and the ``Location``
    of its bands to poll."""
    async with engine.connect() as conn:
        body = await service.resolve_sensitivity(
            conn, settings, code, period, runs=runs, seed=seed, version=version
        )
    run_id = await jobs.reuse_or_enqueue(
        request.app.state.queue, engine, who.actor, "sensitivity", "monte_carlo",
        body.model_dump(mode="json"),
    )  # fmt: skip
    await jobs.wait_for_run(engine, run_id, settings.analysis.read_wait_s, max_pause_s=0.25)
    return await _sensitivity_answer(request, engine, body.code, run_id)


@router.post(
    "/{code}/sensitivity",
    status_code=201,
    response_model=AnalysisRunPublic,
    summary="A sensitivity run: Monte Carlo rank bands computed by a worker, stored",
    responses=_SENSITIVITY_RESPONSES,
)
async def create_sensitivity(
    request: Request,
    code: str,
    body: SensitivityBody,
    engine: EngineDep,
    settings: SettingsDep,
    who: Analyst,
) -> Response:
    """Queue a sensitivity run (analyst key), always a new one, and answer the run: 201
    when it ended within ``analysis.wait_s``, else 202; its ``Location`` gives the
    bands (202 while it runs)."""
    async with engine.connect() as conn:
        resolved = await service.resolve_sensitivity(
            conn, settings, code, body.period, runs=body.runs, seed=body.seed,
            version=body.version,
        )  # fmt: skip
    parameters = resolved.model_dump(mode="json")
    run_id, _ = await jobs.launch_run(
        request.app.state.queue, engine, settings, who.actor, "sensitivity", "monte_carlo",
        parameters, parameters,
    )  # fmt: skip
    return await _sensitivity_answer(request, engine, resolved.code, run_id, created=True)


@router.get(
    "/{code}/sensitivity/runs/{run_id:int}",
    response_model=IndexSensitivity,
    summary="A sensitivity run's rank bands; 202 while it runs",
    responses=_SENSITIVITY_RESPONSES,
)
async def get_sensitivity_run(
    request: Request, code: str, run_id: int, engine: EngineDep, _: Analyst
) -> Response:
    """The bands a sensitivity run of index ``code`` stored (analyst key); 202 with the
    run while it runs, 422 when it failed (with the reason), 409 when cancelled."""
    run = await jobs.read_run(engine, run_id, "sensitivity")
    if run["parameters"].get("code") != code:
        raise NotFound(f"no sensitivity run {run_id} of index {code!r}")
    return await _sensitivity_answer(request, engine, code, run_id)


def _table(results: IndexResults) -> tuple[list[str], list[list[Any]]]:
    """One line per unit: identity, rank, score, class, dimensions, then per indicator its
    raw, treated and normalised value, its contribution and how the treatment changed it
    (empty when it did not). The index and version are columns so that a saved file still
    names where it came from; the outlier rule and, per indicator, what it counts per whom
    (census year, smoothing) are on every line. Every line has every column (None where a
    value is missing)."""
    first = results.rows[0] if results.rows else None
    dimensions = list(first.dimensions) if first else []
    indicators = list(first.raw) if first else []
    described = {i.code: i.statement for i in results.indicators}
    columns = ["index", "version", "period", "unit_code", "unit_name", "rank",
               "previous_rank", "rank_change", "score", "class",
               *(f"dimension_{d}" for d in dimensions),
               *(f"{step}_{i}" for i in indicators
                 for step in ("raw", "treated", "normalised", "contribution", "treatment")),
               "outlier_rule", *(f"about_{i}" for i in indicators)]  # fmt: skip
    rows = []
    for r in results.rows:
        values = [results.code, results.version, results.period, r.unit_code, r.unit_name,
                  r.rank, r.previous_rank, r.rank_change, r.score, r.map_class,
                  *(r.dimensions.get(d) for d in dimensions)]  # fmt: skip
        treated = {t.indicator: t.action for t in r.treated_values}
        for i in indicators:
            values += [r.raw.get(i), r.treated.get(i), r.normalised.get(i),
                       r.contributions.get(i), treated.get(i)]  # fmt: skip
        values += [results.treatment.rule, *(described.get(i) for i in indicators)]
        rows.append(values)
    return columns, rows
