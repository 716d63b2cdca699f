"""The documents of OGC API Features, Tiles and Styles, and TileJSON 3.0.0, as models.

The routers build these documents through the models (FastAPI serialises them with
``by_alias=True, exclude_none=True``), so the OpenAPI definition shows their schema and a
test can validate a body against the model it was built from (as tipg's ``model.py``).
Field names are snake_case with the standards' camelCase (or ``$schema``-style) names as
aliases; a field that is ``None`` is left out of the document, never written as null.
Fields are declared in the order the documents list them, so the bytes stay as they were
before the models (clients read JSON objects by key; the order only keeps diffs quiet).

References: OGC API - Features Part 1 (17-069r4) and Part 3 (19-079r2), OGC API - Tiles
Part 1 (20-057), OGC API - Styles (draft 20-009), TileJSON 3.0.0 (Mapbox).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


def _absent_not_null(schema: dict[str, Any]) -> None:
    """A field that is None is left out of the document, never written as null: its
    schema lists only the type it has when present (and no ``default: null``)."""
    for prop in schema.get("properties", {}).values():
        options = prop.get("anyOf")
        if options and {"type": "null"} in options:
            rest = [o for o in prop.pop("anyOf") if o != {"type": "null"}]
            prop.update(rest[0] if len(rest) == 1 else {"anyOf": rest})
            if "default" in prop and prop["default"] is None:
                del prop["default"]


class OgcModel(BaseModel):
    """Base of the documents: built by name, written by alias, unknown keys refused."""

    model_config = ConfigDict(
        extra="forbid",
        validate_by_name=True,
        validate_by_alias=True,
        serialize_by_alias=True,
        json_schema_extra=_absent_not_null,
    )


class Link(OgcModel):
    """A link (Features Part 1, ``link.yaml``); ``templated`` for a URI template (Tiles)."""

    href: str = Field(description="Absolute URL (or a URI template when `templated`).")
    rel: str
    type: str | None = Field(default=None, description="Media type of the target.")
    title: str | None = None
    templated: bool | None = Field(
        default=None, description="True when `href` is a URI template (OGC API - Tiles)."
    )


# --- landing page, conformance ---------------------------------------------------------------


class Landing(OgcModel):
    """The landing page: what the service is and links to everything else."""

    title: str
    description: str
    links: list[Link]


class Conformance(OgcModel):
    """The conformance classes the service implements."""

    conforms_to: list[str] = Field(alias="conformsTo")


# --- collections -----------------------------------------------------------------------------


class Spatial(OgcModel):
    """The spatial extent: one bounding box (west, south, east, north) in CRS84."""

    bbox: list[list[float]]
    crs: str


class Temporal(OgcModel):
    """The temporal extent: one interval of ISO 8601 instants, ``null`` for an open end."""

    interval: list[list[str | None]]
    trs: str


class Extent(OgcModel):
    """The extent of a collection: space, and time for a layer with a ``datetime`` field."""

    spatial: Spatial
    temporal: Temporal | None = None


class Collection(OgcModel):
    """One collection (a published layer) with its CRS, links and extent."""

    id: str
    title: str
    description: str
    keywords: list[str]
    item_type: Literal["feature"] = Field(default="feature", alias="itemType")
    crs: list[str] = Field(description="CRS URIs the `crs` parameter takes (Part 2).")
    storage_crs: str = Field(alias="storageCrs")
    links: list[Link]
    extent: Extent | None = Field(default=None, description="Absent for an empty layer.")


class Collections(OgcModel):
    """The collections the caller may read."""

    links: list[Link]
    collections: list[Collection]


# --- queryables (Part 3): a JSON Schema ------------------------------------------------------


def _queryable_schema(schema: dict[str, Any]) -> None:
    """The OpenAPI schema of a queryable, without a property named ``$ref``: Swagger UI
    and other resolvers take any ``$ref`` key for a reference and fail on it. The
    geometry's ``$ref`` is described instead (hence no ``additionalProperties: false``)."""
    _absent_not_null(schema)
    del schema["properties"]["$ref"]
    schema.pop("additionalProperties", None)


class Queryable(OgcModel):
    """One queryable property: a JSON Schema of its values.

    The geometry carries both Part 3's ``format`` and a ``$ref`` to the GeoJSON schema
    (the only form QGIS takes as the geometry its spatial filters may name)."""

    model_config = ConfigDict(json_schema_extra=_queryable_schema)

    ref: str | None = Field(default=None, alias="$ref")
    title: str | None = None
    type: str | None = None
    format: str | None = None
    description: str | None = None
    x_ogc_role: str | None = Field(default=None, alias="x-ogc-role")


class Queryables(OgcModel):
    """The properties a filter of this caller may use, as a JSON Schema (2020-12)."""

    schema_uri: str = Field(default="https://json-schema.org/draft/2020-12/schema", alias="$schema")
    id: str = Field(alias="$id")
    type: Literal["object"] = "object"
    title: str
    properties: dict[str, Queryable]
    additional_properties: bool = Field(default=False, alias="additionalProperties")


# --- tiles -----------------------------------------------------------------------------------


class VectorLayer(OgcModel):
    """One layer of a vector tile source (TileJSON 3.0.0 ``vector_layers``)."""

    id: str
    description: str | None = None
    minzoom: int | None = None
    maxzoom: int | None = None
    fields: dict[str, str] = Field(description="Property name -> its description or type.")


class TileJSON(OgcModel):
    """TileJSON 3.0.0 of a layer's vector tiles."""

    tilejson: Literal["3.0.0"] = "3.0.0"
    name: str | None = None
    description: str | None = None
    version: str = "1.0.0"
    scheme: Literal["xyz", "tms"] = "xyz"
    tiles: list[str]
    minzoom: int = Field(default=0, ge=0, le=30)
    maxzoom: int = Field(default=30, ge=0, le=30)
    bounds: tuple[float, float, float, float] = Field(description="West, south, east, north.")
    center: tuple[float, float, int] | None = Field(
        default=None, description="Longitude, latitude, zoom."
    )
    attribution: str | None = None
    vector_layers: list[VectorLayer]


class TileSet(OgcModel):
    """One tileset of a collection (OGC API - Tiles ``tileSet-item``)."""

    title: str | None = None
    data_type: Literal["vector", "map", "coverage"] = Field(alias="dataType")
    crs: str
    tile_matrix_set_uri: str | None = Field(default=None, alias="tileMatrixSetURI")
    links: list[Link]


class TileSets(OgcModel):
    """The tilesets of a collection."""

    tilesets: list[TileSet]


# --- styles (OGC API - Styles) ---------------------------------------------------------------


class Style(OgcModel):
    """One style of a collection and the links to its encodings (stylesheets)."""

    id: str
    title: str | None = None
    links: list[Link]


class Styles(OgcModel):
    """The styles of a collection and the id of its default one."""

    default: str | None = None
    styles: list[Style]
    links: list[Link]


__all__ = [
    "Collection",
    "Collections",
    "Conformance",
    "Extent",
    "Landing",
    "Link",
    "Queryable",
    "Queryables",
    "Spatial",
    "Style",
    "Styles",
    "Temporal",
    "TileJSON",
    "TileSet",
    "TileSets",
    "VectorLayer",
]
