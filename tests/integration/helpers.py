"""Small builders shared by integration tests: incident CSVs and service calls."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from app.core.settings import Settings
from app.services.imports import ImportReport, import_incidents
from app.services.incident_rows import ReadOptions
from tests.conftest import call_service

# Town centres inside Belize, for rows that must be valid.
TOWNS = np.array(
    [[-88.1962, 17.5046], [-88.7710, 17.2510], [-89.0691, 17.1588], [-88.5633, 18.0812]]
)
CATEGORIES = ("homicide", "robbery", "theft", "burglary", "domestic_violence")


def write_incident_csv(path: Path, *, n: int, source: str, seed: int = 0) -> Path:
    """A clean CSV of ``n`` valid incidents near the towns."""
    rng = np.random.default_rng(seed)
    towns = TOWNS[rng.integers(0, len(TOWNS), n)]
    frame = pd.DataFrame(
        {
            "source": source,
            "source_id": [f"{source}-{i:06d}" for i in range(n)],
            "category": rng.choice(CATEGORIES, n),
            "occurred_at": (
                pd.Timestamp("2022-01-01") + pd.to_timedelta(rng.integers(0, 3 * 365 * 24, n), "h")
            ).strftime("%Y-%m-%d %H:%M"),
            "longitude": (towns[:, 0] + rng.normal(0, 0.004, n)).round(6),
            "latitude": (towns[:, 1] + rng.normal(0, 0.004, n)).round(6),
            "victim_sex": rng.choice(["female", "male", "unknown"], n),
            "victim_age": rng.integers(0, 90, n),
        }
    )
    frame.to_csv(path, index=False)
    return path


def write_points_csv(path: Path, lon, lat, *, source: str) -> Path:
    n = len(lon)
    pd.DataFrame(
        {
            "source": source,
            "source_id": [f"p{i}" for i in range(n)],
            "category": "theft",
            "occurred_at": "2024-01-01 12:00",
            "longitude": lon,
            "latitude": lat,
        }
    ).to_csv(path, index=False)
    return path


def import_csv(settings: Settings, path: Path, **options) -> ImportReport:
    return call_service(
        settings,
        lambda engine: import_incidents(
            engine, settings, path, ReadOptions(**options), actor="tests"
        ),
    )
