"""Administrative units as GeoJSON (public): the whole level, or one unit by code."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query
from fastapi.responses import JSONResponse

from app.core.errors import NotFound
from app.deps import ConnDep
from app.schemas.units import UnitCollection, UnitFeature
from app.sql import units as sql

router = APIRouter(prefix="/units", tags=["units"])

GEOJSON = "application/geo+json"


class GeoJSONResponse(JSONResponse):
    """GeoJSON text built in PostGIS, sent as is (a JSON response, for OpenAPI's sake)."""

    media_type = GEOJSON

    def render(self, content: str | bytes) -> bytes:
        """The body as bytes: the text PostGIS built, not encoded again."""
        return content.encode() if isinstance(content, str) else content


Simplify = Annotated[
    float | None,
    Query(
        gt=0,
        le=1,
        description="Simplification tolerance in degrees (ST_SimplifyPreserveTopology), "
        "e.g. 0.001 (≈ 100 m) for web maps; omitted: full resolution.",
    ),
]


@router.get(
    "",
    summary="Units of a level as a GeoJSON FeatureCollection",
    response_class=GeoJSONResponse,
    responses={200: {"model": UnitCollection}},
)
async def list_units(
    conn: ConnDep,
    level: Annotated[
        int | None,
        Query(ge=0, description="0 country, 1 district, 2 …; omitted: every level."),
    ] = None,
    simplify: Simplify = None,
) -> GeoJSONResponse:
    """The administrative units of one level, or of every level, as a GeoJSON
    FeatureCollection in longitude/latitude; ``simplify`` thins the outlines for web maps.
    Open to everyone."""
    body = (await conn.execute(sql.select_units_geojson(level, simplify))).scalar_one()
    return GeoJSONResponse(body)


@router.get(
    "/{code}",
    summary="One unit as a GeoJSON Feature",
    response_class=GeoJSONResponse,
    responses={
        200: {"model": UnitFeature},
        404: {"description": "No unit has this code."},
    },
)
async def get_unit(
    conn: ConnDep,
    code: Annotated[str, Path(description="Unit code, e.g. `BZ-CY`.")],
    simplify: Simplify = None,
) -> GeoJSONResponse:
    """One administrative unit as a GeoJSON Feature, by code; 404 when no unit has it.
    Open to everyone."""
    body = (await conn.execute(sql.select_unit_geojson(code, simplify))).scalar_one_or_none()
    if body is None:
        raise NotFound(f"No unit with code {code!r}.")
    return GeoJSONResponse(body)
