"""A ReportDocument built by hand: Belize's real district outlines, small made-up tables.

Every number here is chosen, not computed, so the tests can look for it in the HTML, the
PDF and the bundle. ``make_document`` takes the language and which sections to empty.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
from shapely.geometry import box

from reports.document import SECTION_KEYS, ReportDocument, Section

BOUNDARIES = Path(__file__).parents[3] / "app" / "data" / "belize" / "boundaries"

#: Headline figures (the tests look for the printed form of these).
HEADLINE = pd.DataFrame(
    {
        "measure": ["major_crimes", "homicides", "sexual_violence"],
        "period": [1234, 31, np.nan],  # sexual violence withheld
        "previous": [1180, 28, np.nan],
        "year_before": [1302, 35, np.nan],
        "change_previous_pct": [4.6, 10.7, np.nan],
        "change_year_pct": [-5.2, -11.4, np.nan],
        "rate_per_100k": [296.4, 7.4, np.nan],
        "projected_annual_rate": [1185.6, 29.8, np.nan],
    }
)

DISTRICT_ROWS = [
    # unit_code, unit_name, count, previous, change_pct, rate, eb rate
    ("BZ-BZ", "Belize", 521, 498, 4.6, 458.5, 452.1),
    ("BZ-CY", "Cayo", 243, 251, -3.2, 245.2, 248.0),
    ("BZ-CZL", "Corozal", 98, 90, 8.9, 216.3, 221.7),
    ("BZ-OW", "Orange Walk", 131, 140, -6.4, 241.9, 243.3),
    ("BZ-SC", "Stann Creek", 167, 150, 11.3, 360.6, 351.4),
    ("BZ-TOL", "Toledo", 74, 51, 45.1, 157.4, 170.9),
]


def _trend() -> pd.DataFrame:
    months = pd.period_range("2021-10", "2024-09", freq="M")
    rows = []
    for i, month in enumerate(months):
        seasonal = 40 * np.sin(2 * np.pi * (month.month - 3) / 12)
        rows.append((str(month), "major_crimes", int(400 + seasonal + 2 * i)))
        rows.append((str(month), "homicides", int(10 + (i * 7) % 5)))
    frame = pd.DataFrame(rows, columns=["month", "group", "count"])
    frame["in_period"] = frame["month"] >= "2024-07"
    return frame


def _victims() -> pd.DataFrame:
    groups = ["0-14", "15-24", "25-34", "35-44", "45-59", "60+", "unknown"]
    female = [41, 118, 97, 66, 40, 17, 9]
    male = [35, 164, 151, 102, 61, 22, 14]
    unknown = [0, 3, 2, 1, 0, 0, 12]
    rows = [
        (sex, group, count)
        for sex, counts in (("female", female), ("male", male), ("unknown", unknown))
        for group, count in zip(groups, counts, strict=True)
    ]
    return pd.DataFrame(rows, columns=["sex", "age_group", "count"])


def _weekday_hour() -> pd.DataFrame:
    rows = []
    for day in range(7):
        for hour in range(24):
            night = 1.0 if hour >= 18 or hour < 2 else 0.4
            weekend = 1.6 if day >= 4 else 1.0
            rows.append((day, hour, round(6 * night * weekend + (day * 24 + hour) % 3)))
    return pd.DataFrame(rows, columns=["weekday", "hour", "count"])


def _hotspot_cells(country: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
    """10 km squares over Belize, hot near Belize City, cold in the far south."""
    outline = country.to_crs(32616).union_all()
    x0, y0, x1, y1 = outline.bounds
    size = 10_000
    cells, bins = [], []
    belize_city, south = (360_000, 1_935_000), (290_000, 1_780_000)
    for x in np.arange(x0, x1, size):
        for y in np.arange(y0, y1, size):
            cell = box(x, y, x + size, y + size)
            if not cell.intersects(outline):
                continue
            cx, cy = x + size / 2, y + size / 2
            hot = np.hypot(cx - belize_city[0], cy - belize_city[1]) / 1000
            cold = np.hypot(cx - south[0], cy - south[1]) / 1000
            gi_bin = 3 if hot < 20 else 2 if hot < 35 else 1 if hot < 50 else 0
            if cold < 25:
                gi_bin = -3 if cold < 12 else -2
            cells.append(cell.intersection(outline))
            bins.append(gi_bin)
    frame = gpd.GeoDataFrame({"gi_bin": bins}, geometry=cells, crs=32616)
    return frame.to_crs(4326)


def _alert_areas() -> gpd.GeoDataFrame:
    points = gpd.GeoSeries.from_xy([-88.19, -88.53], [17.50, 16.97], crs=4326).to_crs(32616)
    areas = points.buffer(9000).to_crs(4326)
    return gpd.GeoDataFrame(
        {"alert_id": [17, 23], "place": ["Belize City", "Dangriga"]}, geometry=areas, crs=4326
    )


def make_document(language: str = "en", empty: tuple[str, ...] = ()) -> ReportDocument:
    """The fixture document; the sections named in ``empty`` carry no tables, only a reason."""
    country = gpd.read_file(BOUNDARIES / "belize_adm0_naturalearth_10m.geojson")[["geometry"]]
    districts = gpd.read_file(BOUNDARIES / "belize_adm1_districts.geojson")
    districts = districts.rename(columns={"id": "unit_code", "district": "unit_name"})[
        ["unit_code", "unit_name", "geometry"]
    ]
    district_table = pd.DataFrame(
        DISTRICT_ROWS,
        columns=[
            "unit_code",
            "unit_name",
            "count",
            "previous",
            "change_pct",
            "rate_per_100k",
            "eb_rate_per_100k",
        ],
    )
    district_map = districts.merge(district_table[["unit_code", "rate_per_100k"]], on="unit_code")
    district_map = district_map.rename(columns={"rate_per_100k": "value"})
    district_map.loc[district_map["unit_code"] == "BZ-TOL", "value"] = np.nan  # withheld
    notes = {
        "en": [
            "Major crimes are murder, rape, robbery, burglary, theft and serious assault.",
            "Rates use the 2022 census population of each district.",
        ],
        "es": [
            "Los delitos graves son asesinato, violación, robo, hurto y agresión grave.",
            "Las tasas usan la población del censo de 2022 de cada distrito.",
        ],
    }[language]
    sections = {
        "headline": Section("headline", tables={"figures": HEADLINE.copy()}),
        "trend": Section("trend", tables={"monthly": _trend()}),
        "districts": Section(
            "districts",
            tables={"districts": district_table},
            maps={"districts": gpd.GeoDataFrame(district_map, crs=4326)},
        ),
        "victims": Section("victims", tables={"by_sex_age": _victims()}),
        "when": Section("when", tables={"weekday_hour": _weekday_hour()}),
        "where": Section(
            "where",
            tables={
                "hotspot_classes": pd.DataFrame(
                    {
                        "category": [
                            "intensifying hot spot",
                            "persistent hot spot",
                            "new hot spot",
                            "sporadic cold spot",
                        ],
                        "cells": [7, 12, 3, 5],
                    }
                ),
                "alerts": pd.DataFrame(
                    {
                        "alert_id": [17, 23],
                        "monitor": ["homicides-district", "robbery-district"],
                        "place": ["Belize City", "Dangriga"],
                        "period": ["2024-09", "2024-09"],
                        "observed": [14, 9],
                        "expected": [6.2, 3.1],
                        "threshold": [11.0, 7.0],
                        "periods_lasting": [2, 1],
                        "state": ["open", "open"],
                    }
                ),
            },
            maps={"hotspots": _hotspot_cells(country), "alerts": _alert_areas()},
        ),
        "index": Section(
            "index",
            tables={
                "ranking": pd.DataFrame(
                    {
                        "rank": [1, 2, 3, 4, 5, 6],
                        "unit_code": ["BZ-BZ", "BZ-SC", "BZ-CY", "BZ-OW", "BZ-CZL", "BZ-TOL"],
                        "unit_name": [
                            "Belize",
                            "Stann Creek",
                            "Cayo",
                            "Orange Walk",
                            "Corozal",
                            "Toledo",
                        ],
                        "score": [0.812, 0.655, 0.471, 0.402, 0.377, 0.214],
                        "band": ["1-1", "2-3", "2-4", "3-5", "4-5", "6-6"],
                    }
                )
            },
        ),
        "quality": Section(
            "quality",
            tables={
                "georeferenced": pd.DataFrame(
                    {
                        "source": ["police", "police", "forensic"],
                        "unit_name": ["Belize", "Cayo", "Belize"],
                        "incidents": [521, 243, 40],
                        "georeferenced_pct": [97.3, 91.8, 100.0],
                    }
                ),
                "rejected": pd.DataFrame(
                    {
                        "batch_id": [88, 88],
                        "reason": ["occurred_at missing", "bad CRS"],
                        "rows": [12, 3],
                    }
                ),
                "delay": pd.DataFrame(
                    {
                        "source": ["police", "forensic"],
                        "median_days": [1.0, 6.5],
                        "p90_days": [9.0, 21.0],
                    }
                ),
            },
        ),
        "methods": Section("methods", notes=notes),
    }
    sections["districts"].notes = notes[1:]
    for key in empty:
        sections[key] = Section(key, empty="no_incidents")
    return ReportDocument(
        definition="quarterly-public",
        definition_version=1,
        language=language,
        audience="public",
        period_label="2024Q3",
        period_start=date(2024, 7, 1),
        period_end=date(2024, 9, 30),
        territory="Belize",
        data_version=42,
        generated_at=datetime(2024, 10, 2, 8, 30, tzinfo=UTC),
        sections=[sections[key] for key in SECTION_KEYS],
        basemap={"country": country, "districts": districts},
        source_line={
            "en": "Belize Crime Observatory, police and forensic records",
            "es": "Observatorio del Delito de Belice, registros policiales y forenses",
        }[language],
    )


@pytest.fixture(scope="module")
def document() -> ReportDocument:
    return make_document("en")


@pytest.fixture(scope="module")
def document_es() -> ReportDocument:
    return make_document("es")
