"""Near repeat (issue 19): Knox's test per distance x time band on the incidents of an
analysis's filters, as a job, and the risk zones a significant result draws.

A run reads the incidents (the filters of every analysis, plus category groups and a
bounding box), projects them to the territory's metric CRS, measures time in days, and
runs :func:`surveillance.knox.knox_bands` with a seed (drawn and recorded when none is
given). The band table is the run's summary (JSON) and its CSV.

Risk zones come from the run itself, not from a monitor: a run posted with
``risk_zones: true`` whose closest band cell is significant is *armed* for
``risk_zones_days``. Its zone (:func:`surveillance.knox.near_repeat_zone`: the
significant distance and time reach) is drawn around every incident of its filters,
without their period, whose window is open: the run's job draws them for the incidents
of the last days, and :func:`refresh_risk_zones` (with every evaluation of the monitors:
nightly, and after each import) draws them for new incidents and deletes the expired
ones. A zone expires by itself: the layers show only zones whose window is open now.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
from pyproj import CRS, Transformer
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from app.core.errors import InvalidParameter
from app.core.settings import Settings
from app.schemas.near_repeat import NearRepeatRequest
from app.services.hotspots import incident_filter
from app.services.jobs import JobProgress
from app.sql import near_repeat as sql
from app.sql.incidents import IncidentFilter
from surveillance.knox import KnoxBands, count_pairs, knox_bands, near_repeat_zone

__all__ = [
    "MAX_INCIDENTS",
    "MAX_PAIR_WORK",
    "MIN_INCIDENTS",
    "Selection",
    "band_rows",
    "refresh_risk_zones",
    "run_near_repeat",
    "selection",
]

log = logging.getLogger("observatory")

# Fewer incidents than this make too few pairs for a band table to mean anything.
MIN_INCIDENTS = 20
MAX_INCIDENTS = 200_000
# Pairs (within the last distance band) x permutations one run may tally: each costs
# ~11 ns here, so this is about 20 s of the worker's time. Five years of the demo's
# burglaries (13,229) make ~1,000,000 pairs within 500 m: 999 permutations fit.
MAX_PAIR_WORK = 2_000_000_000
# The public zone's grid square (metres, at least twice the zone's distance).
PUBLIC_CELL_M = 500.0
KIND = sql.KIND


@dataclass(frozen=True)
class Selection:
    """The incidents of a request: the filter (category groups expanded), the box, and
    whether they may include a sensitive category."""

    filter: IncidentFilter
    bbox: list[float] | None
    sensitive: bool


async def selection(conn: AsyncConnection, request: NearRepeatRequest, timezone: str) -> Selection:
    """The request's incidents; 422 for an unknown unit or category group."""
    f = await incident_filter(conn, request.filters, timezone)
    codes = set(f.categories)
    if request.category_groups:
        rows = (await conn.execute(sql.select_group_codes(request.category_groups))).all()
        unknown = set(request.category_groups) - {group for _, group in rows}
        if unknown:
            raise InvalidParameter(
                f"unknown category group {', '.join(sorted(unknown))} (GET /categories)"
            )
        codes |= {code for code, _ in rows}
    sensitive_codes = set((await conn.execute(sql.select_sensitive_codes())).scalars())
    # No category filter reads every category, the sensitive ones too.
    sensitive = bool(codes & sensitive_codes) if codes else bool(sensitive_codes)
    return Selection(replace(f, categories=tuple(sorted(codes))), request.bbox, sensitive)


def band_rows(result: KnoxBands, alpha: float) -> list[dict[str, Any]]:
    """The band table: one row per (distance band, time band), with its significance."""
    rows = result.rows()
    for row in rows:
        ratio = row["knox_ratio"]
        row["p_value"] = round(row["p_value"], 10)
        row["expected"] = round(row["expected"], 6)
        row["knox_ratio"] = None if ratio is None else round(ratio, 6)
        row["significant"] = row["p_value"] <= alpha and ratio is not None and ratio > 1
    return rows


def _metric_srid(settings: Settings) -> int:
    srid = CRS.from_user_input(settings.territory.projected_crs).to_epsg()
    if srid is None:
        raise InvalidParameter("territory.projected_crs has no EPSG code")
    return srid


async def run_near_repeat(
    engine: AsyncEngine,
    settings: Settings,
    request: NearRepeatRequest,
    run_id: int,
    progress: JobProgress,
) -> dict:
    """The job behind ``POST /analyses/near-repeat``: returns the run's summary (the band
    table, the global test, the zone, and how many risk zones it drew)."""
    started = time.perf_counter()
    await progress(0.05, "reading incidents")
    async with engine.connect() as conn:
        sel = await selection(conn, request, settings.territory.timezone)
        rows = (await conn.execute(sql.select_events(sel.filter, sel.bbox))).all()
    n = len(rows)
    if n < MIN_INCIDENTS:
        raise InvalidParameter(
            f"{n} incidents match the filters; the Knox test needs at least {MIN_INCIDENTS}: "
            "widen the period, the categories or the area"
        )
    if n > MAX_INCIDENTS:
        raise InvalidParameter(
            f"{n:,} incidents match the filters; a near-repeat analysis takes at most "
            f"{MAX_INCIDENTS:,}: narrow the period, the categories or the area"
        )
    lon, lat, epoch = (np.asarray(c, dtype=float) for c in zip(*rows, strict=True))
    to_metres = Transformer.from_crs(4326, settings.territory.projected_crs, always_xy=True)
    xy = np.column_stack(to_metres.transform(lon, lat))
    days = (epoch - epoch.min()) / 86_400.0
    pairs = await asyncio.to_thread(count_pairs, xy, request.distance_bands_m[-1])
    if pairs * request.permutations > MAX_PAIR_WORK:
        raise InvalidParameter(
            f"{pairs:,} pairs of incidents lie within {request.distance_bands_m[-1]:g} m; "
            f"with {request.permutations} permutations that is more than one run may tally "
            f"({MAX_PAIR_WORK:,} pair permutations): use fewer permutations, a shorter last "
            "distance band, or fewer incidents",
            pairs=pairs,
            max_pair_permutations=MAX_PAIR_WORK,
        )
    seed = request.seed
    if seed is None:
        seed = int(np.random.SeedSequence().entropy % 2**32)
    await progress(0.2, f"Knox test: {pairs:,} pairs x {request.permutations} permutations")
    result = await asyncio.to_thread(
        knox_bands, xy, days, request.distance_bands_m, request.time_bands_days,
        permutations=request.permutations, seed=seed,
    )  # fmt: skip
    summary: dict[str, Any] = {
        "incidents": n,
        "pairs": pairs,
        "permutations": request.permutations,
        "seed": seed,
        "alpha": request.alpha,
        "projected_crs": settings.territory.projected_crs,
        "sensitive": sel.sensitive,
        "bands": band_rows(result, request.alpha),
        "global_knox": result.global_knox,
    }
    zone = near_repeat_zone(result, request.alpha)
    now = datetime.now(UTC)
    if zone is None:
        summary["risk_zone"] = None
    else:
        i, j = zone
        summary["risk_zone"] = {
            "distance_m": float(result.distance_edges[i]),
            "days": float(result.time_edges[j]),
            "knox_ratio": round(float(result.knox_ratio[0, 0]), 6),
            "p_value": round(float(result.p_value[0, 0]), 10),
            "until": (now + timedelta(days=request.risk_zones_days)).isoformat(),
        }
    if request.risk_zones:
        made = 0
        if zone is not None:
            await progress(0.9, "drawing risk zones")
            async with engine.begin() as conn:
                made = await _draw(conn, settings, run_id, sel, summary["risk_zone"], now)
        summary["risk_zones_made"] = made
    summary["seconds"] = round(time.perf_counter() - started, 3)
    return summary


async def _draw(
    conn: AsyncConnection,
    settings: Settings,
    run_id: int,
    sel: Selection,
    zone: dict[str, Any],
    now: datetime,
) -> int:
    """Draw the zones of one armed run whose window is open at ``now``; how many."""
    distance = float(zone["distance_m"])
    stmt = sql.insert_zones(
        run_id,
        # The run's period selects the incidents it tested; zones are for new ones too.
        replace(sel.filter, occurred_from=None, occurred_to=None),
        sel.bbox,
        sensitive=sel.sensitive,
        distance_m=distance,
        days=float(zone["days"]),
        srid=_metric_srid(settings),
        public_cell_m=max(PUBLIC_CELL_M, 2 * distance),
        now=now,
        until=datetime.fromisoformat(zone["until"]),
    )
    return len((await conn.execute(stmt)).all())


async def refresh_risk_zones(
    engine: AsyncEngine, settings: Settings, *, now: datetime | None = None
) -> dict[str, int]:
    """Delete the expired risk zones and draw those of new incidents for every armed run
    (with the evaluation of the monitors: nightly and after imports)."""
    now = now or datetime.now(UTC)
    made = 0
    async with engine.begin() as conn:
        expired = len((await conn.execute(sql.purge_expired(now))).all())
        runs = (await conn.execute(sql.select_armed_runs())).all()
        for run in runs:
            try:
                known = NearRepeatRequest.model_fields
                request = NearRepeatRequest.model_validate(
                    {k: v for k, v in run.parameters.items() if k in known}
                )
                sel = await selection(conn, request, settings.territory.timezone)
            except (InvalidParameter, ValueError) as exc:  # e.g. its unit was deleted since
                log.warning("near-repeat run %s draws no risk zones: %s", run.id, exc)
                continue
            made += await _draw(conn, settings, run.id, sel, run.summary["risk_zone"], now)
    return {"armed_runs": len(runs), "zones_made": made, "zones_expired": expired}
