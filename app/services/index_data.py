"""The raw indicator table of a composite index, and what each indicator counts.

Incident indicators reuse the statistics service: counts come from
:func:`app.services.stats.compute_stats` and rates from :mod:`spatial.rates`, divided by the
census population of :mod:`app.services.denominators`. Measures: ``count``; ``rate`` per
100,000; ``eb_rate`` (global Empirical Bayes: each unit's rate shrunk toward the rate of all
units together, the national rate when they cover the territory); ``share`` of all the
unit's incidents of the period; ``change`` = count minus the previous period's.

Which census: the definition's ``census_year`` when it names one (every period, every
indicator: one index never mixes censuses), else the latest census at or before the
period's year. :meth:`IndexData.describe` says, per indicator and period, what is counted,
per whom, from which census and how it is smoothed: the page and the exports show it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from sqlalchemy.ext.asyncio import AsyncConnection

from app.core.errors import InvalidParameter
from app.core.settings import Settings
from app.schemas.indexes import IndicatorDescription
from app.security import Principal
from app.services import stats
from app.services.denominators import (
    Census,
    Populations,
    Unit,
    age_group_of,
    read_populations,
    read_units,
)
from app.services.periods import Period, previous_period
from app.sql import indexes as sql
from app.sql.incidents import IncidentFilter
from indexes.spec import IncidentSource, IndexDefinition, Indicator
from spatial import rates

__all__ = ["SMOOTHING", "IndexData", "describe_indicator"]

# An en dash ("15 to 29" as 15\u201329): a spreadsheet keeps "1\u20132" as text, "1-2" as a date.
DASH = "\u2013"

# What "EB-smoothed" means here, in the words the page and the exports use.
SMOOTHING = (
    "Empirical Bayes smoothed toward the national rate (global EB, Marshall 1991: a unit with "
    "few incidents is pulled toward the rate of all units together, not toward its "
    "neighbours)"
)


@dataclass(frozen=True)
class _Denominator:
    """The population a rate of one period divided by."""

    sex: str
    age_group: str
    years: tuple[int, ...]
    sources: tuple[str, ...]


@dataclass
class IndexData:
    """Builds raw tables for one definition, caching counts across periods."""

    conn: AsyncConnection
    settings: Settings
    who: Principal
    definition: IndexDefinition
    units: list[Unit] = field(default_factory=list)
    populations: Populations = field(default_factory=lambda: Populations({}))
    counts: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    denominators: dict[tuple[str, str], _Denominator] = field(default_factory=dict)

    async def setup(self) -> None:
        """Read the units of the definition's level and their populations."""
        level = self.definition.unit_level
        self.units = await read_units(self.conn, level=level)
        if len(self.units) < 2:
            raise InvalidParameter(f"an index needs at least 2 units at level {level}")
        self.populations = await read_populations(self.conn, [u.id for u in self.units])

    @property
    def codes(self) -> list[str]:
        """The unit codes, in the order of the raw table's rows."""
        return [u.code for u in self.units]

    @property
    def names(self) -> dict[str, str]:
        """Unit code → name."""
        return {u.code: u.name for u in self.units}

    async def raw(self, period: Period) -> pd.DataFrame:
        """The raw indicator table of ``period``: one row per unit, one column per indicator."""
        columns = await self._external(period)
        for i in self.definition.indicators:
            if i.source.incidents is not None:
                columns[i.code] = await self._incident_column(i, period)
        frame = pd.DataFrame(columns, index=pd.Index(self.codes, name="unit_code"))
        return frame[self.definition.indicator_codes].astype(float)

    def describe(self, period: Period) -> list[IndicatorDescription]:
        """What each indicator counts in ``period`` (after :meth:`raw` of that period)."""
        return [
            describe_indicator(i, self.denominators.get((period.label, i.code)))
            for i in self.definition.indicators
        ]

    async def _external(self, period: Period) -> dict[str, np.ndarray]:
        external = [i for i in self.definition.indicators if i.source.external]
        if not external:
            return {}
        statement = sql.select_indicator_values(
            [i.source.external for i in external], [u.id for u in self.units], period.label
        )
        values = {(r.unit_id, r.indicator): r.value for r in (await self.conn.execute(statement))}
        return {
            i.code: np.array([values.get((u.id, i.source.external), math.nan) for u in self.units])
            for i in external
        }

    async def _incident_column(self, indicator: Indicator, period: Period) -> np.ndarray:
        source = indicator.source.incidents
        assert source is not None
        e = await self._count(period, source)
        if source.measure == "count":
            return e
        if source.measure == "change":
            previous = previous_period(period, self.settings.territory.timezone)
            return e - await self._count(previous, source)
        if source.measure == "share":
            total = await self._count(period, None)
            with np.errstate(divide="ignore", invalid="ignore"):
                return np.where(total > 0, e / total * 100, math.nan)
        b = self._denominator(source, period, indicator.code)
        return rates.crude_rate(e, b) if source.measure == "rate" else rates.empirical_bayes(e, b)

    async def _count(self, period: Period, source: IncidentSource | None) -> np.ndarray:
        key = (period.label, source.model_dump_json() if source else None)
        if key not in self.counts:
            f = IncidentFilter(
                occurred_from=period.start,
                occurred_to=period.end,
                categories=tuple(source.categories) if source else (),
                victim_sex=(source.victim_sex,) if source and source.victim_sex else (),
                age_min=source.age_min if source else None,
                age_max=source.age_max if source else None,
            )
            query = stats.StatsQuery(
                filters=f,
                level=self.definition.unit_level,
                by=("period",),
                period=self.definition.period,
                period_value=period.label,
            )
            table = await stats.compute_stats(self.conn, self.settings, query, self.who)
            found = {r.unit_code: r.count for r in table.rows}
            self.counts[key] = np.array([found.get(c, 0) for c in self.codes], dtype=float)
        return self.counts[key]

    def _denominator(self, source: IncidentSource, period: Period, code: str) -> np.ndarray:
        """The population of each unit a rate divides by; records which one it was."""
        sex = source.victim_sex or "total"
        age = (
            "total"
            if source.denominator == "all_ages"
            else age_group_of(source.age_min, source.age_max)
        )
        year = self.definition.census_year or period.year
        chosen = self._pick(sex, age, year)
        if age != "total" and any(c is None for c in chosen):
            note = (
                f"{code}: no {sex} population of age group {age} for every unit; the rate "
                f"is per 100,000 {sex} population of all ages."
            )
            if note not in self.notes:
                self.notes.append(note)
            age, chosen = "total", self._pick(sex, "total", year)
        found = [c for c in chosen if c is not None]
        self.denominators[(period.label, code)] = _Denominator(
            sex,
            age,
            tuple(sorted({c.year for c in found})),
            tuple(sorted({c.source for c in found if c.source})),
        )
        return np.array([c.value if c else math.nan for c in chosen], dtype=float)

    def _pick(self, sex: str, age_group: str, year: int) -> list[Census | None]:
        return [self.populations.pick(u.id, sex, age_group, year) for u in self.units]


def _population(sex: str, age_group: str) -> str:
    """``female``, ``15-29`` → "female residents aged 15-29" (with an en dash)."""
    who = "residents" if sex == "total" else f"{sex} residents"
    ages = "of all ages" if age_group == "total" else f"aged {age_group.replace('-', DASH)}"
    return f"{who} {ages}"


def _counted(source: IncidentSource) -> str:
    """Which incidents an indicator counts, in words ("... with a female victim aged 0-17")."""
    what = "incidents of " + ", ".join(c.replace("_", " ") for c in source.categories)
    if source.victim_sex is None and source.age_min is None and source.age_max is None:
        return what
    victim = f"a {source.victim_sex} victim" if source.victim_sex else "a victim"
    if source.age_min is not None or source.age_max is not None:
        low = source.age_min or 0
        victim += (
            f" aged {low}+" if source.age_max is None else f" aged {low}{DASH}{source.age_max}"
        )
    return f"{what} with {victim}"


def describe_indicator(
    indicator: Indicator, denominator: _Denominator | None = None
) -> IndicatorDescription:
    """What ``indicator`` counts, per whom, from which census, smoothed how."""
    name = indicator.name or indicator.code
    base = {"code": indicator.code, "name": name, "description": indicator.description}
    source = indicator.source.incidents
    if source is None:
        statement = f"{name}: the external indicator {indicator.source.external}."
        return IndicatorDescription(**base, measure="external", statement=statement)
    counted = _counted(source)
    if source.measure in ("count", "change"):
        what = (
            "count" if source.measure == "count" else "change in the count since the period before"
        )
        statement = f"{name}: {what} of {counted}; no denominator."
        return IndicatorDescription(**base, measure=source.measure, statement=statement)
    if source.measure == "share":
        per = "100 incidents of any category in the unit (%)"
        statement = f"{name}: {counted} per {per}."
        return IndicatorDescription(**base, measure="share", per=per, statement=statement)
    sex = source.victim_sex or "total"
    age = denominator.age_group if denominator else "total"
    per = f"100,000 {_population(sex, age)}"
    years = list(denominator.years) if denominator else []
    census = f" ({', '.join(map(str, years))} census)" if years else " (no census loaded)"
    smoothing = SMOOTHING if source.measure == "eb_rate" else None
    statement = f"{name}: {counted} per {per}{census}" + (f"; {smoothing}." if smoothing else ".")
    return IndicatorDescription(
        **base,
        measure=source.measure,
        per=per,
        smoothing=smoothing,
        census_years=years,
        census_sources=list(denominator.sources) if denominator else [],
        statement=statement,
    )
