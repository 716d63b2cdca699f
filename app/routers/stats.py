"""Disaggregated statistics: counts and rates per 100,000 by unit and category, period,
victim sex and age group, with Empirical Bayes rates. JSON and CSV (written by
:mod:`app.files.exports`). Public, with small
counts and sensitive categories withheld below the analyst role (``release``)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request, Response

from app.access import sees_published_view
from app.core.cache import app_cache, once
from app.core.errors import InvalidParameter
from app.deps import ConnDep, PrincipalDep, SettingsDep
from app.files.exports import CSV, csv_text
from app.params import local_time, split_list
from app.schemas.stats import (
    BREAKDOWN_COLUMNS,
    UNIT_COLUMNS,
    VALUE_COLUMNS,
    StatsTable,
)
from app.services import lattice
from app.services import stats as service
from app.sql.incidents import IncidentFilter

router = APIRouter(prefix="/stats", tags=["stats"])

SEXES = ("female", "male", "unknown")
# Shorter names a planner may type for a breakdown.
BY_ALIASES = {"sex": "victim_sex", "age": "age_group", "group": "category_group"}


@router.get(
    "",
    response_model=StatsTable,
    summary="Counts and rates per 100,000 by unit x category x period x victim sex x age group",
    responses={200: {"content": {"text/csv": {}}}},
)
async def get_stats(
    request: Request,
    conn: ConnDep,
    settings: SettingsDep,
    who: PrincipalDep,
    level: Annotated[
        int | None, Query(ge=0, description="unit level (default 1, districts)")
    ] = None,
    unit: Annotated[
        list[str] | None, Query(description="unit codes, any level, instead of a level")
    ] = None,
    by: Annotated[
        list[str] | None,
        Query(description="category, category_group, period, victim_sex, age_group"),
    ] = None,
    group: Annotated[list[str] | None, Query(description="alias of `by`")] = None,
    period: Annotated[
        str,
        Query(
            description="month, quarter or year; or one period (2024, 2024-Q1, 2024-03), "
            "which restricts the range and breaks down by it"
        ),
    ] = "year",
    category: Annotated[list[str] | None, Query(description="codes, comma-separated")] = None,
    occurred_from: Annotated[
        datetime | None,
        Query(description="inclusive; local time if no zone; public: a period's first day"),
    ] = None,
    occurred_to: Annotated[
        datetime | None,
        Query(description="exclusive; local time if no zone; public: a period's first day"),
    ] = None,
    victim_sex: Annotated[list[str] | None, Query(description="female, male, unknown")] = None,
    age_min: Annotated[int | None, Query(ge=0, le=120)] = None,
    age_max: Annotated[int | None, Query(ge=0, le=120)] = None,
    source: Annotated[list[str] | None, Query(description="reporting agencies")] = None,
    age_groups: Annotated[
        str | None,
        Query(
            description="age groups for `by=age_group`, e.g. 0-14,15-29,65+ (default: the "
            "declared ones, `privacy.age_groups`; others need an analyst key)"
        ),
    ] = None,
    format: Literal["json", "csv"] = "json",
) -> Response:
    """Public. Without an analyst key, only the tables of a fixed lattice answer
    (units, one category or group, one sex, declared age groups, whole months, quarters
    or years inside the published window; anything else is a 400 that says what may be
    asked), counts are perturbed (cell key method), and counts below `privacy.min_count`
    (default 5), sensitive categories and the cells that would let them be recomputed
    from a total are withheld (null, `suppressed: true`)."""
    # Dashboards ask for the same tables again and again: the answer is kept per worker
    # until the data change (public counts are perturbed deterministically, so the same).
    cache = app_cache(request.app.state, "stats")
    public = sees_published_view(who)
    key = (
        request.app.state.data_version.value,
        tuple(sorted(request.query_params.multi_items())),
        public,
        # The published window moves on at the start of every month.
        lattice.published_window(settings, "month") if public else None,
    )
    if (answer := cache.get(key)) is not None:
        return Response(answer[0], media_type=answer[1], headers=answer[2])
    units = split_list(unit)
    if units and level is not None:
        raise InvalidParameter("give either level or unit, not both")
    breakdowns = [
        BY_ALIASES.get(b.lower(), b.lower()) for b in (*split_list(by), *split_list(group))
    ]
    if bad := [b for b in breakdowns if b not in BREAKDOWN_COLUMNS]:
        raise InvalidParameter(
            f"unknown breakdown(s) {', '.join(bad)}: use {', '.join(BREAKDOWN_COLUMNS)}"
        )
    sexes = tuple(s.lower() for s in split_list(victim_sex))
    if bad := [s for s in sexes if s not in SEXES]:
        raise InvalidParameter(f"victim_sex must be female, male or unknown (got {', '.join(bad)})")
    if age_min is not None and age_max is not None and age_min > age_max:
        raise InvalidParameter("age_min must not exceed age_max")
    # Times without a zone are local, as in imported files.
    tz = settings.territory.timezone
    occurred_from, occurred_to = (local_time(m, tz) for m in (occurred_from, occurred_to))
    granularity, period_value, start, end = service.parse_period(
        period, settings.territory.timezone
    )
    if period_value is not None:
        breakdowns.append("period")
        occurred_from = max(d for d in (occurred_from, start) if d is not None)
        occurred_to = min(d for d in (occurred_to, end) if d is not None)
    query = service.StatsQuery(
        filters=IncidentFilter(
            occurred_from=occurred_from,
            occurred_to=occurred_to,
            categories=tuple(c.lower() for c in split_list(category)),
            victim_sex=sexes,
            age_min=age_min,
            age_max=age_max,
            sources=split_list(source),
        ),
        level=None if units else (1 if level is None else level),
        unit_codes=units,
        by=tuple(dict.fromkeys(breakdowns)),
        period=granularity,
        period_value=period_value,
        age_groups=service.parse_age_groups(age_groups or settings.privacy.age_groups),
    )
    if public:
        query = lattice.restrict(query, settings, age_groups_given=age_groups is not None)

    async def compute() -> tuple[str, str, dict[str, str]]:
        table = await service.compute_stats(conn, settings, query, who)
        if format == "csv":
            headers = {"Content-Disposition": 'attachment; filename="stats.csv"'}
            answer = (_csv(table), CSV, headers)
        else:
            answer = (_json(table), "application/json", {})
        cache.set(key, answer)
        return answer

    # A dashboard's requests of one table after a data change wait for one computation.
    answer = await once(request.app.state, "stats", key, compute)
    return Response(answer[0], media_type=answer[1], headers=answer[2])


def _columns(table: StatsTable) -> list[str]:
    by = table.parameters.by
    return [*UNIT_COLUMNS, *(b for b in BREAKDOWN_COLUMNS if b in by), *VALUE_COLUMNS]


def _json(table: StatsTable) -> str:
    """The table with only the requested breakdown columns in each row."""
    unused = {b for b in BREAKDOWN_COLUMNS if b not in table.parameters.by}
    return table.model_dump_json(exclude={"rows": {"__all__": unused}})


def _csv(table: StatsTable) -> str:
    """The requested columns only; null as an empty cell, booleans as true/false."""
    columns = _columns(table)
    rows = []
    for row in table.rows:
        values = row.model_dump(include=set(columns))
        rows.append([values.get(c) for c in columns])
    return csv_text(columns, rows)
