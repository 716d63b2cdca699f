"""Composite indexes: stored, versioned definitions, and their results and rank
uncertainty for one period, computed by the pure engine (:mod:`indexes`) on the raw table
of :mod:`app.services.index_data`. The planners' view is :mod:`app.services.rankings`.
"""

from __future__ import annotations

import asyncio
import json
import math
from typing import Any

import pandas as pd
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

import indexes
from app.access import EXACT_FIGURES_ROLE
from app.core.errors import InvalidParameter, NotFound
from app.core.settings import DATA_DIR, Settings
from app.schemas.indexes import (
    IndexDefinitionRecord,
    IndexResultRow,
    IndexResults,
    IndexSensitivity,
    SensitivityRequest,
    SensitivityRow,
    TreatedValue,
    TreatmentStatement,
)
from app.security import Principal
from app.services.index_data import IndexData
from app.services.jobs import JobProgress
from app.services.periods import Period, one_period, period_containing, previous_period
from app.sql import indexes as sql
from app.sql import stats as stats_sql
from indexes.pipeline import IndexResult, treatment_of
from indexes.spec import IndexDefinition
from indexes.treat import TreatmentNote

DEFAULTS_DIR = DATA_DIR / "indexes"
MAX_RUNS = 5_000
# Longest list of periods a selector offers (10 years of months).
MAX_PERIODS = 120

__all__ = [
    "DEFAULTS_DIR",
    "MAX_RUNS",
    "available_periods",
    "compute_results",
    "compute_sensitivity",
    "get_definition",
    "latest_period",
    "latest_scores",
    "list_definitions",
    "load_default_definitions",
    "parse_definition",
    "resolve_sensitivity",
    "run_sensitivity",
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
    """The latest version of every index, by code."""
    return [_record(r) for r in (await conn.execute(sql.select_latest())).all()]


async def get_definition(
    conn: AsyncConnection, code: str, version: int | None = None
) -> IndexDefinitionRecord:
    """One version of an index (the latest when ``version`` is None); NotFound: 404."""
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


# --- results -----------------------------------------------------------------------


async def _prepare(
    conn: AsyncConnection,
    settings: Settings,
    who: Principal,
    code: str,
    version: int | None,
    period_text: str,
) -> tuple[IndexDefinitionRecord, IndexDefinition, IndexData, Period]:
    record = await get_definition(conn, code, version)
    definition = indexes.load_definition(record.definition)
    data = IndexData(conn, settings, who, definition)
    await data.setup()
    period = one_period(period_text, definition.period, settings.territory.timezone)
    return record, definition, data, period


def _number(value: Any) -> float | None:
    if value is None or value is pd.NA:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _integer(value: Any) -> int | None:
    return None if value is None or pd.isna(value) else int(value)


def _row_values(frame: pd.DataFrame, code: str) -> dict[str, float | None]:
    return {c: _number(v) for c, v in frame.loc[code].items()} if len(frame.columns) else {}


def _treatment_text(note: TreatmentNote) -> str:
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


def _changed(note: TreatmentNote) -> bool:
    return note.action in ("winsorised", "log")


def _treated_values(result: IndexResult, unit: str) -> list[TreatedValue]:
    """The values of ``unit`` the treatment changed, with the value before (after any
    transform and imputation: what the treatment was given)."""
    names = {i.code: i.name or i.code for i in result.definition.indicators}
    return [
        TreatedValue(
            indicator=n.indicator,
            name=names[n.indicator],
            action=n.action,
            original=_number(result.imputed.loc[unit, n.indicator]),
            treated=_number(result.treated.loc[unit, n.indicator]),
        )
        for n in result.treatment_notes
        if n.action == "log" or (n.action == "winsorised" and unit in n.winsorised_units)
    ]


def _result_row(
    result: IndexResult, unit: str, name: str, previous: pd.Series | None
) -> IndexResultRow:
    rank = _integer(result.rank[unit])
    before = _integer(previous[unit]) if previous is not None else None
    return IndexResultRow(
        unit_code=unit,
        unit_name=name,
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
        treated_values=_treated_values(result, unit),
    )


async def _previous_rank(
    data: IndexData, definition: IndexDefinition, previous: Period
) -> pd.Series | None:
    try:
        return indexes.compute_index(await data.raw(previous), definition, classes=False).rank
    except indexes.IndexDataError as exc:
        data.notes.append(f"No rank change: the {previous.label} index is not computable ({exc})")
        return None


async def compute_results(
    conn: AsyncConnection,
    settings: Settings,
    who: Principal,
    code: str,
    period_text: str,
    version: int | None = None,
    *,
    map_classes: bool = True,
) -> IndexResults:
    """The index for one period, with the rank change since the previous period, the
    outlier rule that applied, what each indicator counts and the values treated.

    ``map_classes=False``: no choropleth classes (missing, no bins), for ranks only
    (:func:`indexes.compute_index`'s ``classes``)."""
    record, definition, data, period = await _prepare(
        conn, settings, who, code, version, period_text
    )
    result = indexes.compute_index(await data.raw(period), definition, classes=map_classes)
    indicators = data.describe(period)
    previous = previous_period(period, settings.territory.timezone)
    previous_rank = await _previous_rank(data, definition, previous)
    names = data.names
    rows = [
        _result_row(result, unit, names[unit], previous_rank)
        for unit in result.rank.sort_values(kind="stable").index
    ]
    treatment = TreatmentStatement(**result.parameters["treatment"])
    notes = [
        treatment.rule,
        *data.notes,
        *(
            f"Imputed {n.indicator} of {n.unit} = {n.value:g} ({n.method})"
            for n in result.imputation_notes
        ),
        *(_treatment_text(n) for n in result.treatment_notes if _changed(n)),
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
        treatment=treatment,
        indicators=indicators,
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
    runs: int | None = None,
    seed: int | None = None,
    version: int | None = None,
) -> IndexSensitivity:
    """Monte Carlo rank uncertainty (weights, normalisation, aggregation) for one period,
    and each unit's score and rank with and without outlier treatment.

    ``runs`` and ``seed`` default to the definition's ``sensitivity.runs`` (1,000) and
    ``sensitivity.seed`` (1), so every view of one index shows the same bands.
    """
    record, definition, data, period = await _prepare(
        conn, settings, who, code, version, period_text
    )
    runs = definition.sensitivity.runs if runs is None else runs
    if not 1 <= runs <= MAX_RUNS:
        raise InvalidParameter(f"runs must be between 1 and {MAX_RUNS} (got {runs})")
    # Hundreds of index runs: seconds of CPU kept off the event loop (other requests wait
    # behind it otherwise, cached tiles included).
    raw = await data.raw(period)
    result = await asyncio.to_thread(indexes.sensitivity, raw, definition, runs=runs, seed=seed)
    names = data.names
    ranks = result.ranks.sort_values("nominal", kind="stable")
    compared = result.treatment
    return IndexSensitivity(
        code=record.code,
        version=record.version,
        period=period.label,
        runs=result.runs,
        seed=result.seed,
        treatment=TreatmentStatement(**treatment_of(definition, len(raw))),
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
                score=_number(compared.at[unit, "score"]),
                score_untreated=_number(compared.at[unit, "score_untreated"]),
                rank_untreated=_integer(compared.at[unit, "rank_untreated"]),
                score_jrc=_number(compared.at[unit, "score_jrc"]),
                rank_jrc=_integer(compared.at[unit, "rank_jrc"]),
            )
            for unit, r in ranks.iterrows()
        ],
    )


# A sensitivity run computes what every caller with exact figures sees (the route needs
# that role), whoever posted it: one stored run serves them all.
SENSITIVITY_RUNNER = Principal(role=EXACT_FIGURES_ROLE, name="sensitivity run")


async def resolve_sensitivity(
    conn: AsyncConnection,
    settings: Settings,
    code: str,
    period_text: str,
    *,
    runs: int | None = None,
    seed: int | None = None,
    version: int | None = None,
) -> SensitivityRequest:
    """The parameters of a sensitivity run with every default resolved (the latest
    version, the definition's runs and seed, the period's label), so that equal requests
    share one stored run; 404 for an unknown index or version, 422 for a bad period or
    runs, before anything is stored."""
    record = await get_definition(conn, code, version)
    definition = indexes.load_definition(record.definition)
    period = one_period(period_text, definition.period, settings.territory.timezone)
    runs = definition.sensitivity.runs if runs is None else runs
    if not 1 <= runs <= MAX_RUNS:
        raise InvalidParameter(f"runs must be between 1 and {MAX_RUNS} (got {runs})")
    return SensitivityRequest(
        code=record.code,
        version=record.version,
        period=period.label,
        runs=runs,
        seed=definition.sensitivity.seed if seed is None else seed,
    )


async def run_sensitivity(
    engine: AsyncEngine,
    settings: Settings,
    body: SensitivityRequest,
    run_id: int,
    progress: JobProgress,
) -> dict[str, Any]:
    """Compute sensitivity run ``run_id`` (a worker's job): :func:`compute_sensitivity`,
    stored as the run's summary (``sensitivity``). Data the index cannot use fails the
    run with the reason."""
    await progress(0.05, f"{body.runs:,} Monte Carlo runs")
    try:
        async with engine.connect() as conn:
            result = await compute_sensitivity(
                conn,
                settings,
                SENSITIVITY_RUNNER,
                body.code,
                body.period,
                runs=body.runs,
                seed=body.seed,
                version=body.version,
            )
    except (indexes.IndexDataError, indexes.IndexDefinitionError) as exc:
        raise InvalidParameter(str(exc)) from None
    return {"sensitivity": result.model_dump(mode="json")}


# --- maps and selectors --------------------------------------------------------


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
    data = IndexData(conn, settings, who, definition)
    await data.setup()
    period = one_period(period_text, definition.period, settings.territory.timezone)
    result = indexes.compute_index(await data.raw(period), definition)
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
