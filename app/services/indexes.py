"""Composite indexes: stored, versioned definitions, and the raw indicator table the pure
engine (:mod:`indexes`) needs, built from incidents, populations and external indicators.

Incident indicators reuse the statistics service: counts come from
:func:`app.services.stats.compute_stats` and rates from :mod:`spatial.rates` with the
population of the matching sex and age group (the latest year at or before the period,
:mod:`app.services.denominators`); periods are those of :mod:`app.services.periods`.
Measures: ``count``; ``rate`` per 100,000; ``eb_rate`` (global Empirical Bayes); ``share``
of all the unit's incidents of the period; ``change`` = count minus the previous period's.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

import indexes
from app.core.errors import InvalidParameter, NotFound
from app.core.settings import DATA_DIR, Settings
from app.schemas.indexes import (
    Contributor,
    IndexDefinitionRecord,
    IndexResultRow,
    IndexResults,
    IndexSensitivity,
    Ranking,
    RankingRow,
    SensitivityRow,
)
from app.security import Principal
from app.services import stats
from app.services.denominators import Populations, Unit, age_group_of, read_populations, read_units
from app.services.periods import Period, one_period, period_containing, previous_period
from app.sql import indexes as sql
from app.sql import stats as stats_sql
from app.sql.incidents import IncidentFilter
from indexes.spec import IncidentSource, IndexDefinition
from spatial import rates

DEFAULTS_DIR = DATA_DIR / "indexes"
MAX_RUNS = 5_000
RANKING_RUNS = 500
RANKING_SEED = 1  # fixed so that the planners' page is stable from one request to the next
# Longest list of periods a selector offers (10 years of months).
MAX_PERIODS = 120
TOP_CONTRIBUTORS = 3

__all__ = [
    "DEFAULTS_DIR",
    "MAX_RUNS",
    "RANKING_RUNS",
    "RANKING_SEED",
    "TOP_CONTRIBUTORS",
    "compute_ranking",
    "compute_results",
    "compute_sensitivity",
    "get_definition",
    "list_definitions",
    "load_default_definitions",
    "parse_definition",
    "store_definition",
    "unit_geometries",
]


# --- definitions -------------------------------------------------------------------


def parse_definition(body: bytes, content_type: str | None) -> IndexDefinition:
    """A JSON or YAML request body → a validated definition (IndexDefinitionError: 422)."""
    kind = (content_type or "").split(";")[0].strip().lower()
    if kind not in ("application/json", "application/yaml", "text/yaml", "application/x-yaml"):
        raise InvalidParameter(
            f"send the definition as application/json or application/yaml (got {kind or 'none'})"
        )
    if not body.strip():
        raise InvalidParameter("the request body is empty: send an index definition")
    try:
        body.decode("utf-8")
    except UnicodeDecodeError as exc:  # found by fuzzing: the YAML/JSON parsers raise a 500
        raise InvalidParameter(f"the definition is not valid UTF-8 ({exc.reason})") from exc
    return indexes.load_definition(body)


def _record(row: Any) -> IndexDefinitionRecord:
    return IndexDefinitionRecord(
        code=row.code,
        version=row.version,
        title=row.definition.get("title", ""),
        created_by=row.created_by,
        created_at=row.created_at,
        definition=row.definition,
    )


async def store_definition(
    conn: AsyncConnection, definition: IndexDefinition, actor: str
) -> IndexDefinitionRecord:
    """Store ``definition`` as the next version of its code (its ``name``)."""
    code = definition.name
    await conn.execute(sql.lock_code(code))
    version = (await conn.execute(sql.next_version(code))).scalar_one()
    stored = definition.model_copy(update={"version": version}).model_dump(mode="json")
    row = (await conn.execute(sql.insert_definition(code, version, stored, actor))).one()
    return _record(row)


async def list_definitions(conn: AsyncConnection) -> list[IndexDefinitionRecord]:
    return [_record(r) for r in (await conn.execute(sql.select_latest())).all()]


async def get_definition(
    conn: AsyncConnection, code: str, version: int | None = None
) -> IndexDefinitionRecord:
    row = (await conn.execute(sql.select_definition(code, version))).first()
    if row is None:
        which = f"index {code!r}" + (f" version {version}" if version is not None else "")
        raise NotFound(f"no {which}")
    return _record(row)


async def load_default_definitions(engine: AsyncEngine, *, actor: str) -> list[str]:
    """Store each shipped definition as version 1 unless its code exists. Returns the
    codes stored now (loading twice stores nothing the second time)."""
    stored = []
    for path in sorted(DEFAULTS_DIR.glob("*.yaml")):
        definition = indexes.load_definition(path.read_text(encoding="utf-8"))
        async with engine.begin() as conn:
            await conn.execute(sql.lock_code(definition.name))
            if (await conn.execute(sql.select_definition(definition.name))).first() is None:
                await store_definition(conn, definition, actor)
                stored.append(definition.name)
    return stored


# --- the raw indicator table ------------------------------------------------------


@dataclass
class _Builder:
    """Builds raw tables for one definition, caching counts across periods."""

    conn: AsyncConnection
    settings: Settings
    who: Principal
    definition: IndexDefinition
    units: list[Unit] = field(default_factory=list)
    populations: Populations = field(default_factory=lambda: Populations({}))
    counts: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    async def setup(self) -> None:
        level = self.definition.unit_level
        self.units = await read_units(self.conn, level=level)
        if len(self.units) < 2:
            raise InvalidParameter(f"an index needs at least 2 units at level {level}")
        self.populations = await read_populations(self.conn, [u.id for u in self.units])

    @property
    def codes(self) -> list[str]:
        return [u.code for u in self.units]

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

    def _denominator(self, source: IncidentSource, year: int, code: str) -> np.ndarray:
        sex = source.victim_sex or "total"
        age = age_group_of(source.age_min, source.age_max)

        def pick(age_group: str) -> list[float]:
            out = []
            for u in self.units:
                chosen = self.populations.pick(u.id, sex, age_group, year)
                out.append(chosen.value if chosen else math.nan)
            return out

        values = pick(age)
        if age != "total" and any(math.isnan(v) for v in values):
            values = pick("total")
            note = (
                f"{code}: no {sex} population of age group {age} for every unit; the rate "
                f"is per 100,000 {sex} population of all ages."
            )
            if note not in self.notes:
                self.notes.append(note)
        return np.array(values, dtype=float)

    async def raw(self, period: Period) -> pd.DataFrame:
        columns: dict[str, np.ndarray] = {}
        external = [i for i in self.definition.indicators if i.source.external]
        if external:
            rows = (
                await self.conn.execute(
                    sql.select_indicator_values(
                        [i.source.external for i in external],
                        [u.id for u in self.units],
                        period.label,
                    )
                )
            ).all()
            values = {(r.unit_id, r.indicator): r.value for r in rows}
            for i in external:
                columns[i.code] = np.array(
                    [values.get((u.id, i.source.external), math.nan) for u in self.units]
                )
        for i in self.definition.indicators:
            source = i.source.incidents
            if source is None:
                continue
            e = await self._count(period, source)
            if source.measure == "count":
                columns[i.code] = e
            elif source.measure == "change":
                previous = previous_period(period, self._tz)
                columns[i.code] = e - await self._count(previous, source)
            elif source.measure == "share":
                total = await self._count(period, None)
                with np.errstate(divide="ignore", invalid="ignore"):
                    columns[i.code] = np.where(total > 0, e / total * 100, math.nan)
            else:
                b = self._denominator(source, period.year, i.code)
                columns[i.code] = (
                    rates.crude_rate(e, b)
                    if source.measure == "rate"
                    else rates.empirical_bayes(e, b)
                )
        frame = pd.DataFrame(columns, index=pd.Index(self.codes, name="unit_code"))
        return frame[self.definition.indicator_codes].astype(float)

    @property
    def _tz(self) -> str:
        return self.settings.territory.timezone


async def _prepare(
    conn: AsyncConnection,
    settings: Settings,
    who: Principal,
    code: str,
    version: int | None,
    period_text: str,
) -> tuple[IndexDefinitionRecord, IndexDefinition, _Builder, Period]:
    record = await get_definition(conn, code, version)
    definition = indexes.load_definition(record.definition)
    builder = _Builder(conn, settings, who, definition)
    await builder.setup()
    period = one_period(period_text, definition.period, settings.territory.timezone)
    return record, definition, builder, period


def _number(value: Any) -> float | None:
    if value is None or value is pd.NA:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _integer(value: Any) -> int | None:
    return None if value is None or pd.isna(value) else int(value)


def _row_values(frame: pd.DataFrame, code: str) -> dict[str, float | None]:
    return {c: _number(v) for c, v in frame.loc[code].items()} if len(frame.columns) else {}


def _treatment_text(note: Any) -> str:
    """A treatment note in words, for the notes of a result."""
    what = (
        f"winsorised {note.n_winsorised} point(s) ({', '.join(note.winsorised_units)})"
        if note.action == "winsorised"
        else note.action
    )
    return (
        f"Outlier treatment of {note.indicator}: {what}; skew {note.skew_before:.2f} -> "
        f"{note.skew_after:.2f}, kurtosis {note.kurtosis_before:.2f} -> {note.kurtosis_after:.2f}"
    )


async def compute_results(
    conn: AsyncConnection,
    settings: Settings,
    who: Principal,
    code: str,
    period_text: str,
    version: int | None = None,
) -> IndexResults:
    """The index for one period, with the rank change since the previous period."""
    record, definition, builder, period = await _prepare(
        conn, settings, who, code, version, period_text
    )
    result = indexes.compute_index(await builder.raw(period), definition)
    previous = previous_period(period, settings.territory.timezone)
    previous_rank: pd.Series | None = None
    try:
        previous_rank = indexes.compute_index(await builder.raw(previous), definition).rank
    except indexes.IndexDataError as exc:
        builder.notes.append(
            f"No rank change: the {previous.label} index is not computable ({exc})"
        )
    names = {u.code: u.name for u in builder.units}
    rows = []
    for unit in result.rank.sort_values(kind="stable").index:
        rank = _integer(result.rank[unit])
        before = _integer(previous_rank[unit]) if previous_rank is not None else None
        rows.append(
            IndexResultRow(
                unit_code=unit,
                unit_name=names[unit],
                rank=rank,
                previous_rank=before,
                rank_change=None if rank is None or before is None else before - rank,
                score=_number(result.score[unit]),
                map_class=_integer(result.classes[unit]),
                raw=_row_values(result.raw, unit),
                treated=_row_values(result.treated, unit),
                normalised=_row_values(result.normalised, unit),
                dimensions=_row_values(result.dimension_scores, unit),
                contributions=_row_values(result.contributions, unit),
            )
        )
    notes = [
        *builder.notes,
        *(
            f"Imputed {n.indicator} of {n.unit} = {n.value:g} ({n.method})"
            for n in result.imputation_notes
        ),
        *(_treatment_text(n) for n in result.treatment_notes if n.action != "none"),
    ]
    return IndexResults(
        code=record.code,
        version=record.version,
        title=definition.title,
        period=period.label,
        previous_period=previous.label,
        unit_level=definition.unit_level,
        weights={k: float(v) for k, v in result.weights.items()},
        class_bins=[float(b) for b in result.class_bins],
        rows=rows,
        notes=notes,
    )


async def compute_sensitivity(
    conn: AsyncConnection,
    settings: Settings,
    who: Principal,
    code: str,
    period_text: str,
    *,
    runs: int,
    seed: int | None,
    version: int | None = None,
) -> IndexSensitivity:
    """Monte Carlo rank uncertainty (weights, normalisation, aggregation) for one period."""
    if not 1 <= runs <= MAX_RUNS:
        raise InvalidParameter(f"runs must be between 1 and {MAX_RUNS} (got {runs})")
    record, definition, builder, period = await _prepare(
        conn, settings, who, code, version, period_text
    )
    # Hundreds of index runs: seconds of CPU kept off the event loop (other requests wait
    # behind it otherwise, cached tiles included).
    raw = await builder.raw(period)
    result = await asyncio.to_thread(indexes.sensitivity, raw, definition, runs=runs, seed=seed)
    names = {u.code: u.name for u in builder.units}
    ranks = result.ranks.sort_values("nominal", kind="stable")
    return IndexSensitivity(
        code=record.code,
        version=record.version,
        period=period.label,
        runs=result.runs,
        seed=result.seed,
        most_influential=result.most_influential,
        assumption_shift={k: float(v) for k, v in result.assumption_shift.items()},
        rows=[
            SensitivityRow(
                unit_code=unit,
                unit_name=names[unit],
                nominal_rank=_integer(r["nominal"]),
                median_rank=_number(r["median"]),
                rank_q05=_number(r["q05"]),
                rank_q95=_number(r["q95"]),
                band=_number(r["band"]),
            )
            for unit, r in ranks.iterrows()
        ],
    )


async def compute_ranking(
    conn: AsyncConnection,
    settings: Settings,
    who: Principal,
    code: str,
    period_text: str,
    *,
    reader: Principal,
    runs: int = RANKING_RUNS,
    seed: int = RANKING_SEED,
    version: int | None = None,
) -> Ranking:
    """The planners' view: :func:`compute_results` joined with the rank band of
    :func:`compute_sensitivity` (seeded, so the same request gives the same bands) and
    each unit's largest contributing indicators.

    ``who`` computes the index; ``reader`` is who gets the page. Below the analyst role, when
    any indicator is counted from sensitive categories (:func:`_withheld_indicators`), no
    contribution value is shown at all: the contributions add up to the score and none is
    negative, so any listed value would bound the withheld ones (the score minus the listed
    ones, or an exact 0 when they add up to the score). ``top_indicators`` then names the
    released indicators in order of contribution, without values, and the notes on the
    withheld indicators (imputed values, outlier treatment, why the previous period is not
    computable) are left out (:func:`_public_notes`).
    """
    record = await get_definition(conn, code, version)
    definition = IndexDefinition.model_validate(record.definition)
    names = {i.code: i.name or i.code for i in definition.indicators}
    withheld: set[str] = set()
    if not reader.has("analyst"):
        sensitive = set((await conn.execute(stats_sql.select_sensitive_categories())).scalars())
        withheld = _withheld_indicators(definition, sensitive)
    try:
        results = await compute_results(conn, settings, who, code, period_text, record.version)
        bands = await compute_sensitivity(
            conn, settings, who, code, period_text, runs=runs, seed=seed, version=record.version
        )
    except indexes.IndexDataError as exc:
        if withheld:  # whichever indicator it names: the same words for every one
            raise indexes.IndexDataError(_public_error(str(exc))) from None
        raise
    notes = list(results.notes)
    if withheld:
        notes = [*_public_notes(notes, withheld), _withheld_note(withheld, len(names))]
    band = {r.unit_code: r for r in bands.rows}
    rows = []
    for r in results.rows:
        if withheld:
            top = [
                Contributor(code=c, name=names.get(c, c), contribution=None)
                for c in _released_order(r, results.weights, withheld, definition.aggregation)
            ]
        else:
            top = [
                Contributor(code=c, name=names.get(c, c), contribution=v)
                for c, v in sorted(
                    ((c, v) for c, v in r.contributions.items() if v is not None),
                    key=lambda item: -item[1],
                )
            ]
        b = band.get(r.unit_code)
        rows.append(
            RankingRow(
                rank=r.rank,
                unit_code=r.unit_code,
                unit_name=r.unit_name,
                score=r.score,
                map_class=r.map_class,
                median_rank=b.median_rank if b else None,
                rank_q05=b.rank_q05 if b else None,
                rank_q95=b.rank_q95 if b else None,
                previous_rank=r.previous_rank,
                rank_change=r.rank_change,
                top_indicators=top[:TOP_CONTRIBUTORS],
            )
        )
    return Ranking(
        index=results.code,
        version=results.version,
        title=results.title,
        period=results.period,
        previous_period=results.previous_period,
        runs=bands.runs,
        seed=bands.seed,
        rows=rows,
        notes=notes,
    )


def _withheld_indicators(definition: IndexDefinition, sensitive: set[str]) -> set[str]:
    """Indicators whose values would show counts of sensitive categories to the public.

    A rate or count over a sensitive category gives the count with the census; a share's
    denominator is every incident of the unit, sensitive ones included.
    """
    return {
        i.code
        for i in definition.indicators
        if (source := i.source.incidents) is not None
        and (source.measure == "share" or set(source.categories) & sensitive)
    }


def _released_order(
    row: IndexResultRow, weights: dict[str, float], withheld: set[str], aggregation: str
) -> list[str]:
    """The released indicators of one unit, largest contribution first, ordered by a key
    computed from the released indicators alone (weight x normalised value; its logarithm
    under geometric aggregation), so that the order says nothing about the withheld ones.

    (Under geometric and Copeland aggregation the points are the unit's score times a share
    whose denominator sums over every indicator, withheld ones included: same order, but the
    fallback to the weights when that denominator is 0 would depend on them.)
    """
    key: dict[str, float] = {}
    for code in row.normalised:
        x, v = row.normalised.get(code), weights.get(code)
        if code in withheld or x is None or v is None:
            continue
        if aggregation == "geometric":
            if x <= 0:
                continue
            x = math.log(x)
        key[code] = v * x
    return sorted(key, key=lambda c: -key[c])  # stable: ties keep the definition's order


def _names_any(text: str, codes: set[str]) -> bool:
    """Whether a note or message names one of these indicator codes."""
    return any(re.search(rf"(?<![\w-]){re.escape(c)}(?![\w-])", text) for c in codes)


# The note of _Builder._denominator: about the census, not the incidents.
_CENSUS_NOTE = re.compile(r"[\w-]+: no \w+ population of age group ")


def _public_notes(notes: list[str], withheld: set[str]) -> list[str]:
    """The notes a public ranking keeps: none that is computed from a withheld indicator's
    values (an imputed value, which units were winsorised and the skew and kurtosis). Why
    the previous period's index is not computable is left out whichever indicator it names.
    Notes on the census denominator of an indicator depend on the population only and
    stay."""
    out = []
    for note in notes:
        if note.startswith("No rank change:"):
            out.append(note.split("(", 1)[0].rstrip() + ".")
        elif not _names_any(note, withheld) or _CENSUS_NOTE.match(note):
            out.append(note)
    return out


def _public_error(message: str) -> str:
    """An index error as a public caller reads it when the index has withheld indicators:
    which indicator is constant or missing is not said (the same words for every one)."""
    what = "an indicator of the index is constant" if "is constant" in message else None
    return (
        f"the index cannot be computed for this period: {what or 'its data are incomplete'} "
        "(a key with the analyst role sees which indicator)"
    )


def _withheld_note(withheld: set[str], total: int) -> str:
    listed = (
        "Every indicator of this index is counted from sensitive categories, so no "
        "contributing indicator is listed."
        if len(withheld) >= total
        else "The largest contributing indicators among the others are named, largest first, "
        "without their values (contribution: null)."
    )
    return (
        f"Public view: {len(withheld)} of the index's {total} indicators are counted from "
        f"sensitive categories or from a share of all incidents ({', '.join(sorted(withheld))}), "
        "and their contributions are withheld. Contributions add up to the score and none is "
        "negative, so any contribution shown would bound the withheld ones (the score minus "
        "those shown); none is shown. "
        f"{listed} Scores, ranks and rank bands use every indicator; notes computed from "
        "withheld indicators are left out. A key with the analyst role sees every "
        "contribution."
    )


async def unit_geometries(conn: AsyncConnection, codes: list[str]) -> dict[str, Any]:
    """Unit code → its GeoJSON geometry (a dict), for the results as GeoJSON."""
    rows = (await conn.execute(sql.select_unit_geometries(codes))).all()
    return {r.code: json.loads(r.geometry) for r in rows}


async def latest_scores(
    conn: AsyncConnection, settings: Settings, who: Principal, record: IndexDefinitionRecord
) -> tuple[str, IndexDefinition, dict[str, tuple[float | None, int | None, int | None]]] | None:
    """Score, rank and map class per unit code for the latest complete period (what the
    map layers show), without the rank change and notes of :func:`compute_results`."""
    definition = indexes.load_definition(record.definition)
    period_text = await latest_period(conn, settings, definition.period)
    if period_text is None:
        return None
    builder = _Builder(conn, settings, who, definition)
    await builder.setup()
    period = one_period(period_text, definition.period, settings.territory.timezone)
    result = indexes.compute_index(await builder.raw(period), definition)
    values = {
        unit: (
            _number(result.score[unit]),
            _integer(result.rank[unit]),
            _integer(result.classes[unit]),
        )
        for unit in result.score.index
    }
    return period.label, definition, values


async def latest_period(conn: AsyncConnection, settings: Settings, granularity: str) -> str | None:
    """The most recent complete period (year, quarter or month) that has incidents."""
    last = (await conn.execute(stats_sql.select_last_incident())).scalar()
    if last is None:
        return None
    tz = settings.territory.timezone
    period = period_containing(last, granularity, tz)
    if period.end > pd.Timestamp.now(tz=tz):
        period = previous_period(period, tz)
    return period.label


async def available_periods(
    conn: AsyncConnection, settings: Settings, granularity: str
) -> list[str]:
    """Every period (year, quarter or month) from the first incident's to the latest
    complete one, oldest first: what a period selector offers."""
    latest = await latest_period(conn, settings, granularity)
    first = (await conn.execute(stats_sql.select_first_incident())).scalar()
    if latest is None or first is None:
        return []
    tz = settings.territory.timezone
    period = one_period(latest, granularity, tz)
    periods = [period.label]
    while period.start > pd.Timestamp(first).tz_convert(tz) and len(periods) < MAX_PERIODS:
        period = previous_period(period, tz)
        periods.append(period.label)
    return periods[::-1]
