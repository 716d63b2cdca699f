"""What the style writers need from the database: the number of map classes of each
composite index, so a legend lists every class even when a period leaves one empty."""

from __future__ import annotations

import logging

from sqlalchemy.ext.asyncio import AsyncEngine

import indexes
from app.layers import Layer
from app.services import indexes as index_service
from app.symbology import Symbology, class_field, symbology

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
