"""Neighbouring databases (issue 13, point 5, first bullet): one incident more must not
change what a caller below analyst sees, beyond what the published rules allow.

The data: 3,000 incidents of every category in every district over the published window
(their own source; categories weigh the districts differently, so that both shipped
indexes have scores), the census, the shipped index definitions and a public hot spot run
over non-sensitive categories. All removed at the end of the module.

The battery (~475 requests, no key and viewer) covers every public GET route (every
template the privacy matrix classifies "public": asserted, so a new public route fails
here until added); every public layer (units-0, units-1, the public hot spot runs) with
its items, features, queryables, TileJSON, tiles (XYZ at zooms 5, 8 and 11 around every
district and the probe, 14 at the probe; the OGC form at zoom 9) and styles (QML, SLD,
MapLibre); the QGIS project; ``/units``, ``/indexes``; the rankings of both shipped
indexes as JSON, CSV and XLSX (2024, the latest complete year, the probe's year and the
next); and ``/stats``: the public lattice as a product of units (level 0, level 1, two
codes) x 8 breakdowns x 5 times (2023, 2024-Q2, 2024-03, the months of 2024, every
quarter), each with a category (none, homicide, theft), a sex (none, female), an age
group and a format drawn at random; tables holding the probe's own cells; and requests
outside the lattice (source, day window, two categories, a free age, other age groups,
two sexes, no period, a bound off a quarter), which a public caller is refused. Every
answer is kept (status, content type, body) before and after inserting, through
``POST /incidents``:

1. one incident of a sensitive category (sexual violence, a female victim) at a random
   place inside Belize and a random time inside the published window: every answer must
   be byte-identical, except composite index scores and what follows from them (in
   rankings: score, rank, class, rank band, previous rank, rank change, and the order of
   the rows; in units layers and their tiles: the ``<index>_score``, ``<index>_rank`` and
   ``<index>_class`` properties);
2. one theft in a district and month of 2024 whose theft cell (district x category x
   month) holds fewer than 4 incidents: in every ``/stats`` answer only released cells
   may change (same rows in the same order, every row withheld in both answers identical
   in both, notes identical unless the set of withheld rows changed); other answers
   change in index scores only (public hot spot runs are stored results). Places, months
   and victims for which a coarser public cell holding the theft (the country, a quarter,
   a year, the category group, a sex, an age group) is at exactly threshold - 1 are
   passed over: the theft would release that cell under any threshold rule. So a row
   withheld in one answer only is a cell at or above the threshold in both databases,
   withheld as the complement of another (complementary suppression picks the smallest
   released cell of a line, so it moves with the released counts): allowed, as long as
   the other answer shows it at or above the threshold.

Each case checks that the analyst's exact count of the probe's cell moved by one (the
insert happened and reached the caches), that the battery saw index scores, rankings and
released cells, and (case 2) that some public table did change; both delete their
incident (``DELETE /incidents/{id}``). Random draws come from ``random.Random`` with
fixed seeds, so a failure reproduces; perturbed values depend on the installation's
secret cell-key seed, which is new with every test cluster.

Excluded because they change on every request whatever the data:

- ``/metrics``: its body (request counters and durations); status and type are compared;
- items pages (``/collections/{id}/items``): the top-level ``timeStamp`` (time of answer);
- XLSX workbooks are compared by sheet cell values (the file carries its creation time),
  the ``.qgz`` project by its members' names and bytes (zip entries carry the time).

Differences are all collected and reported together; each names the request.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import itertools
import random
import time
import zipfile
from datetime import date, datetime, timedelta
from pathlib import Path
from urllib.parse import parse_qsl
from zoneinfo import ZoneInfo

import mapbox_vector_tile
import openpyxl
import orjson
import psycopg
import pytest
import shapely
from shapely.geometry import Point, shape

from app.services.indexes import load_default_definitions
from app.services.tables import load_demo_population
from tests.conftest import auth, call_service
from tests.integration.helpers import import_csv
from tests.integration.test_privacy_matrix import (
    GROUPS,
    ROUTES,
    _build_report,
    _template_of,
    tile_of,
)

SOURCE = "neighbouring"
PROBES = "neighbouring-probe"
SENSITIVE = ("domestic_violence", "sexual_violence", "suicide")
NON_SENSITIVE = ("theft", "burglary", "robbery", "assault", "homicide", "shooting")
# The seed's mix of categories (relative weights), so that some public cells are released
# (district x year) and most month cells are small.
MIX = {
    "theft": 30,
    "burglary": 15,
    "robbery": 10,
    "assault": 12,
    "shooting": 6,
    "homicide": 5,
    "road_traffic_death": 3,
    "domestic_violence": 10,
    "sexual_violence": 7,
    "suicide": 2,
}
N_SEED = 3000
BROWSER = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
ROLES = ("none", "viewer")
INDEXES = ("territorial-violence", "violence-against-women")
# Ranking columns that follow from the scores (JSON keys and CSV/XLSX columns alike).
RANK_FIELDS = frozenset(
    ("rank", "score", "class", "median_rank", "rank_q05", "rank_q95", "previous_rank",
     "rank_change", "ranks", "rank_first", "rank_last", "shares_ranks_with")
)  # fmt: skip
# Ranking fields (of the whole answer) that follow from the rank bands: which units share ranks.
RANKING_FIELDS = frozenset(("ties",))
# /stats values a released row may change in case 2 (the count and what follows from it).
STATS_VALUES = frozenset(("count", "rate", "rate_eb_global", "rate_eb_spatial", "rse", "unstable"))
# Routes whose body changes on every request (see the module's docstring).
VOLATILE_BODY = frozenset({"/metrics"})
MVT = "application/vnd.mapbox-vector-tile"


# --- the world ------------------------------------------------------------------------------


def _window(settings) -> tuple[date, date]:
    """The published window (``privacy.published_from`` to ``published_to``, by default
    the start of the current local month), as the public lattice reads it."""
    tz = ZoneInfo(settings.territory.timezone)
    privacy = settings.privacy
    return privacy.published_from, privacy.published_to or datetime.now(tz).date().replace(day=1)


def _months(start: date, end: date) -> list[date]:
    months, day = [], start
    while day < end:
        months.append(day)
        day = (day + timedelta(days=32)).replace(day=1)
    return months


def _inner(geometry, margin: float = 0.01):
    """The geometry shrunk by ``margin`` degrees, so a point inside is far from any edge."""
    return geometry.buffer(-margin)


def _point_in(rng: random.Random, area) -> tuple[float, float]:
    west, south, east, north = area.bounds
    shapely.prepare(area)
    while True:
        lon, lat = round(rng.uniform(west, east), 6), round(rng.uniform(south, north), 6)
        if shapely.contains_xy(area, lon, lat):
            return lon, lat


def _units(client) -> dict[str, object]:
    """The districts, shrunk and clipped to the shrunk country (from the public /units):
    a point inside one lies inside Belize and in that district only."""
    features = client.get("/units", params={"level": 1}).json()["features"]
    country = shape(client.get("/units", params={"level": 0}).json()["features"][0]["geometry"])
    country = _inner(country)
    return {
        f["properties"]["code"]: _inner(shape(f["geometry"])).intersection(country)
        for f in features
    }


@pytest.fixture(scope="module")
def world(base_data, client, keys, db_url, tmp_path_factory):
    """Census, index definitions, 3,000 incidents of every category over the published
    window in every district (own source), and a public hot spot run over them."""
    call_service(base_data, lambda e: load_demo_population(e, actor="tests"))
    call_service(base_data, lambda e: load_default_definitions(e, actor="tests"))
    start, end = _window(base_data)
    months = _months(start, end)
    districts = _units(client)
    rng = random.Random(1301)
    codes = sorted(districts)
    path = Path(tmp_path_factory.mktemp("neighbouring")) / "seed.csv"
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        columns = ["source", "source_id", "category", "occurred_at", "longitude", "latitude"]
        writer.writerow([*columns, "victim_sex", "victim_age"])
        # Each category weighs the districts differently (rates that vary between
        # districts well beyond chance, so that no index indicator is constant after
        # Empirical Bayes smoothing). The first and the last month of the window hold an
        # incident, so that periods derived from the data's range stay where they are.
        spread = [8, 4, 2, 1, 0.5, 0.25]
        weights = {c: rng.sample(spread, len(spread)) for c in MIX}
        for i in range(N_SEED):
            month = months[0] if i == 0 else months[-1] if i == 1 else rng.choice(months)
            category = rng.choices(list(MIX), weights=list(MIX.values()))[0]
            unit = rng.choices(codes, weights=weights[category])[0]
            lon, lat = _point_in(rng, districts[unit])
            day = 1 + rng.randrange(28)
            moment = f"{month:%Y-%m}-{day:02d} {rng.randrange(24):02d}:{rng.randrange(60):02d}"
            sensitive = category in SENSITIVE
            sex = "female" if sensitive and rng.random() < 0.9 else rng.choice(["female", "male"])
            age = rng.randrange(4, 40) if category == "sexual_violence" else rng.randrange(1, 90)
            writer.writerow([SOURCE, f"nb-{i:05d}", category, moment, lon, lat, sex, age])
    report = import_csv(base_data, path)
    assert report.inserted == N_SEED and report.rejected == 0, report
    analyst = keys["analyst"]
    body = {
        "method": "gi_star",
        "units": {"type": "grid", "cell_size_m": 10_000},
        "filters": {"sources": [SOURCE], "categories": list(NON_SENSITIVE)},
    }
    response = client.post("/analyses/hotspots", json=body, headers=auth(analyst))
    assert response.status_code in (201, 202), response.text
    url, deadline = response.headers["location"], time.monotonic() + 300
    while (run := client.get(url, headers=auth(analyst))).status_code == 202:
        assert time.monotonic() < deadline, "the hot spot run never finished"
        time.sleep(0.2)
    assert run.status_code == 200, run.text
    run_id = run.json()["run"]["id"]
    # A stored public report (issue 20): its files are fixed once built, whatever comes later.
    report_id = _build_report(client, analyst, "quarterly-public")
    yield {
        "start": start,
        "end": end,
        "districts": districts,
        "run": f"hotspots-{run_id}",
        "report": report_id,
    }
    # Leave the store as the other modules expect it.
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("DELETE FROM analysis_run WHERE id = %s", (run_id,))
        conn.execute("DELETE FROM incident WHERE source IN (%s, %s)", (SOURCE, PROBES))


# --- the battery ----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Request:
    role: str
    url: str
    params: tuple[tuple[str, str], ...] = ()
    accept: str | None = None

    def __str__(self) -> str:
        query = "&".join(f"{k}={v}" for k, v in self.params)
        return f"GET {self.url}{'?' + query if query else ''} [{self.role}]"


@dataclasses.dataclass(frozen=True)
class Answer:
    status: int
    content_type: str
    body: bytes


@dataclasses.dataclass(frozen=True)
class Probe:
    """Where and when the inserted incident lies (its district, month, quarter, year)."""

    unit: str
    lon: float
    lat: float
    moment: datetime
    category: str
    sex: str
    age: int

    def incident(self, source_id: str) -> dict:
        """The body of ``POST /incidents`` (a local time, without an offset)."""
        return {
            "source": PROBES,
            "source_id": source_id,
            "category": self.category,
            "occurred_at": f"{self.moment:%Y-%m-%dT%H:%M:%S}",
            "geometry": {"type": "Point", "coordinates": [self.lon, self.lat]},
            "victim_sex": self.sex,
            "victim_age": self.age,
        }

    @property
    def month(self) -> str:
        return f"{self.moment:%Y-%m}"

    @property
    def quarter(self) -> str:
        return f"{self.moment.year}-Q{(self.moment.month - 1) // 3 + 1}"

    @property
    def year(self) -> str:
        return f"{self.moment.year}"


def _stats_lattice(rng: random.Random) -> list[str]:
    """~120 public /stats queries: every (units x breakdowns x time) of the lattice, each
    with a category, a victim sex, an age group and a format drawn at random."""
    units = ["level=0", "level=1", "unit=BZ-CY,BZ-TOL"]
    bys = ["", "category", "category_group", "victim_sex", "age_group"]
    bys += ["category,victim_sex", "category_group,age_group", "victim_sex,age_group"]
    times = ["period=2023", "period=2024-Q2", "period=2024-03"]
    times += ["by=period&period=month&occurred_from=2024-01-01&occurred_to=2025-01-01"]
    times += ["by=period&period=quarter"]
    categories = ["", "category=homicide", "category=theft"]
    sexes = ["", "victim_sex=female"]
    ages = ["", "age_min=15&age_max=29", "age_min=65"]
    out = []
    for unit, by, when in itertools.product(units, bys, times):
        parts = [unit, *(f"by={b}" for b in by.split(",") if b), when]
        parts += [rng.choice(categories), rng.choice(sexes)]
        parts += rng.choices(ages, weights=[3, 1, 1])
        parts += ["format=csv"] if rng.random() < 0.4 else []
        out.append("&".join(p for p in parts if p))
    return out


# Outside the public lattice: a 400 for callers below analyst (the body must not move).
REFUSED = [
    f"source={SOURCE}&period=2024&by=category",
    "by=period&period=month&occurred_from=2024-01-05&occurred_to=2024-01-06&category=theft",
    "category=theft,homicide&period=2024",
    "by=category&period=2024&age_min=4&age_max=4",
    "by=age_group&period=2024&age_groups=0-17,18%2B",
    "victim_sex=female,male&period=2024&by=category",
    "level=1&by=category",
    "by=period&period=quarter&occurred_from=2024-02-01",
]


def _probe_stats(probe: Probe) -> list[str]:
    """Tables holding the probe's own cells (in the district and the country, by month,
    quarter and year, by category, group, sex and age), and the issue's row attack."""
    unit, day = f"unit={probe.unit}", probe.moment.date()
    year = f"occurred_from={probe.year}-01-01&occurred_to={probe.moment.year + 1}-01-01"
    return [
        f"{unit}&period={probe.month}&by=category",
        f"{unit}&period={probe.month}&by=category&format=csv",
        f"{unit}&period={probe.month}&by=category_group",
        f"{unit}&period={probe.month}&category={probe.category}&by=victim_sex",
        f"{unit}&period={probe.quarter}&by=category&by=age_group",
        f"{unit}&period={probe.year}&by=category&by=victim_sex",
        f"level=0&period={probe.month}&by=category",
        f"level=0&period={probe.quarter}&by=category",
        f"level=0&period={probe.year}&by=category_group",
        f"level=0&period={probe.year}&category={probe.category}&by=victim_sex",
        f"level=0&period={probe.quarter}&category={probe.category}&by=age_group",
        f"level=0&by=period&period=quarter&category={probe.category}&{year}&format=csv",
        f"{unit}&period={probe.year}&category={probe.category}&by=age_group&format=csv",
        f"level=1&by=period&period=month&category={probe.category}&{year}",
        f"{unit}&by=category&occurred_from={day}&occurred_to={day + timedelta(days=1)}"
        f"&victim_sex={probe.sex}&age_min={probe.age}&age_max={probe.age}",
    ]


def _battery(client, keys, world, probe: Probe, seed: int) -> list[Request]:
    rng = random.Random(seed)
    reqs: list[Request] = []
    # Rankings of 2024, of the latest complete year, and of the probe's year and the next
    # (whose rank change looks back at the probe's year).
    last = world["end"].year - 1
    years = {2024, last, probe.moment.year, probe.moment.year + 1}
    rankings = [str(y) for y in sorted(years) if y <= last]
    for role in ROLES:
        headers = auth(None if role == "none" else keys[role])

        def add(url: str, params=(), accept: str | None = None, role=role) -> None:
            params = tuple(
                (k, str(v)) for k, v in (params.items() if isinstance(params, dict) else params)
            )
            reqs.append(Request(role, url, params, accept))

        for path in ("/", "/api", "/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc"):
            add(path)
        for path in ("/conformance", "/health", "/ready", "/metrics", "/styles/default.json"):
            add(path)
        add("/map", accept=BROWSER)
        add("/rankings", accept=BROWSER)
        add("/units")
        add("/units", {"level": 0})
        add("/units", {"level": 1, "simplify": 0.001})
        for code in ("BZ", *sorted(world["districts"])):
            add(f"/units/{code}")
        add("/categories")
        add("/labels.geojson")
        add("/fonts/DejaVu Sans/0-255.pbf")
        add("/indexes")
        for code in INDEXES:
            add(f"/indexes/{code}")
            add(f"/indexes/{code}/periods")
            for period in rankings:
                for fmt in ("json", "csv", "xlsx"):
                    add("/rankings", {"index": code, "period": period, "format": fmt})
            add("/rankings", {"index": code, "period": "2023", "runs": 50})
        add("/qgis/project.qgz")
        add("/qgis/project.qgz", {"embed_key": "false"})
        # Early warning: stored definitions and alerts (an alert changes only when a
        # monitor is evaluated, never with an insert); an id that does not exist is a 404.
        add("/monitors")
        for monitor in client.get("/monitors", headers=headers).json()["items"]:
            add(f"/monitors/{monitor['code']}")
        add("/monitors/violence-against-women-district-monthly")
        add("/alerts")
        add("/alerts", {"state": "new"})
        for alert in client.get("/alerts", headers=headers).json()["items"][:5]:
            add(f"/alerts/{alert['id']}")
        add("/alerts/1")
        # Periodic reports: the public ones and their files are stored answers.
        add("/reports")
        add("/reports/definitions")
        for suffix in ("", ".html", ".pdf", ".zip"):
            add(f"/reports/{world['report']}{suffix}")
        add("/collections")
        listed = client.get("/collections", headers=headers)
        assert listed.status_code == 200, listed.text
        ids = [c["id"] for c in listed.json()["collections"]]
        assert {"units-0", "units-1", world["run"]} <= set(ids), ids
        anchors = [(probe.lon, probe.lat)]
        anchors += [c.representative_point().coords[0] for c in world["districts"].values()]
        for cid in ids:
            add(f"/collections/{cid}")
            add(f"/collections/{cid}/queryables")
            add(f"/collections/{cid}/tiles")
            add(f"/collections/{cid}/styles")
            # Every feature of the layers this module made; a page of other modules' runs.
            mine = cid in ("units-0", "units-1", world["run"])
            add(f"/collections/{cid}/items", {"limit": 10_000 if mine else 200})
            add(f"/collections/{cid}/items", {"limit": 2})
            add(f"/tiles/{cid}.json")
            add(f"/styles/{cid}.qml")
            add(f"/styles/{cid}.sld")
            page = client.get(f"/collections/{cid}/items", params={"limit": 3}, headers=headers)
            assert page.status_code == 200, (cid, page.text[:300])
            for feature in page.json()["features"]:
                add(f"/collections/{cid}/items/{feature['id']}")
            for i, (lon, lat) in enumerate(anchors):
                for z in (5, 8, 11) if i else (5, 8, 11, 14):
                    _, x, y = tile_of(lon, lat, z)
                    add(f"/tiles/{cid}/{z}/{x}/{y}.mvt")
                if i < 3:
                    _, x, y = tile_of(lon, lat, 9)
                    add(f"/collections/{cid}/tiles/WebMercatorQuad/9/{y}/{x}")
    # /stats: the lattice, the probe's own cells and the refused shapes, each for one role
    # drawn at random (no key and viewer are the same public view of /stats).
    for query in [*_stats_lattice(rng), *_probe_stats(probe), *REFUSED]:
        reqs.append(Request(rng.choice(ROLES), "/stats", tuple(parse_qsl(query))))
    return reqs


def _get(client, keys, req: Request):
    headers = auth(None if req.role == "none" else keys[req.role])
    if req.accept:
        headers["Accept"] = req.accept
    return client.get(req.url, params=list(req.params), headers=headers)


def _snapshot(client, keys, battery: list[Request]) -> list[Answer]:
    out = []
    for req in battery:
        response = _get(client, keys, req)
        kind = response.headers.get("content-type", "")
        out.append(Answer(response.status_code, kind, response.content))
    return out


# --- what may differ ------------------------------------------------------------------------


def _index_fields(client) -> frozenset[str]:
    """The units layers' properties that carry a composite index's score, rank and class."""
    items = client.get("/indexes").json()["items"]
    prefixes = [item["code"].replace("-", "_") for item in items]
    assert prefixes, "no index definition is loaded"
    return frozenset(f"{p}_{part}" for p in prefixes for part in ("score", "rank", "class"))


def _strip_properties(doc, fields: frozenset[str]):
    """Remove ``fields`` from every GeoJSON feature's properties (in place) and return it."""
    features = doc.get("features") if isinstance(doc, dict) else None
    for feature in features if isinstance(features, list) else [doc]:
        if isinstance(feature, dict) and isinstance(feature.get("properties"), dict):
            for name in fields:
                feature["properties"].pop(name, None)
    return doc


def _tile(body: bytes, fields: frozenset[str]):
    tile = mapbox_vector_tile.decode(body) if body else {}
    for layer in tile.values():
        for feature in layer["features"]:
            for name in fields:
                feature["properties"].pop(name, None)
    return tile


def _table_rows(rows: list[list], header: list) -> list:
    """Ranking lines without the columns that follow from the scores, by unit code."""
    keep = [i for i, name in enumerate(header) if name not in RANK_FIELDS]
    unit = header.index("unit_code") if "unit_code" in header else None
    lines = [[row[i] for i in keep] for row in rows]
    if unit is not None:
        position = keep.index(unit)
        lines.sort(key=lambda line: str(line[position]))
    return [[header[i] for i in keep], *lines]


def _xlsx(body: bytes):
    book = openpyxl.load_workbook(io.BytesIO(body), read_only=True)
    return {sheet.title: [list(r) for r in sheet.iter_rows(values_only=True)] for sheet in book}


def _ranking(answer: Answer):
    kind = answer.content_type
    if "json" in kind:
        doc = orjson.loads(answer.body)
        for name in RANKING_FIELDS:
            doc.pop(name, None)
        for row in doc.get("rows", []):
            for name in RANK_FIELDS:
                row.pop(name, None)
        doc.get("rows", []).sort(key=lambda row: row.get("unit_code", ""))
        return doc
    if "csv" in kind:
        header, *rows = list(csv.reader(io.StringIO(answer.body.decode())))
        return _table_rows(rows, header)
    if "spreadsheet" in kind:
        sheets = _xlsx(answer.body)
        header, *rows = sheets.pop("rows")
        return {"rows": _table_rows(rows, header), **sheets}
    return answer.body


def _canonical(req: Request, answer: Answer, fields: frozenset[str]):
    """What must not change: the body with index scores and volatile fields taken out."""
    template = _template_of(req.url)
    kind, body = answer.content_type, answer.body
    head = (answer.status, kind)
    if template in VOLATILE_BODY:
        return head
    if answer.status != 200:
        return head, body
    if MVT in kind:
        return head, _tile(body, fields)
    if template == "/rankings" and "html" not in kind:
        return head, _ranking(answer)
    if "spreadsheet" in kind:
        return head, _xlsx(body)
    if "zip" in kind:
        with zipfile.ZipFile(io.BytesIO(body)) as archive:
            return head, [(info.filename, archive.read(info)) for info in archive.infolist()]
    if template.startswith("/collections/{collection_id}/items") and "json" in kind:
        doc = orjson.loads(body)
        if template == "/collections/{collection_id}/items":
            doc.pop("timeStamp", None)
        return head, _strip_properties(doc, fields)
    return head, body


def _first_difference(a, b, path: str = "$") -> str:
    """Where two canonical values first differ, for the report."""
    if isinstance(a, dict) and isinstance(b, dict):
        if a.keys() != b.keys():
            return f"{path}: keys {sorted(a.keys() ^ b.keys())}"
        for k in a:
            if a[k] != b[k]:
                return _first_difference(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        for i, (x, y) in enumerate(zip(a, b, strict=False)):
            if x != y:
                return _first_difference(x, y, f"{path}[{i}]")
        extra = a[len(b) :] or b[len(a) :]
        return f"{path}: {len(a)} items, then {len(b)}: {extra!r:.300}"
    elif isinstance(a, bytes) and isinstance(b, bytes):
        for i, (x, y) in enumerate(zip(a, b, strict=False)):
            if x != y:
                start = max(0, i - 60)
                return f"{path}: byte {i}: {a[start : i + 60]!r} -> {b[start : i + 60]!r}"
        return f"{path}: {len(a)} bytes, then {len(b)}"
    return f"{path}: {a!r:.300} -> {b!r:.300}"


# --- /stats in case 2: only released cells may change ----------------------------------------


def _stats_table(answer: Answer) -> tuple[object, list[str], list[dict], list[str]] | None:
    """(everything but rows and notes, row keys, rows, notes) of a 200 /stats answer."""
    if answer.status != 200:
        return None
    if "json" in answer.content_type:
        doc = orjson.loads(answer.body)
        rows, notes = doc.pop("rows"), doc.pop("notes")
        return doc, list(rows[0]) if rows else [], rows, notes
    header, *lines = list(csv.reader(io.StringIO(answer.body.decode())))
    rows = [dict(zip(header, line, strict=True)) for line in lines]
    return None, header, rows, []


def _withheld(row: dict) -> bool:
    return row.get("suppressed") in (True, "true")


def released_changes_only(before: Answer, after: Answer, threshold: int) -> list[str]:
    """Why ``after`` is more than ``before`` with some released cells changed.

    A row withheld in both answers must be identical. A row withheld in one answer only
    is a cell at or above the threshold in both databases (the probe is placed so that
    no cell it falls in crosses the threshold), withheld in one of them so that another
    withheld cell cannot be recomputed from a total (complementary suppression picks the
    smallest released cell of a line, so it moves with the released counts): it may
    change, and then the notes may say so."""
    if (before.status, before.content_type) != (after.status, after.content_type):
        return [f"status/type {before.status} {before.content_type} -> {after.status}"]
    old, new = _stats_table(before), _stats_table(after)
    if old is None or new is None:
        return [] if before.body == after.body else [_first_difference(before.body, after.body)]
    (meta_a, keys_a, rows_a, notes_a), (meta_b, keys_b, rows_b, notes_b) = old, new
    found = []
    if meta_a != meta_b:
        found.append("parameters " + _first_difference(meta_a, meta_b))
    if keys_a != keys_b or len(rows_a) != len(rows_b):
        return [*found, f"shape: {len(rows_a)} rows {keys_a} -> {len(rows_b)} rows {keys_b}"]
    withheld_a = [_withheld(r) for r in rows_a]
    withheld_b = [_withheld(r) for r in rows_b]
    for i, (a, b) in enumerate(zip(rows_a, rows_b, strict=True)):
        if withheld_a[i] and withheld_b[i]:
            if a != b:
                found.append(f"withheld row {i} changed: {a} -> {b}")
            continue
        if withheld_a[i] != withheld_b[i]:
            shown = b if withheld_a[i] else a
            if int(shown["count"]) < threshold:
                found.append(f"row {i} withheld in one answer shows {shown['count']}: {shown}")
        fixed = STATS_VALUES | {"suppressed"}
        fixed_a = {k: v for k, v in a.items() if k not in fixed}
        fixed_b = {k: v for k, v in b.items() if k not in fixed}
        if fixed_a != fixed_b:
            found.append(f"row {i} " + _first_difference(fixed_a, fixed_b))
    if withheld_a == withheld_b and notes_a != notes_b:
        found.append("notes " + _first_difference(notes_a, notes_b))
    return found


def test_the_released_cells_rule_sees_a_withheld_change():
    """The rule of case 2 is not vacuous: a withheld row that changes, a row that appears,
    a note that moves alone and a small count shown are each reported; a released count
    that moves, or a released cell withheld instead of another large one, is not."""

    def answer(rows, notes=("n",)) -> Answer:
        doc = {"rows": rows, "parameters": {}, "notes": list(notes)}
        return Answer(200, "application/json", orjson.dumps(doc))

    def changes(rows, notes=("n",)) -> list[str]:
        return released_changes_only(answer([shown, large, hidden]), answer(rows, notes), 5)

    shown = {"unit_code": "A", "category": "theft", "count": 7, "rate": 1.0, "suppressed": False}
    large = {**shown, "unit_code": "B", "count": 9, "rate": 2.0}
    hidden = {"unit_code": "C", "category": "theft", "count": None, "suppressed": True}
    assert changes([{**shown, "count": 8, "rate": 1.1}, large, hidden]) == []
    complement = {**shown, "count": None, "rate": None, "suppressed": True}
    assert changes([complement, large, hidden], notes=("m",)) == []
    assert changes([shown, large, {**hidden, "unstable": True}])
    assert changes([shown, large, hidden, hidden])
    assert changes([shown, large, hidden], notes=("m",))
    assert changes([shown, large, {**hidden, "count": 3, "suppressed": False}])
    assert changes([{**shown, "unit_code": "D"}, large, hidden])


def test_the_normalisation_takes_out_index_scores_only():
    """Index scores, ranks and classes (and in rankings the order of rows) are taken out
    by name; any other property, column or value still counts as a difference."""
    fields = frozenset({"territorial_violence_score", "territorial_violence_rank"})
    fields |= {"territorial_violence_class"}

    def tile(**properties) -> Answer:
        polygon = "POLYGON ((0 0, 0 10, 10 10, 10 0, 0 0))"
        layer = {"name": "units-1", "features": [{"geometry": polygon, "properties": properties}]}
        return Answer(200, MVT, mapbox_vector_tile.encode([layer]))

    stamps = itertools.count()

    def page(**properties) -> Answer:
        feature = {"type": "Feature", "id": "A", "geometry": None, "properties": properties}
        doc = {"type": "FeatureCollection", "features": [feature], "timeStamp": next(stamps)}
        return Answer(200, "application/geo+json", orjson.dumps(doc))

    def ranking(*rows) -> Answer:
        doc = {"index": "x", "rows": [dict(r) for r in rows], "notes": []}
        return Answer(200, "application/json", orjson.dumps(doc))

    def same(req, a: Answer, b: Answer) -> bool:
        return _canonical(req, a, fields) == _canonical(req, b, fields)

    xyz = Request("none", "/tiles/units-1/8/1/2.mvt")
    base = {"code": "A", "territorial_violence_score": 1.5, "territorial_violence_rank": 2}
    assert same(xyz, tile(**base), tile(**{**base, "territorial_violence_score": 9.0}))
    assert not same(xyz, tile(**base), tile(**{**base, "code": "B"}))
    assert not same(xyz, tile(**base), tile(**base, territorial_violence_period="2025"))
    items = Request("none", "/collections/units-1/items")
    assert same(items, page(**base), page(**{**base, "territorial_violence_rank": 1}))
    assert not same(items, page(**base), page(**{**base, "area_km2": 1.0}))
    rankings = Request("none", "/rankings", (("index", "x"),))
    a = {"unit_code": "A", "rank": 1, "score": 9.0, "class": 3, "top_indicators": []}
    b = {"unit_code": "B", "rank": 2, "score": 1.0, "class": 1, "top_indicators": []}
    swapped = ({**b, "rank": 1, "score": 9.5}, {**a, "rank": 2, "score": 0.5})
    assert same(rankings, ranking(a, b), ranking(*swapped))
    named = {**b, "top_indicators": [{"code": "i", "name": "i", "contribution": 0.1}]}
    assert not same(rankings, ranking(a, b), ranking(a, named))
    assert not same(Request("none", "/stats"), page(code="A"), page(code="A"))  # timeStamp


# --- the two cases --------------------------------------------------------------------------


def _compare(battery, before, after, fields, *, stats_released: bool, threshold: int):
    found = []
    for req, a, b in zip(battery, before, after, strict=True):
        if req.url == "/stats" and stats_released:
            found += [f"{req}: {why}" for why in released_changes_only(a, b, threshold)]
            continue
        ca, cb = _canonical(req, a, fields), _canonical(req, b, fields)
        if ca != cb:
            found.append(f"{req}: {_first_difference(ca, cb)}")
    return found


def _coverage(battery: list[Request]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for req in battery:
        template = _template_of(req.url)
        counts[template] = counts.get(template, 0) + 1
    public = {t for t, role in ROUTES.items() if role == "public"}
    assert public <= counts.keys(), f"public routes outside the battery: {public - counts.keys()}"
    assert len(battery) >= 200
    return counts


def _insert(client, keys, body: dict) -> int:
    response = client.post("/incidents", json=body, headers=auth(keys["editor"]))
    assert response.status_code == 201, response.text
    return response.json()["id"]


def _delete(client, keys, incident_id: int) -> None:
    response = client.delete(f"/incidents/{incident_id}", headers=auth(keys["editor"]))
    assert response.status_code == 204, response.text


def _analyst_count(client, keys, probe: Probe) -> bytes:
    """The analyst's table of the probe's own cell (exact counts)."""
    params = {"unit": probe.unit, "period": probe.month, "category": probe.category}
    response = client.get("/stats", params=params, headers=auth(keys["analyst"]))
    assert response.status_code == 200, response.text
    return response.content


def _exercised(battery, answers, fields) -> None:
    """The battery reaches what the cases are about: index scores in the units layer,
    rankings, and released /stats cells (else a case could pass by testing nothing)."""
    scored = rankings = released = 0
    for req, answer in zip(battery, answers, strict=True):
        if answer.status != 200:
            continue
        if req.url == "/collections/units-1/items" and "json" in answer.content_type:
            features = orjson.loads(answer.body)["features"]
            scored += any(fields & f["properties"].keys() for f in features)
        elif req.url == "/rankings" and "json" in answer.content_type:
            rankings += 1
        elif req.url == "/stats":
            table = _stats_table(answer)
            released += any(not _withheld(r) and r["count"] not in (None, "") for r in table[2])
    assert scored, "the units layer carries no index score: the data leave every index out"
    assert rankings >= len(INDEXES), "no ranking of the shipped indexes answered"
    assert released >= 10, f"only {released} /stats answers release a cell"


def _run_case(client, keys, world, probe: Probe, source_id: str, *, seed: int, released: bool):
    battery = _battery(client, keys, world, probe, seed)
    coverage = _coverage(battery)
    fields = _index_fields(client)
    truth = _analyst_count(client, keys, probe)
    started = time.monotonic()
    before = _snapshot(client, keys, battery)
    _exercised(battery, before, fields)
    incident_id = _insert(client, keys, probe.incident(source_id))
    try:
        after = _snapshot(client, keys, battery)
        changed = _analyst_count(client, keys, probe)
    finally:
        _delete(client, keys, incident_id)
    # The insert happened and reached the caches: the analyst's exact count moved by one.
    counts = [orjson.loads(t)["rows"][0]["count"] for t in (truth, changed)]
    assert counts[1] == counts[0] + 1, (probe, counts)
    threshold = client.app.state.settings.privacy.min_count
    differences = _compare(
        battery, before, after, fields, stats_released=released, threshold=threshold
    )
    elapsed = time.monotonic() - started
    summary = (
        f"{len(battery)} requests over {len(coverage)} routes, two snapshots in {elapsed:.0f} s"
    )
    assert not differences, (
        f"{len(differences)} public answer(s) changed with one incident ({probe}); "
        f"{summary}:\n" + "\n".join(differences[:80])
    )
    if released:
        # The theft reached public tables: some released cell moved (else nothing tested).
        moved = [
            req
            for req, a, b in zip(battery, before, after, strict=True)
            if req.url == "/stats" and a.body != b.body
        ]
        assert moved, "no public /stats answer changed: the probe reached no released cell"


def _moment(rng: random.Random, start: date, end: date) -> datetime:
    first = datetime.combine(start, datetime.min.time())
    seconds = int((datetime.combine(end, datetime.min.time()) - first).total_seconds())
    return first + timedelta(seconds=rng.randrange(seconds))


def _district_of(world, lon: float, lat: float) -> str:
    found = [c for c, d in world["districts"].items() if d.contains(Point(lon, lat))]
    assert len(found) == 1, (lon, lat, found)
    return found[0]


def test_a_sensitive_incident_changes_no_public_answer(client, keys, world):
    rng = random.Random(13_1)
    inside = shapely.union_all(list(world["districts"].values()))
    lon, lat = _point_in(rng, inside)
    moment = _moment(rng, world["start"], world["end"])
    unit, age = _district_of(world, lon, lat), rng.randrange(1, 80)
    probe = Probe(unit, lon, lat, moment, "sexual_violence", "female", age)
    _run_case(client, keys, world, probe, "sensitive-1", seed=131, released=False)


def _cells_around(client, keys, probe: Probe) -> list[list[dict]]:
    """The analyst's rows (exact counts) of the tables whose cells may hold a theft of
    ``probe``'s district and month: its district or the country, by its month, quarter or
    year, broken down by category, sex and age group."""
    tables = []
    for units in (f"unit={probe.unit}", "level=0"):
        for period in (probe.month, probe.quarter, probe.year):
            query = f"{units}&period={period}&by=category&by=category_group"
            query += "&by=victim_sex&by=age_group"
            response = client.get("/stats", params=parse_qsl(query), headers=auth(keys["analyst"]))
            tables.append(response.json()["rows"])
    return tables


def _holding(tables: list[list[dict]], sex: str, age: str) -> list[int]:
    """The true counts of every public cell that a theft with a victim of ``sex`` and age
    group ``age`` falls in: theft or its group (cells over every category count sensitive
    ones and are withheld whatever their size); its sex or all; its age group or all."""
    counts = []
    for rows in tables:
        group = GROUPS["theft"]
        for what, by_sex, by_age in itertools.product(("theft", group), (0, 1), (0, 1)):
            cell = [
                r["count"]
                for r in rows
                if what in (r["category"], r["category_group"])
                and (not by_sex or r["victim_sex"] == sex)
                and (not by_age or r["age_group"] == age)
            ]
            counts.append(sum(cell))
    return counts


def test_a_small_theft_changes_released_cells_only(client, keys, world):
    rng = random.Random(13_2)
    settings = client.app.state.settings
    threshold = settings.privacy.min_count
    # The theft cells (district x month) that hold fewer than 4 incidents, all sources
    # counted: after one more theft they stay below the threshold of 5.
    query = "level=1&by=period&period=month&category=theft"
    query += f"&occurred_from={world['start']}&occurred_to={world['end']}"
    rows = client.get("/stats", params=parse_qsl(query), headers=auth(keys["analyst"]))
    small = [(r["unit_code"], r["period"]) for r in rows.json()["rows"] if r["count"] < 4]
    # Months the lattice's fixed periods cover first (2024-03 and 2024-Q2, then 2024 and
    # 2023). A coarser cell (the country, a quarter, a year, the category group, a sex, an
    # age group) at exactly threshold - 1 would be released by the theft under any
    # threshold rule: such places, months and victims are passed over.
    tiers = [("2024-03", "2024-04", "2024-05", "2024-06"), ("2024",), ("2023",)]
    rng.shuffle(small)
    small.sort(key=lambda cell: next((i for i, t in enumerate(tiers) if cell[1].startswith(t)), 3))
    groups = settings.privacy.age_groups.split(",")
    victims = list(itertools.product(("female", "male"), groups))
    tried = []
    for unit, month in small[:60]:
        start = date.fromisoformat(f"{month}-01")
        moment = _moment(rng, start, (start + timedelta(days=32)).replace(day=1))
        lon, lat = _point_in(rng, world["districts"][unit])
        probe = Probe(unit, lon, lat, moment, "theft", "", 0)
        tables = _cells_around(client, keys, probe)
        rng.shuffle(victims)
        fitting = [v for v in victims if threshold - 1 not in _holding(tables, *v)]
        if fitting:
            sex, group = fitting[0]
            break
        tried.append(f"{unit} {month}")
    else:
        pytest.fail(f"no theft cell below 4 lies outside public cells at {threshold - 1}: {tried}")
    first, _, last = group.rstrip("+").partition("-")
    age = rng.randrange(int(first), int(last or 89) + 1)
    probe = dataclasses.replace(probe, sex=sex, age=age)
    _run_case(client, keys, world, probe, "theft-1", seed=132, released=True)
