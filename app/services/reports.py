"""The periodic situational report (issue 20): a :class:`reports.document.ReportDocument`
computed from the service's own answers, rendered by :mod:`reports.render`, stored.

Every number comes from the function behind the route that answers the same question:
counts and rates from :func:`app.services.stats.compute_stats` (``/stats``), the ranking
from :func:`app.services.rankings.compute_ranking` (``/rankings``), alerts from
:func:`app.services.monitors.list_alerts` (``/alerts``), hot spots from the stored runs.
For the ``public`` audience each query is first made a public table by
:func:`app.services.lattice.restrict` and computed for the anonymous caller, so the
disclosure control of public statistics applies unchanged (perturbed counts, small
counts withheld, no sensitive category, no point); a figure ``/stats`` withholds is
missing in the report, never 0. The weekday x hour chart has no public table: the public
report says so instead of drawing it.

A report is stored with the data version it was built from (a fingerprint of what it
reads, :data:`app.sql.reports.DATA_FINGERPRINT`); asking again for the same definition
version, period and data returns the stored one.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import logging
import math
import re
import threading
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from app.access import sees_published_view
from app.core.errors import InvalidParameter, NotFound, ProblemError
from app.core.settings import DATA_DIR, Settings
from app.models import report_definition
from app.schemas.reports import (
    Measure,
    ReportDefinition,
    ReportDefinitionRecord,
    load_report_definition,
)
from app.schemas.stats import StatsRow
from app.security import PUBLIC, Principal
from app.services import definitions, lattice, monitors, rankings
from app.services import indexes as index_service
from app.services import stats as stats_service
from app.services.denominators import read_units
from app.services.jobs import JobProgress
from app.services.periods import period_containing, previous_period
from app.sql import reports as sql
from app.sql import stats as stats_sql
from app.sql.incidents import IncidentFilter
from reports.document import ReportDocument, Section, short_version
from reports.i18n import VOCABULARY, Lang

__all__ = [
    "ANALYST",
    "DEFAULTS_DIR",
    "PUBLISHER",
    "ReportPeriod",
    "build_document",
    "build_report",
    "check_ended",
    "check_request",
    "data_version",
    "get_definition",
    "last_complete_period",
    "list_definitions",
    "load_default_definitions",
    "parse_definition",
    "parse_report_period",
    "reader_of",
    "render_files",
    "store_definition",
]

log = logging.getLogger("observatory")
# WeasyPrint logs every layout step at INFO: a worker's log would be mostly that.
logging.getLogger("weasyprint").setLevel(logging.WARNING)

DEFAULTS_DIR = DATA_DIR / "reports"
# Who computes an analyst report's statistics, and the /rankings router's publisher.
ANALYST = Principal(role="analyst", name="report")
PUBLISHER = Principal(role="analyst", name="published ranking")
# The territory's units: the country (headline, trend, victims) and its districts.
COUNTRY_LEVEL, DISTRICT_LEVEL = 0, 1
OPEN_STATES = ("new", "acknowledged")
_MONTHS = {"month": 1, "quarter": 3, "half-year": 6, "year": 12}
# 2024Q3 (or 2024-Q3, as /stats writes it), 2024-07, 2024H2 (or 2024-H2), 2024.
_PERIOD = re.compile(r"^(\d{4})(?:-?Q([1-4])|-(0[1-9]|1[0-2])|-?H([12]))?$")
_GI_CLASSES = {
    3: "hot spot, 99% confidence",
    2: "hot spot, 95% confidence",
    1: "hot spot, 90% confidence",
    -1: "cold spot, 90% confidence",
    -2: "cold spot, 95% confidence",
    -3: "cold spot, 99% confidence",
}


# --- definitions --------------------------------------------------------------------------


def _record(row: Any) -> ReportDefinitionRecord:
    return ReportDefinitionRecord(
        code=row.code,
        version=row.version,
        title=row.definition.get("title", ""),
        audience=row.definition.get("audience", "analyst"),
        created_by=row.created_by,
        created_at=row.created_at,
        definition=row.definition,
    )


def parse_definition(body: bytes, content_type: str | None) -> ReportDefinition:
    """A JSON or YAML request body → a validated definition (InvalidParameter: 422)."""
    kind = (content_type or "").split(";")[0].strip().lower()
    if kind not in ("application/json", "application/yaml", "text/yaml", "application/x-yaml"):
        raise InvalidParameter(
            f"send the definition as application/json or application/yaml (got {kind or 'none'})"
        )
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidParameter(f"the definition is not valid UTF-8 ({exc.reason})") from exc
    if not text.strip():
        raise InvalidParameter("the request body is empty: send a report definition")
    definition = load_report_definition(text)
    # PostgreSQL's JSONB cannot hold NUL (YAML's "\0", JSON's "\u0000").
    if "\\u0000" in definition.model_dump_json():
        raise InvalidParameter("the definition must not contain NUL characters")
    return definition


async def store_definition(
    conn: AsyncConnection, definition: ReportDefinition, actor: str
) -> ReportDefinitionRecord:
    """Store ``definition`` as the next version of its code (its ``name``), audited."""
    return _record(await definitions.store_version(conn, report_definition, definition, actor))


async def list_definitions(
    conn: AsyncConnection, *, include_analyst: bool
) -> list[ReportDefinitionRecord]:
    """The latest version of every report definition (analyst ones if ``include_analyst``)."""
    records = [_record(r) for r in await definitions.latest_rows(conn, report_definition)]
    return [r for r in records if include_analyst or r.audience == "public"]


async def get_definition(
    conn: AsyncConnection, code: str, version: int | None = None, *, include_analyst: bool
) -> ReportDefinitionRecord:
    """One version of a report definition (the latest when ``version`` is None);
    NotFound (also for an analyst definition the caller may not read)."""
    row = await definitions.get_row(conn, report_definition, code, version)
    record = None if row is None else _record(row)
    if record is None or (record.audience != "public" and not include_analyst):
        which = f"report definition {code!r}" + (f" version {version}" if version else "")
        raise NotFound(f"no {which}")
    return record


async def load_default_definitions(engine: AsyncEngine, *, actor: str) -> list[str]:
    """Store each shipped definition (app/data/reports) as version 1 unless its code
    exists. Returns the codes stored now."""
    return await definitions.load_shipped(
        engine, report_definition, DEFAULTS_DIR, load_report_definition, actor=actor
    )


# --- periods ------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReportPeriod:
    """One report period: ``2024Q3``, ``2024-07``, ``2024H2`` or ``2024``, with its local
    bounds (``start`` <= t < ``end``, aware) and its name in ``/stats`` (None for a
    half-year, which ``/stats`` has no period for)."""

    label: str
    kind: str
    start: datetime
    end: datetime

    @property
    def stats_label(self) -> str | None:
        """The same period as ``/stats`` names it (``2024-Q3``), None for a half-year."""
        s = self.start
        return {
            "month": f"{s.year}-{s.month:02d}",
            "quarter": f"{s.year}-Q{(s.month - 1) // 3 + 1}",
            "year": f"{s.year}",
        }.get(self.kind)

    @property
    def days(self) -> float:
        """The period's length in days."""
        return (self.end - self.start).total_seconds() / 86_400

    def shifted(self, months: int) -> ReportPeriod:
        """The period of the same kind starting ``months`` later (negative: earlier)."""
        return _period(self.kind, _add_months(self.start, months), self.start.tzinfo)


def _add_months(moment: datetime, months: int) -> datetime:
    index = moment.year * 12 + moment.month - 1 + months
    return moment.replace(year=index // 12, month=index % 12 + 1, day=1)


def _label(kind: str, start: datetime) -> str:
    y, m = start.year, start.month
    return {
        "month": f"{y}-{m:02d}",
        "quarter": f"{y}Q{(m - 1) // 3 + 1}",
        "half-year": f"{y}H{(m - 1) // 6 + 1}",
        "year": f"{y}",
    }[kind]


def _period(kind: str, start: datetime, tz: Any) -> ReportPeriod:
    begin = datetime(start.year, start.month, 1, tzinfo=tz)
    end = _add_months(begin, _MONTHS[kind])
    return ReportPeriod(_label(kind, begin), kind, begin, end)


def parse_report_period(text: str, timezone: str) -> ReportPeriod:
    """``2024Q3``, ``2024-07``, ``2024H2`` or ``2024`` → the period in the territory's
    local time. Raises InvalidParameter (422) for anything else, e.g. ``2024Q5``."""
    match = _PERIOD.fullmatch(text.strip().upper())
    if match is None:
        raise InvalidParameter(
            f"period {text!r} is not a report period: write a quarter (2024Q3), a month "
            "(2024-07), a half-year (2024H2) or a year (2024)"
        )
    year, quarter, month, half = match.groups()
    kind, first = (
        ("quarter", (int(quarter) - 1) * 3 + 1)
        if quarter
        else ("month", int(month))
        if month
        else ("half-year", (int(half) - 1) * 6 + 1)
        if half
        else ("year", 1)
    )
    if int(year) < 1900:
        raise InvalidParameter(f"period {text!r} is before 1900")
    return _period(kind, datetime(int(year), first, 1), ZoneInfo(timezone))


def check_ended(period: ReportPeriod, now: datetime | None = None) -> None:
    """A report covers a period that has ended: a future or running one is a 422."""
    now = now or datetime.now(UTC)
    if period.start > now:
        raise InvalidParameter(f"period {period.label} is in the future")
    if period.end > now:
        raise InvalidParameter(
            f"period {period.label} has not ended yet (it ends {period.end.date()}); a "
            "report covers a whole period"
        )


def last_complete_period(kind: str, timezone: str, now: datetime | None = None) -> ReportPeriod:
    """The latest period of ``kind`` that has ended by ``now`` (local time)."""
    local = (now or datetime.now(UTC)).astimezone(ZoneInfo(timezone))
    months = _MONTHS[kind]
    index = local.year * 12 + local.month - 1
    first = index - index % months if kind != "month" else index
    current = _period(kind, datetime(first // 12, first % 12 + 1, 1), ZoneInfo(timezone))
    return current.shifted(-months)


# --- the data version ---------------------------------------------------------------------


async def data_version(conn: AsyncConnection) -> int:
    """A fingerprint of everything a report reads, as a positive 52-bit integer (exact
    in JSON for JavaScript clients, whose numbers are doubles)."""
    text = (await conn.execute(sql.DATA_FINGERPRINT)).scalar_one()
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big") >> 12


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


# --- sections -------------------------------------------------------------------------------


async def _headline(ctx: _Context) -> Section:
    p = ctx.period
    before, year_before = p.shifted(-_MONTHS[p.kind]), p.shifted(-12)
    days_in_year = (date(p.start.year + 1, 1, 1) - date(p.start.year, 1, 1)).days
    records = []
    for m in ctx.definition.measures:
        now = await _rows(ctx, m, level=COUNTRY_LEVEL, period=p)
        prev = await _rows(ctx, m, level=COUNTRY_LEVEL, period=before)
        last = await _rows(ctx, m, level=COUNTRY_LEVEL, period=year_before)
        rate = now[0].rate if now else None
        records.append(
            {
                "measure": m.code,
                "period": _count(now),
                "previous": _count(prev),
                "year_before": _count(last),
                "change_previous_pct": _pct(_count(now), _count(prev)),
                "change_year_pct": _pct(_count(now), _count(last)),
                "rate_per_100k": rate,
                "projected_annual_rate": None if rate is None else rate * days_in_year / p.days,
            }
        )
    section = Section("headline", tables={"figures": pd.DataFrame.from_records(records)})
    section.notes.append(
        ctx.t(
            f"{p.label} against {before.label} and {year_before.label}. Rates per 100,000 "
            "residents are for the period (not annualised); the projected annual rate "
            f"multiplies the period's rate by {days_in_year} / {p.days:g} days.",
            f"{p.label} frente a {before.label} y {year_before.label}. Las tasas por 100 000 "
            "habitantes son del periodo (no anualizadas); la tasa anual proyectada "
            f"multiplica la del periodo por {days_in_year} / {p.days:g} días.",
        )
    )
    names = "; ".join(
        f"{ctx.name(m)}: {ctx.words(_codes(ctx, m))}" for m in ctx.definition.measures
    )
    section.notes.append(names + ".")
    return section


async def _trend(ctx: _Context) -> Section:
    p = ctx.period
    months = ctx.definition.trend_months
    start = _add_months(p.end, -months)
    frames = []
    for m in ctx.definition.measures:
        rows = await _rows(ctx, m, level=COUNTRY_LEVEL, months=(start, p.end))
        for r in rows or []:
            month = pd.Period(r.period, freq="M").start_time.to_pydatetime()
            frames.append(
                {
                    "month": r.period,
                    "group": m.code,
                    "count": None if r.count is None else float(r.count),
                    "in_period": p.start.replace(tzinfo=None) <= month < p.end.replace(tzinfo=None),
                }
            )
    section = Section("trend", tables={"monthly": pd.DataFrame.from_records(frames)})
    section.notes.append(
        ctx.t(
            f"Incidents per month, the last {months} months to the end of {p.label}.",
            f"Incidentes por mes, los últimos {months} meses hasta el final de {p.label}.",
        )
    )
    return section


async def _districts(ctx: _Context) -> Section:
    p = ctx.period
    m = ctx.definition.measure(ctx.definition.districts_measure)
    now = await _rows(ctx, m, level=DISTRICT_LEVEL, period=p) or []
    prev = await _rows(ctx, m, level=DISTRICT_LEVEL, period=p.shifted(-_MONTHS[p.kind])) or []
    before = {r.unit_code: r.count for r in prev}
    records = [
        {
            "unit_code": r.unit_code,
            "unit_name": r.unit_name,
            "count": None if r.count is None else float(r.count),
            "previous": None if before.get(r.unit_code) is None else float(before[r.unit_code]),
            "change_pct": _pct(r.count, before.get(r.unit_code)),
            "rate_per_100k": r.rate,
            "eb_rate_per_100k": r.rate_eb_global,
        }
        for r in now
    ]
    table = pd.DataFrame.from_records(records)
    units = await read_units(ctx.conn, level=DISTRICT_LEVEL)
    geometry = gpd.GeoDataFrame(
        {"unit_code": [u.code for u in units]}, geometry=[u.geometry for u in units], crs=4326
    )
    shown = table[["unit_code", "unit_name", "rate_per_100k"]] if len(table) else None
    maps = {}
    if shown is not None:
        frame = geometry.merge(shown.rename(columns={"rate_per_100k": "value"}), on="unit_code")
        maps["districts"] = frame[["unit_code", "unit_name", "value", "geometry"]]
    section = Section("districts", tables={"districts": table}, maps=maps)
    section.notes.append(
        ctx.t(
            f"{ctx.name(m)}. Empirical Bayes rates shrink each district's rate toward the "
            "national rate (global, Marshall 1991), steadier where counts are small.",
            f"{ctx.name(m)}. Las tasas bayesianas empíricas acercan la tasa de cada distrito a la "
            "nacional (global, Marshall 1991), más estables con pocos casos.",
        )
    )
    return section


async def _victims(ctx: _Context) -> Section:
    d = ctx.definition
    tables = {}
    for name, code in (("by_sex_age", d.victims_measure), ("vawg", d.vawg_measure)):
        if code is None or (name == "vawg" and ctx.public):
            continue
        m = d.measure(code)
        # Violence against women and girls: its female victims, by age group.
        sexes = ("female",) if name == "vawg" else ()
        rows = await _rows(
            ctx, m, level=COUNTRY_LEVEL, period=ctx.period, by=("victim_sex", "age_group"),
            victim_sex=sexes,
        )  # fmt: skip
        tables[name] = pd.DataFrame.from_records(
            [
                {
                    "sex": r.victim_sex,
                    "age_group": r.age_group,
                    "count": None if r.count is None else float(r.count),
                }
                for r in rows or []
            ],
            columns=["sex", "age_group", "count"],
        )
    section = Section("victims", tables=tables)
    section.notes.append(
        ctx.t(
            f"Incidents of {ctx.name(d.measure(d.victims_measure)).lower()} by the victim's "
            "sex and age group.",
            f"Incidentes de {ctx.name(d.measure(d.victims_measure)).lower()} según el sexo y "
            "el grupo de edad de la víctima.",
        )
    )
    return section


def _codes(ctx: _Context, m: Measure) -> list[str]:
    if m.categories:
        return list(m.categories)
    return sorted(c for c, g in ctx.vocabulary.items() if g == m.category_group)


async def _when(ctx: _Context) -> Section:
    code = ctx.definition.when_measure
    if ctx.public or code is None:
        return Section(
            "when",
            empty=ctx.t(
                "The day of week and hour chart is not among the public tables; the "
                "observatory's analysts publish it on request.",
                "El gráfico por día de la semana y hora no forma parte de las tablas "
                "públicas; los analistas del observatorio lo publican a petición.",
            ),
        )
    m = ctx.definition.measure(code)
    p = ctx.period
    tz = ctx.settings.territory.timezone
    found = (await ctx.conn.execute(sql.weekday_hour(_codes(ctx, m), p.start, p.end, tz))).all()
    counts = {(r.weekday, r.hour): r.count for r in found}
    table = pd.DataFrame.from_records(
        [
            {"weekday": w, "hour": h, "count": float(counts.get((w, h), 0))}
            for w in range(7)
            for h in range(24)
        ]
    )
    section = Section("when", tables={"weekday_hour": table})
    section.notes.append(ctx.t(f"{ctx.name(m)}, local time.", f"{ctx.name(m)}, hora local."))
    return section


async def _where(ctx: _Context) -> Section:
    section = Section("where")
    await _hotspots(ctx, section)
    if ctx.definition.alerts:
        await _alerts(ctx, section)
    if not section.tables:
        section.empty = ctx.t(
            "No hot spot run and no open alert.", "Ningún análisis de puntos calientes ni alerta."
        )
    return section


async def _hotspots(ctx: _Context, section: Section) -> None:
    sensitive = sorted(ctx.sensitive)
    classes: list[dict] = []
    run = (
        await ctx.conn.execute(
            sql.latest_run("hotspots", public_only=ctx.public, sensitive=sensitive)
        )
    ).first()
    if run is not None:
        cells = (await ctx.conn.execute(sql.hotspot_cells(run.id))).all()
        frame = gpd.GeoDataFrame(
            {"cell_id": [c.cell_id for c in cells], "gi_bin": [int(c.bin) for c in cells]},
            geometry=[shapely.from_wkb(bytes(c.wkb)) for c in cells],
            crs=4326,
        )
        section.maps["hotspots"] = frame
        for value, label in _GI_CLASSES.items():
            n = int((frame["gi_bin"] == value).sum()) if len(frame) else 0
            if n:
                classes.append({"category": label, "cells": n})
        f = (run.parameters or {}).get("filters") or {}
        categories = ctx.words(f.get("categories") or []) or ctx.t("all", "todas")
        since, until = _day(ctx, f.get("occurred_from")), _day(ctx, f.get("occurred_to"), True)
        section.notes.append(
            ctx.t(
                f"Hot spots: analysis run {run.id} ({run.method}), categories {categories}, "
                f"{since or 'first incident'} to {until or 'last incident'}.",
                f"Puntos calientes: análisis {run.id} ({run.method}), categorías {categories}, "
                f"{since or 'primer incidente'} a {until or 'último incidente'}.",
            )
        )
        ctx.notes.append(_run_note(ctx, run))
    emerging = (
        await ctx.conn.execute(
            sql.latest_run("emerging", public_only=ctx.public, sensitive=sensitive)
        )
    ).first()
    if emerging is not None:
        found = (await ctx.conn.execute(sql.emerging_categories(emerging.id))).all()
        classes += [{"category": r.category, "cells": int(r.cells)} for r in found]
        section.notes.append(
            ctx.t(
                f"Emerging hot spot categories: analysis run {emerging.id}.",
                f"Categorías de puntos calientes emergentes: análisis {emerging.id}.",
            )
        )
    if classes:
        section.tables["hotspot_classes"] = pd.DataFrame.from_records(classes)


async def _alerts(ctx: _Context, section: Section) -> None:
    items = await monitors.list_alerts(
        ctx.conn, include_sensitive=not ctx.public, states=OPEN_STATES
    )
    if ctx.public:
        items = [monitors.published(a, ctx.settings.privacy.min_count) for a in items]
    records = [
        {
            "alert_id": a.id,
            "monitor": a.monitor,
            "place": a.unit_name
            or a.unit
            or ctx.t(f"{len(a.cells)} H3 cell(s)", f"{len(a.cells)} celda(s) H3"),
            "period": a.period,
            "observed": a.observed,
            "expected": a.expected,
            "threshold": a.threshold,
            "periods_lasting": a.lasted,
            "state": a.state,
        }
        for a in items
    ]
    columns = [
        "alert_id", "monitor", "place", "period", "observed", "expected", "threshold",
        "periods_lasting", "state",
    ]  # fmt: skip
    section.tables["alerts"] = pd.DataFrame.from_records(records, columns=columns)
    section.tables["alert_series"] = await _alert_series(ctx, [a.id for a in items])
    if records:
        rows = (await ctx.conn.execute(sql.alert_outlines([a.id for a in items]))).all()
        shapes = {r.id: shapely.from_wkb(bytes(r.wkb)) for r in rows if r.wkb is not None}
        section.maps["alerts"] = gpd.GeoDataFrame(
            {
                "alert_id": [a.id for a in items if a.id in shapes],
                "monitor": [a.monitor for a in items if a.id in shapes],
                "state": [a.state for a in items if a.id in shapes],
            },
            geometry=[shapes[a.id] for a in items if a.id in shapes],
            crs=4326,
        )
    section.notes.append(
        ctx.t(
            f"{len(records)} early-warning alert(s) open (new or acknowledged) when the "
            f"report was built, {ctx.lang.date(date.today())}, whatever their period; the "
            "charts show the strongest (observed count over threshold) of those whose counts "
            "are shown.",
            f"{len(records)} alerta(s) temprana(s) abierta(s) (nuevas o reconocidas) al "
            f"elaborar el informe, el {ctx.lang.date(date.today())}, sea cual sea su período; "
            "los gráficos muestran las más fuertes (conteo observado sobre el umbral) entre "
            "las que tienen sus conteos publicados.",
        )
    )


async def _alert_series(ctx: _Context, ids: list[int]) -> pd.DataFrame:
    """Each alert's series as ``GET /alerts/{id}`` gives the report's reader (published:
    small observed counts withheld), in the order of the alerts table."""
    records = []
    for alert_id in ids:
        detail = await monitors.get_alert(ctx.conn, alert_id, include_sensitive=not ctx.public)
        if ctx.public:
            detail = monitors.published(detail, ctx.settings.privacy.min_count)
        records += [
            {
                "alert_id": alert_id,
                "period": point.period,
                "observed": point.observed,
                "expected": point.expected,
                "threshold": point.threshold,
                "alarm": point.alarm,
            }
            for point in detail.series  # type: ignore[attr-defined]
        ]
    columns = ["alert_id", "period", "observed", "expected", "threshold", "alarm"]
    return pd.DataFrame.from_records(records, columns=columns)


def _index_period(ctx: _Context, kind: str) -> str:
    """The index's latest period of ``kind`` that ended by the report period's end."""
    tz = ctx.settings.territory.timezone
    last = period_containing(ctx.period.end - timedelta(microseconds=1), kind, tz)
    if last.end > ctx.period.end:
        last = previous_period(last, tz)
    return last.label


async def _index(ctx: _Context) -> Section:
    code = ctx.definition.index
    if code is None:
        return Section("index", empty=ctx.t("No index in this report.", "Sin índice."))
    try:
        record = await index_service.get_definition(ctx.conn, code)
        kind = record.definition.get("period", "year")
        label = _index_period(ctx, kind)
        ranking = await rankings.compute_ranking(
            ctx.conn, ctx.settings, PUBLISHER, code, label, reader=ctx.who
        )
    except ProblemError as exc:
        return Section(
            "index",
            empty=ctx.t(f"The index could not be computed: {exc.detail}", f"El índice no "
                        f"pudo calcularse: {exc.detail}"),
        )  # fmt: skip
    table = pd.DataFrame.from_records(
        [
            {
                "rank": r.rank,
                "unit_code": r.unit_code,
                "unit_name": r.unit_name,
                "score": r.score,
                "band": r.ranks,
            }
            for r in ranking.rows
        ],
        columns=["rank", "unit_code", "unit_name", "score", "band"],
    )
    section = Section("index", tables={"ranking": table})
    ties = " ".join(ranking.ties) if not ctx.es else _ties_es(table)
    section.notes.append(
        ctx.t(
            f"{ranking.title} (version {ranking.version}), {ranking.period}. {ties}",
            f"{ranking.title} (versión {ranking.version}), {ranking.period}. {ties}",
        ).strip()
    )
    ctx.notes.append(
        ctx.t(
            f"Index: {ranking.title}, version {ranking.version}, period {ranking.period}; "
            f"rank bands from {ranking.runs} Monte Carlo runs (seed {ranking.seed}); "
            f"{ranking.treatment.rule}",
            f"Índice: {ranking.title}, versión {ranking.version}, periodo {ranking.period}; "
            f"bandas de rango de {ranking.runs} simulaciones Monte Carlo (semilla "
            f"{ranking.seed}); {_treatment_es(ranking.treatment)}",
        )
    )
    return section


DASH = "\u2013"


def _ties_es(table: pd.DataFrame) -> str:
    """The ranking's ties in Spanish, from its bands (rankings words them in English)."""
    out = []
    for band, rows in table.groupby("band", sort=False):
        if len(rows) > 1:
            names = list(rows["unit_name"])
            who = ", ".join(names[:-1]) + " y " + names[-1]
            out.append(
                f"{who} comparten los puestos {band}: sus bandas de rango (5{DASH}95 %) se solapan "
                "y los datos no permiten ordenarlos."
            )
    return " ".join(out) or "Ninguna banda de rango se solapa: los datos ordenan cada unidad."


def _treatment_es(treatment: Any) -> str:
    """Which outlier rule applied, in Spanish (from the statement's fields)."""
    if treatment.method == "none":
        return "sin tratamiento de valores atípicos: la definición no lo pide."
    if treatment.applied:
        return (
            "valores atípicos tratados con la regla del JRC (asimetría y curtosis altas: "
            f"winsorización, si no logaritmo): {treatment.units} unidades, la regla necesita "
            f"{treatment.min_units}."
        )
    return (
        "sin tratamiento de valores atípicos: la regla del JRC no se aplica a "
        f"{treatment.units} unidades, menos de las {treatment.min_units} que necesita para "
        "distinguir un valor atípico de una unidad que simplemente se aparta; cada valor se "
        "usa tal como se midió."
    )


def _day(ctx: _Context, moment: str | None, until: bool = False) -> str | None:
    """An ISO timestamp of a run's filters as a date in the report's language; ``until``:
    an exclusive end, so a midnight prints as the day before (the last day included)."""
    if not moment:
        return None
    day = date.fromisoformat(moment[:10])
    if until and moment[11:19] in ("", "00:00:00"):
        day -= timedelta(days=1)
    return ctx.lang.date(day)


async def _quality(ctx: _Context) -> Section:
    p = ctx.period
    found = (await ctx.conn.execute(sql.georeferenced(p.start, p.end, DISTRICT_LEVEL))).all()
    geo = pd.DataFrame.from_records(
        [
            {
                "source": r.source,
                "unit_name": r.unit_name or ctx.t("(no district)", "(sin distrito)"),
                "incidents": float(r.incidents),
                "georeferenced": float(r.georeferenced),
            }
            for r in found
        ],
        columns=["source", "unit_name", "incidents", "georeferenced"],
    )
    if ctx.public:
        # No counts by source (a public table has no source breakdown): whole percentages
        # per district over every source.
        geo = geo.groupby("unit_name", as_index=False)[["incidents", "georeferenced"]].sum()
        geo.insert(0, "source", ctx.t("all sources", "todas las fuentes"))
    geo["georeferenced_pct"] = (geo["georeferenced"] / geo["incidents"] * 100).round(
        0 if ctx.public else 1
    )
    if ctx.public:
        geo["incidents"] = np.nan
    geo = geo[["source", "unit_name", "incidents", "georeferenced_pct"]]
    rejected = pd.DataFrame.from_records(
        [
            {"batch_id": r.batch_id, "reason": r.reason, "rows": float(r.rows)}
            for r in (await ctx.conn.execute(sql.rejected(p.start, p.end))).all()
        ],
        columns=["batch_id", "reason", "rows"],
    )
    delays = (await ctx.conn.execute(sql.delay(p.start, p.end, by_source=not ctx.public))).all()
    delay = pd.DataFrame.from_records(
        [
            {
                "source": r.source if not ctx.public else ctx.t("all sources", "todas las fuentes"),
                "median_days": round(float(r.median_days), 1),
                "p90_days": round(float(r.p90_days), 1),
            }
            for r in delays
        ],
        columns=["source", "median_days", "p90_days"],
    )
    section = Section(
        "quality", tables={"georeferenced": geo, "rejected": rejected, "delay": delay}
    )
    if not ctx.public:  # GET /quality is for analysts: the public report leaves it out
        # Imported here: the death records' modules bring GDAL's reader (~30 MiB) that a
        # public report does not need.
        from app.services import quality

        section.tables["sources"] = await _death_sources(ctx)
        section.notes.append(
            ctx.t(
                "Death records by agency (the scorecard of GET /quality): completeness is the "
                "mean share of the scored fields; timely: registered within "
                f"{quality.TIMELY_DAYS} days of the death; linked: matched to another "
                "agency's record of the same death; same manner: of those, the share where "
                "the agencies record the same manner of death.",
                "Registros de defunciones por institución (la ficha de GET /quality): la "
                "completitud es la proporción media de los campos evaluados; a tiempo: "
                f"registrados dentro de los {quality.TIMELY_DAYS} días de la muerte; "
                "enlazados: con un registro de otra institución de la misma muerte; misma "
                "manera: entre estos, la proporción con la misma manera de muerte.",
            )
        )
    precise = " / ".join(sql.GEOREFERENCED)
    if ctx.es:  # the import's precision codes, as the Spanish reader says them
        precise = " / ".join(
            {"exact": "exacta", "street": "calle"}.get(c, c) for c in sql.GEOREFERENCED
        )
    section.notes.append(
        ctx.t(
            f"Georeferenced: located at an address or a street (location precision {precise}), "
            "the rest at a town or district centre. Rejected rows: the rows the imports of the "
            "period's incidents refused, by reason (quoted values left out). Reporting delay: "
            "days from occurrence to report.",
            f"Georreferenciados: ubicados en una dirección o calle (precisión {precise}); el "
            "resto en el centro de una localidad o distrito. Filas rechazadas: las que las "
            "importaciones de los incidentes del periodo rechazaron, por motivo. Demora de "
            "denuncia: días desde el hecho hasta la denuncia.",
        )
    )
    return section


async def _death_sources(ctx: _Context) -> pd.DataFrame:
    """Each agency's death-records scorecard for the period (issue 21), the numbers of
    ``GET /quality`` for the same period and its default (latest) linkage run, in %."""
    from app.services import linkage, quality

    try:
        run_id: int | None = await linkage.require_run(ctx.conn, None)
    except NotFound:
        run_id = None  # no linkage run yet: coherence is unknown, as /quality says
    p = ctx.period
    scores = await quality.quality(
        ctx.conn, p.start.date(), p.end.date(), run_id, tuple(ctx.settings.linkage.sources)
    )

    def pct(share: float | None) -> float | None:
        return None if share is None else round(share * 100, 1)

    records = []
    for s in scores:
        shares = [v for v in s.completeness.values() if v is not None]
        records.append(
            {
                "source": s.source,
                "records": float(s.records),
                "completeness_pct": pct(sum(shares) / len(shares)) if shares else None,
                "georeferenced_pct": pct(s.georeferenced),
                "timely_pct": pct(s.timeliness.get(f"within_{quality.TIMELY_DAYS}_days")),
                "median_delay_days": s.timeliness.get("median_days"),
                "linked_pct": pct(s.coherence.get("linked")),
                "same_manner_pct": pct(s.coherence.get("same_manner")),
            }
        )
    columns = ["source", "records", "completeness_pct", "georeferenced_pct", "timely_pct",
               "median_delay_days", "linked_pct", "same_manner_pct"]  # fmt: skip
    return pd.DataFrame.from_records(records, columns=columns)


async def _methods(ctx: _Context, version: int, data: int) -> Section:
    d = ctx.definition
    p = ctx.period
    notes = [
        ctx.t(
            f"Report definition {d.name}, version {version} ({d.audience} audience), "
            f"period {p.label} ({p.start.date()} to {(p.end - timedelta(days=1)).date()}, "
            f"{ctx.settings.territory.timezone}); data version {short_version(data)} "
            f"({data}).",
            f"Definición del informe {d.name}, versión {version} (edición "
            f"{'pública' if ctx.public else 'para analistas'}), periodo {p.label} "
            f"({ctx.lang.date_range(p.start.date(), p.end.date() - timedelta(days=1))}, "
            f"{ctx.settings.territory.timezone}); versión de los datos {short_version(data)} "
            f"({data}).",
        )
    ]
    measures = "; ".join(
        f"{ctx.name(m)} = "
        + (
            ctx.words(m.categories)
            if m.categories
            else ctx.t("group ", "grupo ") + ctx.lang.term(m.category_group).lower()
        )
        for m in d.measures
    )
    notes.append(ctx.t(f"Measures: {measures}.", f"Medidas: {measures}."))
    notes.append(
        ctx.t(
            "Counts are incidents (not victims), cut by the local date of occurrence; rates "
            "per 100,000 residents use the census population of the matching unit, sex and "
            "age group (the latest census year before the period, else the nearest after).",
            "Los conteos son incidentes (no víctimas), según la fecha local del hecho; las "
            "tasas por 100 000 habitantes usan la población censal de la unidad, sexo y grupo "
            "de edad correspondientes (el último censo anterior al periodo; si no lo hay, el "
            "más cercano posterior).",
        )
    )
    if ctx.public:
        notes.append(
            ctx.t(
                "Disclosure control: every figure is the one /stats, /rankings and /alerts give "
                "a caller without a key. Counts are perturbed by -2 to +2 (cell key method), "
                f"counts below {ctx.settings.privacy.min_count} and sensitive categories "
                f"({', '.join(sorted(ctx.sensitive))}) are withheld, as are the cells that "
                "would let a withheld count be recomputed; a withheld figure is left blank. "
                "Changes are computed from the published counts.",
                "Control de divulgación: cada cifra es la que /stats, /rankings y /alerts dan "
                "a un usuario sin clave. Los conteos se perturban de -2 a +2 (método de clave "
                f"de celda); los menores de {ctx.settings.privacy.min_count} y las categorías "
                f"sensibles ({', '.join(sorted(ctx.sensitive))}) se omiten, igual que las "
                "celdas que permitirían recalcularlos; una cifra omitida queda en blanco.",
            )
        )
    else:
        notes.append(
            ctx.t(
                "Analyst report: exact counts, sensitive categories included. Not for publication.",
                "Informe para analistas: conteos exactos, categorías sensibles incluidas. No "
                "publicar.",
            )
        )
    for monitor in await monitors.list_definitions(ctx.conn, include_sensitive=not ctx.public):
        md = monitor.definition
        det = md.get("detector", {})
        parameters = _pairs(ctx, det.get("parameters", {}))
        if not ctx.es:
            notes.append(
                f"Monitor {monitor.title} (version {monitor.version}): detector "
                f"{det.get('name')} ({parameters}), per {md.get('step')}, "
                f"no alert below {md.get('min_count')} incidents."
            )
            continue
        # Spanish: the monitor described from its definition (its title is English data).
        chosen = md.get("incidents") or {}
        what = ctx.words([*chosen.get("categories", []), *chosen.get("category_groups", [])])
        places = md.get("places") or {}
        where = (
            f"celdas H3 de resolución {places.get('resolution')}"
            if places.get("kind") == "h3"
            else "distrito"
            if places.get("level") == DISTRICT_LEVEL
            else "unidad"
        )
        step = {"week": "semanal", "month": "mensual"}.get(md.get("step"), md.get("step"))
        notes.append(
            f"Monitor {monitor.code} (versión {monitor.version}): {what or 'todos los delitos'} "
            f"por {where}, serie {step}; detector {det.get('name')} ({parameters}); sin "
            f"alerta por debajo de {md.get('min_count')} incidentes."
        )
    notes += ctx.notes
    return Section("methods", notes=notes)


def _pairs(ctx: _Context, parameters: dict) -> str:
    """``{"b": 3, "trend": True, "limit54": [3, 4]}`` → ``b=3, trend=yes, limit54=3 4``
    (a detector's parameters by their names, values in the report's language)."""

    def value(v: object) -> str:
        if isinstance(v, bool):
            return ctx.t("yes", "sí") if v else "no"
        if isinstance(v, list | tuple):
            return " ".join(value(x) for x in v)
        return ctx.lang.decimal(v, 2) if isinstance(v, float) else str(v)

    text = ", ".join(f"{k}={value(v)}" for k, v in parameters.items())
    return text or ctx.t("defaults", "valores por defecto")


def _run_note(ctx: _Context, run: Any) -> str:
    """The hot spot run of the map in one sentence: method, cells, incidents, test."""
    p = run.parameters or {}
    f = p.get("filters") or {}
    units = p.get("units") or {}
    cells = (
        f"H3 {ctx.t('resolution', 'resolución')} {units.get('resolution')}"
        if units.get("type") == "h3"
        else f"{units.get('type')} {units.get('cell_size_m') or units.get('level') or ''}".strip()
    )
    categories = ctx.words(f.get("categories") or []) or ctx.t("all categories", "todas")
    to = ctx.t(" to ", " a ")
    since, until = _day(ctx, f.get("occurred_from")), _day(ctx, f.get("occurred_to"), True)
    span = f"{since or '…'}{to}{until or '…'}"
    fdr = ctx.t("with", "con") if p.get("fdr") else ctx.t("without", "sin")
    return ctx.t(
        f"Hot spot map: analysis run {run.id}, {run.method} on {cells} cells, {categories}, "
        f"{span}, alpha {p.get('alpha')} {fdr} false discovery rate correction.",
        f"Mapa de puntos calientes: análisis {run.id}, {run.method} en celdas {cells}, "
        f"{categories}, {span}, alfa {p.get('alpha')} {fdr} corrección de la tasa de "
        "falsos descubrimientos.",
    )


# --- the document ---------------------------------------------------------------------------

_SECTIONS = {
    "headline": _headline,
    "trend": _trend,
    "districts": _districts,
    "victims": _victims,
    "when": _when,
    "where": _where,
    "index": _index,
    "quality": _quality,
}


def reader_of(definition: ReportDefinition) -> Principal:
    """Who a report's statistics are computed for: the anonymous public, or an analyst."""
    return PUBLIC if definition.audience == "public" else ANALYST


async def _basemap(conn: AsyncConnection) -> dict[str, gpd.GeoDataFrame]:
    out = {}
    for name, level in (("country", COUNTRY_LEVEL), ("districts", DISTRICT_LEVEL)):
        units = await read_units(conn, level=level)
        out[name] = gpd.GeoDataFrame(
            {"unit_code": [u.code for u in units], "unit_name": [u.name for u in units]},
            geometry=[u.geometry for u in units],
            crs=4326,
        )
    return out


async def build_document(
    conn: AsyncConnection,
    settings: Settings,
    record: ReportDefinitionRecord,
    period: ReportPeriod,
    *,
    data: int | None = None,
) -> ReportDocument:
    """The report of ``record`` for ``period``, computed from the service's own answers."""
    definition = load_report_definition(record.definition)
    vocabulary = dict((await conn.execute(stats_sql.select_categories())).all())
    sensitive = frozenset((await conn.execute(stats_sql.select_sensitive_categories())).scalars())
    _check_measures(definition, vocabulary, sensitive)
    ctx = _Context(
        conn, settings, definition, period, reader_of(definition), vocabulary, sensitive,
        es=definition.language == "es",
    )  # fmt: skip
    check_request(settings, record, period)
    data = await data_version(conn) if data is None else data
    incidents = (await conn.execute(sql.count_incidents(period.start, period.end))).scalar_one()
    sections = []
    for key in definition.sections:
        if key == "methods":
            continue
        if incidents == 0:
            sections.append(
                Section(
                    key,
                    empty=ctx.t(
                        f"No incidents were recorded in {period.label}.",
                        f"No se registraron incidentes en {period.label}.",
                    ),
                )
            )
        else:
            sections.append(await _SECTIONS[key](ctx))
    if "methods" in definition.sections:
        methods = await _methods(ctx, record.version, data)
        sections.insert(definition.sections.index("methods"), methods)
    return ReportDocument(
        definition=definition.name,
        definition_version=record.version,
        language=definition.language,
        audience=definition.audience,
        period_label=period.label,
        period_start=period.start.date(),
        period_end=(period.end - timedelta(days=1)).date(),
        territory=settings.territory.name,
        data_version=data,
        generated_at=datetime.now(UTC),
        sections=sections,
        basemap=await _basemap(conn),
        source_line=ctx.t(
            f"Source: {settings.territory.name} crime observatory, data version "
            f"{short_version(data)}.",
            f"Fuente: observatorio del delito de {settings.territory.name}, versión de los "
            f"datos {short_version(data)}.",
        ),
    )


def _check_measures(
    definition: ReportDefinition, vocabulary: dict[str, str], sensitive: frozenset[str]
) -> None:
    """Every measure names known categories; a public one no sensitive category."""
    groups = set(vocabulary.values())
    for m in definition.measures:
        if unknown := sorted(set(m.categories) - set(vocabulary)):
            raise InvalidParameter(f"measure {m.code}: unknown category(ies) {', '.join(unknown)}")
        if m.category_group and m.category_group not in groups:
            raise InvalidParameter(f"measure {m.code}: unknown category group {m.category_group}")
        hidden = set(m.categories) & sensitive or {
            c for c, g in vocabulary.items() if g == m.category_group and c in sensitive
        }
        if definition.audience == "public" and hidden:
            raise InvalidParameter(
                f"measure {m.code} counts sensitive categories ({', '.join(sorted(hidden))}): "
                "not in a public report"
            )


def check_request(settings: Settings, record: ReportDefinitionRecord, period: ReportPeriod) -> None:
    """What a report of ``record`` for ``period`` needs before anything is queued (a
    422 otherwise): an ended period and, for a public report, a month, quarter or year
    inside the published window (``privacy.published_*``), the public tables' periods."""
    check_ended(period)
    if record.audience != "public":
        return
    if period.stats_label is None:
        raise InvalidParameter(
            f"a public report covers a month, a quarter or a year (the public tables' "
            f"periods), not a {period.kind}; the analyst definitions cover {period.label}"
        )
    start, end = lattice.published_window(settings, period.kind)
    if period.start < start or period.end > end:
        raise InvalidParameter(
            f"period {period.label} is outside the published window ({start.date()} to "
            f"{end.date()}): a public report covers published periods only"
        )


# --- files ----------------------------------------------------------------------------------


# The charts are drawn with pyplot, whose figures and settings are global: one report is
# rendered at a time in a process (render_files runs in a thread, off the event loop).
_RENDERING = threading.Lock()


def render_files(doc: ReportDocument) -> tuple[str, bytes, bytes]:
    """(HTML, PDF, zip of every table as CSV and XLSX) of the document
    (:mod:`reports.render`: the PDF is laid out from the same HTML)."""
    # Imported here: the renderer's imports cost seconds, which the API's start need not pay.
    from reports import render

    with _RENDERING:
        html = render.render_html(doc)
        return html, render.render_pdf(doc, html), render.bundle(doc)


def summary_of(doc: ReportDocument, title: str = "") -> dict:
    """What the stored report says about itself without its files: the headline
    figures, and which sections are empty and why."""
    headline = doc.section("headline")
    figures = (
        headline.tables["figures"].replace({np.nan: None}).to_dict("records")
        if headline is not None and "figures" in headline.tables
        else []
    )
    return {
        "title": title,
        "period_start": str(doc.period_start),
        "period_end": str(doc.period_end),
        "generated_at": doc.generated_at.isoformat(),
        "headline": [{k: _plain(v) for k, v in f.items()} for f in figures],
        "sections": [{"key": s.key, "empty": s.empty} for s in doc.sections],
    }


def _plain(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value.item() if isinstance(value, np.generic) else value


async def build_report(
    engine: AsyncEngine,
    settings: Settings,
    code: str,
    period_text: str,
    *,
    version: int | None = None,
    actor: str,
    run_id: int | None = None,
    progress: JobProgress | None = None,
) -> tuple[int, bool]:
    """Build the report of ``code`` for the period and store it, unless the same
    definition version, period and data are stored already. Returns (report id, whether
    it was built now)."""
    async with engine.connect() as conn:
        record = await get_definition(conn, code, version, include_analyst=True)
        period = parse_report_period(period_text, settings.territory.timezone)
        check_request(settings, record, period)
        data = await data_version(conn)
        found = (
            await conn.execute(sql.find_report(code, record.version, period.label, data))
        ).first()
        if found is not None:
            return found.id, False
        if progress is not None:
            await progress(0.1, "computing the report's figures")
        doc = await build_document(conn, settings, record, period, data=data)
    if progress is not None:
        await progress(0.6, "rendering")
    html, pdf, bundle = await asyncio.to_thread(render_files, doc)
    values = {
        "definition": code,
        "definition_version": record.version,
        "period": period.label,
        "language": doc.language,
        "audience": doc.audience,
        "data_version": data,
        "run_id": run_id,
        "html": html,
        "pdf": pdf,
        "bundle": bundle,
        "summary": summary_of(doc, record.title),
        "created_by": actor,
    }
    async with engine.begin() as conn:
        stored = (await conn.execute(sql.insert_report(values))).scalar()
        if stored is None:  # built twice at once: the first one stands
            found = (
                await conn.execute(sql.find_report(code, record.version, period.label, data))
            ).one()
            return found.id, False
    return stored, True


async def run_report(
    engine: AsyncEngine, settings: Settings, parameters: dict, run_id: int, progress: JobProgress
) -> dict:
    """An analysis run of kind ``report`` (``POST /reports``, a worker's job): build and
    store the report of ``parameters`` (definition, version, period); the run's summary
    names the stored report."""
    report_id, built = await build_report(
        engine, settings, parameters["definition"], parameters["period"],
        version=parameters.get("version"), actor=f"run:{run_id}", run_id=run_id,
        progress=progress,
    )  # fmt: skip
    return {"report_id": report_id, "built": built}


async def build_scheduled(
    engine: AsyncEngine, settings: Settings, now: datetime | None = None
) -> list[dict]:
    """Build every stored report definition (the shipped ones stored first) for its
    latest period that has ended, unless stored for the same data already; a definition
    that fails is logged and the others are built."""
    from app.services.jobs import run_here

    await load_default_definitions(engine, actor="shipped")
    async with engine.connect() as conn:
        records = await list_definitions(conn, include_analyst=True)
    out = []
    tz = settings.territory.timezone
    for record in records:
        kind = record.definition.get("period", "quarter")
        period = last_complete_period(kind, tz, now)
        parameters = {"definition": record.code, "version": record.version, "period": period.label}
        try:
            run_id = await run_here(
                engine, "report", record.code, parameters, "schedule",
                lambda rid, progress, p=parameters: run_report(engine, settings, p, rid, progress),
            )  # fmt: skip
        except ProblemError as exc:
            log.warning("scheduled report %s %s failed: %s", record.code, period.label, exc)
            out.append({**parameters, "error": str(exc)})
            continue
        out.append({**parameters, "run_id": run_id})
    return out


async def build_here(
    engine: AsyncEngine,
    settings: Settings,
    code: str,
    period_text: str,
    *,
    kind: str | None = None,
    language: str | None = None,
) -> ReportDocument:
    """The report document of ``code`` for the period, computed in this process (the
    CLI), not stored; ``language`` overrides the definition's; ``kind``: the period kind
    the command asked for (another is a 422)."""
    await load_default_definitions(engine, actor="shipped")
    async with engine.connect() as conn:
        record = await get_definition(conn, code, include_analyst=True)
        period = parse_report_period(period_text, settings.territory.timezone)
        if kind is not None and period.kind != kind:
            raise InvalidParameter(f"{period_text} is a {period.kind}, not a {kind}")
        check_request(settings, record, period)
        if language is not None:
            changed = {**record.definition, "language": language}
            record = record.model_copy(update={"definition": changed})
        return await build_document(conn, settings, record, period)
