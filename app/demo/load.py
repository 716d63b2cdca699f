"""The Belize demo: real boundaries and census populations, synthetic incidents.

Loading it twice changes nothing: boundaries and populations are upserts, and the
synthetic incidents keep their source ids, so the second import inserts nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

import geopandas as gpd
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from app.core.settings import DATA_DIR, Settings
from app.demo.incidents import generate_incidents
from app.models import analysis_run, incident
from app.services.boundaries import import_boundaries
from app.services.categories import load_categories
from app.services.imports import ImportReport, Progress, _quiet, import_frame
from app.services.incident_rows import ReadOptions
from app.services.indexes import load_default_definitions
from app.services.tables import load_demo_population

BOUNDARIES = DATA_DIR / "belize" / "boundaries"
COUNTRY = BOUNDARIES / "belize_adm0_naturalearth_10m.geojson"
DISTRICTS = BOUNDARIES / "belize_adm1_districts.geojson"
DEMO_SOURCE = "synthetic-demo"


@dataclass(frozen=True)
class DemoReport:
    """What ``load_demo`` did: districts imported, and the incidents imported (None when
    the demo's incidents were there already) or found."""

    districts: int
    incidents: ImportReport | None
    existing_incidents: int


async def load_demo(
    engine: AsyncEngine,
    settings: Settings,
    *,
    incidents: int = 60_000,
    seed: int = 42,
    actor: str = "demo",
    progress: Progress = _quiet,
) -> DemoReport:
    """Load the demo territory: its boundaries, population, categories and index
    definitions, ``incidents`` synthetic incidents (none when that many demo incidents are
    there already) and the demo's hot spot run."""
    await load_categories(engine, settings.territory.categories_file)
    tolerance = settings.territory.tolerance_m
    await import_boundaries(
        engine, COUNTRY, level=0, code_field="ISO_A2", name_field="ADMIN",
        actor=actor, tolerance_m=tolerance,
    )  # fmt: skip
    report = await import_boundaries(
        engine, DISTRICTS, level=1, code_field="iso_3166_2", name_field="district",
        actor=actor, tolerance_m=tolerance,
    )  # fmt: skip
    await load_demo_population(engine, actor=actor)
    await load_default_definitions(engine, actor=actor)
    async with engine.connect() as conn:
        existing = (
            await conn.execute(
                select(func.count()).select_from(incident).where(incident.c.source == DEMO_SOURCE)
            )
        ).scalar_one()
    districts = gpd.read_file(DISTRICTS).rename(columns={"iso_3166_2": "code", "district": "name"})
    if existing >= incidents:
        await store_demo_hotspots(engine, settings, actor=actor)
        await store_demo_alerts(engine, settings, actor=actor)
        await _deaths(engine, settings, districts, incidents, seed, actor)
        return DemoReport(report.received, None, existing)
    frame = generate_incidents(districts, n=incidents, seed=seed)
    frame = frame.astype(object).where(frame.notna(), "").astype(str)
    frame = frame.replace({"nan": "", "<NA>": "", "None": ""})
    imported = await import_frame(
        engine,
        settings,
        frame,
        ReadOptions(source=DEMO_SOURCE),
        actor=actor,
        filename=f"synthetic-demo-seed{seed}.csv",
        fmt="csv",
        progress=progress,
    )
    await store_demo_hotspots(engine, settings, actor=actor)
    await store_demo_alerts(engine, settings, actor=actor)
    await _deaths(engine, settings, districts, incidents, seed, actor)
    return DemoReport(report.received, imported, existing)


async def _deaths(engine, settings, districts, incidents: int, seed: int, actor: str) -> None:
    """The SYNTHETIC death records of three agencies, linked (issue 21)."""
    from app.demo.load_deaths import load_demo_deaths

    await load_demo_deaths(engine, settings, districts, incidents=incidents, seed=seed, actor=actor)


# Periods the demo's monitors are evaluated at when it loads (its last 12 weeks or
# months), so the map and GET /alerts show alerts before the first night (issue 19).
DEMO_ALERT_PERIODS = 12


async def store_demo_alerts(engine: AsyncEngine, settings: Settings, *, actor: str) -> None:
    """Store the shipped monitors and evaluate them at the demo's last periods (loading
    again updates the same alerts)."""
    from app.services.monitors import evaluate_all
    from app.services.monitors import load_default_definitions as load_monitors

    await load_monitors(engine, actor=actor)
    await evaluate_all(engine, settings.territory.timezone, periods=DEMO_ALERT_PERIODS)


# The demo's hot spot layer: Gi* of homicides and shootings in the last two years of the
# synthetic data, on H3 resolution 8 (issue 3's check), so the map and QGIS have one.
DEMO_HOTSPOTS = {
    "method": "gi_star",
    "units": {"type": "h3", "resolution": 8},
    "filters": {
        "categories": ["homicide", "shooting"],
        "occurred_from": "2024-01-01T00:00:00-06:00",
        "occurred_to": "2026-01-01T00:00:00-06:00",
    },
}


async def store_demo_hotspots(engine: AsyncEngine, settings: Settings, *, actor: str) -> int | None:
    """Run the demo's Gi* once (a second load finds it and does nothing). Returns its id."""
    from app.schemas.analyses import HotspotRequest
    from app.services.hotspots import run_hotspots
    from app.services.jobs import run_here

    r = analysis_run.c
    async with engine.connect() as conn:
        found = await conn.scalar(
            select(r.id).where(r.created_by == actor, r.kind == "hotspots", r.status == "completed")
        )
    if found is not None:
        return None
    request = HotspotRequest.model_validate(DEMO_HOTSPOTS)
    return await run_here(
        engine, "hotspots", request.method, request.model_dump(mode="json"), actor,
        lambda run_id, progress: run_hotspots(engine, settings, request, run_id, progress),
    )  # fmt: skip


__all__ = ["DemoReport", "load_demo"]
