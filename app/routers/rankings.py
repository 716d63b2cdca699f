"""The planners' view of a composite index: one row per unit in rank order with score,
class, Monte Carlo rank band, the ranks it shares with units the data cannot order against
it, rank change, top contributing indicators and the values the outlier treatment changed.
JSON, CSV and XLSX, public: ranks and scores are published aggregates (the per-unit raw
indicator values stay behind ``/indexes/{code}/results``, analyst only). Below analyst, an
index with an indicator counted from sensitive categories shows no contribution value at
all, only the names of the largest released contributors
(:func:`app.services.rankings.compute_ranking`), and the rank band is the published one (the
definition's ``runs`` and ``seed``): bands over chosen seeds would be ranks under known
alternative weights, each a linear inequality on the withheld indicators. A browser asking
for HTML gets the planners' page instead (``app.routers.pages``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal

import orjson
from fastapi import APIRouter, Query, Request, Response

from app.access import sees_published_view
from app.core.cache import app_cache, once
from app.deps import EngineDep, PrincipalDep, SettingsDep
from app.files.exports import CSV, XLSX, about_rows, csv_text, download, xlsx_bytes
from app.schemas.indexes import IndexSensitivity, Ranking, RankingRow
from app.security import Principal
from app.services import indexes as index_service
from app.services import jobs
from app.services import rankings as service

router = APIRouter(prefix="/rankings", tags=["rankings"])

# Whoever asks, the ranking is computed from every count (as the map layers are, see
# app.services.catalog): suppressing small counts inside the index would change the ranks
# themselves. Only the published aggregates leave this router.
PUBLISHER = Principal(role="analyst", name="published ranking")


@router.get(
    "",
    response_model=Ranking,
    summary="Units in rank order with score, class, rank band, change and top contributors",
    responses={
        200: {"content": {"text/csv": {}, XLSX: {}}},
        202: {
            "description": "The rank bands are still being computed (a sensitivity run): "
            "ask again at the Location after Retry-After seconds"
        },
        422: {"description": "A bad period, runs or seed; data the index cannot use"},
    },
)
async def get_ranking(
    request: Request,
    engine: EngineDep,
    settings: SettingsDep,
    who: PrincipalDep,
    index: Annotated[str, Query(description="index code, e.g. territorial-violence")],
    period: Annotated[str, Query(description="one period of the index's kind, e.g. 2024")],
    version: Annotated[int | None, Query(ge=1, description="default: the latest")] = None,
    runs: Annotated[
        int | None,
        Query(
            ge=1,
            le=index_service.MAX_RUNS,
            description="Monte Carlo runs for the rank band; default: the definition's "
            "sensitivity.runs (1,000), the only value without an analyst key",
        ),
    ] = None,
    seed: Annotated[
        int | None,
        Query(
            ge=0,
            description="seed of the rank band; default: the definition's sensitivity.seed "
            "(1), fixed so the bands are stable, the only value without an analyst key",
        ),
    ] = None,
    format: Literal["json", "csv", "xlsx"] = "json",
) -> Response:
    """The ranking of an index for one period, for planners (see the module docstring).

    The index itself is computed here (a couple of index computations); its rank bands
    come from a sensitivity run a worker computes, the one ``/indexes/{code}/sensitivity``
    serves: the stored run with the same parameters on the same data, or a new one queued
    and waited for up to ``analysis.read_wait_s``. A run still going after that is a 202:
    ask again (``Location``, ``Retry-After``)."""
    # The ranking is kept per API worker and data version: the run's bands and the index
    # do not change until the data do.
    cache = app_cache(request.app.state, "rankings", maxsize=64)
    key = (
        request.app.state.data_version.value,
        index,
        period,
        version,
        runs,
        seed,
        not sees_published_view(who),
    )
    if (ranking := cache.get(key)) is None:

        async def rank() -> Ranking | Mapping[str, Any]:
            """The ranking, cached; or the run still computing its bands."""
            async with engine.connect() as conn:
                draft = await service.draft_ranking(
                    conn, settings, PUBLISHER, index, period, reader=who, runs=runs,
                    seed=seed, version=version,
                )  # fmt: skip
            run_id = await jobs.reuse_or_enqueue(
                request.app.state.queue, engine, who.actor, "sensitivity", "monte_carlo",
                draft.bands.model_dump(mode="json"),
            )  # fmt: skip
            await jobs.wait_for_run(engine, run_id, settings.analysis.read_wait_s, max_pause_s=0.25)
            try:
                run = await jobs.read_run(engine, run_id, "sensitivity")
            except jobs.AnalysisFailed as exc:
                raise draft.failure(exc.detail, run_id) from None
            if run["status"] == "running":
                return run
            done = service.finish_ranking(
                draft, IndexSensitivity.model_validate(run["summary"]["sensitivity"])
            )
            cache.set(key, done)
            return done

        # Concurrent requests of one ranking wait for one computation (issue 22).
        outcome = await once(request.app.state, "rankings", key, rank)
        if not isinstance(outcome, Ranking):
            return _computing(request, who, outcome)
        ranking = outcome
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
        {"runs": ranking.runs, "seed": ranking.seed, "treatment": ranking.treatment.rule},
        [
            *(f"Indicator {i.statement}" for i in ranking.indicators),
            ranking.contributions,
            *ranking.notes,
        ],
        title=ranking.title,
    )
    return download(xlsx_bytes(columns, rows, about), XLSX, f"{stem}.xlsx")


def _computing(request: Request, who: Principal, run: Mapping[str, Any]) -> Response:
    """The 202 of a ranking whose bands are still being computed: how far the run got,
    and this same URL to ask again (the next request finds the same run). The run itself
    (who asked for it, its id) is linked for analysts only."""
    body = {
        "status": "running",
        "progress": run["progress"],
        "detail": "The rank bands are being computed (a sensitivity run of "
        f"{run['parameters']['runs']:,} Monte Carlo runs): ask again in a moment.",
    }
    headers = {"Location": str(request.url), "Retry-After": "2"}
    if not sees_published_view(who):
        described = request.url_for("get_analysis", run_id=run["id"])
        headers["Link"] = f'<{described}?format=run>; rel="describedby"'
    return Response(
        orjson.dumps(body), status_code=202, media_type="application/json", headers=headers
    )


def _treated_text(r: RankingRow) -> str | None:
    """The treated values of a row in words ("Homicides ...: 55.3 counted as 16.9")."""
    parts = []
    for t in r.treated_values:
        how = "log-transformed" if t.action == "log" else "winsorised"
        values = (
            f"{_short(t.original)} counted as {_short(t.treated)}"
            if t.original is not None and t.treated is not None
            else "value withheld without an analyst key"
        )
        parts.append(f"{t.name}: {how}, {values}")
    return "; ".join(parts) or None


def _short(value: float) -> str:
    """One decimal, as the page shows it; three significant digits below 1."""
    return f"{value:.1f}" if abs(value) >= 1 else f"{value:.3g}"


def _table(ranking: Ranking) -> tuple[list[str], list[list[Any]]]:
    """One line per unit, the top contributors as numbered column pairs. ``ranks`` is the
    shared range ("1\u20132") where the data cannot order units; the treatment rule, the
    census of the rates and what a contribution is are on every line, so a saved file says
    them without the "about" sheet."""
    top = service.TOP_CONTRIBUTORS
    years = sorted({y for i in ranking.indicators for y in i.census_years})
    census = years[0] if len(years) == 1 else ", ".join(map(str, years)) or None
    columns = ["index", "version", "period", "ranks", "shares_ranks_with", "rank", "unit_code",
               "unit_name", "score", "class", "median_rank", "rank_q05", "rank_q95",
               "previous_rank", "rank_change",
               *(f"top{n}_{part}" for n in range(1, top + 1)
                 for part in ("indicator", "contribution")),
               "treated_values", "outlier_rule", "census_years", "contribution_means",
               "runs", "seed"]  # fmt: skip
    rows = []
    for r in ranking.rows:
        values = [ranking.index, ranking.version, ranking.period, r.ranks,
                  ", ".join(r.shares_ranks_with) or None, r.rank, r.unit_code, r.unit_name,
                  r.score, r.map_class, r.median_rank, r.rank_q05, r.rank_q95,
                  r.previous_rank, r.rank_change]  # fmt: skip
        for n in range(top):
            c = r.top_indicators[n] if n < len(r.top_indicators) else None
            values += [c.name if c else None, c.contribution if c else None]
        values += [_treated_text(r), ranking.treatment.rule,
                   census, ranking.contributions,
                   ranking.runs, ranking.seed]  # fmt: skip
        rows.append(values)
    return columns, rows
