"""The ``where`` section: hot spots from the stored runs, and the open alerts."""

from __future__ import annotations

from datetime import date, timedelta

import geopandas as gpd
import pandas as pd
import shapely

from app.services import monitors
from app.services.reports.context import _Context, _day
from app.services.reports.methods import _run_note
from app.sql import reports as sql
from reports.document import Section

_GI_CLASSES = {
    3: "hot spot, 99% confidence",
    2: "hot spot, 95% confidence",
    1: "hot spot, 90% confidence",
    -1: "cold spot, 90% confidence",
    -2: "cold spot, 95% confidence",
    -3: "cold spot, 99% confidence",
}


async def _where(ctx: _Context) -> Section:
    section = Section("where")
    await _hotspots(ctx, section)
    if ctx.definition.alerts:
        await _alerts(ctx, section)
    if not section.tables:
        section.empty = ctx.t(
            "No hot spot run and no alert in the period.",
            "Ningún análisis de puntos calientes ni alerta en el periodo.",
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


def alert_periods(start: date, end: date) -> list[str]:
    """The alert periods that fall within ``[start, end)``, latest first: its months, and
    the ISO weeks whose Thursday falls within it (a week belongs to the month, quarter or
    year that holds most of its days, as ISO 8601 gives a week to a year)."""
    starts: list[tuple[date, str]] = []
    month = date(start.year, start.month, 1)
    while month < end:
        if month >= start:
            starts.append((month, monitors.period_label(month, "month")))
        month = date(month.year + month.month // 12, month.month % 12 + 1, 1)
    thursday = start + timedelta(days=(3 - start.weekday()) % 7)
    while thursday < end:
        monday = thursday - timedelta(days=3)
        starts.append((monday, monitors.period_label(monday, "week")))
        thursday += timedelta(days=7)
    return [label for _, label in sorted(starts, reverse=True)]


async def _alerts(ctx: _Context, section: Section) -> None:
    # The alerts of the period, as GET /alerts?period=... answers for each of its weeks
    # and months, in their state as stored (not those open when the report is built:
    # a report on a past period would show later alarms).
    items = []
    for label in alert_periods(ctx.period.start.date(), ctx.period.end.date()):
        found = await monitors.list_alerts(ctx.conn, include_sensitive=not ctx.public, period=label)
        items += sorted(found, key=lambda a: a.id)
    if ctx.public:
        items = [monitors.published(a, ctx.settings.privacy.min_count) for a in items]
    # the monitor's title in the report's language (its latest version's, as /alerts')
    definitions = await monitors.list_definitions(ctx.conn, include_sensitive=not ctx.public)
    names = {m.code: ctx.title(m.definition, m.title) for m in definitions}
    records = [
        {
            "alert_id": a.id,
            "monitor": a.monitor,
            "monitor_name": names.get(a.monitor, a.title or a.monitor),
            "place": a.unit_name or a.unit or _cells(ctx, len(a.cells)),
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
        "alert_id", "monitor", "monitor_name", "place", "period", "observed", "expected",
        "threshold", "periods_lasting", "state",
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
    today = ctx.lang.date(date.today())
    section.notes.append(
        ctx.t(
            f"Early-warning alerts of the period: {len(records)}, those whose period (a month "
            "of it, or an ISO week whose Thursday falls in it) is within "
            f"{ctx.period.label}, in their state on {today}, when the report was built "
            "(new, acknowledged or closed); the charts show the strongest (observed count "
            "over threshold) of those whose counts are shown.",
            f"Alertas tempranas del periodo: {len(records)}, las de un periodo (uno de sus "
            "meses, o una semana ISO cuyo jueves cae en él) dentro de "
            f"{ctx.period.label}, en su estado del {today}, al elaborar el informe (nueva, "
            "reconocida o cerrada); los gráficos muestran las más fuertes (conteo observado "
            "sobre el umbral) entre las que tienen sus conteos publicados.",
        )
    )


def _cells(ctx: _Context, n: int) -> str:
    """ "1 H3 cell", "3 H3 cells" in the report's language."""
    if n == 1:
        return ctx.t("1 H3 cell", "1 celda H3")
    return ctx.t(f"{n} H3 cells", f"{n} celdas H3")


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
