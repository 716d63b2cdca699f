"""The demo's SYNTHETIC death records (issue 21): three agencies' files imported through
the death import, then linked once, so the register, its disagreements and the quality
scorecard have something to show. Loading twice imports nothing new and links again only
when no linkage run exists."""

from __future__ import annotations

import logging

import geopandas as gpd
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from app.core.errors import InvalidParameter
from app.core.settings import Settings
from app.demo.deaths import FILE_COLUMNS, SOURCE_PREFIX, generate_deaths
from app.demo.incidents import generate_incidents
from app.models import death_record
from app.schemas.linkage import LinkageRunRequest
from app.services.death_imports import import_death_frame
from app.services.incident_rows import ReadOptions
from app.services.linkage import latest_run, link_here

log = logging.getLogger("observatory")


async def load_demo_deaths(
    engine: AsyncEngine,
    settings: Settings,
    districts: gpd.GeoDataFrame,
    *,
    incidents: int,
    seed: int,
    actor: str,
) -> int:
    """Import the demo's death records (one batch per agency) unless they are there, and
    link them unless a linkage run exists; return how many records were inserted."""
    async with engine.connect() as conn:
        existing = await conn.scalar(
            select(func.count())
            .select_from(death_record)
            .where(death_record.c.source_id.like(f"{SOURCE_PREFIX}-%"))
        )
        linked = await latest_run(conn)
    inserted = 0
    if not existing:
        frame = generate_incidents(districts, n=incidents, seed=seed)
        deaths = generate_deaths(frame, districts, seed=seed)
        for source, part in deaths.groupby("source"):
            report = await import_death_frame(
                engine, settings, part[list(FILE_COLUMNS)].reset_index(drop=True),
                ReadOptions(), actor=actor, filename=f"synthetic-{source}-deaths-seed{seed}.csv",
            )  # fmt: skip
            inserted += report.inserted
    if linked is None or inserted:
        try:
            await link_here(engine, settings, LinkageRunRequest(), actor)
        except InvalidParameter as exc:  # a tiny demo may not train a model: say so, go on
            log.warning("the demo's deaths were not linked: %s", exc.detail)
    return inserted
