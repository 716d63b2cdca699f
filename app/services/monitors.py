"""Early warning (issue 19): monitor definitions (stored and versioned like index
definitions), their evaluation into alerts, and an analyst's acknowledgement.

An evaluation builds one count series per place (a unit of the monitor's level, or an H3
cell with incidents) over every period from the first incident to the latest complete
period: counts per unit and period by one GROUP BY in SQL; for H3 cells, each incident's
stored cell (``incident_h3``, migration 0018) and local period read as two packed arrays
and counted with numpy (cells as numbers, no Python object per incident). Cells not
stored yet (new or moved incidents) are computed with h3's integer API on the way and
stored for the next evaluation (there is no H3 extension for PostgreSQL here). It then
runs the monitor's detector of :mod:`surveillance` on it. Only the latest complete
period raises alerts, and only where at least ``min_count`` incidents were counted, so the
detector runs once per place that could alarm; an alarmed place is then evaluated over
its last two years, for the alert's chart and for how many periods the alarm has lasted.
Contiguous alarmed H3 cells make one alert with one outline. An alarm that goes on
updates its open alert (the state an analyst gave it stays); once closed, a new alarm is
a new alert.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import h3
import numpy as np
import pandas as pd
import shapely
from h3.api import basic_int as h3_int
from procrastinate import App
from procrastinate.exceptions import AlreadyEnqueued
from shapely.geometry import MultiPolygon, shape
from sqlalchemy import func
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from app.core.errors import Conflict, InvalidParameter, NotFound
from app.core.settings import DATA_DIR
from app.schemas.monitors import (
    AlertDetail,
    AlertRecord,
    MonitorDefinition,
    MonitorRecord,
    SeriesPoint,
    load_monitor,
)
from app.sql import audit as audit_sql
from app.sql import monitors as sql
from surveillance.ears import ears
from surveillance.farrington import farrington_flexible
from surveillance.glrnb import glrnb
from surveillance.series import TOO_LITTLE_HISTORY, DetectorResult

__all__ = [
    "DEFAULTS_DIR",
    "MonitorOutcome",
    "change_state",
    "defer_evaluation",
    "evaluate_all",
    "evaluate_monitor",
    "get_alert",
    "get_definition",
    "list_alerts",
    "list_definitions",
    "load_default_definitions",
    "parse_definition",
    "period_label",
    "published",
    "run_detector",
    "store_definition",
]

log = logging.getLogger("observatory")

DEFAULTS_DIR = DATA_DIR / "monitors"
# Periods per year (the detectors' seasonal frequency) and the chart's length (two years).
FREQ = {"week": 52, "month": 12}
CHART = {"week": 104, "month": 24}
_PANDAS_FREQ = {"week": "W-MON", "month": "MS"}
# evaluate_all: series read ahead while a detector runs (each on its own connection).
READ_AHEAD = 2
_JSON_TYPES = ("application/json", "application/yaml", "text/yaml", "application/x-yaml")


# --- definitions ------------------------------------------------------------------------


def parse_definition(body: bytes, content_type: str | None) -> MonitorDefinition:
    """A JSON or YAML request body → a validated definition (InvalidParameter: 422)."""
    kind = (content_type or "").split(";")[0].strip().lower()
    if kind not in _JSON_TYPES:
        raise InvalidParameter(
            f"send the definition as application/json or application/yaml (got {kind or 'none'})"
        )
    if not body.strip():
        raise InvalidParameter("the request body is empty: send a monitor definition")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidParameter(f"the definition is not valid UTF-8 ({exc.reason})") from exc
    definition = load_monitor(text)
    _check_detector(definition)
    return definition


def _check_detector(definition: MonitorDefinition) -> None:
    """Refuse detector parameters the detector does not take (a 422, not a nightly 500)."""
    y = (np.arange(8 * FREQ[definition.step]) % 5 + 1).astype(float)  # a plain series
    try:
        run_detector(definition, y, [len(y) - 1])
    except (TypeError, ValueError) as exc:
        raise InvalidParameter(f"detector {definition.detector.name}: {exc}") from exc


def _record(row: Any) -> MonitorRecord:
    return MonitorRecord(
        code=row.code,
        version=row.version,
        title=row.definition.get("title", ""),
        sensitive=bool(row.definition.get("sensitive", False)),
        created_by=row.created_by,
        created_at=row.created_at,
        definition=row.definition,
    )


async def store_definition(
    conn: AsyncConnection, definition: MonitorDefinition, actor: str
) -> MonitorRecord:
    """Store ``definition`` as the next version of its code (its ``name``), audited."""
    code = definition.name
    await conn.execute(sql.lock_code(code))
    version = (await conn.execute(sql.next_version(code))).scalar_one()
    stored = definition.model_copy(update={"version": version}).model_dump(mode="json")
    row = (await conn.execute(sql.insert_definition(code, version, stored, actor))).one()
    await conn.execute(
        audit_sql.insert_audit(
            actor, "create", "monitor_definition", f"{code}:{version}", None, stored
        )
    )
    return _record(row)


async def list_definitions(
    conn: AsyncConnection, *, include_sensitive: bool
) -> list[MonitorRecord]:
    """The latest version of every monitor (sensitive ones only if ``include_sensitive``)."""
    records = [_record(r) for r in (await conn.execute(sql.select_latest())).all()]
    return [r for r in records if include_sensitive or not r.sensitive]


async def get_definition(
    conn: AsyncConnection, code: str, version: int | None = None, *, include_sensitive: bool
) -> MonitorRecord:
    """One version of a monitor (the latest when ``version`` is None); NotFound: 404, also
    for a sensitive monitor the caller may not see (its existence is not told)."""
    row = (await conn.execute(sql.select_definition(code, version))).first()
    record = None if row is None else _record(row)
    if record is None or (record.sensitive and not include_sensitive):
        which = f"monitor {code!r}" + (f" version {version}" if version is not None else "")
        raise NotFound(f"no {which}")
    return record


async def load_default_definitions(engine: AsyncEngine, *, actor: str) -> list[str]:
    """Store each shipped definition (app/data/monitors) as version 1 unless its code
    exists. Returns the codes stored now."""
    stored = []
    for path in sorted(DEFAULTS_DIR.glob("*.yaml")):
        definition = load_monitor(path.read_text(encoding="utf-8"))
        async with engine.begin() as conn:
            await conn.execute(sql.lock_code(definition.name))
            if (await conn.execute(sql.select_definition(definition.name))).first() is None:
                await store_definition(conn, definition, actor)
                stored.append(definition.name)
    return stored


# --- detectors and periods ----------------------------------------------------------------


def run_detector(definition: MonitorDefinition, counts: np.ndarray, positions) -> DetectorResult:
    """The monitor's detector on one series at ``positions`` (0-based, ascending)."""
    params = dict(definition.detector.parameters)
    freq = FREQ[definition.step]
    name = definition.detector.name
    positions = [int(p) for p in positions]
    if name == "ears":
        return ears(counts, range_=positions, **params)
    if name == "farrington":
        if "limit54" in params:
            params["limit54"] = tuple(params["limit54"])
        return farrington_flexible(counts, freq, range_=positions, **params)
    # glrnb trains its in-control mean on the periods before its range: no alarm where
    # that history is missing.
    start = max(positions[0], 2 * freq)
    if start > positions[-1]:
        return _not_computable(name, counts, positions)
    result = glrnb(counts, freq=freq, range_=range(start, positions[-1] + 1), **params)
    if start == positions[0]:
        return result
    head = _not_computable(name, counts, list(range(positions[0], start)))
    return _concat(head, result)


def _not_computable(name: str, counts: np.ndarray, positions: list[int]) -> DetectorResult:
    nan = np.full(len(positions), np.nan)
    return DetectorResult(
        detector=name,
        index=np.array(positions, dtype=int),
        observed=np.asarray(counts, dtype=float)[positions],
        expected=nan,
        upperbound=nan.copy(),
        score=nan.copy(),
        alarm=np.zeros(len(positions), dtype=bool),
        reason=[TOO_LITTLE_HISTORY] * len(positions),
    )


def _concat(a: DetectorResult, b: DetectorResult) -> DetectorResult:
    return DetectorResult(
        detector=b.detector,
        index=np.concatenate([a.index, b.index]),
        observed=np.concatenate([a.observed, b.observed]),
        expected=np.concatenate([a.expected, b.expected]),
        upperbound=np.concatenate([a.upperbound, b.upperbound]),
        score=np.concatenate([a.score, b.score]),
        alarm=np.concatenate([a.alarm, b.alarm]),
        reason=[*a.reason, *b.reason],
    )


def period_label(start: datetime | pd.Timestamp, step: str) -> str:
    """``2025-W51`` (ISO week of its Monday) or ``2025-12``."""
    if step == "week":
        year, week, _ = start.isocalendar()
        return f"{year}-W{week:02d}"
    return f"{start.year}-{start.month:02d}"


def _step(start: pd.Timestamp, step: str, n: int = 1) -> pd.Timestamp:
    return start + (pd.Timedelta(days=7 * n) if step == "week" else pd.DateOffset(months=n))


def last_complete_period(latest: datetime, now: datetime, step: str, timezone: str) -> pd.Timestamp:
    """The local start of the latest period the data cover whole: it ends by the end of
    the day of the latest incident, and by now (a week still under way is not judged)."""
    zone = ZoneInfo(timezone)
    day_end = pd.Timestamp(latest.astimezone(zone).replace(tzinfo=None)).normalize()
    day_end += pd.Timedelta(days=1)
    limit = min(day_end, pd.Timestamp(now.astimezone(zone).replace(tzinfo=None)))
    if step == "week":
        start = limit.normalize() - pd.Timedelta(days=limit.weekday())
    else:
        start = limit.normalize().replace(day=1)
    return _step(start, step, -1) if _step(start, step) > limit else start


# --- evaluation ---------------------------------------------------------------------------


@dataclass(frozen=True)
class MonitorOutcome:
    """What one evaluation did."""

    monitor: str
    version: int
    period: str | None
    places: int  # series built (places with any incident)
    evaluated: int  # places that reached min_count in the period
    alarms: int  # places alarmed
    alerts_new: int
    alerts_updated: int

    def as_dict(self) -> dict[str, Any]:
        """The outcome as plain JSON values (a job's result)."""
        return dict(self.__dict__)


@dataclass
class _Series:
    definition: MonitorDefinition
    periods: list[pd.Timestamp]  # local starts, consecutive
    places: list[str]
    counts: np.ndarray  # places x periods


async def _series(
    conn: AsyncConnection, definition: MonitorDefinition, timezone: str, last: pd.Timestamp
) -> _Series:
    step = definition.step
    sel = definition.incidents
    if definition.places.kind == "units":
        stmt = sql.counts_by_unit(sel, definition.places.level, step, timezone)
        rows = (await conn.execute(stmt)).all()
        place = np.array([r.code for r in rows], dtype=object)
        period = np.array([r.period for r in rows], dtype="datetime64[us]")
        n = np.array([r.n for r in rows], dtype=float)
    else:
        place, period = await _h3_places(conn, definition, timezone)
        n = np.ones(len(place))
    return _count_table(definition, place, period, n, last)


async def _h3_places(
    conn: AsyncConnection, definition: MonitorDefinition, timezone: str
) -> tuple[np.ndarray, np.ndarray]:
    """(H3 cell as a 64-bit integer, local period start) of every incident of the
    selection with a cell, read as arrays. Cells come stored (``incident_h3``); those of
    incidents without one yet (new or moved since the last evaluation) are computed here
    and stored for the next. ``conn``'s transaction runs the read without nested loops
    (``sql.NESTED_LOOPS_OFF``), and is committed when cells were stored."""
    resolution = int(definition.places.resolution)
    stmt = sql.cells_by_period(definition.incidents, resolution, definition.step, timezone)
    previous = (await conn.execute(sql.NESTED_LOOPS_OFF)).scalar_one()
    row = (await conn.execute(stmt)).one()
    if not row.cells:
        return np.zeros(0, dtype=np.uint64), np.zeros(0, dtype="datetime64[us]")
    cells = np.frombuffer(row.cells, dtype=">i8").astype(np.int64)
    # Whole seconds (period starts are local midnights), exact in a float64.
    period = np.frombuffer(row.periods, dtype=">f8").astype(np.int64).astype("datetime64[s]")
    if row.missing:
        lon = np.array(row.lon, dtype=np.float64)
        lat = np.array(row.lat, dtype=np.float64)
        computed = _h3_cells(lon, lat, resolution)
        cells[cells == -1] = computed
        await conn.execute(sql.NESTED_LOOPS_BACK, {"previous": previous})
        await _store_cells(conn, resolution, row.missing, lon, lat, computed)
    kept = cells != 0  # 0: a point without a cell
    return cells[kept].astype(np.uint64), period[kept].astype("datetime64[us]")


def _h3_cells(lon: np.ndarray, lat: np.ndarray, resolution: int) -> np.ndarray:
    """The H3 cell of every point as a 64-bit integer, 0 for a point without a valid
    coordinate (left out of the counts, as ``spatial.grids.points_to_h3`` leaves it)."""
    ok = np.isfinite(lon) & np.isfinite(lat) & (np.abs(lat) <= 90) & (np.abs(lon) <= 180)
    # h3 has no vectorised latlng_to_cell; its integer API in one pass is the fast path
    # (no string per point). Valid cells have the top bit 0: they fit an int64.
    cell = h3_int.latlng_to_cell
    res = int(resolution)
    out = np.zeros(len(lon), dtype=np.int64)
    out[ok] = np.fromiter(
        (cell(a, o, res) for a, o in zip(lat[ok].tolist(), lon[ok].tolist(), strict=True)),
        dtype=np.int64,
        count=int(ok.sum()),
    )
    return out


def _array_literal(values: list) -> str:
    """A PostgreSQL array literal of numbers (``repr`` of a float reads back exactly):
    the first evaluation stores tens of thousands of cells, and psycopg's list dumper
    took 1.3 s for the demo's 38,050 (a regular expression per element), this ~30 ms."""
    return "{" + ",".join(map(repr, values)) + "}"


async def _store_cells(
    conn: AsyncConnection,
    resolution: int,
    ids: list[int],
    lon: np.ndarray,
    lat: np.ndarray,
    cells: np.ndarray,
) -> None:
    """Store computed cells for the next evaluation. Only a cache: this evaluation has
    counted them already, so a failure is logged and the next evaluation computes them
    again."""
    params = {
        "resolution": resolution,
        "ids": _array_literal(ids),
        "lon": _array_literal(lon.tolist()),
        "lat": _array_literal(lat.tolist()),
        "cells": _array_literal(cells.tolist()),
    }
    try:
        await conn.execute(sql.STORE_CELLS, params)
        await conn.commit()
    except DBAPIError:
        await conn.rollback()
        log.warning("could not store %d H3 cells; computed again next time", len(ids))


def _count_table(
    definition: MonitorDefinition,
    place: np.ndarray,
    period: np.ndarray,
    n: np.ndarray,
    last: pd.Timestamp,
) -> _Series:
    """Counts (``n`` per place and period) as a places x periods array over every period
    from the first counted one to ``last``; places sorted (H3 cells by their string)."""
    kept = period <= np.datetime64(last.to_datetime64(), "us")
    place, period, n = place[kept], period[kept], n[kept]
    ones = bool((n == 1).all())  # one incident each (H3): counted without weights
    periods = _calendar(pd.Timestamp(period.min()), last, definition.step) if len(place) else []
    if periods and periods[-1] != last:
        periods = [p for p in periods if p <= last]
    if not periods:
        return _Series(definition, [], [], np.zeros((0, 0)))
    codes, row = np.unique(place, return_inverse=True)
    names = [h3_int.int_to_str(int(c)) for c in codes] if codes.dtype == np.uint64 else list(codes)
    # Rows in the order of the names: each place's rank, so the counts land sorted.
    order = sorted(range(len(names)), key=names.__getitem__)
    rank = np.empty(len(order), dtype=np.int64)
    rank[order] = np.arange(len(order))
    # A count in a period off the calendar (none from date_trunc) is left out, as a place
    # with no other count stays a row of zeros.
    calendar = np.array(periods, dtype="datetime64[us]")
    column = np.minimum(np.searchsorted(calendar, period), len(calendar) - 1)
    on = calendar[column] == period
    flat = np.bincount(
        rank[row[on]] * len(periods) + column[on],
        weights=None if ones else n[on],
        minlength=len(codes) * len(periods),
    )
    counts = flat.reshape(len(codes), len(periods)).astype(float, copy=False)
    return _Series(definition, periods, [names[i] for i in order], counts)


def _calendar(first: pd.Timestamp, last: pd.Timestamp, step: str) -> list[pd.Timestamp]:
    """Every period start from ``first`` (rolled forward to a period start) to ``last``,
    as ``pd.date_range`` with the step's frequency. Weeks by fixed 7-day steps from the
    first Monday: the same dates (local naive times have no DST), without W-MON's
    date-by-date generation (8 ms of a 50 ms series for five years of weeks)."""
    if step != "week" or first != first.normalize():  # (period starts are midnights)
        return list(pd.date_range(first, last, freq=_PANDAS_FREQ[step]))
    monday = first + pd.Timedelta(days=-first.weekday() % 7)
    return list(pd.date_range(monday, last, freq="7D"))


def _points(result: DetectorResult, periods: list[pd.Timestamp], step: str) -> list[dict]:
    def num(x: float) -> float | None:
        return None if x is None or math.isnan(x) else round(float(x), 6)

    return [
        {
            "period": period_label(periods[int(i)], step),
            "observed": num(result.observed[k]),
            "expected": num(result.expected[k]),
            "threshold": num(result.upperbound[k]),
            "alarm": bool(result.alarm[k]),
            "reason": result.reason[k],
        }
        for k, i in enumerate(result.index)
    ]


def _lasted(result: DetectorResult) -> int:
    """Consecutive alarmed periods ending with the last evaluated one."""
    n = 0
    for alarmed in result.alarm[::-1]:
        if not alarmed:
            break
        n += 1
    return n


def _groups(cells: list[str]) -> list[list[str]]:
    """Contiguous cells (sharing an edge) as connected groups, each sorted."""
    todo = set(cells)
    out = []
    while todo:
        seed = todo.pop()
        group, frontier = {seed}, [seed]
        while frontier:
            for n in h3.grid_ring(frontier.pop(), 1):
                if n in todo:
                    todo.remove(n)
                    group.add(n)
                    frontier.append(n)
        out.append(sorted(group))
    return sorted(out)


def _outline(cells: list[str]) -> str:
    """The group's outline as a MultiPolygon WKT (lon/lat)."""
    geom = shape(h3.cells_to_h3shape(cells).__geo_interface__)
    if not isinstance(geom, MultiPolygon):
        geom = MultiPolygon([geom])
    return shapely.to_wkt(geom, rounding_precision=7)


def _sum_series(parts: list[list[dict]]) -> list[dict]:
    """The group's chart: per period, the sums over its cells (None if any is None)."""
    out = []
    for rows in zip(*parts, strict=True):
        point = {"period": rows[0]["period"], "alarm": any(r["alarm"] for r in rows)}
        for key in ("observed", "expected", "threshold"):
            values = [r[key] for r in rows]
            point[key] = None if any(v is None for v in values) else round(sum(values), 6)
        reasons = {r["reason"] for r in rows if r["reason"]}
        point["reason"] = ", ".join(sorted(reasons)) if reasons else None
        out.append(point)
    return out


async def evaluate_monitor(
    engine: AsyncEngine,
    record: MonitorRecord,
    timezone: str,
    *,
    now: datetime | None = None,
    back: int = 0,
) -> MonitorOutcome:
    """Evaluate one monitor at the latest complete period (``back`` periods before it, to
    catch up on past nights); store or update its alerts."""
    read = await _read(engine, record, timezone, now=now, back=back)
    return await _judge(engine, record, timezone, read)


@dataclass
class _Read:
    """A monitor's series as read for one evaluation, at the period ``last``."""

    definition: MonitorDefinition
    last: pd.Timestamp | None  # None: no incident at all
    series: _Series | None


async def _read(
    engine: AsyncEngine,
    record: MonitorRecord,
    timezone: str,
    *,
    now: datetime | None,
    back: int,
    latest: datetime | None = None,
) -> _Read:
    """The database part of an evaluation: the latest complete period (from ``latest``,
    the latest incident, read here when not given) and the series up to it."""
    definition = load_monitor(record.definition)
    step = definition.step
    now = now or datetime.now(ZoneInfo(timezone))
    async with engine.connect() as conn:
        if latest is None:
            latest = (await conn.execute(sql.latest_incident())).scalar_one()
        if latest is None:
            return _Read(definition, None, None)
        last = last_complete_period(latest, now, step, timezone)
        for _ in range(back):
            last = _step(last, step, -1)
        return _Read(definition, last, await _series(conn, definition, timezone, last))


async def _judge(
    engine: AsyncEngine, record: MonitorRecord, timezone: str, read: _Read
) -> MonitorOutcome:
    """The detector on the places that could alarm, then their alerts stored."""
    return await _store(engine, record, timezone, await _detect(record, read))


@dataclass
class _Verdict:
    """What the detector found for one evaluation, before its alerts are stored."""

    outcome: MonitorOutcome  # alerts_new/alerts_updated still 0
    definition: MonitorDefinition | None = None
    label: str = ""
    last: pd.Timestamp | None = None
    groups: list[_Group] = field(default_factory=list)


async def _detect(record: MonitorRecord, read: _Read) -> _Verdict:
    """The detector on the places that could alarm, and their alert groups (no database)."""
    definition, last, series = read.definition, read.last, read.series
    if last is None or series is None:
        return _Verdict(MonitorOutcome(record.code, record.version, None, 0, 0, 0, 0, 0))
    step = definition.step
    label = period_label(last, step)
    if not series.places:
        return _Verdict(MonitorOutcome(record.code, record.version, label, 0, 0, 0, 0, 0))
    n = len(series.periods)
    y_last = series.counts[:, n - 1]
    candidates = np.flatnonzero(y_last >= definition.min_count)
    chart = list(range(max(0, n - CHART[step]), n))

    # The GLR CUSUM's statistic accumulates over its range: it is judged on the chart's
    # range, as it is drawn; the others on the last period alone first (cheaper).
    cumulative = definition.detector.name == "glrnb"

    def detect() -> list[tuple[str, DetectorResult]]:
        alarmed = []
        for i in candidates:
            y = series.counts[i]
            if cumulative or run_detector(definition, y, [n - 1]).alarm[-1]:
                result = run_detector(definition, y, chart)
                if result.alarm[-1]:
                    alarmed.append((series.places[i], result))
        return alarmed

    # The fits are CPU work: keep the event loop free for the worker's heartbeat (and
    # for reading the next monitors' series and storing the previous one's alerts
    # meanwhile, ``evaluate_all``).
    alarmed = await asyncio.to_thread(detect)
    outcome = MonitorOutcome(
        record.code, record.version, label, len(series.places), len(candidates), len(alarmed),
        0, 0,
    )  # fmt: skip
    groups = _alert_groups(definition, alarmed, series.periods)
    return _Verdict(outcome, definition, label, last, groups)


async def _store(
    engine: AsyncEngine, record: MonitorRecord, timezone: str, verdict: _Verdict
) -> MonitorOutcome:
    """Store or update the alerts of ``verdict`` (one transaction); the outcome."""
    new = updated = 0
    if verdict.groups:
        assert verdict.definition is not None and verdict.last is not None
        async with engine.begin() as conn:
            for g in verdict.groups:
                is_new = await _upsert(
                    conn, record, verdict.definition, verdict.label, verdict.last, timezone, g
                )
                new += is_new
                updated += not is_new
    return replace(verdict.outcome, alerts_new=new, alerts_updated=updated)


@dataclass
class _Group:
    unit: str | None
    cells: list[str]
    detail: list[dict]  # per place: its latest period's values
    series: list[dict]
    lasted: int


def _alert_groups(
    definition: MonitorDefinition,
    alarmed: list[tuple[str, DetectorResult]],
    periods: list[pd.Timestamp],
) -> list[_Group]:
    step = definition.step
    charts = {place: _points(result, periods, step) for place, result in alarmed}
    lasted = {place: _lasted(result) for place, result in alarmed}
    if definition.places.kind == "units":
        return [
            _Group(p, [], [{"place": p, **charts[p][-1]}], charts[p], lasted[p]) for p in charts
        ]
    return [
        _Group(
            None,
            cells,
            [{"place": c, **charts[c][-1]} for c in cells],
            _sum_series([charts[c] for c in cells]),
            max(lasted[c] for c in cells),
        )
        for cells in _groups(list(charts))
    ]


async def _upsert(
    conn: AsyncConnection,
    record: MonitorRecord,
    definition: MonitorDefinition,
    label: str,
    start: pd.Timestamp,
    timezone: str,
    g: _Group,
) -> bool:
    """Insert the group's alert, or update the open one on its place; True if new."""
    latest = g.series[-1]
    values: dict[str, Any] = {
        "monitor_version": record.version,
        "sensitive": definition.sensitive,
        "cells": g.cells,
        "period": label,
        "period_start": start.to_pydatetime().replace(tzinfo=ZoneInfo(timezone)),
        "observed": latest["observed"],
        "expected": latest["expected"],
        "threshold": latest["threshold"],
        "lasted": g.lasted,
        "detail": g.detail,
        "series": g.series,
    }
    if g.cells:
        values["geom"] = func.ST_Multi(func.ST_GeomFromText(_outline(g.cells), 4326))
    existing = (await conn.execute(sql.open_alert_of(record.code, g.unit, g.cells))).first()
    if existing is not None:
        # Evaluating an earlier period again (catching up) never takes an alert back.
        if existing.period_start <= values["period_start"]:
            await conn.execute(sql.update_alert(existing.id, values))
        return False
    values |= {
        "monitor": record.code,
        "place_kind": "unit" if g.unit is not None else "h3",
        "unit_code": g.unit,
        "first_period": label,
    }
    if g.unit is not None:
        values["geom"] = None
    await conn.execute(sql.insert_alert(values))
    return True


async def evaluate_all(
    engine: AsyncEngine,
    timezone: str,
    *,
    codes: list[str] | None = None,
    now: datetime | None = None,
    periods: int = 1,
    progress: Callable[[str], None] | None = None,
) -> list[MonitorOutcome]:
    """Evaluate every stored monitor (its latest version), or those of ``codes``, at its
    latest ``periods`` complete periods, oldest first (more than 1: catching up on nights
    without an evaluation, or a new monitor's recent past).

    One evaluation after the other, as ``evaluate_monitor``, except that the series of
    the next ``READ_AHEAD`` are read while the detector of this one runs (in a thread),
    and this one's alerts are stored while the next one's detector runs: the database
    and the fits use two cores instead of taking turns, and no fit waits for a series
    read or an alert stored. Alerts are stored in order, one evaluation after the
    other."""
    async with engine.connect() as conn:
        records = await list_definitions(conn, include_sensitive=True)
        latest = (await conn.execute(sql.latest_incident())).scalar_one()
    if codes:
        unknown = set(codes) - {r.code for r in records}
        if unknown:
            raise NotFound(f"no monitor {', '.join(sorted(unknown))}")
        records = [r for r in records if r.code in codes]
    now = now or datetime.now(ZoneInfo(timezone))
    runs = [(r, back) for r in records for back in range(periods - 1, -1, -1)]

    reads: dict[int, asyncio.Task[_Read]] = {}

    def read_ahead(k: int) -> None:
        """Start reading the series of runs k to k + READ_AHEAD (those not started)."""
        for j in range(k, min(k + READ_AHEAD + 1, len(runs))):
            if j not in reads:
                record, back = runs[j]
                reads[j] = asyncio.create_task(
                    _read(engine, record, timezone, now=now, back=back, latest=latest)
                )

    out: list[MonitorOutcome] = []
    storing: asyncio.Task[MonitorOutcome] | None = None
    try:
        for k, (record, back) in enumerate(runs):
            if progress is not None and back == periods - 1:
                progress(record.code)
            read_ahead(k)
            series = await reads.pop(k)
            read_ahead(k + 1)
            verdict = await _detect(record, series)
            if storing is not None:  # the previous run's alerts, stored meanwhile
                out.append(await storing)
            storing = asyncio.create_task(_store(engine, record, timezone, verdict))
        if storing is not None:
            out.append(await storing)
            storing = None
    finally:
        await _wind_up(list(reads.values()), storing)
    return out


async def _wind_up(reads: list[asyncio.Task], storing: asyncio.Task | None) -> None:
    """After an evaluation failed: the reads ahead are not wanted; alerts being stored are
    (their transaction ends, committed or not)."""
    for task in reads:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
    if storing is not None and not storing.done():
        with contextlib.suppress(Exception):
            await storing


# The queueing lock of the evaluation deferred after imports: one waits at a time.
EVALUATION_LOCK = "evaluate_monitors"


async def defer_evaluation(queue: App, conn: AsyncConnection) -> bool:
    """Queue one evaluation of every monitor (after an import changed incidents); True if
    queued, False if no monitor is stored, one is already waiting or the queue could not
    take it (the import stands either way: the nightly evaluation will see its incidents)."""
    if (await conn.execute(sql.any_monitor())).scalar_one() is None:
        return False
    try:
        task = queue.configure_task("evaluate_monitors", queueing_lock=EVALUATION_LOCK)
        await task.defer_async()
    except AlreadyEnqueued:
        return False
    except Exception:
        log.exception("could not queue the evaluation of the monitors")
        return False
    return True


# --- alerts ---------------------------------------------------------------------------------


def _alert(row: Any, cls: type[AlertRecord] = AlertRecord, **extra: Any) -> AlertRecord:
    return cls(
        id=row.id,
        monitor=row.monitor,
        monitor_version=row.monitor_version,
        title=row.title or "",
        sensitive=row.sensitive,
        place_kind=row.place_kind,
        unit=row.unit_code,
        unit_name=row.unit_name,
        cells=list(row.cells or []),
        period=row.period,
        first_period=row.first_period,
        observed=row.observed,
        expected=row.expected,
        threshold=row.threshold,
        lasted=row.lasted,
        state=row.state,
        note=row.note,
        state_changed_by=row.state_changed_by,
        state_changed_at=row.state_changed_at,
        created_at=row.created_at,
        updated_at=row.updated_at,
        **extra,
    )


async def list_alerts(
    conn: AsyncConnection,
    *,
    include_sensitive: bool,
    monitor: str | None = None,
    states: tuple[str, ...] = (),
    period: str | None = None,
    unit: str | None = None,
    limit: int = 1000,
) -> list[AlertRecord]:
    """Alerts, newest period first (sensitive ones only if ``include_sensitive``)."""
    stmt = sql.select_alerts(
        include_sensitive=include_sensitive, monitor=monitor, states=states, period=period,
        unit=unit, limit=limit,
    )  # fmt: skip
    return [_alert(r) for r in (await conn.execute(stmt)).all()]


async def get_alert(
    conn: AsyncConnection, alert_id: int, *, include_sensitive: bool
) -> AlertDetail:
    """One alert with its two-year series; NotFound (also for an alert the caller may not
    see: its existence is not told)."""
    stmt = sql.select_alert_detail(alert_id, include_sensitive=include_sensitive)
    row = (await conn.execute(stmt)).first()
    if row is None:
        raise NotFound(f"no alert {alert_id}")
    series = [SeriesPoint.model_validate(p) for p in row.series]
    outline = json.loads(row.outline) if row.outline else None
    return _alert(row, AlertDetail, series=series, outline=outline)  # type: ignore[return-value]


def published(item: AlertRecord, min_count: int) -> AlertRecord:
    """The published view of an alert (callers below analyst): observed counts below
    ``min_count`` withheld (in the alert and its series), and neither the analyst's
    note nor who changed the state."""

    def shown(v: float | None) -> float | None:
        return v if v is not None and v >= min_count else None

    update: dict[str, Any] = {
        "observed": shown(item.observed),
        "note": None,
        "state_changed_by": None,
    }
    if isinstance(item, AlertDetail):
        update["series"] = [
            p.model_copy(update={"observed": shown(p.observed)}) for p in item.series
        ]
    return item.model_copy(update=update)


async def change_state(
    conn: AsyncConnection,
    alert_id: int,
    state: str,
    note: str | None,
    actor: str,
    *,
    include_sensitive: bool,
) -> AlertDetail:
    """Acknowledge (with a note) or close an alert, audited with the state before/after.
    A closed alert stays closed (a new alarm raises a new alert)."""
    row = (await conn.execute(sql.lock_alert(alert_id))).first()
    if row is None or (row.sensitive and not include_sensitive):
        raise NotFound(f"no alert {alert_id}")
    if row.state == "closed":
        raise Conflict(f"alert {alert_id} is closed: a new alarm raises a new alert")
    if state == "acknowledged" and not (note and note.strip()):
        raise InvalidParameter("acknowledging an alert needs a note (what is being done)")
    note = note if note is not None else row.note
    await conn.execute(sql.set_state(alert_id, state, note, actor))
    await conn.execute(
        audit_sql.insert_audit(
            actor,
            state if state == "closed" else "acknowledge",
            "alert",
            alert_id,
            {"state": row.state, "note": row.note},
            {"state": state, "note": note},
        )
    )
    return await get_alert(conn, alert_id, include_sensitive=include_sensitive)
