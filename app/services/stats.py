"""Disaggregated statistics: counts from PostGIS, denominators, rates and Empirical Bayes.

read (counts by unit and breakdown, units, populations) → complete the table (every unit
x every breakdown, zeros included) → denominators → rates (``spatial.rates``) → release.
:func:`release` is the one place where what a caller may see is decided (small-count
suppression for callers below analyst, in ``app.services.disclosure``).
"""

from __future__ import annotations

import functools
import itertools
import re
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from sqlalchemy.ext.asyncio import AsyncConnection

from app.core.errors import InvalidParameter
from app.core.settings import Settings
from app.schemas.stats import (
    BREAKDOWN_COLUMNS,
    StatsFilters,
    StatsParameters,
    StatsRow,
    StatsTable,
)
from app.security import Principal
from app.services import disclosure
from app.sql import stats as sql
from app.sql.incidents import IncidentFilter
from spatial import rates

__all__ = [
    "DEFAULT_AGE_GROUPS",
    "MAX_ROWS",
    "AgeGroup",
    "StatsQuery",
    "compute_stats",
    "parse_age_groups",
    "parse_period",
    "release",
]

DEFAULT_AGE_GROUPS = "0-14,15-29,30-44,45-64,65+"
# Largest table one request may build (units x breakdown combinations).
MAX_ROWS = 250_000
# The oldest age an import accepts (app.services.incident_rows).
MAX_AGE = 120
# Boundary files rarely share vertices exactly (Belize's districts do not): units closer
# than this, in metres, are neighbours.
SNAP_M = 10.0
_AGE = re.compile(r"^(\d{1,3})(?:-(\d{1,3})|\+)$")
_PERIOD_VALUE = re.compile(r"^(\d{4})(?:-Q([1-4])|-(0[1-9]|1[0-2]))?$")
_FREQ = {"year": "Y", "quarter": "Q", "month": "M"}


@dataclass(frozen=True)
class AgeGroup:
    """Ages ``first`` to ``last`` inclusive (``last`` None: and older), named ``label``."""

    label: str
    first: int
    last: int | None


@dataclass(frozen=True)
class StatsQuery:
    """What ``GET /stats`` asks for, parsed and validated."""

    filters: IncidentFilter = field(default_factory=IncidentFilter)
    level: int | None = 1
    unit_codes: tuple[str, ...] = ()
    by: tuple[str, ...] = ()
    period: str = "year"
    period_value: str | None = None
    age_groups: tuple[AgeGroup, ...] = field(default_factory=lambda: parse_age_groups(None))


def parse_age_groups(text: str | None) -> tuple[AgeGroup, ...]:
    """``"0-14,15-29,65+"`` → age groups; they must not overlap. Raises InvalidParameter."""
    groups: list[AgeGroup] = []
    for part in (text or DEFAULT_AGE_GROUPS).split(","):
        label = re.sub(r"\s+", "", part).replace("\u2013", "-")
        if not label:
            continue
        match = _AGE.fullmatch(label)
        if match is None:
            raise InvalidParameter(
                f"age group {part.strip()!r} is not a range such as 15-29 or an open group "
                "such as 65+"
            )
        first = int(match.group(1))
        last = int(match.group(2)) if match.group(2) is not None else None
        if last is not None and last < first:
            raise InvalidParameter(f"age group {label!r} ends before it starts")
        groups.append(AgeGroup(label, first, last))
    if not groups:
        raise InvalidParameter("age_groups is empty")
    groups.sort(key=lambda g: g.first)
    for before, after in itertools.pairwise(groups):
        if before.last is None or before.last >= after.first:
            raise InvalidParameter(f"age groups {before.label} and {after.label} overlap")
    return tuple(groups)


def parse_period(
    text: str, timezone: str
) -> tuple[str, str | None, datetime | None, datetime | None]:
    """A granularity (``month``, ``quarter``, ``year``) or one period (``2024``,
    ``2024-Q1``, ``2024-03``) → (granularity, period or None, local start, local end)."""
    value = text.strip().lower()
    if value in _FREQ:
        return value, None, None, None
    match = _PERIOD_VALUE.fullmatch(value.upper())
    if match is None:
        raise InvalidParameter(
            f"period {text!r} is not month, quarter or year, nor a period such as 2024, "
            "2024-Q1 or 2024-03"
        )
    year, quarter, month = match.groups()
    granularity = "quarter" if quarter else "month" if month else "year"
    start_month = (int(quarter) - 1) * 3 + 1 if quarter else int(month) if month else 1
    start = pd.Period(year=int(year), month=start_month, freq=_FREQ[granularity])
    tz = ZoneInfo(timezone)
    begin = start.start_time.to_pydatetime().replace(tzinfo=tz)
    end = (start + 1).start_time.to_pydatetime().replace(tzinfo=tz)
    return granularity, _label(start.start_time, granularity), begin, end


def _label(moment: datetime | pd.Timestamp, granularity: str) -> str:
    if granularity == "year":
        return f"{moment.year}"
    if granularity == "quarter":
        return f"{moment.year}-Q{(moment.month - 1) // 3 + 1}"
    return f"{moment.year}-{moment.month:02d}"


async def compute_stats(
    conn: AsyncConnection, settings: Settings, query: StatsQuery, who: Principal
) -> StatsTable:
    """Counts, denominators and rates per unit x breakdown, released for ``who``."""
    tz = settings.territory.timezone
    by = tuple(b for b in BREAKDOWN_COLUMNS if b in query.by)
    units = await _units(conn, query)
    vocabulary = dict((await conn.execute(sql.select_categories())).all())
    sensitive = frozenset((await conn.execute(sql.select_sensitive_categories())).scalars())
    if unknown := sorted(set(query.filters.categories) - set(vocabulary)):
        raise InvalidParameter(f"unknown category code(s): {', '.join(unknown)}")
    unit_ids = [u.id for u in units]
    # Public tables publish perturbed counts (app.services.disclosure), whose noise
    # follows from the record keys of each cell's incidents.
    public = not who.has("analyst")
    seed = (await conn.execute(sql.select_cell_key_seed())).scalar_one() if public else None
    counted = (
        await conn.execute(
            sql.count_incidents(
                query.filters,
                unit_ids,
                by=by,
                period=query.period,
                timezone=tz,
                age_groups=[(g.label, g.first, g.last) for g in query.age_groups],
                key_seed=seed,
            )
        )
    ).all()
    counts: dict[tuple, int] = defaultdict(int)
    key_sums: dict[tuple, int] = defaultdict(int)
    first_at = min((r.first_at for r in counted), default=None)
    last_at = max((r.last_at for r in counted), default=None)
    for r in counted:
        key = tuple(_label(r.period, query.period) if b == "period" else r._mapping[b] for b in by)
        counts[(r.unit_id, *key)] += r.count
        if public:
            key_sums[(r.unit_id, *key)] += int(r.key_sum)

    notes: list[str] = []
    combos = _combinations(query, by, vocabulary, counts, first_at, last_at, tz)
    if len(units) * len(combos) > MAX_ROWS:
        raise InvalidParameter(
            f"{len(units):,} units x {len(combos):,} breakdown combinations is more than "
            f"{MAX_ROWS:,} rows: use fewer breakdowns, a coarser period or a shorter range"
        )
    reference_year = None
    if "period" not in by:
        reference_year = _reference_year(query.filters, first_at, last_at, tz)
        notes.append(
            f"Counts cover the whole filtered range; denominators are for {reference_year} "
            "(the middle of the range) and rates are not annualised."
        )
    else:
        notes.append(
            f"Counts and rates are per {query.period}"
            + ("." if query.period == "year" else "; rates are not annualised.")
        )

    populations = await _populations(conn, unit_ids)
    rows = []
    for combo in combos:
        values = dict(zip(by, combo, strict=True))
        year = int(values["period"][:4]) if "period" in values else reference_year
        sex = _population_sex(
            values.get("victim_sex"), query.filters.victim_sex, "victim_sex" in by
        )
        age = _population_age(values.get("age_group"), query.filters, "age_group" in by)
        for unit in units:
            chosen = (
                _choose(populations.get((unit.id, sex, age), ()), year) if sex and age else None
            )
            count = counts.get((unit.id, *combo), 0)
            rows.append(
                {
                    "unit_code": unit.code,
                    "unit_name": unit.name,
                    "unit_level": unit.level,
                    **values,
                    # Rates follow from the published count, so they give nothing more.
                    "count": (
                        disclosure.perturb(
                            count, key_sums.get((unit.id, *combo), 0), settings.privacy.min_count
                        )
                        if public
                        else count
                    ),
                    "_count": count,
                    "population": chosen[1] if chosen else None,
                    "population_year": chosen[0] if chosen else None,
                    "population_sex": sex if chosen else None,
                    "population_age_group": age if chosen else None,
                    "population_source": chosen[2] if chosen else None,
                    "_year": year,
                }
            )

    weights = _weights(units, settings.territory.projected_crs)
    clamped = _add_rates(rows, len(units), weights)
    # A stratum is one combination of breakdowns: len(units) consecutive rows.
    strata = [i // len(units) for i in range(len(rows))]
    years = [row.pop("_year") for row in rows]
    true_counts = [row.pop("_count") for row in rows]
    # By unit, then the breakdowns in their order (a stable sort).
    order = sorted(range(len(rows)), key=lambda i: rows[i]["unit_code"])

    f = query.filters
    parameters = StatsParameters(
        level=None if query.unit_codes else units[0].level,
        units=[u.code for u in units],
        by=list(by),
        period=query.period,
        period_value=query.period_value,
        timezone=tz,
        age_groups=[g.label for g in query.age_groups],
        filters=StatsFilters(
            categories=list(f.categories),
            occurred_from=f.occurred_from,
            occurred_to=f.occurred_to,
            victim_sex=list(f.victim_sex),
            age_min=f.age_min,
            age_max=f.age_max,
            sources=list(f.sources),
        ),
        per=rates.PER,
        unstable_below=rates.UNSTABLE_BELOW,
        weights={
            "type": "queen",
            "snap_m": SNAP_M,
            "islands": [units[i].code for i in weights.islands] if weights else [],
        },
        sensitive_categories=sorted(sensitive),
    )
    table = StatsTable(rows=[StatsRow(**rows[i]) for i in order], parameters=parameters, notes=[])
    released = release(
        table,
        who,
        [true_counts[i] for i in order],
        vocabulary=vocabulary,
        sensitive=sensitive,
        threshold=settings.privacy.min_count,
    )
    # Notes are written from what the caller sees: one about the rates of a breakdown
    # whose counts are withheld would tell something of those counts.
    hidden = {strata[i] for i, row in zip(order, released.rows, strict=True) if row.suppressed}
    shown_clamped = sum(flag for stratum, flag in enumerate(clamped) if stratum not in hidden)
    notes += _notes(rows, years, shown_clamped, len(combos) - len(hidden), weights)
    return released.model_copy(update={"notes": [*notes, *released.notes]})


def release(
    table: StatsTable,
    who: Principal,
    true_counts: Sequence[int],
    *,
    vocabulary: Mapping[str, str],
    sensitive: frozenset[str],
    threshold: int = disclosure.THRESHOLD,
) -> StatsTable:
    """What ``who`` may see of the table: the one place for disclosure control.

    Analysts and above see every cell. Everyone else (no key, viewer) gets the table with
    perturbed counts (made in :func:`compute_stats`), and small counts, sensitive
    categories and their complements withheld (:func:`app.services.disclosure.suppress`,
    decided on ``true_counts``), so that JSON and CSV get it alike.
    """
    if who.has("analyst"):
        return table
    return disclosure.suppress(table, vocabulary, sensitive, true_counts, threshold)


# --- reading -----------------------------------------------------------------------


@dataclass(frozen=True)
class _Unit:
    id: int
    code: str
    name: str
    level: int
    geometry: shapely.Geometry


async def _units(conn: AsyncConnection, query: StatsQuery) -> list[_Unit]:
    codes = query.unit_codes
    rows = (await conn.execute(sql.select_units(level=query.level, codes=codes))).all()
    if codes:
        found = {r.code for r in rows}
        if missing := [c for c in codes if c not in found]:
            raise InvalidParameter(f"unknown unit code(s): {', '.join(missing)}")
    elif not rows:
        raise InvalidParameter(f"no units are loaded at level {query.level}")
    return [_Unit(r.id, r.code, r.name, r.level, shapely.from_wkb(bytes(r.wkb))) for r in rows]


async def _populations(
    conn: AsyncConnection, unit_ids: Sequence[int]
) -> dict[tuple[int, str, str], list[tuple[int, float, str]]]:
    """(unit, sex, age group) → [(year, value, source)] by year."""
    out: dict[tuple[int, str, str], list[tuple[int, float, str]]] = defaultdict(list)
    for r in (await conn.execute(sql.select_population(unit_ids))).all():
        out[(r.unit_id, r.sex, r.age_group)].append((r.year, r.value, r.source))
    for entries in out.values():
        entries.sort()
    return out


# --- completing the table ----------------------------------------------------------


def _combinations(
    query: StatsQuery,
    by: tuple[str, ...],
    vocabulary: dict[str, str],
    counts: dict[tuple, int],
    first_at: datetime | None,
    last_at: datetime | None,
    tz: str,
) -> list[tuple]:
    """Every combination of breakdown values, so that units without incidents show 0."""
    f = query.filters
    observed = {key[1:] for key in counts}
    dims: list[list[tuple]] = []
    index = {b: i for i, b in enumerate(by)}
    # Rows come from the request and the vocabulary, never from the data: a row that
    # appeared only where an incident matched would tell that one exists.
    if "category" in index:
        codes = sorted(f.categories or vocabulary)
        dims.append([(c, vocabulary[c]) if "category_group" in index else (c,) for c in codes])
    elif "category_group" in index:
        groups = {vocabulary[c] for c in f.categories} or set(vocabulary.values())
        dims.append([(g,) for g in sorted(groups)])
    if "period" in index:
        dims.append(
            [(p,) for p in _periods(query, observed, index["period"], first_at, last_at, tz)]
        )
    if "victim_sex" in index:
        dims.append(
            [(s,) for s in ("female", "male", "unknown") if not f.victim_sex or s in f.victim_sex]
        )
    if "age_group" in index:
        labels = [
            g.label
            for g in query.age_groups
            if (f.age_max is None or g.first <= f.age_max)
            and (f.age_min is None or g.last is None or g.last >= f.age_min)
        ]
        if _uncovered_ages(query.age_groups, f.age_min, f.age_max):
            labels.append(sql.OTHER_AGE)
        if f.age_min is None and f.age_max is None:  # an age filter leaves unknown ages out
            labels.append(sql.UNKNOWN)
        dims.append([(a,) for a in labels])
    return [tuple(itertools.chain.from_iterable(parts)) for parts in itertools.product(*dims)]


def _uncovered_ages(groups: Sequence[AgeGroup], age_min: int | None, age_max: int | None) -> bool:
    """Whether an age the filter admits falls in no group (the ``other`` row)."""
    admitted = range(age_min or 0, (MAX_AGE if age_max is None else age_max) + 1)
    return any(
        not any(g.first <= age and (g.last is None or age <= g.last) for g in groups)
        for age in admitted
    )


def _periods(
    query: StatsQuery,
    observed: set[tuple],
    position: int,
    first_at: datetime | None,
    last_at: datetime | None,
    tz: str,
) -> list[str]:
    """The periods from the start of the range (or first incident) to its end (or last)."""
    if query.period_value is not None:
        return [query.period_value]
    f = query.filters
    start = _local(f.occurred_from, tz) if f.occurred_from else first_at
    end = _local(f.occurred_to - timedelta(microseconds=1), tz) if f.occurred_to else last_at
    if start is None or end is None or start > end:
        return sorted({k[position] for k in observed})
    freq = _FREQ[query.period]
    span = pd.period_range(pd.Timestamp(start), pd.Timestamp(end), freq=freq)
    if len(span) > MAX_ROWS:
        raise InvalidParameter(f"{len(span):,} {query.period}s is too long a range")
    return [_label(p.start_time, query.period) for p in span]


def _local(moment: datetime, tz: str) -> datetime:
    """A filter bound as naive local time (naive bounds are read as UTC by PostgreSQL)."""
    aware = moment if moment.tzinfo else moment.replace(tzinfo=ZoneInfo("UTC"))
    return aware.astimezone(ZoneInfo(tz)).replace(tzinfo=None)


def _reference_year(
    f: IncidentFilter, first_at: datetime | None, last_at: datetime | None, tz: str
) -> int:
    start = _local(f.occurred_from, tz) if f.occurred_from else first_at
    end = _local(f.occurred_to, tz) if f.occurred_to else last_at
    if start is None and end is None:
        return datetime.now(ZoneInfo(tz)).year
    start, end = start or end, end or start
    return (start + (end - start) / 2).year


# --- denominators ------------------------------------------------------------------


def _population_sex(row_sex: str | None, filter_sexes: Iterable[str], by_sex: bool) -> str | None:
    """The population sex for a row: the victims' sex when known, else total."""
    if by_sex:
        return row_sex if row_sex in ("female", "male") else None
    wanted = set(filter_sexes)
    if wanted == {"unknown"}:
        return None
    known = wanted - {"unknown"}
    return known.pop() if len(known) == 1 else "total"


def _population_age(row_age: str | None, f: IncidentFilter, by_age: bool) -> str | None:
    """The population age group for a row: the age bucket, the filter's range, or total."""
    if by_age:
        return row_age if row_age not in (sql.OTHER_AGE, sql.UNKNOWN) else None
    if f.age_min is None and f.age_max is None:
        return "total"
    first = f.age_min or 0
    return f"{first}+" if f.age_max is None else f"{first}-{f.age_max}"


def _choose(entries: Sequence[tuple[int, float, str]], year: int) -> tuple[int, float, str] | None:
    """The latest population at or before ``year``, else the earliest after it."""
    if not entries:
        return None
    before = [e for e in entries if e[0] <= year]
    return before[-1] if before else entries[0]


# --- rates -------------------------------------------------------------------------


@dataclass(frozen=True)
class _Weights:
    w: Any
    islands: list[int] = field(default_factory=list)


def _weights(units: list[_Unit], crs: str) -> _Weights | None:
    """Queen contiguity of the units, with a snap of :data:`SNAP_M` metres."""
    if len(units) < 2:
        return None
    return _contiguity(tuple(u.code for u in units), tuple(u.geometry for u in units), crs)


# Built from the polygons (50-100 ms for the districts), the same for every request on the
# same units: kept per worker, keyed by the geometries themselves, so new boundaries miss.
@functools.lru_cache(maxsize=32)
def _contiguity(codes: tuple[str, ...], geometries: tuple, crs: str) -> _Weights:
    from libpysal.weights import fuzzy_contiguity

    from spatial.weights import from_neighbours

    frame = gpd.GeoDataFrame(geometry=list(geometries), crs=4326).to_crs(crs)
    linked = fuzzy_contiguity(
        frame, buffering=True, buffer=SNAP_M, drop=False, silence_warnings=True
    )
    neighbours = [sorted(linked.neighbors[i]) for i in range(len(codes))]
    built = from_neighbours(neighbours, list(codes), kind="queen", parameters={"snap_m": SNAP_M})
    return _Weights(built.w, [i for i, nb in enumerate(neighbours) if not nb])


def _add_rates(rows: list[dict], n_units: int, weights: _Weights | None) -> list[bool]:
    """Add rate, EB rates, RSE and the unstable flag to rows (a stratum = ``n_units``
    consecutive rows, one per unit). Returns, per stratum, whether its between-area
    variance was clamped to 0."""
    clamped = []
    for start in range(0, len(rows), n_units):
        stratum = rows[start : start + n_units]
        e = np.array([r["count"] for r in stratum], dtype=float)
        b = np.array([np.nan if r["population"] is None else r["population"] for r in stratum])
        crude = rates.crude_rate(e, b)
        eb_global = rates.empirical_bayes(e, b)
        eb_spatial = (
            rates.empirical_bayes(e, b, w=weights.w) if weights is not None else crude.copy()
        )
        variance = rates.between_area_variance(e, b)
        clamped.append(bool(np.isfinite(variance) and variance < 0))
        rse = rates.poisson_rse(e)
        for i, r in enumerate(stratum):
            r["rate"] = _number(crude[i])
            r["rate_eb_global"] = _number(eb_global[i])
            r["rate_eb_spatial"] = _number(eb_spatial[i])
            r["rse"] = _number(rse[i])
            r["unstable"] = bool(e[i] < rates.UNSTABLE_BELOW)
    return clamped


def _number(value: float) -> float | None:
    return float(value) if np.isfinite(value) else None


def _notes(
    rows: list[dict], years: list[int], clamped: int, strata: int, weights: _Weights | None
) -> list[str]:
    notes = [
        "Counts are incidents (not victims). Rates are per 100,000 population of the "
        "matching sex and age group; rse = 1/sqrt(count) (Poisson); unstable = fewer than "
        f"{rates.UNSTABLE_BELOW} incidents.",
        "rate_eb_global shrinks each rate toward the overall rate of its breakdown "
        "(Marshall 1991 global Empirical Bayes); rate_eb_spatial toward the rate of the "
        f"unit and its queen-contiguous neighbours (snap {SNAP_M:g} m). A negative "
        "between-area variance is set to 0, which gives every unit the reference rate.",
    ]
    if clamped:
        notes.append(
            f"In {clamped} of {strata} breakdown(s) the rates vary less than chance alone "
            "would make them: the global between-area variance was negative and was set to "
            "0, so rate_eb_global equals the overall rate there."
        )
    used: dict[tuple, int] = defaultdict(int)
    off_year = missing = 0
    for r, year in zip(rows, years, strict=True):
        if r["population"] is None:
            missing += 1
            continue
        used[(r["population_year"], r["population_sex"], r["population_age_group"],
              r["population_source"])] += 1  # fmt: skip
        off_year += r["population_year"] != year
    for (year, sex, age, source), n in sorted(used.items(), key=lambda kv: str(kv[0])):
        notes.append(
            f"Population {year}, sex {sex}, age group {age} ({source or 'no source given'}): "
            f"{n} row(s)."
        )
    if off_year:
        notes.append(
            f"{off_year} row(s) use a population of another year than their period (the "
            "latest year before it, else the nearest after it): see population_year."
        )
    if missing:
        notes.append(
            f"{missing} row(s) have no population of the matching unit, sex and age group "
            "(or the victims' sex or age is unknown): their rates are null."
        )
    if weights is not None and weights.islands:
        notes.append(
            f"{len(weights.islands)} unit(s) have no neighbour: their spatial EB rate is "
            "their own rate."
        )
    elif weights is None:
        notes.append("A single unit has no neighbours: rate_eb_spatial is its own rate.")
    return notes
