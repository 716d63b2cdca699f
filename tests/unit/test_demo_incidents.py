"""The synthetic demo incidents: deterministic, inside Belize, where people live, plausibly
shaped."""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import shapely

from app.core.settings import DATA_DIR
from app.demo.incidents import (
    BACKGROUND_SHARE,
    CATEGORIES,
    COLUMNS,
    EMERGING,
    PLACES,
    SOURCE,
    generate_incidents,
)
from app.settlements import read_settlements

DISTRICTS = DATA_DIR / "belize" / "boundaries" / "belize_adm1_districts.geojson"
BELIZE_CITY = (-88.19, 17.50)
N = 60_000
YEARS, END_YEAR = 5, 2025


@pytest.fixture(scope="module")
def districts() -> gpd.GeoDataFrame:
    frame = gpd.read_file(DISTRICTS).rename(columns={"iso_3166_2": "code", "district": "name"})
    return frame[["code", "name", "geometry"]]


@pytest.fixture(scope="module")
def incidents(districts: gpd.GeoDataFrame) -> pd.DataFrame:
    return generate_incidents(districts, n=N, years=YEARS, end_year=END_YEAR, seed=42)


@pytest.fixture(scope="module")
def settlements() -> pd.DataFrame:
    return read_settlements()


def _km_to_nearest(frame: pd.DataFrame, settlements: pd.DataFrame) -> np.ndarray:
    """Distance (km, equirectangular: < 0.1 % off at these sizes) from each incident to
    its nearest settlement."""
    lon = settlements["longitude"].to_numpy()
    lat = settlements["latitude"].to_numpy()
    out = np.full(len(frame), np.inf)
    for x, y in zip(lon, lat, strict=True):
        out = np.minimum(out, _km_from(frame, x, y))
    return out


def _km_from(frame: pd.DataFrame, lon: float, lat: float) -> np.ndarray:
    dx = (frame["longitude"] - lon) * 111.320 * np.cos(np.radians(lat))
    dy = (frame["latitude"] - lat) * 110.574
    return np.hypot(dx, dy).to_numpy()


def test_columns_rows_and_labels(incidents: pd.DataFrame) -> None:
    assert tuple(incidents.columns) == COLUMNS
    assert len(incidents) == N
    assert (incidents["source"] == SOURCE).all()
    assert incidents["source_id"].is_unique
    assert incidents["source_id"].iloc[0] == "DEMO-000001"
    assert set(incidents["category"]) == set(CATEGORIES)
    assert set(incidents["location_precision"]) <= {"exact", "street", "approximate"}
    assert set(incidents["victim_sex"]) <= {"female", "male", "unknown"}
    relations = set(incidents["perpetrator_relation"].dropna())
    assert relations <= {"partner", "family", "acquaintance", "stranger", "unknown"}
    assert (incidents["victims_count"] >= 1).all()
    ages = incidents["victim_age"].dropna()
    assert ages.between(0, 120).all()
    assert incidents["victim_age"].isna().any()  # unknown ages are empty


def test_same_seed_same_frame(districts: gpd.GeoDataFrame, incidents: pd.DataFrame) -> None:
    again = generate_incidents(districts, n=N, years=YEARS, end_year=END_YEAR, seed=42)
    pd.testing.assert_frame_equal(incidents, again)
    other = generate_incidents(districts, n=1_000, seed=7)
    assert len(other) == 1_000
    assert not other["longitude"].equals(incidents["longitude"].iloc[:1_000])


def test_districts_are_not_modified(districts: gpd.GeoDataFrame) -> None:
    before = districts.copy()
    generate_incidents(districts, n=100, seed=1)
    pd.testing.assert_frame_equal(pd.DataFrame(districts), pd.DataFrame(before))


def test_every_point_inside_a_district(
    districts: gpd.GeoDataFrame, incidents: pd.DataFrame
) -> None:
    area = shapely.union_all(np.asarray(districts.geometry.values))
    inside = shapely.contains_xy(area, incidents["longitude"], incidents["latitude"])
    assert inside.all()


def test_category_mix(incidents: pd.DataFrame) -> None:
    per_year = incidents["category"].value_counts() / YEARS
    # Property crime dominates; Belize records roughly 100-130 homicides a year.
    assert per_year.index[0] == "theft"
    assert per_year.index[1] == "burglary"
    assert 100 <= per_year["homicide"] <= 130
    assert per_year["homicide"] < per_year["shooting"] < per_year["robbery"]
    assert per_year["suicide"] < per_year["homicide"]


def test_timestamps(incidents: pd.DataFrame) -> None:
    assert incidents["occurred_at"].str.endswith("-06:00").all()
    occurred = pd.to_datetime(incidents["occurred_at"], format="ISO8601")
    reported = pd.to_datetime(incidents["reported_at"], format="ISO8601")
    assert (reported >= occurred).all()
    assert (reported - occurred).max() <= pd.Timedelta(days=21)
    assert occurred.is_monotonic_increasing
    years = occurred.dt.year
    assert years.min() == END_YEAR - YEARS + 1
    assert years.max() == END_YEAR
    # Weekends are busier for violent crime; December is busier than February.
    violent = incidents["category"].isin(["homicide", "shooting", "assault"])
    weekday = occurred[violent].dt.day_of_week
    assert (weekday == 5).mean() > 1.2 * (weekday == 1).mean()
    month = occurred.dt.month
    assert (month == 12).sum() > 1.15 * (month == 2).sum()


def test_victims(incidents: pd.DataFrame) -> None:
    def share(category: str, column: str, value: str) -> float:
        rows = incidents[incidents["category"] == category]
        return float((rows[column] == value).mean())

    assert share("sexual_violence", "victim_sex", "female") > 0.8
    assert share("domestic_violence", "victim_sex", "female") > 0.75
    assert share("homicide", "victim_sex", "male") > 0.75
    assert share("road_traffic_death", "victim_sex", "male") > 0.7
    assert share("suicide", "victim_sex", "male") > 0.7
    dv = incidents[incidents["category"] == "domestic_violence"]["perpetrator_relation"]
    assert dv.isin(["partner", "family"]).mean() > 0.9
    assert share("homicide", "weapon", "firearm") > 0.6
    # Youth 15-29 are over-represented among homicide and shooting victims.
    age = incidents["victim_age"]
    youth = age.between(15, 29)
    gun = incidents["category"].isin(["homicide", "shooting"])
    assert youth[gun & age.notna()].mean() > 0.55
    assert youth[gun & age.notna()].mean() > 1.4 * youth[~gun & age.notna()].mean()


def test_clustered_around_belize_city(incidents: pd.DataFrame) -> None:
    assert (_km_from(incidents, *BELIZE_CITY) < 5).mean() > 0.30


def test_incidents_are_where_people_live(
    incidents: pd.DataFrame, settlements: pd.DataFrame
) -> None:
    """Issue 16 point 6: no crimes in the forest. Before, a uniform background put ~5 % of
    the incidents anywhere in Belize (reserves and jungle included): 91.5 % were within 3 km
    of one of the 138 settlements and 95.5 % within 5 km."""
    km = _km_to_nearest(incidents, settlements)
    shares = {d: float((km <= d).mean()) for d in (1, 2, 3, 5)}
    print("share of demo incidents within d km of a settlement:", shares)
    assert shares[3] > 0.95
    assert shares[5] > 0.995
    # Farther than 10 km from every town and village: only road deaths on the highways.
    assert set(incidents["category"][km > 10]) <= {"road_traffic_death"}


def test_background_in_proportion_to_population(
    incidents: pd.DataFrame, settlements: pd.DataFrame
) -> None:
    """Around settlements that no town cluster reaches (10 km from every cluster centre),
    incidents come only from the background: their counts follow the population."""
    centres = [(p.lon, p.lat) for p in (*PLACES, *EMERGING)]
    far = np.ones(len(settlements), dtype=bool)
    for i, row in settlements.iterrows():
        spot = pd.DataFrame({"longitude": [row["longitude"]], "latitude": [row["latitude"]]})
        far[i] = all(_km_from(spot, x, y)[0] > 10 for x, y in centres)
    isolated = settlements[far]
    assert len(isolated) > 60
    # Each incident counted at its nearest settlement, within 2 km.
    lon = isolated["longitude"].to_numpy()
    lat = isolated["latitude"].to_numpy()
    distance = np.stack([_km_from(incidents, x, y) for x, y in zip(lon, lat, strict=True)])
    nearest = distance.argmin(axis=0)
    counted = np.bincount(nearest[distance.min(axis=0) <= 2], minlength=len(isolated))
    population = isolated["population"].to_numpy()
    # Expected: the background's share of each category, spread by population over every
    # settlement on the districts (Caye Caulker, 4.8 km offshore, is left out).
    per_category = incidents["category"].value_counts()
    background = sum(per_category[c] * BACKGROUND_SHARE.get(c, 0.05) for c in per_category.index)
    total = settlements["population"].sum() - 2729
    expected = background * population / total
    assert counted.sum() == pytest.approx(expected.sum(), rel=0.1)
    # Villages (< 1,000 people), large villages and towns each get their population's share.
    groups = np.digitize(population, [1_000, 3_000])
    ratio = np.bincount(groups, counted) / np.bincount(groups, expected)
    assert ratio == pytest.approx([1, 1, 1], rel=0.15), ratio
    # San Pedro (Ambergris Caye, ~17,000 people) has no town cluster: all background.
    san_pedro = int(np.flatnonzero(isolated["name"].to_numpy() == "San Pedro")[0])
    assert counted[san_pedro] == pytest.approx(expected[san_pedro], rel=0.25)


def test_background_around_given_settlements(districts: gpd.GeoDataFrame) -> None:
    # Maya Center, an inland village of 731 people (GeoNames).
    one = pd.DataFrame({"name": ["Maya Center"], "longitude": [-88.38235],
                        "latitude": [16.79843], "population": [731]})  # fmt: skip
    before = one.copy()
    frame = generate_incidents(districts, n=4_000, seed=5, settlements=one)
    pd.testing.assert_frame_equal(one, before)
    # Outside the town clusters and highways, every point is within ~1 km of the village.
    near_village = _km_from(frame, -88.38235, 16.79843) < 1.0
    assert near_village.mean() > 0.03
    km = _km_to_nearest(frame, pd.DataFrame({"longitude": [p.lon for p in PLACES],
                                             "latitude": [p.lat for p in PLACES]}))  # fmt: skip
    stray = (km > 8) & ~near_village & (frame["category"] != "road_traffic_death")
    assert not stray.any(), frame[stray]
    with pytest.raises(ValueError, match="no settlement"):
        generate_incidents(districts, n=10, settlements=one.assign(longitude=-80.0))


def test_emerging_hot_areas_grow_in_the_last_two_years(incidents: pd.DataFrame) -> None:
    years = incidents["occurred_at"].str[:4].astype(int)
    for lon, lat in [(-88.305, 17.565), (-88.405, 16.540)]:
        near = _km_from(incidents, lon, lat) < 1.0
        counts = pd.Series(years[near]).value_counts()
        before = counts.reindex(range(END_YEAR - 4, END_YEAR - 1), fill_value=0).mean()
        assert counts.get(END_YEAR - 1, 0) > 2 * before
        assert counts.get(END_YEAR, 0) > counts.get(END_YEAR - 1, 0)


def test_rejects_bad_arguments(districts: gpd.GeoDataFrame) -> None:
    with pytest.raises(ValueError, match="years"):
        generate_incidents(districts, n=10, years=0)
    with pytest.raises(ValueError, match="4326"):
        generate_incidents(districts.to_crs(32616), n=10)
