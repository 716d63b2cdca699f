"""Composite indexes: versioned definitions (editors post, analysts read), results per unit
with rank and rank change, and Monte Carlo rank uncertainty. JSON and CSV."""

from __future__ import annotations

import csv
import io
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request, Response

from app.deps import Analyst, ConnDep, Editor, SettingsDep
from app.schemas.indexes import (
    IndexDefinitionList,
    IndexDefinitionRecord,
    IndexResults,
    IndexSensitivity,
)
from app.services import indexes as service

router = APIRouter(prefix="/indexes", tags=["indexes"])

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
    summary="Store a new version of an index definition (JSON or YAML)",
    openapi_extra=_BODY,
)
async def post_index(
    request: Request, conn: ConnDep, who: Editor, response: Response
) -> IndexDefinitionRecord:
    definition = service.parse_definition(await request.body(), request.headers.get("content-type"))
    record = await service.store_definition(conn, definition, who.actor)
    response.headers["Location"] = str(request.url_for("get_index", code=record.code))
    return record


@router.get("", response_model=IndexDefinitionList, summary="Latest version of every index")
async def list_indexes(conn: ConnDep, who: Analyst) -> IndexDefinitionList:
    return IndexDefinitionList(items=await service.list_definitions(conn))


@router.get("/{code}", response_model=IndexDefinitionRecord, summary="One index definition")
async def get_index(
    code: str,
    conn: ConnDep,
    who: Analyst,
    version: Annotated[int | None, Query(ge=1, description="default: the latest")] = None,
) -> IndexDefinitionRecord:
    return await service.get_definition(conn, code, version)


@router.get(
    "/{code}/results",
    response_model=IndexResults,
    summary="Scores, ranks, classes and contributions per unit for one period",
    responses={200: {"content": {"text/csv": {}}}},
)
async def get_results(
    code: str,
    conn: ConnDep,
    settings: SettingsDep,
    who: Analyst,
    period: Annotated[str, Query(description="one period of the index's kind, e.g. 2024")],
    version: Annotated[int | None, Query(ge=1, description="default: the latest")] = None,
    format: Literal["json", "csv"] = "json",
) -> Response:
    results = await service.compute_results(conn, settings, who, code, period, version)
    if format == "csv":
        filename = f"{results.code}-v{results.version}-{results.period}.csv"
        return Response(
            _csv(results),
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": f'attachment; filename="{filename}"'},
        )
    return Response(results.model_dump_json(by_alias=True), media_type="application/json")


@router.get(
    "/{code}/sensitivity",
    response_model=IndexSensitivity,
    summary="Median rank and 5-95 % rank band per unit over Monte Carlo runs",
)
async def get_sensitivity(
    code: str,
    conn: ConnDep,
    settings: SettingsDep,
    who: Analyst,
    period: Annotated[str, Query(description="one period of the index's kind, e.g. 2024")],
    runs: Annotated[int, Query(ge=1, le=service.MAX_RUNS)] = 500,
    seed: Annotated[int | None, Query(ge=0, description="default: drawn and reported")] = None,
    version: Annotated[int | None, Query(ge=1, description="default: the latest")] = None,
) -> IndexSensitivity:
    return await service.compute_sensitivity(
        conn, settings, who, code, period, runs=runs, seed=seed, version=version
    )


def _csv(results: IndexResults) -> str:
    """One line per unit: identity, rank, score, class, dimensions, then per indicator its
    raw, treated and normalised value and its contribution. The index and version are
    columns so that a saved file still names where it came from."""
    first = results.rows[0] if results.rows else None
    dimensions = list(first.dimensions) if first else []
    indicators = list(first.raw) if first else []
    columns = ["index", "version", "period", "unit_code", "unit_name", "rank",
               "previous_rank", "rank_change", "score", "class",
               *(f"dimension_{d}" for d in dimensions),
               *(f"{step}_{i}" for i in indicators
                 for step in ("raw", "treated", "normalised", "contribution"))]  # fmt: skip
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(columns)
    for r in results.rows:
        values = [results.code, results.version, results.period, r.unit_code, r.unit_name,
                  r.rank, r.previous_rank, r.rank_change, r.score, r.map_class,
                  *(r.dimensions[d] for d in dimensions)]  # fmt: skip
        for i in indicators:
            values += [r.raw[i], r.treated[i], r.normalised[i], r.contributions[i]]
        writer.writerow(["" if v is None else v for v in values])
    return out.getvalue()
