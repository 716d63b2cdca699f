"""What the style writers need from the database: the number of map classes of each
composite index, so a legend lists every class even when a period leaves one empty."""

from __future__ import annotations

import logging

from sqlalchemy.ext.asyncio import AsyncEngine

import indexes
from app.core.settings import Settings
from app.ogc.layers import Layer
from app.services import indexes as index_service
from app.services.catalog import Catalog
from app.styles.symbology import Symbology, class_field, symbology

log = logging.getLogger("observatory")


async def index_classes(engine: AsyncEngine) -> dict[str, int]:
    """Map class count (``classes.k``) of each index, by its property prefix
    (``territorial_violence`` for the ``territorial-violence`` index)."""
    async with engine.connect() as conn:
        records = await index_service.list_definitions(conn)
    out = {}
    for record in records:
        try:
            definition = indexes.load_definition(record.definition)
        except ValueError as exc:  # a stored definition the current code rejects
            log.warning("index %s has no legend: %s", record.code, exc)
            continue
        out[record.code.replace("-", "_")] = definition.classes.k
    return out


async def symbologies(engine: AsyncEngine, layers: list[Layer]) -> list[Symbology]:
    """The symbology of each layer (one database read for all of them)."""
    needs_classes = any(class_field(layer) for layer in layers)
    classes = await index_classes(engine) if needs_classes else {}
    out = []
    for layer in layers:
        field = class_field(layer)
        k = classes.get(field.removesuffix("_class")) if field else None
        out.append(symbology(layer, k))
    return out


async def territory_extent(
    catalog: Catalog, settings: Settings
) -> tuple[float, float, float, float] | None:
    """(west, south, east, north) of the loaded boundaries (the lowest level), else the
    configured territory box."""
    units = [layer for layer in (await catalog.layers()).values() if layer.style == "units"]
    extent = await catalog.extent(units[0]) if units else None
    if extent is not None:
        return tuple(extent[:4])
    return settings.territory.bbox


def styled_layers(layers: dict[str, Layer]) -> list[Layer]:
    """Units, then hot spot runs oldest first (the newest drawn on top), then alerts,
    near-repeat risk zones (small: drawn over the alerts), then incidents."""
    units = [layer for layer in layers.values() if layer.style == "units"]
    runs = sorted(
        (layer for layer in layers.values() if layer.style == "hotspots"),
        key=lambda layer: int(layer.id.rsplit("-", 1)[-1]),
    )
    alerts = [layer for layer in layers.values() if layer.style == "alerts"]
    zones = [layer for layer in layers.values() if layer.style == "risk_zones"]
    points = [layer for layer in layers.values() if layer.style == "incidents"]
    return [*units, *runs, *alerts, *zones, *points]
