"""Boundary uploads (admin): one level of units from GeoJSON, GeoPackage or zipped Shapefile."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, File, Form, UploadFile

from app.deps import Admin, EngineDep, SettingsDep
from app.files.uploads import saved_upload
from app.schemas.units import BoundaryReport
from app.services.boundaries import import_boundaries
from boundaries.read import SUPPORTED_SUFFIXES

router = APIRouter(prefix="/boundaries", tags=["boundaries"])


def _optional(value: str | None) -> str | None:
    """Empty form fields mean "not given"."""
    return value.strip() or None if value is not None else None


@router.post(
    "",
    summary="Import one level of administrative units (upsert by code)",
    response_model=BoundaryReport,
    responses={
        401: {"description": "No API key."},
        403: {"description": "The key is not an admin key."},
        413: {"description": "The file exceeds the upload limit."},
        422: {
            "description": "Unsupported or unusable file, or every unit outside the "
            "territory (the detail says why)."
        },
    },
)
async def import_boundary_file(
    principal: Admin,
    engine: EngineDep,
    settings: SettingsDep,
    file: Annotated[
        UploadFile,
        File(
            description="GeoJSON (.geojson/.json), GeoPackage (.gpkg) or zipped Shapefile (.zip)."
        ),
    ],
    level: Annotated[int, Form(ge=0, description="0 country, 1 district, 2 …")],
    code_field: Annotated[str, Form(min_length=1, description="Field with unique unit codes.")],
    name_field: Annotated[str, Form(min_length=1, description="Field with unit names.")],
    parent_field: Annotated[
        str | None, Form(description="Field with the parent unit's code (optional).")
    ] = None,
    layer: Annotated[str | None, Form(description="Layer of a multi-layer file.")] = None,
    replace: Annotated[
        bool, Form(description="Delete the units of this level that the file lacks.")
    ] = False,
) -> BoundaryReport:
    """Import one level of administrative units from a GeoJSON, GeoPackage or zipped
    Shapefile. Units are matched by code (new ones inserted, present ones replaced),
    invalid geometries are repaired, units are linked to their parent (``parent_field``)
    and incidents are assigned to units again; ``replace=true`` also deletes the level's
    units the file lacks. Admin keys only. The answer reports what was done and what looked
    wrong (repairs, units without a parent or outside the territory); 422 for a file that
    cannot be used, 413 for one beyond the upload limit."""
    with saved_upload(
        file, max_mb=settings.api.max_upload_mb, suffixes=tuple(SUPPORTED_SUFFIXES)
    ) as path:
        return await import_boundaries(
            engine,
            path,
            level=level,
            code_field=code_field,
            name_field=name_field,
            parent_field=_optional(parent_field),
            layer=_optional(layer),
            actor=principal.actor,
            replace=replace,
            tolerance_m=settings.territory.tolerance_m,
            territory_bbox=settings.territory.bbox,
        )
