"""Disaggregated statistics through the API on the real PostGIS: counts against direct SQL,
rates against the census denominators, Empirical Bayes, CSV, filters, breakdowns, errors."""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest

from app.demo.incidents import generate_incidents
from app.schemas.stats import StatsTable
from app.services.imports import import_frame
from app.services.incident_rows import ReadOptions
from app.services.tables import import_population, load_demo_population
from tests.conftest import BELIZE, auth, call_service

SOURCE = "stats-test"
# Incidents placed so that counts are nearly proportional to the 2022 populations.
CLAMP_SOURCE = "stats-test-clamp"
TZ = "America/Belize"
DISTRICTS = ("BZ-BZ", "BZ-CY", "BZ-CZL", "BZ-OW", "BZ-SC", "BZ-TOL")
# A test-only population: age group 18-24 in 2023 (no other test or loader uses it).
AGE_YEAR, AGE_GROUP = 2023, "18-24"


def _import(settings, frame: pd.DataFrame, name: str):
    frame = frame.astype(object).where(frame.notna(), "").astype(str)
    return call_service(
        settings,
        lambda engine: import_frame(
            engine, settings, frame, ReadOptions(), actor="tests", filename=name, fmt="csv"
        ),
    )


@pytest.fixture(scope="module")
def stats_data(base_data, tmp_path_factory):
    """6,000 synthetic incidents in 2022-2024 under their own source, the demo census
    population, a crafted clamp set and a test-only age-group population."""
    call_service(base_data, lambda e: load_demo_population(e, actor="tests"))
    districts = gpd.read_file(BELIZE / "boundaries" / "belize_adm1_districts.geojson").rename(
        columns={"iso_3166_2": "code", "district": "name"}
    )
    frame = generate_incidents(districts, n=6_000, years=3, end_year=2024, seed=11)
    report = _import(base_data, frame.assign(source=SOURCE), "stats.csv")
    assert report.inserted == 6_000

    # Clamp set: one robbery per 5,000 people (2022 census totals), at an inside point.
    population = {"BZ-BZ": 113_630, "BZ-CY": 99_105, "BZ-CZL": 45_310, "BZ-OW": 54_152,
                  "BZ-SC": 48_162, "BZ-TOL": 37_124}  # fmt: skip
    inside = districts.set_index("code").geometry.representative_point()
    rows = [
        {
            "source": CLAMP_SOURCE,
            "source_id": f"{code}-{i}",
            "category": "robbery",
            "occurred_at": "2022-06-15 12:00",
            "longitude": inside[code].x,
            "latitude": inside[code].y,
        }
        for code in DISTRICTS
        for i in range(round(population[code] / 5_000))
    ]
    assert _import(base_data, pd.DataFrame(rows), "clamp.csv").rejected == 0

    path = Path(tmp_path_factory.mktemp("stats")) / "age.csv"
    lines = ["unit_code,year,sex,age_group,value,source"]
    lines += [f"{c},{AGE_YEAR},total,{AGE_GROUP},{10_000 + 1_000 * i},stats test census"
              for i, c in enumerate(DISTRICTS)]  # fmt: skip
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    call_service(base_data, lambda e: import_population(e, path, actor="tests"))
    return base_data


def _get(client, key, **params) -> StatsTable:
    params = {"source": SOURCE, **params}
    response = client.get("/stats", params=params, headers=auth(key))
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/json")
    return StatsTable.model_validate(response.json())


def _population(db, code: str, year: int, sex: str = "total", age: str = "total") -> float:
    return db.execute(
        """SELECT p.value FROM population p JOIN admin_unit u ON u.id = p.unit_id
           WHERE u.code = %s AND p.year = %s AND p.sex = %s AND p.age_group = %s""",
        [code, year, sex, age],
    ).fetchone()[0]


def _sql_counts(db, group: str = "", where: str = "", params=()) -> dict[tuple, int]:
    """Direct SQL: incidents of SOURCE per district (and ``group`` expressions)."""
    rows = db.execute(
        f"""SELECT u.code{", " + group if group else ""}, count(*)
            FROM incident i JOIN admin_unit u ON u.id = ANY(i.unit_ids)
            WHERE u.level = 1 AND i.source = %s AND i.deleted_at IS NULL {where}
            GROUP BY u.code{", " + group if group else ""}""",
        [SOURCE, *params],
    ).fetchall()
    return {tuple(r[:-1]): r[-1] for r in rows}


def test_counts_per_district_match_a_direct_sql_count(client, keys, stats_data, db):
    table = _get(client, keys["analyst"], level=1)
    assert [r.unit_code for r in table.rows] == list(DISTRICTS)
    expected = _sql_counts(db)
    assert {(r.unit_code,): r.count for r in table.rows} == expected
    assert sum(expected.values()) == 6_000
    assert table.parameters.level == 1 and table.parameters.by == []
    assert table.parameters.filters.sources == [SOURCE]
    # Without a period breakdown: the middle of 2022-2024 → the 2022 census.
    assert all(r.population_year == 2022 and r.population_sex == "total" for r in table.rows)
    assert any("not annualised" in n for n in table.notes)


def test_yearly_rates_use_the_2022_census(client, keys, stats_data, db):
    table = _get(client, keys["analyst"], by="period", period="year")
    assert {r.period for r in table.rows} == {"2022", "2023", "2024"}
    local_year = f"date_part('year', i.occurred_at AT TIME ZONE '{TZ}')::int::text"
    expected = _sql_counts(db, local_year)
    for r in table.rows:
        assert r.count == expected[(r.unit_code, r.period)]
        population = _population(db, r.unit_code, 2022)
        # 2023 and 2024 have no census: the latest year before them, 2022, is used.
        assert r.population == pytest.approx(population, rel=1e-12)
        assert r.population_year == 2022
        assert "Census 2022" in r.population_source
        assert r.rate == pytest.approx(r.count / population * 100_000, rel=1e-12)
        assert r.rse == pytest.approx(1 / math.sqrt(r.count), rel=1e-12)
        assert r.unstable is (r.count < 20)
    # A unit's EB rates are finite, and the spatial one uses real neighbours (no islands).
    assert all(r.rate_eb_global is not None and r.rate_eb_spatial is not None for r in table.rows)
    assert table.parameters.weights["islands"] == []


def test_global_eb_lies_between_the_raw_and_the_overall_rate(client, keys, stats_data):
    table = _get(client, keys["analyst"], by=["period", "category"], period="year")
    checked = 0
    for (_period, _category), group in pd.DataFrame([r.model_dump() for r in table.rows]).groupby(
        ["period", "category"]
    ):
        overall = group["count"].sum() / group["population"].sum() * 100_000
        low = np.minimum(group["rate"], overall) - 1e-9
        high = np.maximum(group["rate"], overall) + 1e-9
        assert ((low <= group["rate_eb_global"]) & (group["rate_eb_global"] <= high)).all()
        checked += len(group)
    assert checked == len(table.rows) > 0


def test_negative_between_area_variance_is_clamped(client, keys, stats_data, db):
    table = _get(client, keys["analyst"], source=CLAMP_SOURCE)
    counts = {r.unit_code: r.count for r in table.rows}
    assert counts == {"BZ-BZ": 23, "BZ-CY": 20, "BZ-CZL": 9, "BZ-OW": 11, "BZ-SC": 10,
                      "BZ-TOL": 7}  # fmt: skip
    overall = sum(counts.values()) / sum(r.population for r in table.rows) * 100_000
    # Rates vary less than Poisson noise: v < 0 → 0, so every unit gets the overall rate.
    assert len({round(r.rate, 6) for r in table.rows}) == 6
    for r in table.rows:
        assert r.rate_eb_global == pytest.approx(overall, rel=1e-9)
    assert any("variance was negative" in n for n in table.notes)


def test_unstable_flag_and_rse(client, keys, stats_data):
    table = _get(
        client, keys["analyst"], by="period", period="month", category="homicide",
        occurred_from="2022-01-01T00:00:00-06:00", occurred_to="2025-01-01T00:00:00-06:00",
    )  # fmt: skip
    assert {r.unstable for r in table.rows} == {True}  # a handful of homicides a month
    zero = [r for r in table.rows if r.count == 0]
    assert zero and all(r.rse is None and r.rate == 0 for r in zero)
    assert len(table.rows) == 6 * 36  # every month of the range, every district
    busy = _get(client, keys["analyst"])
    assert {r.unit_code: r.unstable for r in busy.rows}["BZ-BZ"] is False


def test_female_victims_use_the_female_population(client, keys, stats_data, db):
    table = _get(client, keys["analyst"], victim_sex="female", by="period", period="2022")
    for r in table.rows:
        female = _population(db, r.unit_code, 2022, "female")
        assert r.population_sex == "female" and r.population == pytest.approx(female)
        assert r.rate == pytest.approx(r.count / female * 100_000, rel=1e-12)
        assert "Derived from SIB sex ratio" in r.population_source
    by_sex = _get(client, keys["analyst"], by="victim_sex", period="2022")
    for r in by_sex.rows:
        if r.victim_sex == "unknown":
            assert r.population is None and r.rate is None and r.rate_eb_global is None
        else:
            expected = _population(db, r.unit_code, 2022, r.victim_sex)
            assert r.population_sex == r.victim_sex
            assert r.population == pytest.approx(expected)
    assert any("no population" in n for n in by_sex.notes)


def test_breakdown_by_category_and_quarter_with_filters(client, keys, stats_data, db):
    table = _get(
        client, keys["analyst"], by=["category", "period"], period="quarter",
        occurred_from="2023-01-01T00:00:00-06:00", occurred_to="2024-01-01T00:00:00-06:00",
        category="robbery,theft", age_min=15,
    )  # fmt: skip
    quarters = [f"2023-Q{q}" for q in range(1, 5)]
    assert len(table.rows) == 6 * 2 * 4
    assert [r.period for r in table.rows[:8]] == quarters * 2
    local = f"i.occurred_at AT TIME ZONE '{TZ}'"
    expected = _sql_counts(
        db,
        f"i.category, date_part('year', {local})::int || '-Q' || date_part('quarter', {local})",
        "AND i.category IN ('robbery', 'theft') AND i.victim_age >= 15 "
        "AND i.occurred_at >= '2023-01-01T00:00:00-06:00' "
        "AND i.occurred_at < '2024-01-01T00:00:00-06:00'",
    )
    got = {(r.unit_code, r.category, r.period): r.count for r in table.rows}
    assert {k: v for k, v in got.items() if v} == expected
    # An age filter without a matching population age group has no denominator.
    assert all(r.population is None and r.rate is None for r in table.rows)
    groups = _get(client, keys["analyst"], by="category_group", period="2024")
    assert "violence_against_women" in {r.category_group for r in groups.rows}
    assert all(r.category is None and r.period == "2024" for r in groups.rows)


def test_age_groups_and_their_population(client, keys, stats_data, db):
    table = _get(
        client, keys["analyst"], by="age_group", age_groups="0-17,18-24,25+",
        period=str(AGE_YEAR), unit="BZ-CY,BZ-TOL",
    )  # fmt: skip
    assert table.parameters.units == ["BZ-CY", "BZ-TOL"]
    assert table.parameters.level is None
    labels = {r.age_group for r in table.rows}
    assert {"0-17", "18-24", "25+"} <= labels <= {"0-17", "18-24", "25+", "unknown"}
    bucket = (
        "CASE WHEN i.victim_age IS NULL THEN 'unknown' WHEN i.victim_age <= 17 THEN '0-17' "
        "WHEN i.victim_age <= 24 THEN '18-24' ELSE '25+' END"
    )
    local_year = f"date_part('year', i.occurred_at AT TIME ZONE '{TZ}')"
    expected = _sql_counts(db, bucket, f"AND {local_year} = %s", [AGE_YEAR])
    for r in table.rows:
        assert r.count == expected.get((r.unit_code, r.age_group), 0)
        if r.age_group == AGE_GROUP:
            value = _population(db, r.unit_code, AGE_YEAR, age=AGE_GROUP)
            assert r.population == value and r.population_source == "stats test census"
            assert r.rate == pytest.approx(r.count / value * 100_000, rel=1e-12)
        else:
            assert r.population is None


def test_issue_example_group_alias_and_period_value(client, keys, stats_data, db):
    # The issue's own example: GET /stats?level=1&group=category,sex&period=2024
    table = _get(client, keys["analyst"], level=1, group="category,sex", period="2024")
    assert table.parameters.by == ["category", "period", "victim_sex"]
    local_year = f"date_part('year', i.occurred_at AT TIME ZONE '{TZ}')"
    expected = _sql_counts(
        db, "i.category, coalesce(i.victim_sex, 'unknown')", f"AND {local_year} = 2024"
    )
    got = {(r.unit_code, r.category, r.victim_sex): r.count for r in table.rows}
    assert {k: v for k, v in got.items() if v} == expected
    assert {r.period for r in table.rows} == {"2024"}


def test_csv_has_the_same_columns_and_numbers(client, keys, stats_data):
    params = {"source": SOURCE, "by": "category", "period": "2023"}
    body = client.get("/stats", params=params, headers=auth(keys["analyst"])).json()
    response = client.get(
        "/stats", params={**params, "format": "csv"}, headers=auth(keys["analyst"])
    )
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert list(rows[0]) == list(body["rows"][0])
    assert len(rows) == len(body["rows"])
    for line, row in zip(rows, body["rows"], strict=True):
        assert int(line["count"]) == row["count"]
        assert float(line["rate"]) == pytest.approx(row["rate"], rel=1e-12)
        assert float(line["rate_eb_spatial"]) == pytest.approx(row["rate_eb_spatial"], rel=1e-12)
        assert line["unstable"] == str(row["unstable"]).lower()


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"by": "decade"}, "unknown breakdown"),
        ({"period": "decade"}, "period"),
        ({"victim_sex": "other"}, "victim_sex"),
        ({"age_groups": "10-5"}, "ends before"),
        ({"age_groups": "0-20,15-29"}, "overlap"),
        ({"age_groups": "young"}, "age group"),
        ({"unit": "BZ-XX"}, "BZ-XX"),
        ({"level": 7}, "level 7"),
        ({"level": 1, "unit": "BZ-CY"}, "either level or unit"),
        ({"category": "jaywalking"}, "jaywalking"),
        ({"age_min": 30, "age_max": 20}, "age_min"),
        ({"format": "xml"}, "format"),
        ({"level": -1}, "level"),
    ],
)
def test_bad_parameters_are_422(client, keys, stats_data, params, message):
    response = client.get("/stats", params=params, headers=auth(keys["analyst"]))
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert message in response.json()["detail"]


def test_stats_are_public_with_small_counts_withheld(client, keys, stats_data):
    # Full values for analysts only (tests/integration/test_public_view.py checks the rule);
    # a public table takes no source filter (the lattice, app.services.lattice).
    for key in (None, keys["viewer"]):
        response = client.get(
            "/stats", params={"by": "category", "period": "2024"}, headers=auth(key)
        )
        assert response.status_code == 200, response.text
        table = StatsTable.model_validate(response.json())
        assert any(r.suppressed for r in table.rows)
        assert all(r.count is None or r.count >= 5 for r in table.rows)
    assert not any(r.suppressed for r in _get(client, keys["analyst"], by="category").rows)
    assert client.get("/stats", headers=auth("not-a-key")).status_code == 401
