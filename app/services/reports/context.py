"""What the sections share: the report's context and its statistics through ``/stats``."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from app.access import sees_published_view
from app.core.settings import Settings
from app.schemas.reports import (
    Measure,
    ReportDefinition,
)
from app.schemas.stats import StatsRow
from app.security import Principal
from app.services import lattice
from app.services import stats as stats_service
from app.services.reports.periods import ReportPeriod
from app.sql.incidents import IncidentFilter
from reports.i18n import VOCABULARY, Lang

# Who computes an analyst report's statistics, and the /rankings router's publisher.
ANALYST = Principal(role="analyst", name="report")
PUBLISHER = Principal(role="analyst", name="published ranking")
# The territory's units: the country (headline, trend, victims) and its districts.
COUNTRY_LEVEL, DISTRICT_LEVEL = 0, 1

# --- statistics through /stats -------------------------------------------------------------


@dataclass
class _Context:
    """What every section of one report shares."""

    conn: AsyncConnection
    settings: Settings
    definition: ReportDefinition
    period: ReportPeriod
    who: Principal
    vocabulary: dict[str, str]
    sensitive: frozenset[str]
    es: bool
    notes: list[str] = dataclasses.field(default_factory=list)  # methods: what was used

    @property
    def public(self) -> bool:
        return sees_published_view(self.who)

    def t(self, en: str, es: str) -> str:
        return es if self.es else en

    @property
    def lang(self) -> Lang:
        return Lang("es" if self.es else "en")

    def name(self, m: Measure) -> str:
        """A measure's name in the report's language (the catalogue's word for its code,
        else the definition's own name)."""
        return self.lang.term(m.code) if m.code in VOCABULARY else m.name

    def title(self, definition: dict, fallback: str = "") -> str:
        """A stored index or monitor definition's title in the report's language (its
        ``title_es`` in Spanish; the English ``title`` when it has none)."""
        english = definition.get("title") or fallback
        return (definition.get("title_es") or english) if self.es else english

    def words(self, codes: list[str] | tuple[str, ...]) -> str:
        """Category codes as the reader's words, e.g. ``homicidio, tiroteo``."""
        return ", ".join(self.lang.term(c).lower() for c in codes)


def _query(
    ctx: _Context,
    measure: Measure,
    *,
    level: int,
    period: ReportPeriod | None = None,
    months: tuple[datetime, datetime] | None = None,
    by: tuple[str, ...] = (),
    victim_sex: tuple[str, ...] = (),
) -> stats_service.StatsQuery:
    """The ``/stats`` query of ``measure``: one period (``period=2024-Q3``, or a range
    for a half-year) or monthly counts over ``months`` (``by=period&period=month``),
    of the victims of ``victim_sex`` (all when empty)."""
    settings = ctx.settings
    tz = settings.territory.timezone
    by = (*by, "category_group") if measure.category_group else by
    categories = tuple(measure.categories)
    granularity, period_value = "year", None
    if months is not None:
        start, end = months
        by, granularity = (*by, "period"), "month"
    elif period is not None and period.stats_label is not None:
        granularity, period_value, start, end = stats_service.parse_period(period.stats_label, tz)
        by = (*by, "period")
    else:  # a half-year: the analysts' range query (no public table covers one)
        assert period is not None
        start, end = period.start, period.end
    query = stats_service.StatsQuery(
        filters=IncidentFilter(
            occurred_from=start, occurred_to=end, categories=categories, victim_sex=victim_sex
        ),
        level=level,
        by=tuple(dict.fromkeys(by)),
        period=granularity,
        period_value=period_value,
        age_groups=stats_service.parse_age_groups(settings.privacy.age_groups),
    )
    if ctx.public:
        query = lattice.restrict(query, settings, age_groups_given=False)
    return query


async def _rows(ctx: _Context, measure: Measure, **kwargs: Any) -> list[StatsRow] | None:
    """The rows of ``measure`` (its group's only), or None when no public table holds
    the query (e.g. a period before the published window)."""
    try:
        query = _query(ctx, measure, **kwargs)
    except lattice.NotPublic:
        return None
    table = await stats_service.compute_stats(ctx.conn, ctx.settings, query, ctx.who)
    return [r for r in table.rows if _of(r, measure)]


def _of(row: StatsRow, measure: Measure) -> bool:
    return measure.category_group is None or row.category_group == measure.category_group


def _pct(now: float | None, before: float | None) -> float | None:
    if now is None or before is None or before == 0:
        return None
    return round((now - before) / before * 100, 1)


def _count(rows: list[StatsRow] | None) -> float | None:
    """The one country row's count (None: withheld or not published)."""
    if not rows:
        return None
    return None if rows[0].count is None else float(rows[0].count)


def _day(ctx: _Context, moment: str | None, until: bool = False) -> str | None:
    """An ISO timestamp of a run's filters as a date in the report's language; ``until``:
    an exclusive end, so a midnight prints as the day before (the last day included)."""
    if not moment:
        return None
    day = date.fromisoformat(moment[:10])
    if until and moment[11:19] in ("", "00:00:00"):
        day -= timedelta(days=1)
    return ctx.lang.date(day)
