"""The privacy matrix (issue 7, point 1): every output reachable without a key or with a
viewer key, checked for point locations, victim attributes, small or sensitive counts and
withheld cells recomputable from the other cells of their line.

Every GET route of the app is classified below (public, or the least role it needs), and
every public collection of ``/collections`` is walked, so a new route or layer cannot
escape the matrix. The data: a small known set under its own source, in two districts,
with counts of 1-4 and sensitive categories, and two Gi* runs on it (one over every
category, one over the sensitive ones only), so that hot spot layers exist.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import math
import re
import time
import zipfile
from collections import defaultdict
from datetime import date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import geopandas as gpd
import mapbox_vector_tile
import openpyxl
import psycopg
import pytest
from starlette.routing import Mount

from app.demo.incidents import generate_incidents
from app.services.disclosure import NOISE, THRESHOLD
from app.services.imports import import_frame
from app.services.incident_rows import ReadOptions
from app.services.indexes import load_default_definitions
from app.services.tables import load_demo_population
from tests.conftest import BELIZE, auth, call_service
from tests.integration.helpers import import_csv

SOURCE = "privacy-matrix"
SENSITIVE = {"domestic_violence", "sexual_violence", "suicide"}
BROWSER = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
# district -> anchor (lon, lat) and how many incidents of each category lie around it.
SEED = {
    "BZ-CY": (
        (-89.0691, 17.1588),
        {
            "theft": 12,
            "shooting": 5,
            "burglary": 7,
            "robbery": 3,
            "homicide": 1,
            "assault": 4,
            "sexual_violence": 6,
            "domestic_violence": 2,
        },
    ),
    "BZ-OW": (
        (-88.5633, 18.0812),
        {
            "theft": 9,
            "shooting": 2,
            "burglary": 5,
            "robbery": 8,
            "homicide": 2,
            "assault": 6,
            "sexual_violence": 1,
        },
    ),
}
# One small count in every other district, so that every index indicator is defined.
SEED |= {
    "BZ-BZ": ((-88.1962, 17.5046), {"theft": 2, "domestic_violence": 1}),
    "BZ-CZL": ((-88.3933, 18.3937), {"theft": 1}),
    "BZ-SC": ((-88.2267, 16.9691), {"burglary": 3}),
    "BZ-TOL": ((-88.8083, 16.0989), {"assault": 1}),
}
ROLES_BELOW_ANALYST = ("none", "viewer")
CATEGORIES = Path(__file__).parents[2] / "app" / "data" / "categories.csv"
GROUPS = {r["code"]: r["category_group"] for r in csv.DictReader(CATEGORIES.open())}
SENSITIVE_GROUPS = {GROUPS[c] for c in SENSITIVE}

# Every GET route of the app: "public" (checked by the matrix) or the least role it needs.
ROUTES = {
    "/": "public",
    "/api": "public",
    "/openapi.json": "public",
    "/docs": "public",
    "/docs/oauth2-redirect": "public",
    "/redoc": "public",
    "/conformance": "public",
    "/health": "public",
    "/ready": "public",
    "/metrics": "public",
    "/map": "public",
    "/units": "public",
    "/units/{code}": "public",
    "/categories": "public",
    "/fonts/{fontstack}/{glyph_range}.pbf": "public",  # DejaVu Sans glyphs for map labels
    "/labels.geojson": "public",  # district and town names (no incident data)
    "/stats": "public",
    "/indexes": "public",
    "/indexes/{code}": "public",
    "/indexes/{code}/periods": "public",
    "/rankings": "public",
    "/collections": "public",
    "/collections/{collection_id}": "public",
    "/collections/{collection_id}/queryables": "public",
    "/collections/{collection_id}/items": "public",
    "/collections/{collection_id}/items/{feature_id}": "public",
    "/collections/{collection_id}/tiles": "public",
    "/collections/{collection_id}/tiles/WebMercatorQuad/{z}/{y}/{x}": "public",
    "/collections/{collection_id}/styles": "public",
    "/tiles/{layer_id}/{z}/{x}/{y}.mvt": "public",
    "/tiles/{layer_id}.json": "public",
    "/styles/default.json": "public",
    "/styles/{layer_id}.qml": "public",
    "/styles/{layer_id}.sld": "public",
    "/qgis/project.qgz": "public",
    # Early warning (issue 19): sensitive monitors and their alerts are analysts' only;
    # public alerts withhold counts below privacy.min_count (tests/integration/test_monitors.py).
    "/monitors": "public",
    "/monitors/{code}": "public",
    "/alerts": "public",
    "/alerts/{alert_id}": "public",
    # The periodic report (issue 20): public reports for anyone, analyst reports answered
    # 404 below analyst (test_analyst_reports_are_not_told_below_analyst); the files route
    # first, so that _template_of files /reports/1.zip under it.
    "/reports/{report_id}.{fmt}": "public",
    "/reports/{report_id}": "public",
    "/reports": "public",
    "/reports/definitions": "public",
    "/incidents": "analyst",
    "/incidents/{incident_id}": "analyst",
    "/analyses": "analyst",
    "/analyses/{run_id:int}": "analyst",
    "/analyses/kde.tif": "analyst",
    "/analyses/kde/areas": "analyst",
    "/analyses/evaluations/{run_id:int}": "analyst",
    "/analyses/runs/{run_id:int}/kde.tif": "analyst",
    "/analyses/runs/{run_id:int}/areas": "analyst",
    "/indexes/{code}/results": "analyst",
    "/indexes/{code}/sensitivity": "analyst",
    "/indexes/{code}/sensitivity/runs/{run_id:int}": "analyst",
    "/imports": "editor",
    "/imports/{batch_id}": "editor",
    "/imports/{batch_id}/rejections.csv": "editor",
    "/keys": "admin",
    "/audit": "admin",
    "/jobs": "admin",
    "/schedules": "admin",
    # Deaths from three agencies (issue 21): the register and the scorecard for analysts
    # (no identifier: tests/integration/test_linkage.py greps them for names), the pairs
    # under review (both records, names included) for the linker role and admins only.
    "/deaths": "analyst",
    "/deaths/discrepancies": "analyst",
    "/deaths/summary": "analyst",
    "/quality": "analyst",
    "/quality/chart.svg": "analyst",
    "/linkage/runs/{run_id}": "analyst",
    "/linkage/pairs": "linker",
}


def _get_routes(app) -> set[str]:
    """Every GET path template the app serves (included routers unfolded)."""
    out = set()
    for route in app.routes:
        contexts = getattr(route, "effective_route_contexts", None)
        if contexts is not None:
            items = contexts() if callable(contexts) else contexts
            out |= {c.path for c in items if "GET" in (c.methods or ())}
        elif isinstance(route, Mount):
            continue  # /static: the page's own files, checked with the pages
        elif "GET" in (getattr(route, "methods", None) or ()):
            out.add(route.path)
    return out


def tile_of(lon: float, lat: float, z: int) -> tuple[int, int, int]:
    n = 2**z
    x = int((lon + 180) / 360 * n)
    y = int((1 - math.asinh(math.tan(math.radians(lat))) / math.pi) / 2 * n)
    return z, x, y


# --- the data -------------------------------------------------------------------------------


def _seed_rows() -> list[dict]:
    rows, i = [], 0
    for unit, ((lon0, lat0), mix) in SEED.items():
        j = 0
        for category, n in mix.items():
            for _ in range(n):
                i, j = i + 1, j + 1
                sensitive = category in SENSITIVE
                rows.append(
                    {
                        "unit": unit,
                        "source_id": f"pmx-{i:04d}",
                        "category": category,
                        "occurred_at": f"2024-{1 + i % 12:02d}-{1 + i % 27:02d} 10:{i % 60:02d}",
                        # Inland of the town, with unusual decimals so any copy is found.
                        "longitude": round(lon0 - 0.000731 * j - 0.0000037 - 1e-6 * i, 6),
                        "latitude": round(lat0 + 0.000517 * j + 0.0000041, 6),
                        "victim_sex": "female" if sensitive else ("female", "male")[i % 2],
                        "victim_age": (15, 34)[i % 2] if sensitive else 17 + (i * 7) % 60,
                    }
                )
    return rows


ROWS = _seed_rows()


def _poll(client, key, response):
    assert response.status_code in (201, 202), response.text
    url, deadline = response.headers["location"], time.monotonic() + 300
    while (layer := client.get(url, headers=auth(key))).status_code == 202:
        assert time.monotonic() < deadline, "the analysis never finished"
        time.sleep(0.2)
    assert layer.status_code == 200, layer.text
    return layer.json()


@pytest.fixture(scope="module")
def world(base_data, client, keys, tmp_path_factory):
    """The seeded incidents, the census, the index definitions and two hot spot runs."""
    call_service(base_data, lambda e: load_demo_population(e, actor="tests"))
    call_service(base_data, lambda e: load_default_definitions(e, actor="tests"))
    path = Path(tmp_path_factory.mktemp("privacy")) / "seed.csv"
    columns = ["source", "source_id", "category", "occurred_at", "longitude", "latitude"]
    columns += ["victim_sex", "victim_age"]
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows({"source": SOURCE, **r} for r in ROWS)
    report = import_csv(base_data, path)
    assert report.inserted == len(ROWS) and report.rejected == 0
    analyst = keys["analyst"]
    incidents = client.get(
        "/incidents", params={"source": SOURCE, "limit": 1000}, headers=auth(analyst)
    ).json()["features"]
    assert len(incidents) == len(ROWS)
    runs = {}
    # A run over every category and one over the sensitive ones are for analysts only; one
    # over non-sensitive categories is published (its classes, never its statistics).
    public = ["theft", "burglary", "robbery", "assault", "homicide"]
    for name, categories in (("all", None), ("sensitive", sorted(SENSITIVE)), ("public", public)):
        filters = {"sources": [SOURCE], "occurred_from": "2024-01-01T00:00:00-06:00"}
        if categories:
            filters["categories"] = categories
        body = {"method": "gi_star", "units": {"type": "grid", "cell_size_m": 10_000}}
        response = client.post(
            "/analyses/hotspots", json={**body, "filters": filters}, headers=auth(analyst)
        )
        runs[name] = _poll(client, analyst, response)
        assert runs[name]["run"]["status"] == "completed"
    _seed_alerts(base_data)
    reports = {a: _build_report(client, analyst, f"quarterly-{a}") for a in ("public", "analyst")}
    return {"incident_ids": [f["id"] for f in incidents], "runs": runs, "reports": reports}


def _build_report(client, analyst: str, definition: str) -> int:
    """The report of ``definition`` for 2024Q4 (built by the session's worker); its id."""
    body = {"definition": definition, "period": "2024Q4"}
    response = client.post("/reports", json=body, headers=auth(analyst))
    assert response.status_code in (200, 201, 202), response.text
    if response.status_code != 202:
        return response.json()["id"]
    deadline = time.monotonic() + 300
    while (run := client.get(response.headers["location"], headers=auth(analyst)).json())[
        "status"
    ] == "running":
        assert time.monotonic() < deadline, "the report was never built"
        time.sleep(0.5)
    assert run["status"] == "completed", run.get("message")
    return run["summary"]["report_id"]


def _seed_alerts(settings) -> None:
    """The shipped monitors and two alerts with small counts, one of a sensitive monitor
    (early warning, issue 19: the public sees neither the small counts nor that alert)."""
    from app.services.monitors import load_default_definitions as load_monitors

    call_service(settings, lambda e: load_monitors(e, actor="tests"))
    series = json.dumps(
        [{"period": "2024-11", "observed": 1, "expected": 0.4, "threshold": 2, "alarm": False},
         {"period": "2024-12", "observed": 3, "expected": 0.5, "threshold": 2, "alarm": True}]
    )  # fmt: skip
    with psycopg.connect(settings.libpq_url, autocommit=True) as conn:
        for monitor, sensitive in (("homicides-shootings-district-monthly", False),
                                   ("violence-against-women-district-monthly", True)):  # fmt: skip
            conn.execute(
                "INSERT INTO alert (monitor, monitor_version, sensitive, place_kind, unit_code, "
                "first_period, period, period_start, observed, expected, threshold, lasted, "
                "detail, series) VALUES (%s, 1, %s, 'unit', 'BZ-CY', '2024-12', '2024-12', "
                "'2024-12-01T00:00:00-06:00', 3, 0.5, 2, 1, '[]', %s)",
                [monitor, sensitive, series],
            )


def _key(keys, role):
    return None if role == "none" else keys[role]


# --- what a leak looks like -----------------------------------------------------------------


def _coordinate_marks() -> list[tuple[str, str]]:
    """Each seeded point as the first 5 decimals of its longitude and latitude."""

    def cut(v: float) -> str:
        text = f"{v:.6f}"
        return text[: text.index(".") + 6]

    return [(cut(r["longitude"]), cut(r["latitude"])) for r in ROWS]


MARKS = _coordinate_marks()
SOURCE_IDS = [r["source_id"] for r in ROWS]


def _pair_in(text: str, lon: str, lat: str) -> bool:
    """Whether a seeded point is written as a coordinate pair, in either order (EPSG:4326
    puts the latitude first). Both halves alone occur by chance in a large layer."""
    if lon not in text or lat not in text:
        return False
    gap = r"\d*[\],\s\"';]+"
    return bool(
        re.search(re.escape(lon) + gap + re.escape(lat), text)
        or re.search(re.escape(lat) + gap + re.escape(lon), text)
    )


def _text_leaks(text: str, secrets: list[str]) -> list[str]:
    found = [f"coordinates {lon},{lat}" for lon, lat in MARKS if _pair_in(text, lon, lat)]
    found += [f"source_id {s}" for s in SOURCE_IDS if re.search(rf"\b{s}\b", text)]
    found += ["an API key" for s in secrets if s in text]
    return found


def _walk(value, path="$"):
    if isinstance(value, dict):
        yield path, value
        for k, v in value.items():
            yield from _walk(v, f"{path}.{k}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _walk(v, f"{path}[{i}]")


def _json_leaks(
    doc, *, hotspot: bool = False, aggregate_sex: bool = False, places: bool = False
) -> list[str]:
    """Point geometries (unless the answer is of ``places``, towns to label: the seeded
    incidents' coordinates are still looked for in its text), victim attributes, small
    counts (any count for hot spot cells)."""
    found = []
    for path, d in _walk(doc):
        if d.get("type") in ("Point", "MultiPoint") and "coordinates" in d and not places:
            found.append(f"{path}: point geometry")
        # A value (not a schema, a filter list or a definition) of an incident's field.
        for name in ("victim_age", "source_id", "victim_sex"):
            value = d.get(name)
            if name == "victim_sex" and aggregate_sex:
                continue
            if value is not None and not isinstance(value, (dict, list)):
                found.append(f"{path}: {name} {value!r}")
        count = d.get("count")
        number = isinstance(count, (int, float)) and not isinstance(count, bool)
        if number and (hotspot or count < THRESHOLD):
            found.append(f"{path}: count {count}")
        observed = d.get("observed")  # an alert's count (early warning)
        small = isinstance(observed, (int, float)) and not isinstance(observed, bool)
        if small and observed < THRESHOLD:
            found.append(f"{path}: observed {observed}")
        if hotspot and d.get("stats") is not None:
            found.append(f"{path}: cell stats")
    return found


def _csv_rows(text: str) -> list[dict]:
    return list(csv.DictReader(io.StringIO(text)))


def _xlsx_rows(content: bytes) -> list[dict]:
    book = openpyxl.load_workbook(io.BytesIO(content), read_only=True)
    out = []
    for sheet in book.worksheets:
        rows = list(sheet.iter_rows(values_only=True))
        if rows:
            header = [str(h) for h in rows[0]]
            out += [dict(zip(header, r, strict=False)) for r in rows[1:]]
    return out


def check_response(
    response, secrets, *, hotspot=False, aggregate_sex=False, places=False
) -> list[str]:
    """Every leak in one public response, whatever its format."""
    kind = response.headers.get("content-type", "")
    if "zip" in kind or response.content[:2] == b"PK":
        with zipfile.ZipFile(io.BytesIO(response.content)) as archive:
            if any(n.startswith("xl/") for n in archive.namelist()):
                rows = _xlsx_rows(response.content)
                return _json_leaks(rows, aggregate_sex=aggregate_sex) + _text_leaks(
                    json.dumps(rows, default=str), secrets
                )
            # A bundle (the periodic report's): its workbooks are read cell by cell.
            books = [archive.read(n) for n in archive.namelist() if n.endswith(".xlsx")]
            texts = [
                archive.read(n).decode("utf-8", "replace")
                for n in archive.namelist()
                if not n.endswith((".xlsx", ".pdf"))
            ]
        found = []
        for book in books:
            rows = _xlsx_rows(book)
            found += _json_leaks(rows, aggregate_sex=aggregate_sex)
            found += _text_leaks(json.dumps(rows, default=str), secrets)
        for text in texts:
            found += _text_leaks(text, secrets)
            if re.search(r"typename=.?incidents\b|tiles/incidents|incidents_oapif", text):
                found.append("incidents layer in the project")
            if "obs_" in text:
                found.append("a key in the project")
        return found
    if "vnd.mapbox-vector-tile" in kind:
        return _tile_leaks(response.content, hotspot=hotspot)
    text = response.text
    found = _text_leaks(text, secrets)
    if "json" in kind:
        found += _json_leaks(
            response.json(), hotspot=hotspot, aggregate_sex=aggregate_sex, places=places
        )
    elif "csv" in kind:
        found += _json_leaks(_csv_rows(text), hotspot=hotspot, aggregate_sex=aggregate_sex)
    return found


def _tile_leaks(content: bytes, *, hotspot: bool) -> list[str]:
    found = []
    tile = mapbox_vector_tile.decode(content) if content else {}
    for name, layer in tile.items():
        if name == "incidents":
            found.append("incidents layer in a public tile")
        for feature in layer["features"]:
            if feature["geometry"]["type"] in ("Point", "MultiPoint"):
                found.append(f"{name}: point geometry")
            props = feature["properties"]
            for field in ("victim_age", "victim_sex", "source_id"):
                if field in props:
                    found.append(f"{name}: {field}")
            count = props.get("count")
            if count is not None and (hotspot or count < THRESHOLD):
                found.append(f"{name}: count {count}")
    return found


# --- the routes are all classified -----------------------------------------------------------


def test_every_get_route_is_classified(client):
    routes = _get_routes(client.app)
    assert routes, "no route found: the walk over app.routes is broken"
    assert routes - ROUTES.keys() == set(), "classify these routes in ROUTES"
    assert ROUTES.keys() - routes == set(), "these classified routes no longer exist"


RESTRICTED = [
    ("/incidents", {}),
    ("/incidents/{incident}", {}),
    ("/analyses", {}),
    ("/analyses/{run}", {}),
    ("/analyses/{run}", {"format": "csv"}),
    ("/analyses/kde.tif", {"cell_size_m": 1000, "bandwidth_m": 2000}),
    ("/analyses/kde/areas", {"cell_size_m": 1000, "bandwidth_m": 2000}),
    ("/analyses/evaluations/{run}", {}),
    ("/analyses/runs/{run}/kde.tif", {}),
    ("/analyses/runs/{run}/areas", {}),
    ("/indexes/territorial-violence/results", {"period": "2024"}),
    ("/indexes/territorial-violence/sensitivity", {"period": "2024", "runs": 10}),
    ("/indexes/territorial-violence/sensitivity/runs/{run}", {}),
    ("/imports", {}),
    ("/imports/1", {}),
    ("/imports/1/rejections.csv", {}),
    ("/keys", {}),
    ("/audit", {}),
    ("/jobs", {}),
    ("/schedules", {}),
    ("/deaths", {"period": "2024"}),
    ("/deaths/discrepancies", {"period": "2024"}),
    ("/deaths/summary", {}),
    ("/quality", {"period": "2024-Q3"}),
    ("/quality/chart.svg", {"period": "2024-Q3"}),
    ("/linkage/runs/{run}", {}),
    ("/linkage/pairs", {"band": "uncertain"}),
    ("/collections/incidents", {}),
    ("/collections/incidents/items", {"source": SOURCE}),
    ("/collections/incidents/items/{incident}", {}),
    ("/collections/incidents/queryables", {}),
    ("/tiles/incidents/6/{x6}/{y6}.mvt", {}),
    # Low zooms read the precomputed cells for these filters (issue 22): same refusal.
    ("/tiles/incidents/6/{x6}/{y6}.mvt", {"category": "homicide"}),
    ("/tiles/incidents/6/{x6}/{y6}.mvt", {"occurred_from": "2024-01-01"}),
    ("/collections/incidents/tiles/WebMercatorQuad/6/{y6}/{x6}", {}),
    ("/tiles/incidents.json", {}),
]


def _template_of(url: str) -> str:
    """The route template a concrete path is served by (a literal route wins)."""
    path = url.split("?")[0]
    if path in ROUTES:
        return path
    for template in ROUTES:
        parts = re.split(r"(\{[^}]+\})", template)
        pattern = "".join(
            (r"\d+" if p.endswith(":int}") else "[^/]+") if p.startswith("{") else re.escape(p)
            for p in parts
        )
        if re.fullmatch(pattern, path):
            return template
    raise AssertionError(f"{url} matches no route")


def test_restricted_outputs_refuse_anonymous_and_viewer(client, keys, world):
    _, x6, y6 = tile_of(*SEED["BZ-CY"][0], 6)
    values = {"incident": world["incident_ids"][0], "run": world["runs"]["all"]["run"]["id"]}
    values |= {"x6": x6, "y6": y6}
    covered = set()
    for template, params in RESTRICTED:
        url = template.format(**values)
        covered.add(_template_of(url))
        anonymous = client.get(url, params=params)
        assert anonymous.status_code == 401, (url, anonymous.status_code, anonymous.text[:200])
        viewer = client.get(url, params=params, headers=auth(keys["viewer"]))
        assert viewer.status_code == 403, (url, viewer.status_code, viewer.text[:200])
        for response in (anonymous, viewer):
            assert not _text_leaks(response.text, list(keys.values())), url
    restricted = {t for t, role in ROUTES.items() if role != "public"}
    assert restricted <= covered, f"not checked: {restricted - covered}"


# --- the public outputs ---------------------------------------------------------------------


def _public_requests(client, key, world) -> list[tuple[str, dict, dict, dict]]:
    """(url, params, headers, check options) for every public output for this key."""
    headers = auth(key)
    reqs: list[tuple[str, dict, dict, dict]] = []
    add = reqs.append
    for path in ("/", "/api", "/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc"):
        add((path, {}, {}, {}))
    for path in ("/conformance", "/health", "/ready", "/metrics", "/styles/default.json"):
        add((path, {}, {}, {}))
    add(("/map", {}, {"Accept": BROWSER}, {}))
    add(("/rankings", {}, {"Accept": BROWSER}, {}))
    add(("/units", {"level": 1}, {}, {}))
    add(("/units", {"level": 0}, {}, {}))
    add(("/units/BZ-CY", {}, {}, {}))
    add(("/units/BZ-OW", {}, {}, {}))
    add(("/categories", {}, {}, {}))
    add(("/labels.geojson", {}, {}, {"places": True}))  # towns and district centres
    add(("/fonts/DejaVu Sans/0-255.pbf", {}, {}, {}))
    # Index definitions select incidents by victim_sex: a filter, not a victim's value.
    definition = {"aggregate_sex": True}
    add(("/indexes", {}, {}, definition))
    for code in ("territorial-violence", "violence-against-women"):
        add((f"/indexes/{code}", {}, {}, definition))
        add((f"/indexes/{code}/periods", {}, {}, {}))
        for fmt in ("json", "csv", "xlsx"):
            params = {"index": code, "period": "2024", "format": fmt}
            add(("/rankings", params, {}, {"index": True}))
    stats = {"aggregate_sex": True}
    for params in _stats_variants():
        add(("/stats", params, {}, stats))
        add(("/stats", {**params, "format": "csv"}, {}, stats))
    add(("/qgis/project.qgz", {}, {}, {}))
    add(("/qgis/project.qgz", {"embed_key": "false"}, {}, {}))
    # Early warning: monitors select incidents by victim_sex (a filter, as indexes do);
    # alerts of sensitive monitors are not listed, observed counts below the threshold
    # are withheld (_json_leaks: observed).
    add(("/monitors", {}, {}, definition))
    # The periodic report: the public one's metadata and files (its tables are /stats's
    # public answers; victims by sex are aggregates, as in /stats).
    add(("/reports", {}, {}, {"aggregate_sex": True}))
    add(("/reports/definitions", {}, {}, definition))
    for suffix in ("", ".zip", ".html", ".pdf"):
        add((f"/reports/{world['reports']['public']}{suffix}", {}, {}, {"aggregate_sex": True}))
    monitors = client.get("/monitors", headers=headers).json()["items"]
    assert monitors and not any(m["sensitive"] for m in monitors)
    for m in monitors:
        add((f"/monitors/{m['code']}", {}, {}, definition))
    add(("/alerts", {}, {}, {}))
    alerts = client.get("/alerts", headers=headers).json()["items"]
    assert alerts and not any(a["sensitive"] for a in alerts)
    for a in alerts[:5]:
        add((f"/alerts/{a['id']}", {}, {}, {}))
    add(("/collections", {}, {}, {}))
    collections = client.get("/collections", headers=headers).json()["collections"]
    ids = [c["id"] for c in collections]
    assert "incidents" not in ids
    run_ids = {name: f"hotspots-{r['run']['id']}" for name, r in world["runs"].items()}
    assert run_ids["public"] in ids, "the public hot spot run is not listed"
    assert run_ids["all"] not in ids and run_ids["sensitive"] not in ids
    assert {"units-0", "units-1"} <= set(ids)
    anchors = [anchor for anchor, _ in SEED.values()]
    for cid in ids:
        hot = {"hotspot": cid.startswith("hotspots-")}
        add((f"/collections/{cid}", {}, {}, {}))
        add((f"/collections/{cid}/queryables", {}, {}, {}))
        add((f"/collections/{cid}/tiles", {}, {}, {}))
        add((f"/collections/{cid}/styles", {}, {}, {}))
        add((f"/collections/{cid}/items", {"limit": 10_000}, {}, hot))
        add((f"/tiles/{cid}.json", {}, {}, {}))
        add((f"/styles/{cid}.qml", {}, {}, {}))
        add((f"/styles/{cid}.sld", {}, {}, {}))
        for anchor in anchors:
            for z in (6, 10, 14):
                _, x, y = tile_of(*anchor, z)
                add((f"/tiles/{cid}/{z}/{x}/{y}.mvt", {}, {}, hot))
            _, x, y = tile_of(*anchor, 10)
            add((f"/collections/{cid}/tiles/WebMercatorQuad/10/{y}/{x}", {}, {}, hot))
    # One feature of each collection, by its id.
    for cid in ids:
        page = client.get(f"/collections/{cid}/items", params={"limit": 1}, headers=headers)
        assert page.status_code == 200, (cid, page.text[:200])
        for feature in page.json()["features"]:
            hot = {"hotspot": cid.startswith("hotspots-")}
            add((f"/collections/{cid}/items/{feature['id']}", {}, {}, hot))
    return reqs


def _stats_variants() -> list[dict]:
    """Public tables across the lattice (app.services.lattice): no source filter, so they
    count every module's incidents; the analyst's table of the same query is the truth."""
    year = {"period": "2024"}
    return [
        {**year, "by": "category"},
        {**year, "by": ["category", "victim_sex"]},
        {**year, "by": ["category", "age_group"]},
        {**year, "by": "category_group"},
        {**year, "by": "victim_sex"},
        {**year, "by": "victim_sex", "category": "theft"},
        {**year, "by": "age_group", "category": "assault", "victim_sex": "female"},
        {**year},
        {**year, "level": 0, "by": "category"},
        {**year, "unit": ["BZ-CY", "BZ-OW"], "by": "category"},
        {"period": "2024-Q2", "by": "category", "age_min": 15, "age_max": 29},
        {
            "period": "month",
            "by": ["period", "category"],
            "occurred_from": "2024-01-01",
            "occurred_to": "2025-01-01",
        },
    ]


@pytest.mark.parametrize("role", ROLES_BELOW_ANALYST)
def test_public_outputs_leak_nothing(client, keys, world, role):
    key = _key(keys, role)
    secrets = list(keys.values())
    reqs = _public_requests(client, key, world)
    covered = {_template_of(url) for url, *_ in reqs}
    public = {t for t, r in ROUTES.items() if r == "public"}
    assert public <= covered, f"public routes outside the matrix: {public - covered}"
    leaks, rankings = [], 0
    for url, params, headers, options in reqs:
        response = client.get(url, params=params, headers={**auth(key), **headers})
        if options.pop("index", False):
            # Other modules' incidents of the same year can leave an indicator constant
            # (EB shrinks every district to one rate): then the index has no result at all.
            if response.status_code == 422 and "is constant" in response.json()["detail"]:
                continue
            rankings += 1
        assert response.status_code == 200, (url, params, response.status_code, response.text)
        for leak in check_response(response, secrets, **options):
            leaks.append(f"GET {url} {params} [{role}]: {leak}")
    assert not leaks, "\n".join(leaks[:40])
    assert rankings >= 3, "no index ranking could be checked"


# --- stats: suppression and lines, checked cell by cell against the analyst's table ---------


def _dims(rows: list[dict]) -> list[str]:
    values = {"count", "population", "population_source", "rate", "rate_eb_global"}
    values |= {"rate_eb_spatial", "rse", "unstable", "suppressed", "unit_name", "unit_level"}
    values |= {"denominator", "denominator_source", "category_group"}
    keys_ = [k for k in rows[0] if k not in values]
    if "category" not in keys_ and "category_group" in rows[0]:
        keys_.append("category_group")
    return keys_


@pytest.mark.parametrize("role", ROLES_BELOW_ANALYST)
@pytest.mark.parametrize("variant", range(len(_stats_variants())))
def test_stats_withhold_small_sensitive_and_recomputable_cells(client, keys, world, role, variant):
    params = _stats_variants()[variant]
    full = client.get("/stats", params=params, headers=auth(keys["analyst"])).json()
    body = client.get("/stats", params=params, headers=auth(_key(keys, role))).json()
    lines = _csv_rows(client.get("/stats", params={**params, "format": "csv"}).text)
    rows = body["rows"]
    assert rows and len(rows) == len(full["rows"]) == len(lines)
    dims = _dims(rows)
    assert "unit_code" in dims
    analyst = {tuple(r.get(d) for d in dims): r for r in full["rows"]}
    categories = set(params.get("category", "").split(",")) - {""}
    for row, line in zip(rows, lines, strict=True):
        truth = analyst[tuple(row.get(d) for d in dims)]
        if "category" in row:
            sensitive = row["category"] in SENSITIVE
        elif "category_group" in row:
            sensitive = row["category_group"] in SENSITIVE_GROUPS
        else:
            sensitive = not categories or bool(categories & SENSITIVE)
        if truth["count"] < THRESHOLD or sensitive:
            assert row["suppressed"] is True, (params, row)
        if row["suppressed"]:
            withheld = ("count", "rate", "rate_eb_global", "rate_eb_spatial", "rse")
            assert all(row.get(v) is None for v in withheld), (params, row)
            assert line["count"] == "" and line["rate"] == "", (params, line)
        else:
            # Perturbed (cell key method): near the truth, never a small count, and the
            # rate is the published count's.
            assert row["count"] >= THRESHOLD and truth["count"] >= THRESHOLD, (params, row)
            assert abs(row["count"] - truth["count"]) <= max(NOISE), (params, row, truth)
            assert line["count"] == str(row["count"])
            if row["population"]:
                rate = row["count"] / row["population"] * 100_000
                assert row["rate"] == pytest.approx(rate), (params, row)
    # No withheld cell is the only one of its line (it would be the line's total minus the
    # others, and the line total is what the table without that dimension shows).
    for dim in dims:
        others = [d for d in dims if d != dim]
        groups: dict[tuple, list[dict]] = defaultdict(list)
        for row in rows:
            groups[tuple(row.get(d) for d in others)].append(row)
        for members in groups.values():
            hidden = [r for r in members if r["suppressed"]]
            assert len(hidden) != 1 or len(members) == 1, (params, dim, hidden)
    _no_cell_recomputable(client, params, rows, dims, analyst)


def _no_cell_recomputable(client, params, rows, dims, analyst, totals_key=None) -> None:
    """Peel the table with every public line total (the same query without one breakdown;
    exact totals with an analyst's ``totals_key``): a line with a single unknown cell
    gives it away; repeat until nothing moves."""
    known = {tuple(r.get(d) for d in dims): r["count"] for r in rows}
    if all(v is not None for v in known.values()):
        return
    totals: dict[tuple[str, tuple], tuple[int | None, dict]] = {}
    by = params.get("by", [])
    by = [by] if isinstance(by, str) else list(by)
    margins = [(d, {**params, "by": [b for b in by if b != d]}) for d in dims if d in by]
    if "unit" not in params and params.get("level", 1) == 1:
        margins.append(("unit_code", {**params, "level": 0}))  # the districts' country
    for dim, margin in margins:
        response = client.get("/stats", params=margin, headers=auth(totals_key))
        if response.status_code == 400 and totals_key is None:
            continue  # outside the public lattice (a total over several periods)
        assert response.status_code == 200, response.text
        for r in response.json()["rows"]:
            others = tuple(r.get(d) for d in dims if d != dim)
            totals[(dim, others)] = (r["count"], margin)
    changed = True
    while changed:
        changed = False
        for (dim, others), (total, margin) in totals.items():
            if total is None:
                continue
            position = dims.index(dim)
            members = [k for k in known if k[:position] + k[position + 1 :] == others]
            unknown = [k for k in members if known[k] is None]
            if len(unknown) == 1:
                value = total - sum(known[k] for k in members if known[k] is not None)
                assert value != analyst[unknown[0]]["count"], (
                    f"GET /stats {params}: withheld cell {unknown[0]} = {value} recomputed "
                    f"from the public total of GET /stats {margin}"
                )
                known[unknown[0]] = value
                changed = True


# --- hot spot layers ------------------------------------------------------------------------


@pytest.mark.parametrize("role", ROLES_BELOW_ANALYST)
def test_hotspot_cells_carry_no_count(client, keys, world, role):
    """A published run shows its classes only: no count, and no statistic (z, p, I) that
    is linear in the counts; runs that count sensitive categories are not published."""
    key = _key(keys, role)
    for name, run in world["runs"].items():
        cid = f"hotspots-{run['run']['id']}"
        truth = {f["id"]: f["properties"]["count"] for f in run["features"]}
        assert any(0 < c < THRESHOLD for c in truth.values()), "no small cell to protect"
        items = client.get(f"/collections/{cid}/items", params={"limit": 10_000}, headers=auth(key))
        if name != "public":
            assert items.status_code in (401, 403), (cid, items.status_code)
            continue
        features = items.json()["features"]
        assert len(features) == len(truth)
        for f in features:
            for hidden in ("count", "stats", "z", "p", "p_sim", "i", "quadrant"):
                assert f["properties"].get(hidden) is None, (cid, f["id"], hidden)
            assert "bin" in f["properties"]
        # The analyst sees the counts (so the check above is of a real difference).
        full = client.get(
            f"/collections/{cid}/items", params={"limit": 10_000}, headers=auth(keys["analyst"])
        ).json()["features"]
        assert {f["id"]: f["properties"]["count"] for f in full} == truth


@pytest.mark.parametrize("role", ROLES_BELOW_ANALYST)
def test_hotspot_run_on_sensitive_categories_is_not_public(client, keys, world, role):
    run = world["runs"]["sensitive"]
    truth = {f["id"]: f["properties"]["count"] for f in run["features"]}
    assert any(0 < n < THRESHOLD for n in truth.values())
    cid = f"hotspots-{run['run']['id']}"
    headers = auth(_key(keys, role))
    listed = {c["id"] for c in client.get("/collections", headers=headers).json()["collections"]}
    items = client.get(f"/collections/{cid}/items", params={"limit": 10_000}, headers=headers)
    if cid not in listed and items.status_code in (401, 403, 404):
        return  # not public
    assert items.status_code == 200
    shown = [
        (f["id"], name, f["properties"][name])
        for f in items.json()["features"]
        if truth[f["id"]] > 0
        for name in ("z", "p", "bin")
        if f["properties"].get(name) is not None
    ]
    assert not shown, f"GET /collections/{cid}/items shows {shown[:6]}"


# --- index inputs in the public rankings ----------------------------------------------------


@pytest.mark.parametrize("role", ROLES_BELOW_ANALYST)
def test_rankings_show_no_contribution_beside_a_withheld_indicator(client, keys, world, role):
    """Contributions add up to the score and none is negative: beside a withheld indicator
    any listed value would bound it. So an index with one shows no value at all, in any
    format, and no note names a withheld indicator (but the census note)."""
    headers = auth(_key(keys, role))
    checked = 0
    for code in ("territorial-violence", "violence-against-women"):
        definition = client.get(f"/indexes/{code}", headers=headers).json()["definition"]
        withheld = {
            i["code"]
            for i in definition["indicators"]
            if (source := i["source"].get("incidents") or {}).get("measure") == "share"
            or set(source.get("categories") or ()) & SENSITIVE
        }
        assert withheld
        params = {"index": code, "period": "2024"}
        response = client.get("/rankings", params=params, headers=headers)
        if response.status_code == 422 and "is constant" in response.json()["detail"]:
            continue  # no result for this index with the other modules' data
        assert response.status_code == 200, response.text
        checked += 1
        ranking = response.json()
        shown = [
            (r["unit_code"], t["code"], t["contribution"])
            for r in ranking["rows"]
            for t in r["top_indicators"]
            if t["contribution"] is not None or t["code"] in withheld
        ]
        assert not shown, f"GET /rankings {params}: {shown[:6]}"
        for note in ranking["notes"]:
            if note.startswith("Public view:") or (": no " in note and "population" in note):
                continue
            assert not any(re.search(rf"\b{c}\b", note) for c in withheld), note
        for fmt in ("csv", "xlsx"):
            export = client.get("/rankings", params={**params, "format": fmt}, headers=headers)
            rows = _csv_rows(export.text) if fmt == "csv" else _xlsx_rows(export.content)
            cells = [(k, v) for row in rows for k, v in row.items() if k.endswith("_contribution")]
            assert cells and all(v in ("", None) for _, v in cells), (fmt, cells[:6])
    assert checked, "no index ranking could be checked"


# --- the checks see a leak where there is one -------------------------------------------------


def test_the_checks_find_what_an_analyst_may_see(client, keys, world):
    """The same checks on the analyst's view find every kind of leak they look for, so a
    public output that started to look like it would fail the matrix."""
    analyst = keys["analyst"]
    secrets = list(keys.values())
    incidents = client.get(
        "/collections/incidents/items", params={"source": SOURCE}, headers=auth(analyst)
    )
    found = " ".join(check_response(incidents, secrets))
    assert "point geometry" in found and "coordinates" in found and "victim_age" in found
    _, x, y = tile_of(*SEED["BZ-CY"][0], 14)
    tile = client.get(f"/tiles/incidents/14/{x}/{y}.mvt", headers=auth(analyst))
    assert "incidents layer in a public tile" in check_response(tile, secrets)
    run = world["runs"]["all"]["run"]["id"]
    cells = client.get(
        f"/collections/hotspots-{run}/items", params={"limit": 10_000}, headers=auth(analyst)
    )
    assert any("count" in leak for leak in check_response(cells, secrets, hotspot=True))
    _, x, y = tile_of(*SEED["BZ-CY"][0], 6)
    cell_tile = client.get(f"/tiles/hotspots-{run}/6/{x}/{y}.mvt", headers=auth(analyst))
    assert any("count" in leak for leak in check_response(cell_tile, secrets, hotspot=True))
    params = {"source": SOURCE, "period": "2024", "by": "category"}
    stats = client.get("/stats", params=params, headers=auth(analyst))
    assert any("count 1" in leak for leak in check_response(stats, secrets, aggregate_sex=True))
    project = client.get("/qgis/project.qgz", headers=auth(analyst))
    found = check_response(project, secrets)
    assert "incidents layer in the project" in found and "a key in the project" in found
    # One withheld cell in a line whose exact total is known is recomputed by the peeling.
    params = {**params, "category": "theft,burglary,robbery,assault,homicide,shooting"}
    rows = client.get("/stats", params=params, headers=auth(analyst)).json()["rows"]
    dims = _dims(rows)
    analyst_rows = {tuple(r.get(d) for d in dims): r for r in rows}
    hidden = [dict(r) for r in rows]
    for r in hidden:
        if (r["unit_code"], r["category"]) == ("BZ-CY", "theft"):
            r["count"] = None
    with pytest.raises(AssertionError, match="recomputed from the public total"):
        _no_cell_recomputable(client, params, hidden, dims, analyst_rows, totals_key=analyst)


# --- differencing two public tables ---------------------------------------------------------

DIFFERENCING = "privacy-differencing"


@pytest.fixture(scope="module")
def thefts(base_data, client, keys, db_url, tmp_path_factory):
    """60 thefts in Cayo on distinct days of 2024 (their own source), and those local days."""
    lon, lat = SEED["BZ-CY"][0]
    path = Path(tmp_path_factory.mktemp("differencing")) / "thefts.csv"
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["source", "source_id", "category", "occurred_at", "longitude", "latitude"])
        for i in range(60):
            moment = f"2024-{1 + i // 6:02d}-{1 + 4 * (i % 6):02d} {1 + i % 20:02d}:{i:02d}"
            writer.writerow([DIFFERENCING, f"d{i}", "theft", moment, lon - 1e-4 * i, lat])
    assert import_csv(base_data, path).inserted == 60
    features = client.get(
        "/incidents", params={"source": DIFFERENCING, "limit": 100}, headers=auth(keys["analyst"])
    ).json()["features"]
    local = ZoneInfo("America/Belize")
    yield sorted(
        datetime.fromisoformat(f["properties"]["occurred_at"]).astimezone(local).date()
        for f in features
    )
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("DELETE FROM incident WHERE source = %s", (DIFFERENCING,))


def _differences(client, key, days: list[date]) -> list[int]:
    """The attack: the year minus the thefts before a day minus those after it, for every
    day with enough thefts on both sides to be published (one theft a day)."""
    base = {"source": DIFFERENCING, "category": "theft", "unit": "BZ-CY", "period": "year"}

    def count(start=date(2024, 1, 1), end=date(2025, 1, 1)):
        params = {**base, "occurred_from": start.isoformat(), "occurred_to": end.isoformat()}
        rows = client.get("/stats", params=params, headers=auth(key)).json()["rows"]
        return sum(r["count"] for r in rows) if all(not r["suppressed"] for r in rows) else None

    whole = count()
    # The same incidents give the same published count, however the query is written, so
    # asking again or with an equivalent window draws no new noise to average away.
    assert count() == whole == count(end=days[-1] + timedelta(days=1))
    differences = []
    for day in days[THRESHOLD:-THRESHOLD]:
        before, after = count(end=day), count(start=day + timedelta(days=1))
        assert None not in (whole, before, after)
        differences.append(whole - before - after)
    return differences


@pytest.mark.parametrize("role", ROLES_BELOW_ANALYST)
def test_the_differencing_windows_get_no_public_answer(client, keys, thefts, role):
    """The attack above needs windows that end on any day: a public table covers whole
    periods only, so every one of its windows is refused, saying what may be asked."""
    key = _key(keys, role)
    base = {"category": "theft", "unit": "BZ-CY", "period": "year", "by": "period"}
    for day in thefts[THRESHOLD : THRESHOLD + 5]:
        for bounds in (
            {"occurred_from": "2024-01-01", "occurred_to": day.isoformat()},
            {"occurred_from": (day + timedelta(days=1)).isoformat(), "occurred_to": "2025-01-01"},
        ):
            response = client.get("/stats", params={**base, **bounds}, headers=auth(key))
            assert response.status_code == 400, (bounds, response.text)
            assert response.headers["content-type"] == "application/problem+json"
            detail = response.json()["detail"]
            assert "must be the first day of a year" in detail
            assert "Without an analyst key, /stats answers these tables" in detail
    # An instant inside a day is no better.
    params = {**base, "occurred_to": "2024-03-05T10:30:00-06:00"}
    assert client.get("/stats", params=params, headers=auth(key)).status_code == 400
    # The whole periods themselves answer.
    year = {"occurred_from": "2024-01-01", "occurred_to": "2025-01-01"}
    whole = client.get("/stats", params={**base, **year}, headers=auth(key))
    assert whole.status_code == 200 and [r["period"] for r in whole.json()["rows"]] == ["2024"]


def test_the_differencing_attack_works_on_exact_counts(client, keys, thefts):
    """The analyst sees exact counts: there the same attack finds every theft, so the
    public test above would see a leak if public counts were exact."""
    assert _differences(client, keys["analyst"], thefts) == [1] * 50


# --- the attacks of issue 13, replayed by a public caller ------------------------------------

# "Is there a sexual-violence incident against a 4-year-old girl in Toledo on 5 January?"
ROW_PRESENCE = {
    "unit": "BZ-TOL",
    "by": "category",
    "occurred_from": "2024-01-05",
    "occurred_to": "2024-01-06",
    "victim_sex": "female",
    "age_min": 4,
    "age_max": 4,
}


def _row_keys(body: dict) -> list[tuple]:
    columns = ("category", "category_group", "period", "victim_sex", "age_group")
    return [tuple(r.get(c) for c in columns) for r in body["rows"]]


@pytest.mark.parametrize("role", ROLES_BELOW_ANALYST)
def test_the_row_presence_attack_gets_no_answer(client, keys, world, role):
    key = _key(keys, role)
    response = client.get("/stats", params=ROW_PRESENCE, headers=auth(key))
    assert response.status_code == 400, response.text
    # Each step of the bisection is outside the lattice too: a day, a year of age, a source.
    month = {"unit": "BZ-TOL", "by": "category", "period": "2024-01"}
    for step in ({"occurred_from": "2024-01-05"}, {"age_min": 4, "age_max": 4}, {"source": SOURCE}):
        assert client.get("/stats", params={**month, **step}, headers=auth(key)).status_code == 400
    # Inside the lattice a table's rows follow from the request alone: a district with one
    # incident in the seed and one with dozens list the same rows, every category and
    # every declared age group (and unknown ages).
    by = {"by": ["category", "age_group"], "period": "2024-01", "victim_sex": "female"}
    shapes = [
        _row_keys(client.get("/stats", params={**by, "unit": u}, headers=auth(key)).json())
        for u in ("BZ-TOL", "BZ-CY")
    ]
    assert shapes[0] == shapes[1]
    assert {k[0] for k in shapes[0]} == set(GROUPS)
    assert {k[4] for k in shapes[0]} == {"0-14", "15-29", "30-44", "45-64", "65+", "unknown"}


# The averaging attack: "homicide plus a set of other categories" minus "the same set".
OPEN_CATEGORIES = ("theft", "burglary", "robbery", "assault", "shooting", "road_traffic_death")


@pytest.fixture(scope="module")
def busy_year(base_data, db_url):
    """2,000 synthetic incidents in 2023 (their own source): enough released cells to see
    the noise's spread."""
    districts = gpd.read_file(BELIZE / "boundaries" / "belize_adm1_districts.geojson").rename(
        columns={"iso_3166_2": "code", "district": "name"}
    )
    frame = generate_incidents(districts, n=2_000, years=1, end_year=2023, seed=13)
    frame = frame.assign(source=NOISE_SOURCE).astype(object).where(frame.notna(), "")
    frame = frame.astype(str).replace({"nan": "", "<NA>": "", "None": ""})
    report = call_service(
        base_data,
        lambda e: import_frame(
            e, base_data, frame, ReadOptions(), actor="tests", filename="n.csv", fmt="csv"
        ),
    )
    assert report.inserted == 2_000
    yield
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("DELETE FROM incident WHERE source = %s", (NOISE_SOURCE,))


NOISE_SOURCE = "privacy-noise"


@pytest.mark.parametrize("role", ROLES_BELOW_ANALYST)
def test_the_averaging_attack_cannot_beat_the_noise(client, keys, world, busy_year, role):
    key = _key(keys, role)
    sets = [
        list(s)
        for n in range(1, len(OPEN_CATEGORIES) + 1)
        for s in itertools.combinations(OPEN_CATEGORIES, n)
    ][:48]
    base = {"unit": "BZ-CY", "period": "2024"}
    for others in sets:
        with_homicide = {**base, "category": ",".join(["homicide", *others])}
        response = client.get("/stats", params=with_homicide, headers=auth(key))
        assert response.status_code == 400, (others, response.text)
        assert "several categories" in response.json()["detail"]
    # One cell however the table is written: one published value, so there is nothing to
    # average (the noise is drawn once per record set and data version).
    cell = ("BZ-CY", "theft", "2024")
    spellings = [
        {"unit": "BZ-CY", "category": "theft", "period": "2024"},
        {"level": 1, "category": "theft", "period": "2024"},
        {"level": 1, "by": "category", "period": "2024"},
        {"unit": ["BZ-OW", "BZ-CY"], "by": ["category", "category_group"], "period": "2024"},
        {"unit": "BZ-CY", "category": "THEFT", "period": "year", "by": "period",
         "occurred_from": "2024-01-01", "occurred_to": "2025-01-01"},
        {"unit": "BZ-CY", "by": "category", "group": "period", "occurred_from": "2023-01-01"},
    ]  # fmt: skip
    values = []
    for params in spellings:
        body = client.get("/stats", params=params, headers=auth(key)).json()
        rows = [
            r
            for r in body["rows"]
            if (r["unit_code"], r.get("category", "theft"), r.get("period", "2024")) == cell
        ]
        assert len(rows) == 1, (params, body)
        values.append(rows[0]["count"])
    # (A table may withhold the cell to protect another one of its lines: null there.)
    shown = set(values) - {None}
    assert len(shown) == 1 and values.count(None) <= 2, values
    # Across the released cells the published counts keep the noise's spread around the
    # truth: the attacker's best estimate of a cell is its one published count.
    table = {"level": 1, "by": ["category", "period"], "period": "quarter"}
    table |= {"occurred_from": "2023-01-01", "occurred_to": "2024-01-01"}
    public = client.get("/stats", params=table, headers=auth(key)).json()["rows"]
    truth = client.get("/stats", params=table, headers=auth(keys["analyst"])).json()["rows"]
    errors = [
        p["count"] - t["count"] for p, t in zip(public, truth, strict=True) if not p["suppressed"]
    ]
    assert len(errors) >= 20, errors
    assert len(set(errors)) >= 3 and sum(e != 0 for e in errors) >= 0.3 * len(errors), errors


@pytest.mark.parametrize("role", ROLES_BELOW_ANALYST)
def test_analyst_reports_are_not_told_below_analyst(client, keys, world, role):
    """An analyst report (exact counts, sensitive categories) is not listed and its
    metadata and files are a 404 below analyst, as if it did not exist."""
    key = _key(keys, role)
    analyst_report = world["reports"]["analyst"]
    listed = client.get("/reports", headers=auth(key)).json()["items"]
    assert world["reports"]["public"] in [r["id"] for r in listed]
    assert analyst_report not in [r["id"] for r in listed]
    for suffix in ("", ".zip", ".html", ".pdf"):
        response = client.get(f"/reports/{analyst_report}{suffix}", headers=auth(key))
        assert response.status_code == 404, (suffix, response.status_code)
    codes = [
        d["code"] for d in client.get("/reports/definitions", headers=auth(key)).json()["items"]
    ]
    assert "quarterly-analyst" not in codes and "quarterly-public" in codes
    answer = client.get(f"/reports/{analyst_report}", headers=auth(keys["analyst"]))
    assert answer.status_code == 200 and answer.json()["audience"] == "analyst"
