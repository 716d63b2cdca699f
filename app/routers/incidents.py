"""Incidents: point-level reads (analyst), writes (editor), GeoJSON pages with filters."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import orjson
from fastapi import APIRouter, Query, Request, Response

from app.core.errors import InvalidParameter, NotFound
from app.deps import Analyst, ConnDep, Editor, SettingsDep
from app.params import parse_bbox, split_list
from app.schemas.incidents import IncidentCreate, IncidentUpdate
from app.services import incidents as service
from app.sql import incidents as sql

router = APIRouter(prefix="/incidents", tags=["incidents"])

GEOJSON = "application/geo+json"


@router.get("", summary="Incidents as a GeoJSON FeatureCollection, filtered and paged")
async def list_incidents(
    request: Request,
    conn: ConnDep,
    settings: SettingsDep,
    _: Analyst,
    bbox: Annotated[str | None, Query(description="west,south,east,north (degrees)")] = None,
    occurred_from: Annotated[datetime | None, Query(description="inclusive")] = None,
    occurred_to: Annotated[datetime | None, Query(description="exclusive")] = None,
    category: Annotated[list[str] | None, Query(description="codes, comma-separated")] = None,
    victim_sex: Annotated[list[str] | None, Query(description="female, male, unknown")] = None,
    age_min: Annotated[int | None, Query(ge=0, le=120)] = None,
    age_max: Annotated[int | None, Query(ge=0, le=120)] = None,
    unit: Annotated[str | None, Query(description="unit code, any level, e.g. BZ-CY")] = None,
    source: Annotated[list[str] | None, Query(description="reporting agencies")] = None,
    limit: Annotated[
        int | None, Query(ge=1, description="page size; clamped to the maximum")
    ] = None,
    after: Annotated[
        int | None, Query(description="cursor: the last id of the previous page")
    ] = None,
) -> Response:
    page_size = min(limit or settings.api.default_limit, settings.api.max_limit)
    sexes = split_list(victim_sex)
    if bad := [s for s in sexes if s not in ("female", "male", "unknown")]:
        raise InvalidParameter(f"victim_sex must be female, male or unknown (got {', '.join(bad)})")
    if age_min is not None and age_max is not None and age_min > age_max:
        raise InvalidParameter("age_min must not exceed age_max")
    unit_id = None
    if unit is not None:
        unit_id = (await conn.execute(sql.select_unit_id(unit))).scalar()
        if unit_id is None:
            raise InvalidParameter(f"unknown unit code {unit!r}")
    filters = sql.IncidentFilter(
        bbox=parse_bbox(bbox),
        occurred_from=occurred_from,
        occurred_to=occurred_to,
        categories=tuple(c.lower() for c in split_list(category)),
        victim_sex=sexes,
        age_min=age_min,
        age_max=age_max,
        unit_id=unit_id,
        sources=split_list(source),
    )
    page = (await conn.execute(sql.select_page(filters, after=after, limit=page_size))).one()
    matched = await _number_matched(request, conn, filters, first_page=after is None)
    links = [{"rel": "self", "type": GEOJSON, "href": str(request.url)}]
    if page.has_more:
        next_url = request.url.include_query_params(after=page.last_id, limit=page_size)
        links.append({"rel": "next", "type": GEOJSON, "href": str(next_url)})
    body = (
        f'{{"type":"FeatureCollection","numberMatched":{matched},'
        f'"numberReturned":{page.returned},"links":{orjson.dumps(links).decode()},'
        f'"features":{page.features}}}'
    )
    return Response(body, media_type=GEOJSON)


async def _number_matched(
    request: Request, conn, filters: sql.IncidentFilter, *, first_page: bool
) -> int:
    """Count on the first page; later pages of the same walk reuse that count (a full
    count costs ~10x the page itself on a million rows), so a walk pays for one count
    as long as no write happens: the count is kept per data version (``app.core.versions``),
    so a page after a write counts again and agrees with the first page and the OGC
    route. The version is read before counting: a write committed during the count
    bumps it after, and the next page counts again instead of keeping a stale number."""
    cache = request.app.state.count_cache
    key = (request.app.state.data_version.value, filters)
    matched = None if first_page else cache.get(key)
    if matched is None:
        matched = (await conn.execute(sql.count_matching(filters))).scalar_one()
        cache.set(key, matched)
    return matched


@router.post("", status_code=201, summary="Create one incident")
async def create_incident(
    request: Request, body: IncidentCreate, conn: ConnDep, settings: SettingsDep, who: Editor
) -> Response:
    new_id = await service.create_incident(conn, settings, body, who.actor)
    feature = (await conn.execute(sql.select_feature(new_id))).scalar_one()
    location = str(request.url_for("get_incident", incident_id=new_id))
    return Response(feature, status_code=201, media_type=GEOJSON, headers={"Location": location})


@router.get("/{incident_id}", summary="One incident as a GeoJSON Feature")
async def get_incident(incident_id: int, conn: ConnDep, _: Analyst) -> Response:
    feature = (await conn.execute(sql.select_feature(incident_id))).scalar()
    if feature is None:
        raise NotFound(f"no incident {incident_id}")
    return Response(feature, media_type=GEOJSON)


@router.patch("/{incident_id}", summary="Change some fields of an incident")
async def update_incident(
    incident_id: int, body: IncidentUpdate, conn: ConnDep, settings: SettingsDep, who: Editor
) -> Response:
    await service.update_incident(conn, settings, incident_id, body, who.actor)
    feature = (await conn.execute(sql.select_feature(incident_id))).scalar_one()
    return Response(feature, media_type=GEOJSON)


@router.delete(
    "/{incident_id}", status_code=204, summary="Soft-delete an incident (kept for audit)"
)
async def delete_incident(incident_id: int, conn: ConnDep, who: Editor) -> Response:
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
    await service.restore_incident(conn, settings, incident_id, who.actor)
    feature = (await conn.execute(sql.select_feature(incident_id))).scalar_one()
    return Response(feature, media_type=GEOJSON)
