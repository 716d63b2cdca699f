"""Composite indexes through the API on the real PostGIS: versioned definitions (JSON and
YAML), 422s that name the problem, the shipped TVI and VAWG on synthetic incidents and the
demo census, rank change, CSV, Monte Carlo reproducibility and access.

Other tests' incidents share the database and the definition language has no source
filter, so results are checked by structure and by invariants, not by exact values."""

from __future__ import annotations

import io
import json

import geopandas as gpd
import pandas as pd
import pytest
from openpyxl import load_workbook

from app.demo.incidents import generate_incidents
from app.services.imports import import_frame
from app.services.incident_rows import ReadOptions
from app.services.indexes import DEFAULTS_DIR, load_default_definitions
from app.services.tables import load_demo_population
from tests.conftest import BELIZE, auth, call_service

SOURCE = "indexes-test"
TVI = "/indexes/territorial-violence"
XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
DISTRICTS = ["BZ-BZ", "BZ-CY", "BZ-CZL", "BZ-OW", "BZ-SC", "BZ-TOL"]

DEFINITION = {
    "name": "test-index",
    "title": "Test index",
    "unit_level": 1,
    "indicators": [
        {
            "code": "robbery_rate",
            "source": {"incidents": {"categories": ["robbery"], "measure": "rate"}},
        },
        {
            "code": "theft_count",
            "source": {"incidents": {"categories": ["theft"], "measure": "count"}},
        },
    ],
}
YAML = """
name: test-index
title: Test index (YAML)
indicators:
  - code: robbery_rate
    source: {incidents: {categories: [robbery], measure: eb_rate}}
  - code: theft_share
    source: {incidents: {categories: [theft], measure: share}}
    weight: 2
"""


@pytest.fixture(scope="module")
def index_data(base_data):
    """4,000 synthetic incidents in 2023-2024 under their own source, the demo census and
    the shipped definitions."""
    call_service(base_data, lambda e: load_demo_population(e, actor="tests"))
    districts = gpd.read_file(BELIZE / "boundaries" / "belize_adm1_districts.geojson").rename(
        columns={"iso_3166_2": "code", "district": "name"}
    )
    frame = generate_incidents(districts, n=4_000, years=2, end_year=2024, seed=23)
    frame = frame.assign(source=SOURCE).astype(object).where(frame.notna(), "").astype(str)
    frame = frame.replace({"nan": "", "<NA>": "", "None": ""})
    report = call_service(
        base_data,
        lambda e: import_frame(
            e, base_data, frame, ReadOptions(), actor="tests", filename="idx.csv", fmt="csv"
        ),
    )
    assert report.inserted == 4_000
    call_service(base_data, lambda e: load_default_definitions(e, actor="tests"))
    return base_data


def _post(client, key, body: str, content_type: str):
    return client.post(
        "/indexes", content=body, headers={**auth(key), "Content-Type": content_type}
    )


def test_post_json_and_yaml_makes_versions(client, keys, index_data):
    first = _post(client, keys["admin"], json.dumps(DEFINITION), "application/json")
    assert first.status_code == 201, first.text
    body = first.json()
    assert body["code"] == "test-index" and body["definition"]["version"] == body["version"]
    assert first.headers["location"].endswith("/indexes/test-index")
    second = _post(client, keys["admin"], YAML, "application/yaml")
    assert second.status_code == 201, second.text
    assert second.json()["version"] == body["version"] + 1
    assert second.json()["title"] == "Test index (YAML)"

    latest = client.get("/indexes/test-index", headers=auth(keys["analyst"]))
    assert latest.status_code == 200 and latest.json()["version"] == body["version"] + 1
    old = client.get(
        "/indexes/test-index", params={"version": body["version"]}, headers=auth(keys["analyst"])
    )
    assert old.json()["title"] == "Test index"
    listed = client.get("/indexes", headers=auth(keys["analyst"])).json()["items"]
    versions = {i["code"]: i["version"] for i in listed}
    assert versions["test-index"] == body["version"] + 1
    assert {"territorial-violence", "violence-against-women"} <= set(versions)
    assert len(listed) == len(versions)  # one (the latest) per code

    missing = client.get("/indexes/nope", headers=auth(keys["analyst"]))
    assert missing.status_code == 404


def test_invalid_definition_is_422_naming_the_problem(client, keys, index_data):
    bad = {**DEFINITION, "normalisation": "bogus"}
    bad["indicators"] = [{**DEFINITION["indicators"][0], "weight": -1}]
    response = _post(client, keys["admin"], json.dumps(bad), "application/json")
    assert response.status_code == 422
    detail = response.json()["detail"]
    assert "indicators[0].weight" in detail and "normalisation.method" in detail
    response = _post(client, keys["admin"], "name: [unclosed", "text/yaml")
    assert response.status_code == 422
    response = _post(client, keys["admin"], "x", "text/plain")
    assert response.status_code == 422 and "application/yaml" in response.json()["detail"]
    # Posting needs an admin.
    assert _post(client, keys["analyst"], YAML, "application/yaml").status_code == 403
    assert _post(client, keys["editor"], YAML, "application/yaml").status_code == 403


def _results(client, key, code="territorial-violence", **params):
    response = client.get(
        f"/indexes/{code}/results", params={"period": "2024", **params}, headers=auth(key)
    )
    assert response.status_code == 200, response.text
    return response.json()


def test_tvi_results_on_demo_data(client, keys, index_data):
    result = _results(client, keys["analyst"])
    assert result["code"] == "territorial-violence" and result["version"] == 1
    assert result["period"] == "2024" and result["previous_period"] == "2023"
    rows = result["rows"]
    assert sorted(r["unit_code"] for r in rows) == DISTRICTS
    assert sorted(r["rank"] for r in rows) == [1, 2, 3, 4, 5, 6]
    assert [r["rank"] for r in rows] == sorted(r["rank"] for r in rows)
    assert sum(result["weights"].values()) == pytest.approx(1)
    codes = {"homicide_rate", "shooting_rate", "robbery_rate",
             "youth_violence_per_100k_residents", "vaw_rate"}  # fmt: skip
    for r in rows:
        assert 0 <= r["score"] <= 100
        assert set(r["raw"]) == set(r["treated"]) == set(r["normalised"]) == codes
        assert set(r["dimensions"]) == {"lethal", "street", "gbv"}
        assert sum(r["contributions"].values()) == pytest.approx(r["score"], abs=1e-9)
        assert all(0 <= v <= 100 for v in r["normalised"].values())
        assert r["class"] in (1, 2, 3)
        # 2023 has data too: the rank change is computable and consistent.
        assert r["previous_rank"] in range(1, 7)
        assert r["rank_change"] == r["previous_rank"] - r["rank"]
    # Higher score = better (lower) rank.
    scores = [r["score"] for r in rows]
    assert scores == sorted(scores, reverse=True)
    # Each indicator says what it counts, per whom, from which census, smoothed how: the
    # youth indicator is per 100,000 residents of ALL ages (no 15-29 population is loaded),
    # and every rate divides by the 2022 census (the definition's census_year).
    described = {i["code"]: i for i in result["indicators"]}
    assert list(described) == [
        "homicide_rate", "shooting_rate", "robbery_rate", "youth_violence_per_100k_residents",
        "vaw_rate",
    ]  # fmt: skip
    youth = described["youth_violence_per_100k_residents"]
    assert youth["per"] == "100,000 residents of all ages" and youth["census_years"] == [2022]
    assert "victim aged 15\u201329" in youth["statement"] and youth["smoothing"] is None
    assert described["vaw_rate"]["per"] == "100,000 female residents of all ages"
    assert "toward the national rate" in described["homicide_rate"]["smoothing"]
    assert all(i["census_years"] == [2022] for i in result["indicators"])
    # Six districts: the JRC outlier rule does not run (it needs 20 units), and says so.
    assert result["treatment"] == {
        "method": "jrc", "min_units": 20, "units": 6, "applied": False,
        "rule": result["notes"][0],
    }  # fmt: skip
    assert result["notes"][0].startswith("No outlier treatment")
    for r in rows:
        assert r["treated"] == r["raw"] and r["treated_values"] == []


def test_raw_values_match_a_direct_sql_count(client, keys, index_data, db):
    result = _results(client, keys["analyst"])
    counts = dict(
        db.execute(
            """SELECT u.code, count(*) FROM incident i JOIN admin_unit u ON u.id = ANY(i.unit_ids)
               WHERE u.level = 1 AND i.deleted_at IS NULL AND i.category = 'robbery'
                 AND i.occurred_at >= '2024-01-01 00:00-06'
                 AND i.occurred_at < '2025-01-01 00:00-06'
               GROUP BY u.code"""
        ).fetchall()
    )
    population = dict(
        db.execute(
            """SELECT u.code, p.value FROM population p JOIN admin_unit u ON u.id = p.unit_id
               WHERE u.level = 1 AND p.year = 2022 AND p.sex = 'total'
                 AND p.age_group = 'total'"""
        ).fetchall()
    )
    for r in result["rows"]:
        expected = counts.get(r["unit_code"], 0) / population[r["unit_code"]] * 100_000
        assert r["raw"]["robbery_rate"] == pytest.approx(expected, rel=1e-9)


def test_vawg_and_posted_definition_results(client, keys, index_data):
    vawg = _results(client, keys["analyst"], code="violence-against-women")
    assert sorted(r["rank"] for r in vawg["rows"]) == [1, 2, 3, 4, 5, 6]
    posted = _results(client, keys["analyst"], code="test-index", version=1)
    assert posted["version"] == 1
    assert set(posted["rows"][0]["raw"]) == {"robbery_rate", "theft_count"}
    latest = _results(client, keys["analyst"], code="test-index")
    assert set(latest["rows"][0]["raw"]) == {"robbery_rate", "theft_share"}
    assert all(0 <= r["raw"]["theft_share"] <= 100 for r in latest["rows"])


def test_results_csv_has_the_json_numbers(client, keys, index_data):
    result = _results(client, keys["analyst"])
    response = client.get(
        f"{TVI}/results",
        params={"period": "2024", "format": "csv"},
        headers=auth(keys["analyst"]),
    )
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/csv")
    table = pd.read_csv(io.StringIO(response.text))
    header = response.text.splitlines()[0].split(",")
    assert header[:6] == ["index", "version", "period", "unit_code", "unit_name", "rank"]
    assert len(table) == 6 and set(table["index"]) == {"territorial-violence"}
    by_unit = table.set_index("unit_code")
    for r in result["rows"]:
        line = by_unit.loc[r["unit_code"]]
        assert line["rank"] == r["rank"] and line["class"] == r["class"]
        assert line["score"] == pytest.approx(r["score"], rel=1e-12)
        assert line["raw_homicide_rate"] == pytest.approx(r["raw"]["homicide_rate"], rel=1e-12)


def test_sensitivity_same_seed_same_result(client, keys, index_data):
    def run(seed: int):
        response = client.get(
            f"{TVI}/sensitivity",
            params={"period": "2024", "runs": 200, "seed": seed},
            headers=auth(keys["analyst"]),
        )
        assert response.status_code == 200, response.text
        return response.json()

    first, again = run(1), run(1)
    assert first == again
    assert first["runs"] == 200 and first["seed"] == 1 and first["version"] == 1
    assert sorted(r["nominal_rank"] for r in first["rows"]) == [1, 2, 3, 4, 5, 6]
    for r in first["rows"]:
        assert 1 <= r["rank_q05"] <= r["median_rank"] <= r["rank_q95"] <= 6
    assert first["most_influential"] in (None, "weights", "normalisation", "aggregation")
    assert set(first["assumption_shift"]) == {"weights", "normalisation", "aggregation"}


def test_errors_and_access(client, keys, index_data):
    viewer = client.get(f"{TVI}/results", params={"period": "2024"}, headers=auth(keys["viewer"]))
    assert viewer.status_code == 403
    assert client.get(f"{TVI}/results", params={"period": "2024"}).status_code == 401
    too_many = client.get(
        f"{TVI}/sensitivity",
        params={"period": "2024", "runs": 5001},
        headers=auth(keys["analyst"]),
    )
    assert too_many.status_code == 422
    wrong_kind = client.get(
        f"{TVI}/results", params={"period": "2024-Q1"}, headers=auth(keys["analyst"])
    )
    assert wrong_kind.status_code == 422 and "per year" in wrong_kind.json()["detail"]
    # No incidents at all in 1990: every indicator is constant, and the engine says so.
    empty = client.get(f"{TVI}/results", params={"period": "1990"}, headers=auth(keys["analyst"]))
    assert empty.status_code == 422


def test_default_definitions_load_once(index_data):
    assert call_service(index_data, lambda e: load_default_definitions(e, actor="tests")) == []
    assert {p.stem for p in DEFAULTS_DIR.glob("*.yaml")} == {
        "territorial_violence",
        "violence_against_women",
    }


def test_results_geojson_has_unit_geometry(client, keys, index_data):
    response = client.get(
        f"{TVI}/results",
        params={"period": "2024", "format": "geojson"},
        headers=auth(keys["analyst"]),
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/geo+json")
    collection = response.json()
    features = collection["features"]
    assert collection["type"] == "FeatureCollection" and len(features) == 6
    keys_of = [set(f["properties"]) for f in features]
    assert all(k == keys_of[0] for k in keys_of)  # every feature has every key
    for f in features:
        assert f["geometry"]["type"] in ("Polygon", "MultiPolygon")
        assert f["geometry"]["coordinates"]
        assert f["id"] == f["properties"]["unit_code"]
    assert sorted(f["properties"]["rank"] for f in features) == [1, 2, 3, 4, 5, 6]


def test_results_xlsx_has_rows_and_about(client, keys, index_data):
    result = _results(client, keys["analyst"], code="territorial-violence")
    response = client.get(
        f"{TVI}/results",
        params={"period": "2024", "format": "xlsx"},
        headers=auth(keys["analyst"]),
    )
    assert response.status_code == 200
    assert response.headers["content-type"] == XLSX
    assert response.headers["content-disposition"].startswith("attachment")
    book = load_workbook(io.BytesIO(response.content))
    assert book.sheetnames == ["rows", "about"]
    rows = list(book["rows"].values)
    header, lines = rows[0], rows[1:]
    assert len(lines) == 6
    by_unit = {line[header.index("unit_code")]: line for line in lines}
    for r in result["rows"]:
        line = by_unit[r["unit_code"]]
        assert line[header.index("rank")] == r["rank"]
        assert line[header.index("score")] == pytest.approx(r["score"], rel=1e-12)
    about = {row[0]: row[1] for row in book["about"].values}
    assert about["index"] == "territorial-violence" and about["version"] == 1
    assert about["period"] == "2024" and about["parameter: normalisation"]


def _ranking(client, key, **params):
    """``runs=None`` leaves runs out (the definition's 1,000: callers below analyst get no
    other)."""
    params = {"index": "territorial-violence", "period": "2024", "runs": 200, **params}
    return client.get(
        "/rankings",
        params={k: v for k, v in params.items() if v is not None},
        headers=auth(key),
    )


def test_rankings_planners_view(client, keys, index_data):
    response = _ranking(client, keys["analyst"])
    assert response.status_code == 200, response.text
    ranking = response.json()
    assert ranking["index"] == "territorial-violence" and ranking["seed"] == 1
    rows = ranking["rows"]
    assert len(rows) == 6 and sorted(r["unit_code"] for r in rows) == DISTRICTS
    assert [r["rank"] for r in rows] == [1, 2, 3, 4, 5, 6]
    results = {r["unit_code"]: r for r in _results(client, keys["analyst"])["rows"]}
    for r in rows:
        assert r["rank_q05"] <= r["rank"] <= r["rank_q95"]
        assert r["rank_q05"] <= r["median_rank"] <= r["rank_q95"]
        assert r["score"] == results[r["unit_code"]]["score"]
        assert r["class"] == results[r["unit_code"]]["class"]
        assert r["rank_change"] == r["previous_rank"] - r["rank"]
        # The largest contributions above 0 (a 0 is "lowest unit on that indicator").
        top = r["top_indicators"]
        positive = sorted(
            (v for v in results[r["unit_code"]]["contributions"].values() if v > 0), reverse=True
        )
        contributions = [t["contribution"] for t in top]
        assert contributions == positive[:3] and all(t["name"] for t in top)
        assert r["ranks"] == (
            str(r["rank"]) if r["rank_first"] == r["rank_last"]
            else f"{r['rank_first']}\u2013{r['rank_last']}"
        )  # fmt: skip
    # The default seed is fixed: the same request gives the same page.
    assert _ranking(client, keys["analyst"]).json() == ranking


def test_rankings_csv_and_xlsx_carry_the_json_numbers(client, keys, index_data):
    rows = _ranking(client, keys["analyst"]).json()["rows"]
    csv_response = _ranking(client, keys["analyst"], format="csv")
    assert csv_response.status_code == 200
    assert csv_response.headers["content-type"].startswith("text/csv")
    table = pd.read_csv(io.StringIO(csv_response.text))
    xlsx_response = _ranking(client, keys["analyst"], format="xlsx")
    assert xlsx_response.status_code == 200
    assert xlsx_response.headers["content-type"] == XLSX
    assert xlsx_response.headers["content-disposition"].startswith("attachment")
    book = load_workbook(io.BytesIO(xlsx_response.content))
    sheet = list(book.worksheets[0].values)
    sheet_table = pd.DataFrame(sheet[1:], columns=sheet[0])
    about = {row[0]: row[1] for row in book["about"].values}
    assert about["index"] == "territorial-violence" and about["parameter: seed"] == 1
    for frame in (table, sheet_table):
        assert len(frame) == 6
        assert list(frame["unit_code"]) == [r["unit_code"] for r in rows]
        for line, r in zip(frame.to_dict("records"), rows, strict=True):
            assert line["rank"] == r["rank"] and line["class"] == r["class"]
            assert line["score"] == pytest.approx(r["score"], rel=1e-12)
            assert line["median_rank"] == pytest.approx(r["median_rank"])
            assert line["rank_q05"] == pytest.approx(r["rank_q05"])
            assert line["rank_q95"] == pytest.approx(r["rank_q95"])
            assert line["rank_change"] == r["rank_change"]
            assert str(line["ranks"]) == r["ranks"]
            if r["top_indicators"]:
                top = r["top_indicators"][0]
                assert line["top1_indicator"] == top["name"]
                assert line["top1_contribution"] == pytest.approx(top["contribution"], rel=1e-12)
            else:
                assert pd.isna(line["top1_indicator"]) and pd.isna(line["top1_contribution"])


def test_rankings_are_public_with_the_same_ranks_for_everyone(client, keys, index_data):
    # Ranks, scores and bands are published aggregates: no key and a viewer key get exactly
    # the analyst's numbers (computed from every count, not from a suppressed table), with
    # the published band (runs and seed fixed below analyst). The TVI has indicators counted
    # from sensitive categories, so no contribution value is shown in public (with the score
    # any value would bound the withheld ones): the released indicators are named in order
    # (tests/integration/test_public_rankings.py checks the bounds).
    published = {"runs": None}  # the defaults
    analyst = _ranking(client, keys["analyst"], **published).json()
    definition = client.get(TVI).json()["definition"]
    sensitive = {"youth_violence_per_100k_residents", "vaw_rate"}  # sexual / domestic violence
    others = {i["code"] for i in definition["indicators"]} - sensitive
    results = {r["unit_code"]: r for r in _results(client, keys["analyst"])["rows"]}
    for key in (None, keys["viewer"]):
        response = _ranking(client, key, **published)
        assert response.status_code == 200, response.text
        public = response.json()
        assert any("contributions are withheld" in n for n in public["notes"])
        for mine, theirs in zip(public["rows"], analyst["rows"], strict=True):
            contributions = results[mine["unit_code"]]["contributions"]
            positive = [c for c in others if contributions[c] > 0]
            largest = sorted(positive, key=lambda c: -contributions[c])[:3]
            top = mine.pop("top_indicators")
            assert [t["code"] for t in top] == largest
            assert all(t["contribution"] is None for t in top)
            assert mine == {k: v for k, v in theirs.items() if k != "top_indicators"}
        assert _ranking(client, key).status_code == 422  # runs=200: analysts only
    public_csv = pd.read_csv(io.StringIO(_ranking(client, None, format="csv", **published).text))
    analyst_csv = pd.read_csv(
        io.StringIO(_ranking(client, keys["analyst"], format="csv", **published).text)
    )
    ranks = ["unit_code", "rank", "score", "class", "median_rank", "rank_q05", "rank_q95"]
    pd.testing.assert_frame_equal(public_csv[ranks], analyst_csv[ranks])
    names = {i["name"] for i in definition["indicators"] if i["code"] in sensitive}
    assert not set(public_csv.filter(like="_indicator").stack()) & names
    assert public_csv.filter(like="_contribution").isna().all().all()
    sheet = pd.read_excel(io.BytesIO(_ranking(client, None, format="xlsx", **published).content))
    # "ranks" as text: "1" and "5\u20136" in one column read as numbers from one file and
    # text from the other.
    for frame in (sheet, public_csv):
        frame["ranks"] = frame["ranks"].astype(str)
    pd.testing.assert_frame_equal(sheet, public_csv, check_dtype=False)
    assert _ranking(client, None, index="nope", **published).status_code == 404
    assert _ranking(client, None, period="2024-Q1", **published).status_code == 422


def test_index_definitions_and_periods_are_public(client, keys, index_data):
    listed = client.get("/indexes")
    assert listed.status_code == 200
    assert "territorial-violence" in {i["code"] for i in listed.json()["items"]}
    assert client.get(TVI).json()["definition"]["indicators"]
    periods = client.get(f"{TVI}/periods").json()
    assert periods["period"] == "year" and periods["latest"] == periods["periods"][-1]
    assert periods["periods"] == sorted(periods["periods"]) and "2024" in periods["periods"]
    assert client.get("/indexes/nope/periods").status_code == 404
    # The raw indicator values per unit stay with analysts.
    assert client.get(f"{TVI}/results", params={"period": "2024"}).status_code == 401


def test_cli_prints_the_ranking(base_data, index_data, client, keys, tmp_path):
    import os
    import subprocess
    import sys

    out = tmp_path / "ranking.csv"
    env = {**os.environ, "OBSERVATORY_DATABASE_URL": base_data.libpq_url, "COLUMNS": "160"}
    done = subprocess.run(
        [sys.executable, "-m", "app.cli", "index", "compute", "territorial-violence",
         "--period", "2024", "-o", str(out)],
        env=env, capture_output=True, text=True,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Territorial Violence Index" in done.stdout and "BZ-CY" in done.stdout
    api = _results(client, keys["analyst"])
    csv_rows = pd.read_csv(out)
    assert list(csv_rows["unit_code"]) == [r["unit_code"] for r in api["rows"]]
    assert list(csv_rows["score"].round(6)) == [round(r["score"], 6) for r in api["rows"]]


def test_one_default_for_runs_and_seed(client, keys, index_data):
    """The definition's 1,000 runs and seed 1 wherever none is given: /sensitivity and
    /rankings (public and analyst) show the same bands; runs and seed given explicitly
    with the same values give the same answer."""
    spec = client.get(TVI).json()["definition"]["sensitivity"]
    assert (spec["runs"], spec["seed"]) == (1000, 1)

    def sensitivity(**params):
        response = client.get(
            f"{TVI}/sensitivity", params={"period": "2024", **params}, headers=auth(keys["analyst"])
        )
        assert response.status_code == 200, response.text
        return response.json()

    default = sensitivity()
    assert (default["runs"], default["seed"]) == (1000, 1)
    assert sensitivity(runs=1000, seed=1) == default
    bands = {
        r["unit_code"]: (r["median_rank"], r["rank_q05"], r["rank_q95"]) for r in default["rows"]
    }
    for key in (None, keys["analyst"]):
        ranking = _ranking(client, key, runs=None).json()
        assert (ranking["runs"], ranking["seed"]) == (1000, 1)
        assert {
            r["unit_code"]: (r["median_rank"], r["rank_q05"], r["rank_q95"])
            for r in ranking["rows"]
        } == bands
    # With six units the treatment does not run: scores as defined are the untreated ones;
    # the JRC variant (forced) is there for comparison.
    assert default["treatment"]["applied"] is False
    for r in default["rows"]:
        assert r["score_untreated"] == r["score"] and r["rank_untreated"] == r["nominal_rank"]
        assert r["score_jrc"] is not None and r["rank_jrc"] in range(1, 7)
