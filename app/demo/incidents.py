"""Synthetic demo incidents for Belize: **invented data**, labelled ``source = "synthetic-demo"``.

Nothing here describes real events. The generator draws plausible-looking incidents so that
the demo, the tiles and the hot spot analyses have something realistic to show: points
clustered around the towns, a background spread where people live (around Belize's towns
and villages of 500 people or more, in proportion to their population: no crime in the
reserves and the forest), a category mix, victim profiles and a calendar that resemble
published Belize patterns in broad strokes, and two *emerging* hot areas (Ladyville and
Independence) whose incidence appears and grows only in the last two years, so that an
emerging hot spot analysis has something to find.

Pure: numpy, pandas and shapely only (and the shipped settlements CSV); no settings,
database or HTTP.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import geopandas
import numpy as np
import pandas as pd
import shapely
from shapely.ops import nearest_points

from app.settlements import read_settlements

__all__ = ["COLUMNS", "SOURCE", "generate_incidents"]

SOURCE = "synthetic-demo"

# The canonical import columns, in order.
COLUMNS = (
    "source",
    "source_id",
    "category",
    "occurred_at",
    "reported_at",
    "longitude",
    "latitude",
    "location_precision",
    "victim_sex",
    "victim_age",
    "victims_count",
    "weapon",
    "perpetrator_relation",
)

# Belize keeps UTC-6 all year (no daylight saving time).
UTC_OFFSET = "-06:00"

KM_PER_DEG_LAT = 110.574
KM_PER_DEG_LON_EQUATOR = 111.320


@dataclass(frozen=True)
class _Place:
    name: str
    lon: float
    lat: float
    weight: float  # share of the place-based incidents (before category adjustments)
    sigma_km: float  # spread of the cluster (isotropic Gaussian)


# Towns and villages with a rough crime share. Belize City dominates, as in police data.
# Centres are the towns' GeoNames points (app/data/belize/settlements.csv), except Belize
# City's Southside, a neighbourhood west of the centre.
PLACES: tuple[_Place, ...] = (
    _Place("Belize City", -88.1976, 17.4995, 0.340, 1.6),
    _Place("Belize City Southside", -88.203, 17.500, 0.040, 0.6),
    _Place("Belmopan", -88.7640, 17.2538, 0.070, 1.4),
    _Place("San Ignacio / Santa Elena", -89.070, 17.160, 0.075, 1.5),
    _Place("Orange Walk Town", -88.5633, 18.0812, 0.075, 1.5),
    _Place("Corozal Town", -88.3885, 18.3938, 0.045, 1.2),
    _Place("Dangriga", -88.2331, 16.9697, 0.045, 1.1),
    _Place("Punta Gorda", -88.8097, 16.0984, 0.028, 1.0),
    _Place("Ladyville", -88.2900, 17.5543, 0.025, 1.2),
    _Place("Hattieville", -88.3936, 17.4478, 0.012, 0.8),
    _Place("Sand Hill", -88.3683, 17.6404, 0.008, 0.8),
    _Place("Benque Viejo del Carmen", -89.1392, 17.0750, 0.016, 0.9),
    _Place("Independence / Mango Creek", -88.4188, 16.5344, 0.014, 0.9),
    _Place("San Antonio (Toledo)", -89.0242, 16.2436, 0.006, 0.8),
    _Place("Sarteneja", -88.1454, 18.3533, 0.006, 0.8),
    _Place("Spanish Lookout", -89.0092, 17.2628, 0.005, 1.5),
)
_PLACE_INDEX = {p.name: i for i, p in enumerate(PLACES)}

# Emerging hot areas: no excess before the last two years, then a growing one.
EMERGING: tuple[_Place, ...] = (
    _Place("Ladyville north (emerging)", -88.305, 17.565, 0.5, 0.6),
    _Place("Independence east (emerging)", -88.405, 16.540, 0.5, 0.6),
)
# Share of the incidents of the emerging window drawn to the emerging areas, growing
# linearly from the first to the last month of the window.
EMERGING_SHARE = (0.01, 0.07)
EMERGING_YEARS = 2
# Sensitive categories keep their own (household) geography.
EMERGING_EXCLUDED = ("domestic_violence", "sexual_violence", "suicide")

# Main highways (Philip Goldson, George Price, Hummingbird, Southern): polylines in lon/lat.
HIGHWAYS: tuple[tuple[tuple[float, float], ...], ...] = (
    ((-88.19, 17.50), (-88.30, 17.55), (-88.45, 17.80), (-88.56, 18.08), (-88.39, 18.39)),
    ((-88.19, 17.50), (-88.39, 17.46), (-88.77, 17.25), (-89.07, 17.16), (-89.14, 17.07)),
    ((-88.77, 17.25), (-88.60, 17.10), (-88.40, 17.02), (-88.22, 16.97)),
    ((-88.22, 16.97), (-88.36, 16.75), (-88.42, 16.535), (-88.65, 16.30), (-88.81, 16.10)),
)

# Category mix: expected share of all incidents. At the defaults (60,000 over 5 years,
# 12,000 a year) this gives ~115 homicides, ~150 shootings, ~80 road deaths and ~48
# suicides a year, in the range Belize reports.
CATEGORY_SHARE = {
    "theft": 0.4174,
    "burglary": 0.2200,
    "assault": 0.1400,
    "domestic_violence": 0.0900,
    "robbery": 0.0700,
    "sexual_violence": 0.0300,
    "shooting": 0.0125,
    "homicide": 0.0096,
    "road_traffic_death": 0.0065,
    "suicide": 0.0040,
}
CATEGORIES = tuple(CATEGORY_SHARE)

# Annual relative change per category over the window (mild).
TREND = {
    "theft": 0.02,
    "burglary": -0.03,
    "assault": 0.01,
    "domestic_violence": 0.04,
    "robbery": -0.04,
    "sexual_violence": 0.05,
    "shooting": -0.02,
    "homicide": -0.03,
    "road_traffic_death": 0.00,
    "suicide": 0.01,
}

# Month of year (Jan..Dec): Christmas peak, September celebrations, a quiet February.
SEASON = np.array([0.95, 0.88, 0.97, 1.00, 1.00, 0.96, 1.00, 1.04, 1.10, 0.96, 1.00, 1.16])

# Day of week (Mon..Sun) and hour of day, per temporal profile.
WEEKDAY = {
    "violent": np.array([0.85, 0.80, 0.85, 0.90, 1.15, 1.40, 1.30]),
    "property": np.array([1.02, 1.00, 1.00, 1.00, 1.02, 0.98, 0.95]),
    "domestic": np.array([0.85, 0.80, 0.80, 0.85, 1.10, 1.45, 1.50]),
    "road": np.array([0.80, 0.75, 0.80, 0.90, 1.20, 1.45, 1.35]),
    "flat": np.ones(7),
}
HOUR = {
    # 00 .. 23
    "violent": np.array(
        [6, 5, 4, 3, 2, 1.5, 1.5, 1.5, 2, 2, 2.5, 3, 3, 3, 3, 3.5, 4, 5, 6, 7.5, 8.5, 9, 8.5, 7]
    ),
    "property": np.array(
        [2, 2, 2, 1.5, 1, 1, 1.5, 3, 5, 6.5, 7, 7.5, 8, 8, 7.5, 7, 6.5, 6, 5.5, 5, 4, 3.5, 3, 2.5]
    ),
    "burglary": np.array(
        [
            6,
            6.5,
            6.5,
            6,
            4.5,
            3,
            2,
            2,
            3,
            4,
            4.5,
            4.5,
            4.5,
            4.5,
            4,
            3.5,
            3,
            3,
            3,
            3.5,
            4,
            4.5,
            5,
            5.5,
        ]
    ),
    "domestic": np.array(
        [5, 4, 3, 2, 1.5, 1, 1.5, 2, 2.5, 3, 3, 3, 3, 3, 3, 3.5, 4, 5, 6.5, 7.5, 8, 8, 7.5, 6.5]
    ),
    "flat": np.ones(24),
}
PROFILE = {
    "theft": ("property", "property"),
    "burglary": ("property", "burglary"),
    "assault": ("violent", "violent"),
    "domestic_violence": ("domestic", "domestic"),
    "robbery": ("violent", "property"),
    "sexual_violence": ("domestic", "domestic"),
    "shooting": ("violent", "violent"),
    "homicide": ("violent", "violent"),
    "road_traffic_death": ("road", "violent"),
    "suicide": ("flat", "flat"),
}

# Spatial mix per category: share on the highways and in the background (around every
# settlement, by population), and a multiplier on the Belize City Southside cluster (gun
# violence concentrates there).
HIGHWAY_SHARE = {"road_traffic_death": 0.55}
BACKGROUND_SHARE = {
    "theft": 0.04,
    "burglary": 0.07,
    "domestic_violence": 0.10,
    "sexual_violence": 0.10,
    "suicide": 0.15,
    "road_traffic_death": 0.10,
}
BACKGROUND_DEFAULT = 0.05
# Spread of the background around a settlement: a few hundred metres around a village,
# growing with the square root of the population (its footprint), at most 1.5 km.
BACKGROUND_SIGMA_KM = 0.25  # at 1,000 people
BACKGROUND_SIGMA_RANGE_KM = (0.2, 1.5)
# A settlement whose point lies off the (coarse) district outlines is moved onto them when
# it is this close (a peninsula, a border village), else left out (an offshore caye).
SNAP_KM = 1.5
SOUTHSIDE_BOOST = {"homicide": 6.0, "shooting": 7.0, "robbery": 2.0, "assault": 1.5}

# Victims: P(female), P(sex unknown), P(age unknown), age = lo + Gamma(shape, scale).
VICTIM = {
    #                     female unknown age_na  lo   shape scale
    "theft": (0.46, 0.10, 0.25, 16, 2.5, 8.0),
    "burglary": (0.48, 0.12, 0.30, 20, 3.0, 9.0),
    "assault": (0.34, 0.03, 0.08, 13, 2.2, 7.5),
    "domestic_violence": (0.86, 0.01, 0.05, 15, 3.0, 5.5),
    "robbery": (0.36, 0.04, 0.12, 14, 2.5, 8.0),
    "sexual_violence": (0.92, 0.01, 0.06, 4, 2.2, 6.5),
    "shooting": (0.11, 0.02, 0.06, 13, 2.0, 6.0),
    "homicide": (0.12, 0.01, 0.03, 13, 2.0, 7.0),
    "road_traffic_death": (0.18, 0.01, 0.03, 8, 2.0, 12.0),
    "suicide": (0.17, 0.00, 0.02, 13, 2.0, 10.0),
}
# P(more than one victim); the extra count is geometric.
MULTI_VICTIM = {"homicide": 0.07, "shooting": 0.15, "robbery": 0.12, "assault": 0.10}

WEAPONS = ("firearm", "knife", "blunt", "vehicle", "other", "none", "unknown")
WEAPON = {
    "theft": {"none": 0.85, "unknown": 0.15},
    "burglary": {"none": 0.80, "blunt": 0.02, "unknown": 0.18},
    "assault": {"knife": 0.20, "blunt": 0.25, "firearm": 0.03, "none": 0.40, "unknown": 0.12},
    "domestic_violence": {
        "none": 0.55,
        "blunt": 0.15,
        "knife": 0.12,
        "firearm": 0.02,
        "unknown": 0.16,
    },
    "robbery": {"firearm": 0.35, "knife": 0.25, "blunt": 0.05, "none": 0.25, "unknown": 0.10},
    "sexual_violence": {"none": 0.70, "knife": 0.05, "firearm": 0.02, "unknown": 0.23},
    "shooting": {"firearm": 1.0},
    "homicide": {"firearm": 0.72, "knife": 0.15, "blunt": 0.07, "other": 0.02, "unknown": 0.04},
    "road_traffic_death": {"vehicle": 1.0},
    "suicide": {"other": 0.75, "firearm": 0.10, "unknown": 0.15},
}

RELATIONS = ("partner", "family", "acquaintance", "stranger", "unknown")
# No perpetrator for road deaths and suicides: left empty (not applicable).
RELATION = {
    "theft": {"family": 0.02, "acquaintance": 0.08, "stranger": 0.30, "unknown": 0.60},
    "burglary": {"acquaintance": 0.05, "stranger": 0.30, "unknown": 0.65},
    "assault": {
        "partner": 0.05,
        "family": 0.08,
        "acquaintance": 0.40,
        "stranger": 0.30,
        "unknown": 0.17,
    },
    "domestic_violence": {"partner": 0.72, "family": 0.25, "unknown": 0.03},
    "robbery": {"acquaintance": 0.05, "stranger": 0.70, "unknown": 0.25},
    "sexual_violence": {
        "partner": 0.25,
        "family": 0.30,
        "acquaintance": 0.30,
        "stranger": 0.10,
        "unknown": 0.05,
    },
    "shooting": {"family": 0.02, "acquaintance": 0.18, "stranger": 0.20, "unknown": 0.60},
    "homicide": {
        "partner": 0.05,
        "family": 0.05,
        "acquaintance": 0.25,
        "stranger": 0.15,
        "unknown": 0.50,
    },
}

# Reporting delay: P(same-day report) and the mean delay in hours otherwise (exponential).
REPORT_DELAY = {
    "theft": (0.55, 40.0),
    "burglary": (0.60, 30.0),
    "assault": (0.70, 24.0),
    "domestic_violence": (0.50, 60.0),
    "robbery": (0.80, 12.0),
    "sexual_violence": (0.35, 120.0),
    "shooting": (0.95, 3.0),
    "homicide": (0.95, 6.0),
    "road_traffic_death": (0.97, 2.0),
    "suicide": (0.90, 8.0),
}

PRECISION = ("exact", "street", "approximate")
PRECISION_P = {"town": (0.60, 0.32, 0.08), "background": (0.25, 0.25, 0.50)}

MAX_REJECTION_ROUNDS = 60


def generate_incidents(
    districts: geopandas.GeoDataFrame,
    *,
    n: int = 60_000,
    years: int = 5,
    end_year: int = 2025,
    seed: int = 42,
    settlements: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Draw ``n`` synthetic incidents (**not real data**) inside ``districts``.

    Parameters
    ----------
    districts : geopandas.GeoDataFrame
        Polygons in EPSG:4326 (columns ``code``, ``name``, ``geometry``); every point
        falls inside one of them. Not modified.
    n : int
        Number of incidents.
    years : int
        Length of the window, in calendar years, ending with ``end_year``.
    end_year : int
        Last calendar year of the window (its 31 December included).
    seed : int
        Seed of the random generator: the same seed and arguments give an identical frame.
    settlements : pandas.DataFrame, optional
        Towns and villages (``longitude``, ``latitude``, ``population``) around which the
        background is drawn; default Belize's shipped list
        (:func:`app.settlements.read_settlements`). Not modified.

    Returns
    -------
    pandas.DataFrame
        One row per incident with the canonical import columns (``COLUMNS``), sorted by
        ``occurred_at``. ``source`` is ``"synthetic-demo"``, ``source_id`` is
        ``DEMO-000001`` …; ``occurred_at`` and ``reported_at`` are ISO 8601 strings in
        Belize time (``-06:00``); ``victim_age`` is a nullable integer (``<NA>`` when
        unknown); ``perpetrator_relation`` is ``None`` where it does not apply (road
        deaths, suicides).

    Notes
    -----
    Points come from a mixture: Gaussian clusters around the towns in ``PLACES`` (Belize
    City holds about 40 %), a background around every settlement (a settlement drawn in
    proportion to its population, then a Gaussian of ``BACKGROUND_SIGMA_KM`` times the
    square root of its population in thousands), the highways for road deaths, and, in
    the last ``EMERGING_YEARS`` years, the growing clusters in ``EMERGING``. A point
    outside the districts is redrawn from its own component (the same settlement), so the
    shares hold on a coarse coastline; after ``MAX_REJECTION_ROUNDS`` it is put on its
    cluster's or settlement's centre. Dates follow a per-category annual trend, a
    month-of-year season and day-of-week and hour-of-day profiles.
    """
    if n < 0:
        raise ValueError("n must be non-negative")
    if years < 1:
        raise ValueError("years must be at least 1")
    if districts.empty:
        raise ValueError("districts is empty")
    if districts.crs is not None and districts.crs.to_epsg() != 4326:
        raise ValueError("districts must be in EPSG:4326")

    rng = np.random.default_rng(seed)
    area = shapely.union_all(np.asarray(districts.geometry.values))
    shapely.prepare(area)
    towns = _towns(read_settlements() if settlements is None else settlements, area)

    shares = np.array([CATEGORY_SHARE[c] for c in CATEGORIES])
    counts = rng.multinomial(n, shares / shares.sum())
    category = np.repeat(np.arange(len(CATEGORIES)), counts)

    start = pd.Timestamp(year=end_year - years + 1, month=1, day=1)
    days = pd.date_range(start, pd.Timestamp(year=end_year, month=12, day=31), freq="D")
    minutes = _occurred_minutes(rng, category, days)

    emerging_start = pd.Timestamp(year=end_year - EMERGING_YEARS + 1, month=1, day=1)
    component = _components(rng, category, minutes, start, emerging_start, days[-1])
    town = np.full(n, -1)
    background = np.flatnonzero(component == _BACKGROUND)
    town[background] = rng.choice(len(towns.weight), size=background.size, p=towns.weight)
    lon, lat = _points(rng, component, town, towns, area)

    reported = _reported_minutes(rng, category, minutes)
    frame = _attributes(rng, category, component == _BACKGROUND)

    order = np.argsort(minutes, kind="stable")
    occurred_at = start + pd.to_timedelta(minutes[order], unit="min")
    reported_at = start + pd.to_timedelta(reported[order], unit="min")
    width = max(6, len(str(n)))
    out = pd.DataFrame(
        {
            "source": SOURCE,
            "source_id": [f"DEMO-{i:0{width}d}" for i in range(1, n + 1)],
            "category": np.asarray(CATEGORIES, dtype=object)[category[order]],
            "occurred_at": _iso(occurred_at),
            "reported_at": _iso(reported_at),
            "longitude": np.round(lon[order], 6),
            "latitude": np.round(lat[order], 6),
        }
    )
    for column in COLUMNS[7:]:
        out[column] = frame[column].to_numpy()[order]
    out["victim_age"] = out["victim_age"].astype("Int64")
    out["victims_count"] = out["victims_count"].astype("int64")
    return out[list(COLUMNS)]


def _iso(stamps: pd.DatetimeIndex) -> np.ndarray:
    return (stamps.strftime("%Y-%m-%dT%H:%M:%S") + UTC_OFFSET).to_numpy(dtype=object)


def _occurred_minutes(
    rng: np.random.Generator, category: np.ndarray, days: pd.DatetimeIndex
) -> np.ndarray:
    """Minutes since the window start, per incident: day weighted by trend, season and weekday,
    then hour by the category's hour profile, then a uniform minute."""
    year_frac = (days.year - days.year[0]).to_numpy() + (days.day_of_year.to_numpy() - 1) / 365.25
    season = SEASON[days.month.to_numpy() - 1]
    weekday = days.day_of_week.to_numpy()
    day_index = np.arange(len(days))
    out = np.empty(len(category), dtype=np.int64)
    for c, code in enumerate(CATEGORIES):
        rows = np.flatnonzero(category == c)
        if rows.size == 0:
            continue
        day_profile, hour_profile = PROFILE[code]
        weight = (1 + TREND[code]) ** year_frac * season * WEEKDAY[day_profile][weekday]
        day = rng.choice(day_index, size=rows.size, p=weight / weight.sum())
        hours = HOUR[hour_profile]
        hour = rng.choice(24, size=rows.size, p=hours / hours.sum())
        out[rows] = day * 1440 + hour * 60 + rng.integers(0, 60, size=rows.size)
    return out


def _reported_minutes(
    rng: np.random.Generator, category: np.ndarray, occurred: np.ndarray
) -> np.ndarray:
    """Report time ≥ occurrence: often within hours, sometimes days later."""
    delay = np.empty(len(category))
    for c, code in enumerate(CATEGORIES):
        rows = np.flatnonzero(category == c)
        same_day, mean_hours = REPORT_DELAY[code]
        quick = rng.random(rows.size) < same_day
        minutes = np.where(
            quick,
            rng.exponential(90.0, rows.size),
            rng.exponential(mean_hours * 60.0, rows.size),
        )
        delay[rows] = np.minimum(minutes, 21 * 1440)  # reported within three weeks
    return occurred + np.ceil(delay).astype(np.int64)


# Mixture components: 0..len(PLACES)-1 places, then background, highway, emerging areas.
_BACKGROUND = len(PLACES)
_HIGHWAY = _BACKGROUND + 1
_EMERGING0 = _HIGHWAY + 1


def _components(
    rng: np.random.Generator,
    category: np.ndarray,
    minutes: np.ndarray,
    start: pd.Timestamp,
    emerging_start: pd.Timestamp,
    last_day: pd.Timestamp,
) -> np.ndarray:
    base = np.array([p.weight for p in PLACES])
    component = np.empty(len(category), dtype=np.int64)
    for c, code in enumerate(CATEGORIES):
        rows = np.flatnonzero(category == c)
        places = base.copy()
        places[_PLACE_INDEX["Belize City Southside"]] *= SOUTHSIDE_BOOST.get(code, 1.0)
        highway = HIGHWAY_SHARE.get(code, 0.0)
        background = BACKGROUND_SHARE.get(code, BACKGROUND_DEFAULT)
        p = np.concatenate(
            [places / places.sum() * (1 - highway - background), [background, highway]]
        )
        component[rows] = rng.choice(len(p), size=rows.size, p=p)

    # Emerging areas: a growing share of the eligible incidents of the last years.
    window_start = (emerging_start - start) / pd.Timedelta(minutes=1)
    window_end = (last_day + pd.Timedelta(days=1) - start) / pd.Timedelta(minutes=1)
    eligible = ~np.isin(category, [CATEGORIES.index(c) for c in EMERGING_EXCLUDED])
    in_window = eligible & (minutes >= window_start)
    t = (minutes - window_start) / max(window_end - window_start, 1.0)
    share = EMERGING_SHARE[0] + (EMERGING_SHARE[1] - EMERGING_SHARE[0]) * np.clip(t, 0, 1)
    moved = in_window & (rng.random(len(category)) < share)
    weights = np.array([e.weight for e in EMERGING])
    component[moved] = _EMERGING0 + rng.choice(
        len(EMERGING), size=int(moved.sum()), p=weights / weights.sum()
    )
    return component


@dataclass(frozen=True)
class _Towns:
    """The settlements the background is drawn around (arrays, one entry each)."""

    lon: np.ndarray
    lat: np.ndarray
    sigma_km: np.ndarray
    weight: np.ndarray  # population shares, summing to 1


def _towns(settlements: pd.DataFrame, area: shapely.Geometry) -> _Towns:
    """The settlements on or near ``area``: a point just off the outline is moved onto it
    (within ``SNAP_KM``), farther ones (offshore cayes) are left out."""
    lon = np.array(settlements["longitude"], dtype=float)
    lat = np.array(settlements["latitude"], dtype=float)
    population = np.array(settlements["population"], dtype=float)
    points = shapely.points(lon, lat)
    outside = ~shapely.contains_xy(area, lon, lat)
    if outside.any():
        # ~10 m inside the outline, so a moved point is strictly inside it.
        inner = area.buffer(-1e-4)
        for i in np.flatnonzero(outside):
            if area.distance(points[i]) * KM_PER_DEG_LAT > SNAP_KM:
                population[i] = 0.0
                continue
            nearest = nearest_points(inner, points[i])[0]
            lon[i], lat[i] = nearest.x, nearest.y
    keep = population > 0
    if not keep.any():
        raise ValueError("no settlement with people lies on the districts")
    low, high = BACKGROUND_SIGMA_RANGE_KM
    sigma = np.clip(BACKGROUND_SIGMA_KM * np.sqrt(population[keep] / 1000), low, high)
    return _Towns(lon[keep], lat[keep], sigma, population[keep] / population[keep].sum())


def _points(
    rng: np.random.Generator,
    component: np.ndarray,
    town: np.ndarray,
    towns: _Towns,
    area: shapely.Geometry,
) -> tuple[np.ndarray, np.ndarray]:
    """Rejection-sample a point per incident from its mixture component, inside ``area``."""
    n = len(component)
    lon = np.empty(n)
    lat = np.empty(n)
    todo = np.arange(n)
    for _ in range(MAX_REJECTION_ROUNDS):
        if todo.size == 0:
            break
        x, y = _draw(rng, component[todo], town[todo], towns)
        inside = shapely.contains_xy(area, x, y)
        lon[todo[inside]] = x[inside]
        lat[todo[inside]] = y[inside]
        todo = todo[~inside]
    if todo.size:  # a component mostly off the outline: its centre (inside) instead
        x, y = _centres(rng, component[todo], town[todo], towns)
        lon[todo], lat[todo] = x, y
    return lon, lat


def _centres(
    rng: np.random.Generator, component: np.ndarray, town: np.ndarray, towns: _Towns
) -> tuple[np.ndarray, np.ndarray]:
    """The centre of each point's cluster or settlement (a highway point: a settlement's,
    drawn by population). Every centre lies inside the districts."""
    clusters = (*PLACES, *EMERGING)
    index = np.where(component >= _EMERGING0, component - _EMERGING0 + len(PLACES), component)
    clustered = (component != _BACKGROUND) & (component != _HIGHWAY)
    town = town.copy()
    road = component == _HIGHWAY
    town[road] = rng.choice(len(towns.weight), size=int(road.sum()), p=towns.weight)
    x = towns.lon[np.maximum(town, 0)]
    y = towns.lat[np.maximum(town, 0)]
    x[clustered] = np.array([p.lon for p in clusters])[index[clustered]]
    y[clustered] = np.array([p.lat for p in clusters])[index[clustered]]
    return x, y


def _draw(
    rng: np.random.Generator, component: np.ndarray, town: np.ndarray, towns: _Towns
) -> tuple[np.ndarray, np.ndarray]:
    clusters = (*PLACES, *EMERGING)
    index = np.where(component >= _EMERGING0, component - _EMERGING0 + len(PLACES), component)
    clustered = (component != _BACKGROUND) & (component != _HIGHWAY)
    centre_lon = np.array([p.lon for p in clusters])
    centre_lat = np.array([p.lat for p in clusters])
    sigma = np.array([p.sigma_km for p in clusters])

    x = np.empty(len(component))
    y = np.empty(len(component))
    k = index[clustered]
    x[clustered], y[clustered] = _jitter(rng, centre_lon[k], centre_lat[k], sigma[k])

    background = component == _BACKGROUND
    t = town[background]
    x[background], y[background] = _jitter(rng, towns.lon[t], towns.lat[t], towns.sigma_km[t])

    road = component == _HIGHWAY
    if road.any():
        hx, hy = _on_highways(rng, int(road.sum()))
        x[road], y[road] = _jitter(rng, hx, hy, np.full(hx.size, 0.15))
    return x, y


def _jitter(
    rng: np.random.Generator, lon: np.ndarray, lat: np.ndarray, sigma_km: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    dx = rng.normal(0.0, 1.0, lon.size) * sigma_km
    dy = rng.normal(0.0, 1.0, lon.size) * sigma_km
    return (
        lon + dx / (KM_PER_DEG_LON_EQUATOR * np.cos(np.radians(lat))),
        lat + dy / KM_PER_DEG_LAT,
    )


def _on_highways(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Points uniform along the highway polylines (by length in degrees, close enough)."""
    segments = np.array([(*a, *b) for line in HIGHWAYS for a, b in itertools.pairwise(line)])
    length = np.hypot(segments[:, 2] - segments[:, 0], segments[:, 3] - segments[:, 1])
    s = rng.choice(len(segments), size=size, p=length / length.sum())
    t = rng.random(size)
    x = segments[s, 0] + t * (segments[s, 2] - segments[s, 0])
    y = segments[s, 1] + t * (segments[s, 3] - segments[s, 1])
    return x, y


def _attributes(
    rng: np.random.Generator, category: np.ndarray, background: np.ndarray
) -> pd.DataFrame:
    n = len(category)
    sex = np.empty(n, dtype=object)
    age = np.full(n, np.nan)
    victims = np.ones(n, dtype=np.int64)
    weapon = np.empty(n, dtype=object)
    relation = np.full(n, None, dtype=object)
    for c, code in enumerate(CATEGORIES):
        rows = np.flatnonzero(category == c)
        size = rows.size
        female, unknown, age_na, lo, shape, scale = VICTIM[code]
        u = rng.random(size)
        sex[rows] = np.where(
            u < unknown, "unknown", np.where(u < unknown + (1 - unknown) * female, "female", "male")
        )
        years = np.clip(np.floor(lo + rng.gamma(shape, scale, size)), 0, 95)
        years[rng.random(size) < age_na] = np.nan
        age[rows] = years
        extra = rng.random(size) < MULTI_VICTIM.get(code, 0.0)
        victims[rows] = 1 + np.where(extra, np.minimum(rng.geometric(0.7, size), 5), 0)
        weapon[rows] = _pick(rng, WEAPON[code], size)
        if code in RELATION:
            relation[rows] = _pick(rng, RELATION[code], size)
    # Background points (villages, outskirts) are located less precisely than town ones.
    town_p, village_p = PRECISION_P["town"], PRECISION_P["background"]
    u = rng.random(n)
    first = np.where(background, village_p[0], town_p[0])
    second = first + np.where(background, village_p[1], town_p[1])
    precision = np.where(u < first, PRECISION[0], np.where(u < second, PRECISION[1], PRECISION[2]))
    return pd.DataFrame(
        {
            "location_precision": precision.astype(object),
            "victim_sex": sex,
            "victim_age": pd.array(age, dtype="Float64").astype("Int64"),
            "victims_count": victims,
            "weapon": weapon,
            "perpetrator_relation": relation,
        }
    )


def _pick(rng: np.random.Generator, probabilities: dict[str, float], size: int) -> np.ndarray:
    labels = np.array(list(probabilities), dtype=object)
    p = np.array(list(probabilities.values()))
    return labels[rng.choice(len(labels), size=size, p=p / p.sum())]
