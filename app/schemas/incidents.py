"""Schemas for incidents (GeoJSON in, GeoJSON out)."""

from __future__ import annotations

from typing import Any

from geojson_pydantic import Point
from pydantic import BaseModel, ConfigDict, Field


class IncidentFields(BaseModel):
    """An incident's recorded facts: category, time, place, victim and circumstances."""

    model_config = ConfigDict(extra="forbid")

    category: str = Field(description="A code (or name) from the category vocabulary")
    occurred_at: str = Field(description="ISO 8601; without an offset it is local time")
    reported_at: str | None = None
    geometry: Point = Field(description="GeoJSON Point, longitude/latitude (EPSG:4326)")
    location_precision: str | None = None
    victim_sex: str | None = Field(default=None, description="female, male or unknown")
    victim_age: int | None = None
    victims_count: int = 1
    weapon: str | None = None
    perpetrator_relation: str | None = None
    attributes: dict[str, Any] = Field(default_factory=dict)


class IncidentCreate(IncidentFields):
    """A new incident, identified by its agency (``source``) and the agency's id."""

    source: str = Field(min_length=1, description="The reporting agency")
    source_id: str = Field(min_length=1, description="The incident's id in the agency's system")


class IncidentUpdate(BaseModel):
    """Any subset of the fields; source and source_id identify the incident and never change."""

    model_config = ConfigDict(extra="forbid")

    category: str | None = None
    occurred_at: str | None = None
    reported_at: str | None = None
    geometry: Point | None = None
    location_precision: str | None = None
    victim_sex: str | None = None
    victim_age: int | None = None
    victims_count: int | None = None
    weapon: str | None = None
    perpetrator_relation: str | None = None
    attributes: dict[str, Any] | None = None
