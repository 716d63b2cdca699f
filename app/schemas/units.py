"""Schemas for administrative units (GeoJSON) and for boundary imports."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class UnitProperties(BaseModel):
    """An administrative unit's properties."""

    code: str = Field(description="Unique unit code, e.g. ISO 3166-2 `BZ-CY`.")
    name: str
    level: int = Field(ge=0, description="0 country, 1 district, 2 …")
    parent_code: str | None = Field(description="Code of the containing unit one level up.")
    area_km2: float = Field(description="Geodesic area in km².")
    flags: list[str] = Field(
        default_factory=list,
        description="Data-quality flags set by the boundary import: `outside_territory` "
        "when more than half of the unit lies outside the territory.",
    )


class UnitFeature(BaseModel):
    """One unit as a GeoJSON Feature (RFC 7946, lon/lat); its id is the unit code."""

    type: Literal["Feature"] = "Feature"
    id: str
    geometry: dict[str, Any] = Field(description="GeoJSON MultiPolygon.")
    properties: UnitProperties


class UnitCollection(BaseModel):
    """Units as a GeoJSON FeatureCollection."""

    type: Literal["FeatureCollection"] = "FeatureCollection"
    features: list[UnitFeature]


class RepairedUnit(BaseModel):
    """A unit whose geometry was invalid and was repaired (or dropped)."""

    model_config = ConfigDict(frozen=True)

    code: str
    reason: str = Field(description="Why the geometry was invalid (GEOS), and if it was dropped.")


class OutsideTerritoryUnit(BaseModel):
    """A unit lying for the most part outside the territory."""

    model_config = ConfigDict(frozen=True)

    code: str
    share_outside: float = Field(
        description="Share of the unit's area outside the territory (0.5 to 1; 1: wholly)."
    )


class BoundaryReport(BaseModel):
    """What a boundary import did."""

    model_config = ConfigDict(frozen=True)

    level: int
    received: int = Field(description="Features read from the file.")
    inserted: int = Field(description="Units new to the database.")
    updated: int = Field(description="Units already present (by code), replaced by the file.")
    deleted: int = Field(description="Units of this level absent from the file (replace=true).")
    repaired: list[RepairedUnit] = Field(
        description="Units whose geometry was invalid and repaired (or dropped)."
    )
    without_parent: list[str] = Field(
        default_factory=list,
        description="Codes of units (level > 0) that no unit of the level above overlaps.",
    )
    incidents_reassigned: int = Field(
        description="Incidents whose unit assignment changed with the new boundaries."
    )
    outside_territory: list[OutsideTerritoryUnit] = Field(
        default_factory=list,
        description="Units loaded although most of their area lies outside the territory "
        "(the outline of the level above, or the territory's bounding box); they carry "
        "the `outside_territory` flag.",
    )
    warnings: list[str] = Field(
        default_factory=list, description="What the import loaded but you should check."
    )
