"""Import administrative boundaries: read → repair → hierarchy (pure package) → PostGIS.

When boundaries change, incidents follow: the import re-runs the spatial join that sets
every incident's ``unit_ids``, in the same transaction as the boundary upsert.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import geopandas as gpd
import pandas as pd
import shapely
from sqlalchemy import TextClause
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from app.core.db import wait_for_lock
from app.core.errors import InvalidParameter
from app.schemas.units import BoundaryReport, OutsideTerritoryUnit, RepairedUnit
from app.sql import audit as audit_sql
from app.sql import territory as territory_sql
from app.sql import units as sql
from boundaries import BoundaryError
from boundaries.hierarchy import assign_parents
from boundaries.read import read_boundaries
from boundaries.repair import RepairNote, repair_geometries
from boundaries.territory import OUTSIDE_FLAG, OutsideUnit, outside_territory

# Codes named in a message at most (the report lists them all).
SHOWN_CODES = 10


def prepare_units(
    path: Path,
    *,
    code_field: str,
    name_field: str,
    parent_field: str | None,
    layer: str | None,
) -> tuple[gpd.GeoDataFrame, int, list[RepairNote]]:
    """Read and repair a boundary file: (units, features received, repair notes)."""
    units = read_boundaries(
        path, code_field=code_field, name_field=name_field, parent_field=parent_field, layer=layer
    )
    repaired, notes = repair_geometries(units)
    if repaired.empty:
        raise BoundaryError(f"{Path(path).name}: no unit has a usable polygon after repair")
    return repaired, len(units), notes


async def import_boundaries(
    engine: AsyncEngine,
    path: Path | str,
    *,
    level: int,
    code_field: str,
    name_field: str,
    parent_field: str | None = None,
    layer: str | None = None,
    actor: str,
    replace: bool = False,
    tolerance_m: float = 2000.0,
    territory_bbox: tuple[float, float, float, float] | None = None,
    statement_timeout_ms: int = 600_000,
) -> BoundaryReport:
    """Load one level of units from a boundary file, idempotently (upsert by code).

    Parents come from the units of ``level - 1`` already loaded; units of ``level + 1``
    left without a parent are linked to the new units. With ``replace``, units of
    ``level`` absent from the file are deleted (with their population and indicator
    rows). Everything, including the incidents' unit reassignment (nearest unit within
    ``tolerance_m`` for points just outside) and one audit row, is one transaction, which
    holds the units lock exclusively (``app.sql.units``): it starts once the incident
    writes in progress (imports, API edits) have committed, and writes that come after it
    wait for its commit, so every incident ends up in the new units.
    Reassigning every incident can outlast the service's usual statement timeout, so
    this transaction gets ``statement_timeout_ms`` (10 minutes by default) instead.

    Units are compared with the territory: the outline of the top level above ``level``
    when one is loaded, else ``territory_bbox`` (west, south, east, north), grown by
    ``tolerance_m``. Units with more than half their area outside are loaded with the
    ``outside_territory`` flag and listed in the report with a warning; when every unit
    is outside, nothing is loaded (422: usually a wrong CRS).
    """
    if level < 0:
        raise InvalidParameter("level must be 0 (country) or more")
    units, received, notes = await asyncio.to_thread(
        prepare_units,
        Path(path),
        code_field=code_field,
        name_field=name_field,
        parent_field=parent_field,
        layer=layer,
    )
    async with engine.begin() as conn:
        await conn.execute(sql.set_local_statement_timeout(statement_timeout_ms))
        # Alone: incident writes in progress finish first, later ones wait for the commit
        # (app.sql.units, the units lock), so none keeps units of the replaced boundaries.
        await _lock_units(conn, statement_timeout_ms)
        if level > 0:
            parents = await _units_frame(conn, sql.select_units_wkb(level - 1))
            units = await asyncio.to_thread(assign_parents, units, parents)
        elif units["parent_code"].notna().any():
            raise BoundaryError("units of level 0 (countries) cannot have a parent")
        outside, warnings = await _check_territory(
            conn, units, Path(path).name, level, tolerance_m, territory_bbox
        )
        flagged = {unit.code for unit in outside}
        rows = [
            {
                "code": code,
                "name": name,
                "parent_code": None if pd.isna(parent) else parent,
                "wkb": wkb,
                "flags": [OUTSIDE_FLAG] if code in flagged else [],
            }
            for code, name, parent, wkb in zip(
                units["code"],
                units["name"],
                units["parent_code"],
                shapely.to_wkb(units.geometry.array, hex=True),
                strict=True,
            )
        ]
        result = (await conn.execute(sql.upsert_units(level, rows))).all()
        inserted = sum(1 for row in result if row.inserted)
        deleted = 0
        if replace:
            gone = await conn.execute(sql.delete_units_missing(level, list(units["code"])))
            deleted = len(gone.all())
        await _link_orphans(conn, level + 1)

        for statement in sql.refresh_unit_parts():
            await conn.execute(statement)
        await conn.execute(sql.snapshot_incident_units())
        for statement in sql.assign_incident_units():
            await conn.execute(statement, {"tolerance_m": tolerance_m})
        reassigned = (await conn.execute(sql.count_changed_incident_units())).scalar_one()

        report = BoundaryReport(
            level=level,
            received=received,
            inserted=inserted,
            updated=len(result) - inserted,
            deleted=deleted,
            repaired=[RepairedUnit(code=n.code, reason=n.reason) for n in notes],
            without_parent=(
                sorted(units.loc[units["parent_code"].isna(), "code"]) if level > 0 else []
            ),
            incidents_reassigned=reassigned,
            outside_territory=[
                OutsideTerritoryUnit(code=u.code, share_outside=u.share_outside) for u in outside
            ],
            warnings=warnings,
        )
        summary = {"file": Path(path).name, "replace": replace, **report.model_dump()}
        await conn.execute(
            audit_sql.insert_audit(
                actor, "import", "boundaries", entity_id=f"level:{level}", after=summary
            )
        )
    return report


async def _lock_units(conn: AsyncConnection, statement_timeout_ms: int) -> None:
    """Take the units lock exclusively; 503 when writes held it past the timeout."""
    await wait_for_lock(
        conn,
        sql.lock_units_exclusive(),
        "Incident writes (imports or API edits) were still in progress after "
        f"{statement_timeout_ms / 1000:g} s; a boundary upload waits for them, since it "
        "reassigns every incident. Nothing was loaded; send the file again once the "
        "imports are done.",
    )


async def _check_territory(
    conn: AsyncConnection,
    units: gpd.GeoDataFrame,
    filename: str,
    level: int,
    tolerance_m: float,
    territory_bbox: tuple[float, float, float, float] | None,
) -> tuple[list[OutsideUnit], list[str]]:
    """The units mostly outside the territory and the warning about them; BoundaryError
    (422) when every unit is. No reference (nothing above, no bbox): nothing to check."""
    row = (await conn.execute(territory_sql.select_outline_above(level))).first()
    if row is not None and row.wkb is not None:
        outline = shapely.from_wkb(bytes(row.wkb))
        reference = f"the loaded level {row.level} outline"
    elif territory_bbox is not None:
        outline = shapely.box(*territory_bbox)
        reference = "the territory's bounding box (territory.bbox)"
    else:
        return [], []
    outside = await asyncio.to_thread(outside_territory, units, outline, tolerance_m=tolerance_m)
    where = f"{reference} grown by {tolerance_m:g} m"
    if outside and len(outside) == len(units):
        raise BoundaryError(
            f"{filename}: every unit lies mostly or wholly outside the territory ({where}); "
            "nothing was loaded. The file's coordinate reference system is probably wrong "
            "(a .prj that does not match the coordinates, or latitude and longitude "
            "swapped), or the file is for another territory."
        )
    if not outside:
        return [], []
    codes = ", ".join(u.code for u in outside[:SHOWN_CODES])
    if len(outside) > SHOWN_CODES:
        codes += f" and {len(outside) - SHOWN_CODES} more"
    warning = (
        f"{len(outside)} of {len(units)} units lie mostly or wholly outside the territory "
        f"({where}): {codes}. They were loaded with the {OUTSIDE_FLAG!r} flag; if they "
        "should be inside, check the file's coordinate reference system."
    )
    return outside, [warning]


async def _units_frame(conn: AsyncConnection, statement: TextClause) -> gpd.GeoDataFrame:
    """Rows with ``code`` and ``wkb`` as a GeoDataFrame in EPSG:4326."""
    rows = (await conn.execute(statement)).all()
    return gpd.GeoDataFrame(
        {"code": [row.code for row in rows]},
        geometry=gpd.GeoSeries(shapely.from_wkb([bytes(row.wkb) for row in rows]), crs=4326),
    )


async def _link_orphans(conn: AsyncConnection, level: int) -> None:
    """Give the parentless units of ``level`` a parent among the units of ``level - 1``."""
    orphans = await _units_frame(conn, sql.select_orphans_wkb(level))
    if orphans.empty:
        return
    parents = await _units_frame(conn, sql.select_units_wkb(level - 1))
    linked = assign_parents(orphans, parents)
    links = [
        {"code": code, "parent_code": parent}
        for code, parent in zip(linked["code"], linked["parent_code"], strict=True)
        if parent is not None
    ]
    if links:
        await conn.execute(sql.update_parents(level, links))
