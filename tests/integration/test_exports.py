"""Every CSV and XLSX export with hostile values (issue 14, points 2 and 3).

Text in exports comes from people and files the service does not control: the raw
values and headers of rejected import rows, unit names and codes from third-party
boundary files, an index's title and indicator names from ``POST /indexes``, the source
of a population file, the file name and actor in the audit log. Here each of them holds
a formula (``=HYPERLINK(...)``, ``=cmd|"/c calc"!A1``, ``+3+3``, ``@x``, ``-2+3``, a
tab-leading value) and every export route is read back: no CSV cell starts with ``=``,
``+``, ``-``, ``@``, tab or carriage return unless it is a number, no XLSX cell is a
formula, the hostile text comes back with a leading ``'``, and numbers (longitudes such
as ``-88.77``, negative z scores and rank changes) stay numbers.

The units are a new level 5 (boxes over the country, so the districts other tests use
are untouched), with their own incidents, population and index; the module removes
them all at the end.
"""

from __future__ import annotations

import csv
import io
import re
import time

import geopandas as gpd
import pytest
from openpyxl import load_workbook
from shapely.geometry import box
from sqlalchemy import text

from app.services.tables import import_population
from app.sql import units as units_sql
from tests.conftest import BELIZE, auth, call_service
from tests.integration.helpers import import_csv, write_incident_csv

SOURCE = "exports-test"
LEVEL = 5
INDEX = "exports-test"
EVIL = '=HYPERLINK("http://evil","click")'
# Unit names from a boundary file; codes are "=X00", "+X01", "-X02", "@X03", …
NAMES = (EVIL, '=cmd|"/c calc"!A1', "+3+3", "@x", "-2+3", "#N/A")
LEADS = "=+-@"
CENSUS = '=HYPERLINK("http://evil","census")'
POPULATION_FILE = '=HYPERLINK("evil.example","file").csv'  # no "/" in a file name
ACTOR = "=cmd|' /C calc'!A0"
DEFINITION = {
    "name": INDEX,
    "title": "=1+1",
    "unit_level": LEVEL,
    "indicators": [
        {
            "code": "theft_count",
            "name": '=HYPERLINK("http://evil","indicator")',
            "source": {"incidents": {"categories": ["theft"], "measure": "count"}},
        },
        {
            "code": "robbery_count",
            "name": "+1+1",
            "source": {"incidents": {"categories": ["robbery"], "measure": "count"}},
        },
        {
            "code": "burglary_count",
            "name": "@SUM(A1:A9)",
            "source": {"incidents": {"categories": ["burglary"], "measure": "count"}},
        },
    ],
}

FORMULA_LEADS = ("=", "+", "-", "@", "\t", "\r")
NUMBER = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")


def _unsafe(value: str) -> bool:
    """Would a spreadsheet read ``value`` as the start of a formula?"""
    return value.startswith(FORMULA_LEADS) and not NUMBER.fullmatch(value)


def _csv(response) -> list[dict[str, str]]:
    """The rows of a CSV download, after checking that no cell (header included) is
    formula-leading text."""
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/csv")
    lines = list(csv.reader(io.StringIO(response.text, newline="")))
    unsafe = [cell for line in lines for cell in line if _unsafe(cell)]
    assert not unsafe, unsafe
    header, *rows = lines
    return [dict(zip(header, row, strict=True)) for row in rows]


def _xlsx(response) -> dict[str, list[dict]]:
    """Each sheet of a workbook download as rows by header, after checking that no cell is
    a formula and no text cell is formula-leading."""
    assert response.status_code == 200, response.text
    assert response.headers["content-disposition"].startswith("attachment")
    book = load_workbook(io.BytesIO(response.content))
    sheets = {}
    for sheet in book.worksheets:
        cells = [cell for line in sheet.iter_rows() for cell in line]
        assert not [c.coordinate for c in cells if c.data_type == "f"], sheet.title
        unsafe = [c.value for c in cells if isinstance(c.value, str) and _unsafe(c.value)]
        assert not unsafe, (sheet.title, unsafe)
        header, *rows = sheet.iter_rows(values_only=True)
        sheets[sheet.title] = [dict(zip(header, row, strict=True)) for row in rows]
    return sheets


def _quoted(value: str) -> str:
    """``value`` as an export must write it: with a leading ``'`` if formula-leading."""
    return "'" + value if _unsafe(value) else value


# --- the hostile world ----------------------------------------------------------------------


def _level5() -> gpd.GeoDataFrame:
    """Boxes of a 6 x 9 grid over the country, clipped to it (about 40 units)."""
    country = gpd.read_file(BELIZE / "boundaries" / "belize_adm0_naturalearth_10m.geojson")
    outline = country.geometry.iloc[0]
    west, south, east, north = outline.bounds
    dx, dy = (east - west) / 6, (north - south) / 9
    pieces = [
        outline.intersection(box(west + i * dx, south + j * dy, west + (i + 1) * dx,
                                 south + (j + 1) * dy))
        for j in range(9)
        for i in range(6)
    ]  # fmt: skip
    pieces = [p for p in pieces if not p.is_empty and p.area > 0.001]
    return gpd.GeoDataFrame(
        {
            "code": [f"{LEADS[i % len(LEADS)]}X{i:02d}" for i in range(len(pieces))],
            "name": [NAMES[i % len(NAMES)] for i in range(len(pieces))],
        },
        geometry=pieces,
        crs=4326,
    )


@pytest.fixture(scope="module")
def world(base_data, client, keys, tmp_path_factory):
    """Incidents near the towns, a level 5 of hostile units, a population with a hostile
    source imported from a hostile file name by a hostile actor, and an index over level 5
    with a hostile title and indicator names."""
    folder = tmp_path_factory.mktemp("exports")
    incidents = write_incident_csv(folder / "incidents.csv", n=900, source=SOURCE, seed=14)
    assert import_csv(base_data, incidents).inserted == 900
    units = _level5()
    upload = client.post(
        "/boundaries",
        files={"file": ("hostile.geojson", units.to_json().encode())},
        data={"level": str(LEVEL), "code_field": "code", "name_field": "name"},
        headers=auth(keys["admin"]),
    )
    assert upload.status_code == 200, upload.text
    assert upload.json()["inserted"] == len(units)
    population = folder / POPULATION_FILE
    with population.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["unit_code", "year", "value", "source"])
        writer.writerows(
            [code, 2024, 5000 + 100 * i, CENSUS] for i, code in enumerate(units["code"])
        )
    report = call_service(base_data, lambda e: import_population(e, population, actor=ACTOR))
    assert report.inserted == len(units)
    posted = client.post("/indexes", json=DEFINITION, headers=auth(keys["admin"]))
    assert posted.status_code == 201, posted.text
    state = {"units": units, "runs": []}
    yield state

    async def cleanup(engine):
        async with engine.begin() as conn:
            await conn.execute(text("DELETE FROM index_definition WHERE code = :c"), {"c": INDEX})
            for run_id in state["runs"]:
                await conn.execute(text("DELETE FROM analysis_run WHERE id = :i"), {"i": run_id})
            await conn.execute(text("DELETE FROM incident WHERE source = :s"), {"s": SOURCE})
            await conn.execute(text("DELETE FROM admin_unit WHERE level = :l"), {"l": LEVEL})
            for statement in units_sql.assign_incident_units():
                await conn.execute(statement, {"tolerance_m": base_data.territory.tolerance_m})

    call_service(base_data, cleanup)


# --- imports ----------------------------------------------------------------------------------

REJECTED = (
    # (source_id, category, longitude, latitude, victim_sex, the "=bad" column)
    ('=HYPERLINK("http://x","y")', "jaywalking", "-88.77", "17.25", "female", "plain"),
    ("cmd", '=cmd|"/c calc"!A1', "-88.77", "17.25", "female", "plain"),
    ("plus", "theft", "+3+3", "17.25", "female", "plain"),
    ("at", "theft", "-88.77", "17.25", "@x", "plain"),
    ("minus", "theft", "-88.77", "-2+3", "female", "plain"),
    ("tab", "jaywalking", "-88.77", "17.25", "female", "\t=1+1"),
)


def test_rejected_rows_csv_neutralises_values_and_headers(client, keys, world):
    editor = auth(keys["editor"])
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["source", "source_id", "category", "occurred_at", "longitude", "latitude",
                     "victim_sex", "=bad"])  # fmt: skip
    for sid, category, lon, lat, sex, bad in REJECTED:
        writer.writerow([SOURCE, sid, category, "2024-01-01 12:00", lon, lat, sex, bad])
    response = client.post(
        "/imports",
        files={"file": ("hostile.csv", out.getvalue().encode(), "text/csv")},
        headers=editor,
    )
    assert response.status_code == 201, response.text
    report = response.json()
    assert report["rejected"] == len(REJECTED)
    # The JSON report keeps the values exactly as received: only the files are escaped.
    raw = {r["raw"]["source_id"]: r["raw"] for r in report["rejections"]}
    assert raw["cmd"]["category"] == '=cmd|"/c calc"!A1'

    download = client.get(f"/imports/{report['id']}/rejections.csv", headers=editor)
    rows = _csv(download)
    assert len(rows) == len(REJECTED)
    assert "'=bad" in rows[0]
    by_id = {r["source_id"]: r for r in rows}
    assert _quoted('=HYPERLINK("http://x","y")') in by_id
    assert by_id["cmd"]["category"] == _quoted('=cmd|"/c calc"!A1')
    assert by_id["plus"]["longitude"] == "'+3+3"
    assert by_id["at"]["victim_sex"] == "'@x"
    assert by_id["minus"]["latitude"] == "'-2+3"
    assert by_id["tab"]["'=bad"] == "'\t=1+1"
    # A number read as text from the file stays as it was, unquoted.
    assert by_id["cmd"]["longitude"] == "-88.77"
    assert re.search(r"^\d+,cmd,.*,17\.25,-88\.77,", download.text, re.M)


# --- statistics -------------------------------------------------------------------------------


def test_stats_csv_neutralises_unit_names_codes_and_sources(client, keys, world):
    response = client.get(
        "/stats",
        params={"level": LEVEL, "source": SOURCE, "period": "2024", "format": "csv"},
        headers=auth(keys["analyst"]),
    )
    rows = _csv(response)
    units = world["units"]
    assert {r["unit_code"] for r in rows} == {_quoted(c) for c in units["code"]}
    assert {r["unit_name"] for r in rows} == {_quoted(n) for n in NAMES}
    assert {r["population_source"] for r in rows} == {_quoted(CENSUS)}
    assert {r["unit_level"] for r in rows} == {"5"}
    counted = [r for r in rows if int(r["count"]) > 0]
    assert counted and all(float(r["rate"]) > 0 for r in counted)


# --- indexes and rankings ---------------------------------------------------------------------


def _index(client, key, route, **params):
    if route == "results":
        return client.get(
            f"/indexes/{INDEX}/results", params={"period": "2024", **params}, headers=auth(key)
        )
    return client.get(
        "/rankings", params={"index": INDEX, "period": "2024", "runs": 50, **params},
        headers=auth(key),
    )  # fmt: skip


@pytest.mark.parametrize("route", ["results", "rankings"])
def test_index_csv_neutralises_unit_and_indicator_names(client, keys, world, route):
    rows = _csv(_index(client, keys["analyst"], route, format="csv"))
    units = world["units"]
    assert len(rows) == len(units)
    assert {r["unit_name"] for r in rows} == {_quoted(n) for n in NAMES}
    assert {r["unit_code"] for r in rows} == {_quoted(c) for c in units["code"]}
    assert all(0 <= float(r["score"]) <= 100 for r in rows)
    if route == "rankings":
        # Empty where a unit has fewer than 3 contributions above 0 (zeros are not listed).
        named = {r[f"top{n}_indicator"] for r in rows for n in (1, 2, 3)} - {""}
        names = {_quoted(i["name"]) for i in DEFINITION["indicators"]}
        assert named == names


@pytest.mark.parametrize("route", ["results", "rankings"])
def test_index_xlsx_has_text_cells_not_formulas(client, keys, world, route):
    response = _index(client, keys["analyst"], route, format="xlsx")
    sheets = _xlsx(response)
    book = load_workbook(io.BytesIO(response.content))
    header = [c.value for c in book["rows"][1]]
    rows = sheets["rows"]
    assert len(rows) == len(world["units"])
    assert {r["unit_name"] for r in rows} == {_quoted(n) for n in NAMES}
    # Numbers are number cells: scores, ranks and (negative) rank changes.
    for name in ("score", "rank", "rank_change"):
        column = book["rows"][1][header.index(name)].column_letter
        cells = book["rows"][column][1:]
        assert all(c.data_type == "n" and isinstance(c.value, int | float) for c in cells)
    assert any(r["rank_change"] < 0 for r in rows)
    about = {line["item"]: line["value"] for line in sheets["about"]}
    assert about["index"] == INDEX and about["title"] == "'=1+1"
    if route == "rankings":
        named = {r[f"top{n}_indicator"] for r in rows for n in (1, 2, 3)} - {None, ""}
        assert named == {_quoted(i["name"]) for i in DEFINITION["indicators"]}


# --- audit ------------------------------------------------------------------------------------


def test_audit_csv_neutralises_actor_and_entity_id(client, keys, world):
    rows = _csv(
        client.get(
            "/audit", params={"entity": "population", "format": "csv"}, headers=auth(keys["admin"])
        )
    )
    mine = [r for r in rows if r["entity_id"] == _quoted(POPULATION_FILE)]
    assert len(mine) == 1
    assert mine[0]["actor"] == _quoted(ACTOR) and mine[0]["action"] == "import"
    assert mine[0]["after"].startswith("{")  # JSON text, as before


# --- analyses ---------------------------------------------------------------------------------


def test_analysis_csv_neutralises_unit_codes_and_keeps_numbers(client, keys, world):
    analyst = auth(keys["analyst"])
    body = {
        "method": "gi_star",
        "units": {"type": "admin", "level": LEVEL},
        "weights": {"type": "knn", "k": 5},
        "filters": {"sources": [SOURCE]},
    }
    response = client.post("/analyses/hotspots", json=body, headers=analyst)
    assert response.status_code in (201, 202), response.text
    url, deadline = response.headers["location"], time.monotonic() + 300
    while (layer := client.get(url, headers=analyst)).status_code == 202:
        assert time.monotonic() < deadline, "the analysis never finished"
        time.sleep(0.2)
    assert layer.status_code == 200, layer.text
    world["runs"].append(layer.json()["run"]["id"])

    download = client.get(url, params={"format": "csv"}, headers=analyst)
    rows = _csv(download)
    assert {r["cell_id"] for r in rows} == {_quoted(c) for c in world["units"]["code"]}
    # Longitudes are negative numbers, written as numbers (unquoted, no leading ').
    assert all(-89.3 < float(r["longitude"]) < -87.7 for r in rows)
    assert re.search(r",-8[89]\.\d+,1[5-8]\.\d+,", download.text)
    assert any(float(r["z"]) < 0 for r in rows)
