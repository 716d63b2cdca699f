"""The public view: /stats without an analyst key (small counts, sensitive categories and
their complements withheld, JSON and CSV alike), and the pages beside the API (/map, and
/rankings for a browser asking for HTML while every other client keeps the API)."""

from __future__ import annotations

import csv
import io
from datetime import date

import geopandas as gpd
import pytest
from fastapi.testclient import TestClient

from app.demo.incidents import generate_incidents
from app.main import create_app
from app.services.imports import import_frame
from app.services.incident_rows import ReadOptions
from app.services.tables import load_demo_population
from tests.conftest import BELIZE, auth, call_service

SOURCE = "public-view-test"
SENSITIVE = {"domestic_violence", "sexual_violence", "suicide"}
BROWSER = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"


@pytest.fixture(scope="module")
def public_data(base_data):
    """1,500 synthetic incidents in 2024 under their own source, and the demo census."""
    call_service(base_data, lambda e: load_demo_population(e, actor="tests"))
    districts = gpd.read_file(BELIZE / "boundaries" / "belize_adm1_districts.geojson").rename(
        columns={"iso_3166_2": "code", "district": "name"}
    )
    frame = generate_incidents(districts, n=1_500, years=1, end_year=2024, seed=5)
    frame = frame.assign(source=SOURCE).astype(object).where(frame.notna(), "").astype(str)
    frame = frame.replace({"nan": "", "<NA>": "", "None": ""})
    report = call_service(
        base_data,
        lambda e: import_frame(
            e, base_data, frame, ReadOptions(), actor="tests", filename="p.csv", fmt="csv"
        ),
    )
    assert report.inserted == 1_500
    return base_data


def _stats(client, key, **params):
    """The same table for every caller: a public one takes no source filter, so the
    analyst's table to compare with counts every source too."""
    response = client.get("/stats", params=params, headers=auth(key))
    assert response.status_code == 200, response.text
    return response


def test_public_counts_by_category_withhold_small_sensitive_and_complementary(
    client, keys, public_data
):
    full = {
        (r["unit_code"], r["category"]): r
        for r in _stats(client, keys["analyst"], by="category", period="2024").json()["rows"]
    }
    assert not any(r["suppressed"] for r in full.values())
    for key in (None, keys["viewer"]):
        body = _stats(client, key, by="category", period="2024").json()
        assert body["parameters"]["sensitive_categories"] == sorted(SENSITIVE)
        rows = body["rows"]
        assert len(rows) == len(full)
        for r in rows:
            analyst = full[(r["unit_code"], r["category"])]
            if r["suppressed"]:
                assert r["count"] is None and r["rate"] is None and r["rse"] is None
            else:
                # Shown counts are perturbed by at most 2; never small, never sensitive.
                assert r["count"] >= 5 and analyst["count"] >= 5
                assert abs(r["count"] - analyst["count"]) <= 2
                assert r["category"] not in SENSITIVE
            if analyst["count"] < 5 or r["category"] in SENSITIVE:
                assert r["suppressed"]
        # No line of the table has exactly one withheld cell.
        for column, other in (("unit_code", "category"), ("category", "unit_code")):
            lines: dict[str, list[bool]] = {}
            for r in rows:
                lines.setdefault(r[column], []).append(r["suppressed"])
            assert all(sum(hidden) != 1 for hidden in lines.values()), (column, other)
        assert any("Public view" in note for note in body["notes"])


def test_public_totals_include_no_sensitive_category(client, keys, public_data):
    everything = _stats(client, None, by="victim_sex", period="2024").json()["rows"]
    assert all(r["suppressed"] for r in everything)
    rows = _stats(client, None, by="victim_sex", period="2024", category="theft")
    full = _stats(client, keys["analyst"], by="victim_sex", period="2024", category="theft")
    shown = [r for r in rows.json()["rows"] if not r["suppressed"]]
    assert shown
    counts = {(r["unit_code"], r["victim_sex"]): r["count"] for r in full.json()["rows"]}
    assert all(abs(counts[(r["unit_code"], r["victim_sex"])] - r["count"]) <= 2 for r in shown)
    # A set of categories is a record set of the caller's making: analysts only.
    several = {"by": "victim_sex", "period": "2024", "category": "theft,burglary"}
    refused = client.get("/stats", params=several)
    assert refused.status_code == 400, refused.text
    assert refused.headers["content-type"] == "application/problem+json"
    assert "several categories" in refused.json()["detail"]


def test_the_threshold_is_a_setting(client, keys, public_data):
    full = {
        (r["unit_code"], r["category"]): r["count"]
        for r in _stats(client, keys["analyst"], by="category", period="2024").json()["rows"]
    }
    assert any(5 <= count < 10 for count in full.values())  # shown at the default of 5
    stricter = public_data.model_copy(
        update={"privacy": public_data.privacy.model_copy(update={"min_count": 10})}
    )
    with TestClient(create_app(stricter)) as strict:
        body = _stats(strict, None, by="category", period="2024").json()
    for r in body["rows"]:
        truth = full[(r["unit_code"], r["category"])]
        if truth < 10:
            assert r["suppressed"], r
        if not r["suppressed"]:
            assert r["count"] >= 10, r
    assert any("below 10" in note for note in body["notes"])


def test_public_csv_withholds_the_same_cells(client, public_data):
    params = {"by": "category", "period": "2024"}
    body = _stats(client, None, **params).json()
    lines = list(csv.DictReader(io.StringIO(_stats(client, None, format="csv", **params).text)))
    assert len(lines) == len(body["rows"])
    for line, row in zip(lines, body["rows"], strict=True):
        assert line["suppressed"] == str(row["suppressed"]).lower()
        assert line["count"] == ("" if row["suppressed"] else str(row["count"]))


def test_a_browser_gets_the_rankings_page_and_clients_the_api(client):
    page = client.get("/rankings", headers={"Accept": BROWSER})
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "static/js/rankings.js" in page.text and "Accept" in page.headers["vary"]
    assert "default-src 'self'" in page.headers["content-security-policy"]
    # Without parameters the API still says what is missing; with format the API answers.
    for headers, params in (
        ({}, {}),
        ({"Accept": "*/*"}, {}),
        ({"Accept": BROWSER}, {"format": "json"}),
    ):
        response = client.get("/rankings", params=params, headers=headers)
        assert response.status_code == 422
        assert response.headers["content-type"] == "application/problem+json"
    json_first = client.get("/rankings", headers={"Accept": "application/json, text/html;q=0.9"})
    assert json_first.status_code == 422


def test_the_map_page_and_its_static_files(client):
    page = client.get("/map", headers={"Accept": BROWSER})
    assert page.status_code == 200 and "static/vendor/maplibre-gl.js" in page.text
    for path in ("/static/vendor/maplibre-gl.js", "/static/vendor/maplibre-gl.css",
                 "/static/js/map.js", "/static/js/api.js", "/static/css/pages.css"):  # fmt: skip
        assert client.get(path).status_code == 200, path
    assert "/map" not in client.get("/openapi.json").json()["paths"]


# --- the public lattice (app.services.lattice) ----------------------------------------------

OUTSIDE_THE_LATTICE = [
    ({"period": "2024", "source": SOURCE}, "source filters"),
    ({"period": "2024", "category": "theft,burglary"}, "several categories"),
    ({"period": "2024", "victim_sex": "female,male"}, "several victim sexes"),
    ({"period": "2024", "age_min": 4, "age_max": 4}, "one declared age group"),
    ({"period": "2024", "age_min": 15}, "one declared age group"),
    ({"period": "2024", "by": "age_group", "age_groups": "0-17,18+"}, "declared ones"),
    ({"by": "category"}, "whole periods"),
    ({"occurred_from": "2024-01-01", "occurred_to": "2025-01-01"}, "whole periods"),
    ({"by": "period", "period": "month", "occurred_from": "2024-01-05"}, "first day of a month"),
    ({"by": "period", "period": "quarter", "occurred_to": "2024-02-01"}, "first day of a quarter"),
    ({"period": "2024-03", "occurred_from": "2024-03-05"}, "first day of a month"),
    ({"period": "2019"}, "outside the published window"),
]


@pytest.mark.parametrize(("params", "reason"), OUTSIDE_THE_LATTICE)
def test_public_queries_outside_the_lattice_are_refused(client, keys, public_data, params, reason):
    for key in (None, keys["viewer"]):
        response = client.get("/stats", params=params, headers=auth(key))
        assert response.status_code == 400, (params, response.text)
        assert response.headers["content-type"] == "application/problem+json"
        body = response.json()
        assert reason in body["detail"], body["detail"]
        # The refusal says what may be asked instead, and the published window.
        assert "Without an analyst key, /stats answers these tables" in body["detail"]
        assert body["published_from"] == "2021-01-01"
    if reason != "outside the published window":
        analyst = client.get("/stats", params=params, headers=auth(keys["analyst"]))
        assert analyst.status_code == 200, (params, analyst.text)


def test_declared_age_groups_are_public(client, public_data):
    for params in ({"age_min": 15, "age_max": 29}, {"age_max": 14}, {"age_min": 65}):
        response = client.get("/stats", params={"period": "2024", "by": "age_group", **params})
        assert response.status_code == 200, (params, response.text)
        groups = {r["age_group"] for r in response.json()["rows"]}
        assert len(groups) == 1 and "unknown" not in groups, (params, groups)


def test_the_published_window_not_the_data_bounds_public_periods(keys, public_data):
    """Open bounds run over the published window's whole periods, wherever the first and
    last incidents are; the analyst's open bounds still follow the data."""
    window = {"published_from": date(2023, 4, 1), "published_to": date(2024, 7, 15)}
    settings = public_data.model_copy(
        update={"privacy": public_data.privacy.model_copy(update=window)}
    )

    def periods(client, key=None, **params):
        response = client.get("/stats", params={"level": 0, **params}, headers=auth(key))
        assert response.status_code == 200, response.text
        return [r["period"] for r in response.json()["rows"]]

    with TestClient(create_app(settings)) as c:
        months = periods(c, by="period", period="month")
        assert months[0] == "2023-04" and months[-1] == "2024-06" and len(months) == 15
        assert periods(c, by="period", period="quarter") == [
            "2023-Q2", "2023-Q3", "2023-Q4", "2024-Q1", "2024-Q2"
        ]  # fmt: skip
        clipped = periods(c, by="period", period="month", occurred_from="2024-05-01")
        assert clipped == ["2024-05", "2024-06"]
        # No whole year lies inside the window.
        refused = c.get("/stats", params={"by": "period", "period": "year"})
        assert refused.status_code == 400 and "outside" in refused.json()["detail"]
        # The analyst is not bound by the published window.
        assert "2024-07" in periods(c, keys["analyst"], by="period", period="month")
