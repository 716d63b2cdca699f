"""Incidents: point-level reads (analyst), writes (editor). ``GET /incidents`` is a view of
the incidents layer (``app.ogc.items``): the filters, features, counts and errors of
``/collections/incidents/items``, paged by id."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import StreamingResponse

from app.core.errors import NotFound
from app.deps import Analyst, CatalogDep, ConnDep, Editor, SettingsDep
from app.ogc.items import items_page
from app.schemas.incidents import IncidentCreate, IncidentUpdate
from app.services import incidents as service

router = APIRouter(prefix="/incidents", tags=["incidents"])

GEOJSON = "application/geo+json"
_LOCAL = "; without a zone local time of the territory (2024-01-01 is local midnight)"
# Parsed by the layer's filters (app.ogc.filters: a 400 for a bad one, as on the OGC
# items), so declared as text; the API definition shows their type.
_AGE = {"anyOf": [{"type": "integer", "minimum": 0, "maximum": 120}, {"type": "null"}]}
_ID = {"anyOf": [{"type": "integer"}, {"type": "null"}]}


@router.get(
    "",
    summary="Incidents as a GeoJSON FeatureCollection, filtered and paged",
    response_class=StreamingResponse,
    responses={
        200: {"content": {GEOJSON: {}}},
        400: {"description": "A malformed filter or cursor (application/problem+json)"},
    },
)
async def list_incidents(
    request: Request,
    catalog: CatalogDep,
    who: Analyst,
    bbox: Annotated[
        str | None,
        Query(description="west,south,east,north in degrees (or 6 numbers, with heights)"),
    ] = None,
    occurred_from: Annotated[
        str | None, Query(description=f"ISO 8601 date or date-time, inclusive{_LOCAL}")
    ] = None,
    occurred_to: Annotated[
        str | None, Query(description=f"ISO 8601 date or date-time, exclusive{_LOCAL}")
    ] = None,
    category: Annotated[list[str] | None, Query(description="codes, comma-separated")] = None,
    victim_sex: Annotated[list[str] | None, Query(description="female, male, unknown")] = None,
    age_min: Annotated[
        str | None, Query(description="victim's age, at least (years)", json_schema_extra=_AGE)
    ] = None,
    age_max: Annotated[
        str | None, Query(description="victim's age, at most (years)", json_schema_extra=_AGE)
    ] = None,
    unit: Annotated[str | None, Query(description="unit code, any level, e.g. BZ-CY")] = None,
    source: Annotated[list[str] | None, Query(description="reporting agencies")] = None,
    limit: Annotated[
        int | None, Query(ge=1, description="page size; clamped to the maximum")
    ] = None,
    after: Annotated[
        str | None,
        Query(description="cursor: the last id of the previous page", json_schema_extra=_ID),
    ] = None,
) -> Response:
    """The incidents the filters select, as ``/collections/incidents/items`` answers
    them (the same features, properties and ``numberMatched``; a malformed filter is the
    same 400), in id order on every page. ``numberMatched`` is counted on the first page
    and kept for the pages after it until the next write."""
    return await items_page(
        request,
        catalog,
        service.LAYER,
        who,
        limit=limit,
        crs=None,
        after=after,
        nearest_first=False,
        fresh_count=after is None,
    )


@router.post("", status_code=201, summary="Create one incident")
async def create_incident(
    request: Request, body: IncidentCreate, conn: ConnDep, settings: SettingsDep, who: Editor
) -> Response:
    """Validate by the import's rules, store, audit; answer the incident as a Feature."""
    new_id = await service.create_incident(conn, settings, body, who.actor)
    feature = await service.feature(conn, new_id, who)
    location = str(request.url_for("get_incident", incident_id=new_id))
    return Response(feature, status_code=201, media_type=GEOJSON, headers={"Location": location})


@router.get("/{incident_id}", summary="One incident as a GeoJSON Feature")
async def get_incident(incident_id: int, conn: ConnDep, who: Analyst) -> Response:
    """One live incident, as ``/collections/incidents/items/{id}`` encodes it."""
    feature = await service.feature(conn, incident_id, who)
    if feature is None:
        raise NotFound(f"no incident {incident_id}")
    return Response(feature, media_type=GEOJSON)


@router.patch("/{incident_id}", summary="Change some fields of an incident")
async def update_incident(
    incident_id: int, body: IncidentUpdate, conn: ConnDep, settings: SettingsDep, who: Editor
) -> Response:
    """Change some fields (validated again as a whole); a move computes its units again."""
    await service.update_incident(conn, settings, incident_id, body, who.actor)
    feature = await service.feature(conn, incident_id, who)
    return Response(feature, media_type=GEOJSON)


@router.delete(
    "/{incident_id}", status_code=204, summary="Soft-delete an incident (kept for audit)"
)
async def delete_incident(incident_id: int, conn: ConnDep, who: Editor) -> Response:
    """Soft delete: kept for the audit trail, gone from every read."""
    await service.delete_incident(conn, incident_id, who.actor)
    return Response(status_code=204)


@router.post(
    "/{incident_id}/restore",
    summary="Restore a soft-deleted incident (its units computed again)",
    responses={404: {"description": "No deleted incident with this id"}},
)
async def restore_incident(
    incident_id: int, conn: ConnDep, settings: SettingsDep, who: Editor
) -> Response:
    """Bring a deleted incident back; its units are computed again."""
    await service.restore_incident(conn, settings, incident_id, who.actor)
    feature = await service.feature(conn, incident_id, who)
    return Response(feature, media_type=GEOJSON)
