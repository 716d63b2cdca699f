"""The points a map labels: a point inside each district (its name) and the territory's
towns and villages (name and population), as one GeoJSON FeatureCollection."""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from app.core.settings import Settings
from app.settlements import read_settlements
from app.sql.labels import unit_label_points

log = logging.getLogger("observatory")

# The units the maps colour and label: the districts (level 1).
LABEL_LEVEL = 1


def _point(lon: float, lat: float, properties: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "Feature",
        "geometry": {"type": "Point", "coordinates": [round(lon, 6), round(lat, 6)]},
        "properties": properties,
    }


async def label_points(engine: AsyncEngine, settings: Settings) -> dict[str, Any]:
    """Units of :data:`LABEL_LEVEL` (``kind`` "unit": code, name, level), then settlements
    largest first (``kind`` "settlement": name, population, rank 1 = largest)."""
    async with engine.connect() as conn:
        units = (await conn.execute(unit_label_points(LABEL_LEVEL))).all()
    features = [
        _point(u.lon, u.lat, {"kind": "unit", "code": u.code, "name": u.name, "level": 1})
        for u in units
    ]
    path = settings.territory.settlements_file
    try:
        places = None if path is None else read_settlements(path)
    except (OSError, ValueError) as exc:  # the map still shows the districts' names
        log.warning("territory.settlements_file not read: %s", exc)
        places = None
    if places is not None:
        features += [
            _point(
                row.longitude,
                row.latitude,
                {
                    "kind": "settlement",
                    "name": row.name,
                    "population": int(row.population),
                    "rank": rank,
                },
            )
            for rank, row in enumerate(places.itertuples(index=False), start=1)
        ]
    return {"type": "FeatureCollection", "features": features}
