"""Disaggregated statistics: counts from PostGIS, denominators, rates and Empirical Bayes.

read (units, vocabulary) → count (by unit and breakdown) → complete the table (every unit
x every breakdown, zeros included) → denominators (:mod:`app.services.denominators`) →
rates (``spatial.rates``) → release. :func:`release` is the one place where what a caller
may see is decided (small-count suppression for callers below analyst, in
``app.services.disclosure``). Periods are cut in the territory's local time
(:mod:`app.services.periods`).
"""

from __future__ import annotations

import functools
import itertools
import re
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import geopandas as gpd
import numpy as np
from sqlalchemy.ext.asyncio import AsyncConnection

from app.access import sees_published_view
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
from app.services.denominators import (
    Populations,
    Unit,
    population_age,
    population_sex,
    read_populations,
    read_units,
)
from app.services.periods import (
    local_naive,
    middle_year,
    parse_period,
    period_label,
    period_labels,
)
from app.sql import stats as sql
from app.sql.incidents import IncidentFilter
from spatial import rates
from spatial.weights import SpatialWeights, contiguity

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
# The victim_sex values a table breaks down by.
VICTIM_SEXES = ("female", "male", "unknown")
# Largest table one request may build (units x breakdown combinations).
MAX_ROWS = 250_000
# The oldest age an import accepts (app.services.incident_rows).
MAX_AGE = 120
# Boundary files rarely share vertices exactly (Belize's districts do not): units closer
# than this, in metres, are neighbours.
SNAP_M = 10.0
_AGE = re.compile(r"^(\d{1,3})(?:-(\d{1,3})|\+)$")


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


async def compute_stats(
    conn: AsyncConnection, settings: Settings, query: StatsQuery, who: Principal
) -> StatsTable:
    """Counts, denominators and rates per unit x breakdown, released for ``who``."""
    tz = settings.territory.timezone
    by = tuple(b for b in BREAKDOWN_COLUMNS if b in query.by)
    units = await _read_units(conn, query)
    vocabulary, sensitive = await _read_vocabulary(conn, query)
    # Public tables publish perturbed counts (app.services.disclosure), whose noise
    # follows from the record keys of each cell's incidents.
    public = sees_published_view(who)
    counted = await _count(conn, query, by, units, tz, public=public)
    combos = _combinations(query, by, vocabulary, counted, tz)
    if len(units) * len(combos) > MAX_ROWS:
        raise InvalidParameter(
            f"{len(units):,} units x {len(combos):,} breakdown combinations is more than "
            f"{MAX_ROWS:,} rows: use fewer breakdowns, a coarser period or a shorter range"
        )
    reference_year, range_note = _reference(query, by, counted, tz)
    populations = await read_populations(conn, [u.id for u in units])
    noise = settings.privacy.min_count if public else None
    rows = _rows(query, by, units, combos, counted, populations, reference_year, noise)
    weights = _weights(units, settings.territory.projected_crs)
    clamped = _add_rates(rows, len(units), weights)
    # A stratum is one combination of breakdowns: len(units) consecutive rows.
    strata = [i // len(units) for i in range(len(rows))]
    years = [row.pop("_year") for row in rows]
    true_counts = [row.pop("_count") for row in rows]
    # By unit, then the breakdowns in their order (a stable sort).
    order = sorted(range(len(rows)), key=lambda i: rows[i]["unit_code"])
    parameters = _parameters(query, by, units, weights, sensitive, tz)
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
    notes = [range_note, *_notes(rows, years, shown_clamped, len(combos) - len(hidden), weights)]
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
    if not sees_published_view(who):
        return table
    return disclosure.suppress(table, vocabulary, sensitive, true_counts, threshold)


# --- reading and counting ----------------------------------------------------------


async def _read_units(conn: AsyncConnection, query: StatsQuery) -> list[Unit]:
    units = await read_units(conn, level=query.level, codes=query.unit_codes)
    if not units:
        raise InvalidParameter(f"no units are loaded at level {query.level}")
    return units


async def _read_vocabulary(
    conn: AsyncConnection, query: StatsQuery
) -> tuple[dict[str, str], frozenset[str]]:
    """Category code → group, and the sensitive codes; unknown filter codes are a 400."""
    vocabulary = dict((await conn.execute(sql.select_categories())).all())
    sensitive = frozenset((await conn.execute(sql.select_sensitive_categories())).scalars())
    if unknown := sorted(set(query.filters.categories) - set(vocabulary)):
        raise InvalidParameter(f"unknown category code(s): {', '.join(unknown)}")
    return vocabulary, sensitive


@dataclass
class _Counted:
    """Incidents per (unit id, *breakdown values); key sums for the public perturbation."""

    counts: dict[tuple, int] = field(default_factory=lambda: defaultdict(int))
    key_sums: dict[tuple, int] = field(default_factory=lambda: defaultdict(int))
    first_at: datetime | None = None
    last_at: datetime | None = None


async def _count(
    conn: AsyncConnection,
    query: StatsQuery,
    by: tuple[str, ...],
    units: list[Unit],
    tz: str,
    *,
    public: bool,
) -> _Counted:
    seed = (await conn.execute(sql.select_cell_key_seed())).scalar_one() if public else None
    statement = sql.count_incidents(
        query.filters,
        [u.id for u in units],
        by=by,
        period=query.period,
        timezone=tz,
        age_groups=[(g.label, g.first, g.last) for g in query.age_groups],
        key_seed=seed,
    )
    found = (await conn.execute(statement)).all()
    out = _Counted(
        first_at=min((r.first_at for r in found), default=None),
        last_at=max((r.last_at for r in found), default=None),
    )
    for r in found:
        values = (
            period_label(r.period, query.period) if b == "period" else r._mapping[b] for b in by
        )
        key = (r.unit_id, *values)
        out.counts[key] += r.count
        if public:
            out.key_sums[key] += int(r.key_sum)
    return out


def _reference(
    query: StatsQuery, by: tuple[str, ...], counted: _Counted, tz: str
) -> tuple[int | None, str]:
    """The denominators' year of a table without periods (None with them), and the note
    that says how counts and rates relate to time."""
    if "period" in by:
        return None, f"Counts and rates are per {query.period}" + (
            "." if query.period == "year" else "; rates are not annualised."
        )
    f = query.filters
    start = local_naive(f.occurred_from, tz) if f.occurred_from else counted.first_at
    end = local_naive(f.occurred_to, tz) if f.occurred_to else counted.last_at
    year = middle_year(start, end, tz)
    return year, (
        f"Counts cover the whole filtered range; denominators are for {year} "
        "(the middle of the range) and rates are not annualised."
    )


# --- completing the table ----------------------------------------------------------


def _combinations(
    query: StatsQuery,
    by: tuple[str, ...],
    vocabulary: dict[str, str],
    counted: _Counted,
    tz: str,
) -> list[tuple]:
    """Every combination of breakdown values, so that units without incidents show 0.

    Rows come from the request and the vocabulary, never from the data: a row that
    appeared only where an incident matched would tell that one exists.
    """
    dims: list[list[tuple]] = []
    if "category" in by or "category_group" in by:
        dims.append(_category_values(query.filters, by, vocabulary))
    if "period" in by:
        dims.append([(p,) for p in _periods(query, by.index("period"), counted, tz)])
    if "victim_sex" in by:
        wanted = query.filters.victim_sex
        dims.append([(s,) for s in VICTIM_SEXES if not wanted or s in wanted])
    if "age_group" in by:
        dims.append([(a,) for a in _age_values(query)])
    return [tuple(itertools.chain.from_iterable(parts)) for parts in itertools.product(*dims)]


def _category_values(
    f: IncidentFilter, by: tuple[str, ...], vocabulary: dict[str, str]
) -> list[tuple]:
    """The category (and group) values of the rows: the filter's, else the vocabulary's."""
    if "category" in by:
        codes = sorted(f.categories or vocabulary)
        return [(c, vocabulary[c]) if "category_group" in by else (c,) for c in codes]
    groups = {vocabulary[c] for c in f.categories} or set(vocabulary.values())
    return [(g,) for g in sorted(groups)]


def _age_values(query: StatsQuery) -> list[str]:
    """The age groups the filter admits, then ``other`` and ``unknown`` where they apply."""
    f = query.filters
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
    return labels


def _uncovered_ages(groups: Sequence[AgeGroup], age_min: int | None, age_max: int | None) -> bool:
    """Whether an age the filter admits falls in no group (the ``other`` row)."""
    admitted = range(age_min or 0, (MAX_AGE if age_max is None else age_max) + 1)
    return any(
        not any(g.first <= age and (g.last is None or age <= g.last) for g in groups)
        for age in admitted
    )


def _periods(query: StatsQuery, position: int, counted: _Counted, tz: str) -> list[str]:
    """The periods from the start of the range (or first incident) to its end (or last)."""
    if query.period_value is not None:
        return [query.period_value]
    f = query.filters
    start = local_naive(f.occurred_from, tz) if f.occurred_from else counted.first_at
    end = (
        local_naive(f.occurred_to - timedelta(microseconds=1), tz)
        if f.occurred_to
        else counted.last_at
    )
    if start is None or end is None or start > end:
        return sorted({key[1 + position] for key in counted.counts})
    labels = period_labels(start, end, query.period)
    if len(labels) > MAX_ROWS:
        raise InvalidParameter(f"{len(labels):,} {query.period}s is too long a range")
    return labels


# --- denominators ------------------------------------------------------------------


def _rows(
    query: StatsQuery,
    by: tuple[str, ...],
    units: list[Unit],
    combos: list[tuple],
    counted: _Counted,
    populations: Populations,
    reference_year: int | None,
    noise: int | None,
) -> list[dict]:
    """One row per breakdown combination x unit (in that order), with its denominator.

    ``noise``: the perturbation threshold for public tables, None for analysts. Rates
    follow from the published count, so they give nothing more.
    """
    rows = []
    f = query.filters
    for combo in combos:
        values = dict(zip(by, combo, strict=True))
        year = int(values["period"][:4]) if "period" in values else reference_year
        sex = population_sex(values.get("victim_sex"), f.victim_sex, "victim_sex" in by)
        age = population_age(values.get("age_group"), f.age_min, f.age_max, "age_group" in by)
        for unit in units:
            chosen = populations.pick(unit.id, sex, age, year) if sex and age else None
            key = (unit.id, *combo)
            count = counted.counts.get(key, 0)
            shown = (
                count
                if noise is None
                else disclosure.perturb(count, counted.key_sums.get(key, 0), noise)
            )
            rows.append(
                {
                    "unit_code": unit.code,
                    "unit_name": unit.name,
                    "unit_level": unit.level,
                    **values,
                    "count": shown,
                    "_count": count,
                    "population": chosen.value if chosen else None,
                    "population_year": chosen.year if chosen else None,
                    "population_sex": sex if chosen else None,
                    "population_age_group": age if chosen else None,
                    "population_source": chosen.source if chosen else None,
                    "_year": year,
                }
            )
    return rows


# --- rates -------------------------------------------------------------------------


def _weights(units: list[Unit], crs: str) -> SpatialWeights | None:
    """Queen contiguity of the units, with a snap of :data:`SNAP_M` metres."""
    if len(units) < 2:
        return None
    return _contiguity(tuple(u.code for u in units), tuple(u.geometry for u in units), crs)


# Built from the polygons (50-100 ms for the districts), the same for every request on the
# same units: kept per worker, keyed by the geometries themselves, so new boundaries miss.
@functools.lru_cache(maxsize=32)
def _contiguity(codes: tuple[str, ...], geometries: tuple, crs: str) -> SpatialWeights:
    frame = gpd.GeoDataFrame(geometry=list(geometries), crs=4326).to_crs(crs)
    return contiguity(frame, ids=list(codes), snap=SNAP_M)


def _add_rates(rows: list[dict], n_units: int, weights: SpatialWeights | None) -> list[bool]:
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


# --- what the answer says about itself ---------------------------------------------


def _parameters(
    query: StatsQuery,
    by: tuple[str, ...],
    units: list[Unit],
    weights: SpatialWeights | None,
    sensitive: frozenset[str],
    tz: str,
) -> StatsParameters:
    f = query.filters
    return StatsParameters(
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
            "islands": list(weights.islands) if weights else [],
        },
        sensitive_categories=sorted(sensitive),
    )


def _notes(
    rows: list[dict],
    years: list[int],
    clamped: int,
    strata: int,
    weights: SpatialWeights | None,
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
    notes += _population_notes(rows, years)
    if weights is None:
        notes.append("A single unit has no neighbours: rate_eb_spatial is its own rate.")
    elif weights.islands:
        notes.append(
            f"{len(weights.islands)} unit(s) have no neighbour: their spatial EB rate is "
            "their own rate."
        )
    return notes


def _population_notes(rows: list[dict], years: list[int]) -> list[str]:
    """Which census figures the rows use, and the rows off their year or without one."""
    used: dict[tuple, int] = defaultdict(int)
    off_year = missing = 0
    for r, year in zip(rows, years, strict=True):
        if r["population"] is None:
            missing += 1
            continue
        used[(r["population_year"], r["population_sex"], r["population_age_group"],
              r["population_source"])] += 1  # fmt: skip
        off_year += r["population_year"] != year
    notes = [
        f"Population {year}, sex {sex}, age group {age} ({source or 'no source given'}): "
        f"{n} row(s)."
        for (year, sex, age, source), n in sorted(used.items(), key=lambda kv: str(kv[0]))
    ]
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
    return notes
