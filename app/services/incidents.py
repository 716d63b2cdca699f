"""Single-incident writes, validated by the same rules as the bulk import and audited,
and single-incident reads, encoded as the incidents layer encodes its features.

Writes that compute an incident's units (create, move, restore) first take the units lock
shared (``app.sql.units``), so they never interleave with a boundary upload."""

from __future__ import annotations

from typing import Any

import orjson
import pandas as pd
from sqlalchemy.ext.asyncio import AsyncConnection

from app.access import visible_fields
from app.core.db import wait_for_lock
from app.core.errors import Conflict, InvalidParameter, NotFound
from app.core.settings import Settings
from app.ogc.crs import parse_crs
from app.ogc.layers import incidents_layer
from app.schemas.incidents import IncidentCreate, IncidentUpdate
from app.security import Principal
from app.services.imports import deleted_incident_reason, load_territory, load_vocabulary
from app.services.incident_rows import ReadOptions, validate_incidents
from app.sql import audit as audit_sql
from app.sql import features as features_sql
from app.sql import incidents as sql
from app.sql import units as units_sql

# The incidents layer, as the catalog declares it (``app.ogc.layers``): ``/incidents``
# reads and encodes through it. Its declaration depends on no data, so it is built once
# here rather than asked of the catalog, which is rebuilt after every write.
LAYER = incidents_layer()
_CRS84 = parse_crs(None, "")


async def feature(conn: AsyncConnection, incident_id: int, who: Principal) -> str | None:
    """One live incident as a GeoJSON Feature, encoded as the incidents layer encodes
    its items (``app.sql.features.feature_json``: the fields ``who`` sees); None if
    there is no such live incident."""
    statement = features_sql.select_item(LAYER, incident_id, _CRS84, visible_fields(LAYER, who))
    return (await conn.execute(statement)).scalar()


async def _validated_values(conn: AsyncConnection, settings: Settings, record: dict) -> dict:
    """Run the import rules on one record; return the typed values to store, or 422."""
    row = {
        k: "" if v is None else (orjson.dumps(v).decode() if isinstance(v, dict) else str(v))
        for k, v in record.items()
        if k != "attributes"
    }
    checked = validate_incidents(
        pd.DataFrame([row]),
        options=ReadOptions(),
        vocabulary=await load_vocabulary(conn),
        territory=await load_territory(conn, settings),
        timezone=settings.territory.timezone,
    )
    if len(checked.rejected):
        raise InvalidParameter(checked.rejected.iloc[0]["reason"])
    valid = checked.valid.iloc[0]
    values: dict[str, Any] = {
        k: (None if pd.isna(valid[k]) else valid[k])
        for k in sql.WRITABLE
        if k in valid.index and k != "attributes"
    }
    for k in ("victim_age", "victims_count"):
        if values.get(k) is not None:
            values[k] = int(values[k])
    for k in ("occurred_at", "reported_at"):
        if values.get(k) is not None:
            values[k] = values[k].to_pydatetime()
    values["longitude"], values["latitude"] = float(valid["longitude"]), float(valid["latitude"])
    values["attributes"] = record.get("attributes") or {}
    return values


def _flatten(body: dict) -> dict:
    """API body → record with longitude/latitude in place of the GeoJSON geometry."""
    record = dict(body)
    geometry = record.pop("geometry", None)
    if geometry is not None:
        record["longitude"], record["latitude"] = geometry["coordinates"][:2]
    return record


async def create_incident(
    conn: AsyncConnection, settings: Settings, body: IncidentCreate, actor: str
) -> int:
    """Store a new incident, assign its units and audit it; returns its id. 409 when its
    ``source`` and ``source_id`` exist already (or were deleted)."""
    await _lock_units(conn, settings)
    record = _flatten(body.model_dump(mode="json"))
    values = await _validated_values(conn, settings, record)
    new_id = (await conn.execute(sql.insert_incident(values))).scalar()
    if new_id is None:
        # A deleted record is not PATCHed back to life: the three doors (POST, PATCH, a
        # re-import) say the same thing.
        deleted = await deleted_incident_reason(conn, source=body.source, source_id=body.source_id)
        raise Conflict(
            deleted
            or f"an incident from {body.source!r} with source_id {body.source_id!r} already "
            "exists; PATCH it instead",
        )
    await _assign_units(conn, settings, new_id)
    after = await _snapshot(conn, new_id)
    await conn.execute(audit_sql.insert_audit(actor, "create", "incident", new_id, after=after))
    return new_id


async def update_incident(
    conn: AsyncConnection, settings: Settings, incident_id: int, body: IncidentUpdate, actor: str
) -> None:
    """Change the fields ``body`` sets, checked as a whole record; a move assigns its units
    again. Audited with the record before and after."""
    changes = _flatten(body.model_dump(mode="json", exclude_unset=True))
    if "longitude" in changes:  # a move: its units are computed again
        await _lock_units(conn, settings)
    before = await _snapshot(conn, incident_id)
    merged = {**before, **changes}
    values = await _validated_values(conn, settings, merged)
    await conn.execute(sql.update_incident(incident_id, values))
    if "longitude" in changes:
        await _assign_units(conn, settings, incident_id)
    after = await _snapshot(conn, incident_id)
    await conn.execute(
        audit_sql.insert_audit(actor, "update", "incident", incident_id, before=before, after=after)
    )


async def delete_incident(conn: AsyncConnection, incident_id: int, actor: str) -> None:
    """Soft delete: the row stays for the audit trail and disappears from every read."""
    before = await _snapshot(conn, incident_id)
    await conn.execute(sql.soft_delete(incident_id))
    await conn.execute(
        audit_sql.insert_audit(actor, "delete", "incident", incident_id, before=before)
    )


async def restore_incident(
    conn: AsyncConnection, settings: Settings, incident_id: int, actor: str
) -> None:
    """Bring back a soft-deleted incident. Its units are computed again: boundaries may
    have been replaced while it was deleted."""
    await _lock_units(conn, settings)
    row = (await conn.execute(sql.select_deleted_record(incident_id))).mappings().first()
    if row is None:
        raise NotFound(f"no deleted incident {incident_id}")
    before = _jsonable(row)
    await conn.execute(sql.undelete(incident_id))
    await _assign_units(conn, settings, incident_id)
    after = await _snapshot(conn, incident_id)
    await conn.execute(
        audit_sql.insert_audit(
            actor, "restore", "incident", incident_id, before=before, after=after
        )
    )


async def _lock_units(conn: AsyncConnection, settings: Settings) -> None:
    """Take the units lock shared, before computing units and before locking the row: a
    boundary upload in progress commits first, and the statements after this one see its
    boundaries (READ COMMITTED). The wait is bounded by the request's statement timeout;
    past it, a 503 that says why."""
    await wait_for_lock(
        conn,
        units_sql.lock_units_shared(),
        "A boundary upload is reassigning every incident to its new units; incident "
        "writes wait for it, and this one waited "
        f"{settings.database.statement_timeout_ms / 1000:g} s. Nothing was changed; "
        "send it again in a minute.",
    )


async def _assign_units(conn: AsyncConnection, settings: Settings, incident_id: int) -> None:
    for stmt in sql.assign_units(incident_id):
        await conn.execute(stmt, {"tolerance_m": settings.territory.tolerance_m})


async def _snapshot(conn: AsyncConnection, incident_id: int) -> dict:
    row = (await conn.execute(sql.select_record(incident_id))).mappings().first()
    if row is None:
        deleted = await deleted_incident_reason(conn, incident_id=incident_id)
        raise NotFound(deleted or f"no incident {incident_id}")
    return _jsonable(row)


def _jsonable(row: Any) -> dict:
    return {k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in row.items()}
