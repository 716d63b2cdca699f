"""The ``where`` section: hot spots from the stored runs, and the open alerts."""

from __future__ import annotations

from datetime import date

import geopandas as gpd
import pandas as pd
import shapely

from app.services import monitors
from app.services.reports.context import OPEN_STATES, _Context, _day
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
