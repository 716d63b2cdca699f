"""The planners' view of a composite index: one row per unit in rank order with score,
class, Monte Carlo rank band, rank change and top contributing indicators. JSON, CSV and
XLSX, public: ranks and scores are published aggregates (the per-unit raw indicator values
stay behind ``/indexes/{code}/results``, analyst only). Below analyst, an index with an
indicator counted from sensitive categories shows no contribution value at all, only the
names of the largest released contributors (:func:`app.services.indexes.compute_ranking`),
and the rank band is the published one (``runs`` and ``seed`` fixed): bands over chosen
seeds would be ranks under known alternative weights, each a linear inequality on the
withheld indicators. A browser asking for HTML gets the planners' page instead
(``app.routers.pages``)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request, Response

from app.core.cache import app_cache
from app.core.errors import InvalidParameter
from app.deps import ConnDep, PrincipalDep, SettingsDep
from app.files.exports import CSV, XLSX, about_rows, csv_text, download, xlsx_bytes
from app.schemas.indexes import Ranking
from app.security import Principal
from app.services import indexes as service

router = APIRouter(prefix="/rankings", tags=["rankings"])

# Whoever asks, the ranking is computed from every count (as the map layers are, see
# app.services.catalog): suppressing small counts inside the index would change the ranks
# themselves. Only the published aggregates leave this router.
PUBLISHER = Principal(role="analyst", name="published ranking")


@router.get(
    "",
    response_model=Ranking,
    summary="Units in rank order with score, class, rank band, change and top contributors",
    responses={200: {"content": {"text/csv": {}, XLSX: {}}}},
)
async def get_ranking(
    request: Request,
    conn: ConnDep,
    settings: SettingsDep,
    who: PrincipalDep,
    index: Annotated[str, Query(description="index code, e.g. territorial-violence")],
    period: Annotated[str, Query(description="one period of the index's kind, e.g. 2024")],
    version: Annotated[int | None, Query(ge=1, description="default: the latest")] = None,
    runs: Annotated[
        int,
        Query(
            ge=1,
            le=service.MAX_RUNS,
            description="Monte Carlo runs for the rank band (analyst role; others get "
            f"{service.RANKING_RUNS})",
        ),
    ] = service.RANKING_RUNS,
    seed: Annotated[
        int,
        Query(
            ge=0,
            description="fixed by default so the bands are stable (analyst role; others get "
            f"{service.RANKING_SEED})",
        ),
    ] = service.RANKING_SEED,
    format: Literal["json", "csv", "xlsx"] = "json",
) -> Response:
    if not who.has("analyst") and (runs, seed) != (service.RANKING_RUNS, service.RANKING_SEED):
        # A band over one run of a chosen seed is the rank under weights anyone can redraw:
        # enough seeds would pin indicators whose contributions are withheld.
        raise InvalidParameter(
            f"without an analyst key the rank band is the published one: runs="
            f"{service.RANKING_RUNS} and seed={service.RANKING_SEED} (leave them out)"
        )
    # Deterministic for its parameters (the seed is fixed) until the data changes: kept
    # per worker and data version, since the Monte Carlo band costs about half a second.
    cache = app_cache(request.app.state, "rankings", maxsize=64)
    key = (
        request.app.state.data_version.value,
        index,
        period,
        version,
        runs,
        seed,
        who.has("analyst"),
    )
    if (ranking := cache.get(key)) is None:
        ranking = await service.compute_ranking(
            conn,
            settings,
            PUBLISHER,
            index,
            period,
            reader=who,
            runs=runs,
            seed=seed,
            version=version,
        )
        cache.set(key, ranking)
    if format == "json":
        return Response(ranking.model_dump_json(by_alias=True), media_type="application/json")
    columns, rows = _table(ranking)
    stem = f"ranking-{ranking.index}-v{ranking.version}-{ranking.period}"
    if format == "csv":
        return download(csv_text(columns, rows), CSV, f"{stem}.csv")
    about = about_rows(
        ranking.index,
        ranking.version,
        ranking.period,
        {"runs": ranking.runs, "seed": ranking.seed},
        ranking.notes,
        title=ranking.title,
    )
    return download(xlsx_bytes(columns, rows, about), XLSX, f"{stem}.xlsx")


def _table(ranking: Ranking) -> tuple[list[str], list[list[Any]]]:
    """One line per unit, the top contributors as numbered column pairs."""
    top = service.TOP_CONTRIBUTORS
    columns = ["index", "version", "period", "rank", "unit_code", "unit_name", "score", "class",
               "median_rank", "rank_q05", "rank_q95", "previous_rank", "rank_change",
               *(f"top{n}_{part}" for n in range(1, top + 1)
                 for part in ("indicator", "contribution"))]  # fmt: skip
    rows = []
    for r in ranking.rows:
        values = [ranking.index, ranking.version, ranking.period, r.rank, r.unit_code,
                  r.unit_name, r.score, r.map_class, r.median_rank, r.rank_q05, r.rank_q95,
                  r.previous_rank, r.rank_change]  # fmt: skip
        for n in range(top):
            c = r.top_indicators[n] if n < len(r.top_indicators) else None
            values += [c.name if c else None, c.contribution if c else None]
        rows.append(values)
    return columns, rows
