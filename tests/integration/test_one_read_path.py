"""One incident read path (issue 15, point 2): ``GET /incidents`` is a view of the
incidents layer, so it and ``GET /collections/incidents/items`` answer the same features
with the same properties for every role that reads incidents, over every filter
``/incidents`` takes, their combinations and paging; a date without a zone is local time
of the territory on every route that filters incidents by time (``/stats``, ``/incidents``,
the OGC items and their ``datetime``, property and CQL2 filters, tiles, analyses); and a
malformed bbox is one answer, a 400 problem, on both doors.

Every expectation is computed here from the rows this module writes (their coordinates,
times and attributes; their units as stored), never read back from the routes under test.
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta
from urllib.parse import parse_qs, urlsplit
from zoneinfo import ZoneInfo

import mapbox_vector_tile
import numpy as np
import orjson
import pandas as pd
import psycopg
import pytest
from fastapi.testclient import TestClient

from app.ogc.layers import incidents_layer
from tests.conftest import auth
from tests.integration.helpers import CATEGORIES, import_csv

SOURCE = "one-read-path"
OTHER = "one-read-path-other"  # a second agency, for the source filter
PROBLEM = "application/problem+json"
TZ = ZoneInfo("America/Belize")  # territory.timezone of the test settings (UTC-6, no DST)
READERS = ("analyst", "editor", "admin")  # every role that reads incidents
# Town centres: Belize City (BZ-BZ), Belmopan and San Ignacio (BZ-CY), Orange Walk
# (BZ-OW), Punta Gorda (BZ-TOL).
TOWNS = np.array(
    [
        [-88.1962, 17.5046],
        [-88.7710, 17.2510],
        [-89.0691, 17.1588],
        [-88.5633, 18.0812],
        [-88.8100, 16.1000],
    ]
)
CITY_BOX = (-88.30, 17.40, -88.10, 17.60)  # Belize City and the land west of it
PAGE = 7  # not a divisor of any count below: last pages are partial

# Incidents of Belize District on the edges of 2024, where local time (UTC-6) and UTC
# disagree: the evening of a 31 December local is already 1 January in UTC.
EDGES = [
    ("2023-12-31 19:00", "2023 local, 2024 UTC"),
    ("2023-12-31 21:30", "2023 local, 2024 UTC"),
    ("2023-12-31 23:45", "2023 local, 2024 UTC"),
    ("2024-01-01 00:00", "2024 both: local midnight, inclusive"),
    ("2024-01-01 03:00", "2024 both (00:00-06:00 local on the first day)"),
    ("2024-12-31 18:30", "2024 local, 2025 UTC"),
    ("2024-12-31 20:00", "2024 local, 2025 UTC"),
    ("2024-12-31 22:15", "2024 local, 2025 UTC"),
    ("2024-12-31 23:59", "2024 local, 2025 UTC"),
    ("2025-01-01 00:00", "2025 both: local midnight, exclusive"),
    ("2025-01-01 04:00", "2025 local, 2025 UTC"),
]


def _wait_for_new_version(client: TestClient, before: int) -> None:
    """Writes made outside the service reach it by NOTIFY; wait until this app has seen
    ours, so that no cached count predates them."""
    deadline = time.monotonic() + 10
    while client.app.state.data_version.value == before:
        assert time.monotonic() < deadline, "the service never saw the new incidents"
        time.sleep(0.02)


@pytest.fixture(scope="module")
def rows(client: TestClient, base_data, db_url, tmp_path_factory) -> pd.DataFrame:
    """This module's incidents, imported, with their ids and stored unit codes: random
    ones in five districts (every category, sex and age, some empty), 40 in Belize
    District during 2024, and the edge times above."""
    rng = np.random.default_rng(15)
    n = 70
    towns = TOWNS[rng.integers(0, len(TOWNS), n)]
    start = datetime(2023, 6, 1)
    spread = pd.DataFrame(
        {
            "local": [start + timedelta(hours=int(h)) for h in rng.integers(0, 2 * 365 * 24, n)],
            "longitude": (towns[:, 0] + rng.normal(0, 0.01, n)).round(6),
            "latitude": (towns[:, 1] + rng.normal(0, 0.01, n)).round(6),
        }
    )
    m = 40
    district = pd.DataFrame(
        {
            "local": [
                datetime(2024, 1, 1) + timedelta(minutes=int(x))
                for x in rng.integers(6 * 60, 365 * 24 * 60 - 6 * 60, m)
            ],
            "longitude": rng.uniform(-88.34, -88.22, m).round(6),
            "latitude": rng.uniform(17.42, 17.56, m).round(6),
        }
    )
    edges = pd.DataFrame(
        {
            "local": [datetime.fromisoformat(t) for t, _ in EDGES],
            "longitude": (TOWNS[0, 0] + rng.normal(0, 0.004, len(EDGES))).round(6),
            "latitude": (TOWNS[0, 1] + rng.normal(0, 0.004, len(EDGES))).round(6),
        }
    )
    frame = pd.concat([spread, district, edges], ignore_index=True)
    k = len(frame)
    frame["source"] = [OTHER if i % 9 == 4 else SOURCE for i in range(k)]
    frame["source_id"] = [f"orp-{i:03d}" for i in range(k)]
    frame["category"] = [CATEGORIES[i % len(CATEGORIES)] for i in rng.permutation(k)]
    frame["victim_sex"] = [("female", "male", "unknown")[i % 3] for i in rng.permutation(k)]
    ages = rng.integers(0, 90, k)
    frame["victim_age"] = pd.array(
        [None if i % 6 == 5 else int(a) for i, a in enumerate(ages)], dtype="Int64"
    )
    csv = frame.assign(occurred_at=frame["local"].map(lambda t: t.strftime("%Y-%m-%d %H:%M")))
    path = tmp_path_factory.mktemp("one-read-path") / "incidents.csv"
    csv.drop(columns="local").to_csv(path, index=False)  # naive times: local, as imports read
    before = client.app.state.data_version.value
    assert import_csv(base_data, path).inserted == k
    _wait_for_new_version(client, before)
    with psycopg.connect(db_url) as db:
        stored = {
            sid: (fid, list(codes))
            for sid, fid, codes in db.execute(
                "SELECT i.source_id, i.id, ARRAY(SELECT u.code FROM admin_unit u "
                "WHERE u.id = ANY(i.unit_ids) ORDER BY u.level) FROM incident i "
                "WHERE i.source IN (%s, %s) AND i.deleted_at IS NULL",
                (SOURCE, OTHER),
            )
        }
    frame["id"] = [stored[s][0] for s in frame["source_id"]]
    frame["units"] = [stored[s][1] for s in frame["source_id"]]
    frame["occurred"] = [t.replace(tzinfo=TZ) for t in frame["local"]]
    assert {"BZ-BZ", "BZ-CY", "BZ-OW", "BZ-TOL"} <= {u for us in frame["units"] for u in us}
    return frame


def _moment(text: str) -> datetime:
    moment = datetime.fromisoformat(text)
    return moment if moment.tzinfo else moment.replace(tzinfo=TZ)


def _expected(frame: pd.DataFrame, query: dict[str, str | list[str]]) -> list[int]:
    """The ids a query selects, computed from the rows (the reference)."""
    keep = np.ones(len(frame), dtype=bool)
    for name, value in query.items():
        values = [v for text in np.atleast_1d(value) for v in str(text).split(",")]
        if name == "bbox":
            numbers = [float(v) for v in values]
            if len(numbers) == 6:
                numbers = [numbers[0], numbers[1], numbers[3], numbers[4]]
            west, south, east, north = numbers
            keep &= frame["longitude"].between(west, east) & frame["latitude"].between(south, north)
        elif name == "occurred_from":
            keep &= frame["occurred"].map(lambda t, v=_moment(values[0]): t >= v)
        elif name == "occurred_to":
            keep &= frame["occurred"].map(lambda t, v=_moment(values[0]): t < v)
        elif name in ("category", "victim_sex", "source"):
            keep &= frame[name].isin([v.lower() if name != "source" else v for v in values])
        elif name == "age_min":
            keep &= (frame["victim_age"] >= int(values[0])).fillna(False).astype(bool)
        elif name == "age_max":
            keep &= (frame["victim_age"] <= int(values[0])).fillna(False).astype(bool)
        elif name == "unit":
            keep &= frame["units"].map(lambda units, v=values[0]: v in units)
        else:
            raise AssertionError(f"no reference for {name}")
    return sorted(frame.loc[keep, "id"])


def _walk(client: TestClient, key: str, path: str, params: dict) -> list[dict]:
    """Every page of a listing, following its next links."""
    response = client.get(path, params=params, headers=auth(key))
    pages = []
    while True:
        assert response.status_code == 200, response.text
        assert response.headers["content-type"].startswith("application/geo+json")
        pages.append(response.json())
        url = next((x["href"] for x in pages[-1]["links"] if x["rel"] == "next"), None)
        if url is None:
            return pages
        response = client.get(url, headers=auth(key))


def _ids(pages: list[dict]) -> list[int]:
    return [f["id"] for page in pages for f in page["features"]]


# Every filter of /incidents, alone, in lists and combined; each is restricted to this
# module's two sources (``source`` is a filter too).
MINE = f"{SOURCE},{OTHER}"
QUERIES: dict[str, dict[str, str | list[str]]] = {
    "nothing": {},
    "bbox": {"bbox": ",".join(map(str, CITY_BOX))},
    "bbox, 6 numbers": {"bbox": "-88.30,17.40,-1000,-88.10,17.60,1000"},
    "occurred_from, a date": {"occurred_from": "2024-01-01"},
    "occurred_to, a date": {"occurred_to": "2024-01-01"},
    "occurred_from, UTC": {"occurred_from": "2024-01-01T00:00:00Z"},
    "occurred_to, an offset": {"occurred_to": "2025-01-01T00:00:00+02:00"},
    "occurred_from and _to, local times": {
        "occurred_from": "2023-12-31T21:00",
        "occurred_to": "2024-12-31 20:00:00",
    },
    "category": {"category": "homicide"},
    "category, a list": {"category": "homicide,robbery"},
    "category, repeated": {"category": ["theft", "burglary"]},
    "category, upper case": {"category": "THEFT"},
    "victim_sex": {"victim_sex": "female"},
    "victim_sex, a list": {"victim_sex": "male,unknown"},
    "age_min": {"age_min": "18"},
    "age_max": {"age_max": "30"},
    "age_min and age_max": {"age_min": "18", "age_max": "40"},
    "age, one year": {"age_min": "33", "age_max": "33"},
    "unit, a district": {"unit": "BZ-CY"},
    "unit, the country": {"unit": "BZ"},
    "source, one": {"source": OTHER},
    "unit and dates": {"unit": "BZ-BZ", "occurred_from": "2024-01-01", "occurred_to": "2025-01-01"},
    "bbox, dates and age": {
        "bbox": ",".join(map(str, CITY_BOX)),
        "occurred_from": "2024-01-01",
        "age_max": "50",
    },
    "unit, category and sex": {
        "unit": "BZ-BZ",
        "category": "theft,homicide,robbery",
        "victim_sex": "female,male",
    },
    "everything": {
        "bbox": "-89.5,15.5,-87.5,18.6",
        "occurred_from": "2023-09-01",
        "occurred_to": "2025-03-01T00:00:00-06:00",
        "category": "theft,homicide,robbery,burglary",
        "victim_sex": "female,unknown",
        "age_min": "5",
        "age_max": "80",
        "unit": "BZ",
    },
}


@pytest.mark.parametrize("role", READERS)
@pytest.mark.parametrize("name", QUERIES)
def test_incidents_and_items_answer_the_same_features(client, keys, rows, role, name):
    """For each filter and each role that reads incidents: the same features, with the
    same properties (every key of the layer, units included), the same numberMatched,
    and what the rows say they should be."""
    query = {"source": MINE, **QUERIES[name]}
    params = {**query, "limit": PAGE}
    ours = _walk(client, keys[role], "/incidents", params)
    ogc = _walk(client, keys[role], "/collections/incidents/items", params)
    expected = _expected(rows, query)
    everything = name in ("nothing", "unit, the country")
    assert expected, "a filter that selects nothing tests nothing"
    assert len(expected) < len(rows) or everything, "a filter that selects everything"
    features = {f["id"]: f for page in ours for f in page["features"]}
    assert sorted(features) == expected == sorted(_ids(ogc))
    assert _ids(ours) == sorted(_ids(ours))  # /incidents pages by id, bbox or not
    for f in (f for page in ogc for f in page["features"]):
        assert f == features[f["id"]]  # geometry, id and every property
    fields = {f.name for f in incidents_layer().fields}
    assert all(set(f["properties"]) == fields for f in features.values())
    assert all(p["numberMatched"] == len(expected) for p in [*ours, *ogc])
    if "bbox" not in query:  # the same pages too (a bbox's first OGC page is nearest first)
        assert [[f["id"] for f in p["features"]] for p in ours] == [
            [f["id"] for f in p["features"]] for p in ogc
        ]


def test_the_properties_are_the_rows(client, keys, rows):
    """The features carry what was imported (a reference independent of both routes)."""
    pages = _walk(client, keys["analyst"], "/incidents", {"source": MINE, "limit": 1000})
    by_id = {f["id"]: f for f in pages[0]["features"]}
    assert len(by_id) == len(rows)
    for row in rows.itertuples():
        f = by_id[row.id]
        assert f["geometry"]["coordinates"] == pytest.approx([row.longitude, row.latitude])
        p = f["properties"]
        assert (p["source"], p["source_id"], p["category"]) == (
            row.source,
            row.source_id,
            row.category,
        )
        age = None if pd.isna(row.victim_age) else int(row.victim_age)
        assert (p["victim_sex"], p["victim_age"]) == (row.victim_sex, age)
        assert datetime.fromisoformat(p["occurred_at"]) == row.occurred
        assert p["units"] == row.units
    one = rows.iloc[0]
    single = client.get(f"/incidents/{one.id}", headers=auth(keys["analyst"])).json()
    ogc = client.get(f"/collections/incidents/items/{one.id}", headers=auth(keys["analyst"])).json()
    assert single == {k: v for k, v in ogc.items() if k != "links"} == by_id[one.id]


@pytest.mark.parametrize("role", READERS)
def test_paging_walks_the_same_pages(client, keys, rows, role):
    """Page by page the same ids and the same next cursors (``after`` is the last id on
    both, without a bbox); a cursor written by hand works on both; with a bbox, the
    /incidents pages stay in id order and both walks visit every feature once."""
    params = {"source": MINE, "unit": "BZ", "limit": PAGE}
    ours = _walk(client, keys[role], "/incidents", params)
    ogc = _walk(client, keys[role], "/collections/incidents/items", params)
    assert len(ours) == len(ogc) == -(-len(rows) // PAGE) > 3

    def after(pages):
        links = [next(x for x in p["links"] if x["rel"] == "next") for p in pages[:-1]]
        return [parse_qs(urlsplit(x["href"]).query)["after"] for x in links]

    assert after(ours) == after(ogc) == [[str(p["features"][-1]["id"])] for p in ours[:-1]]
    middle = ours[2]["features"][-1]["id"]
    by_hand = {**params, "after": str(middle)}
    for path in ("/incidents", "/collections/incidents/items"):
        page = client.get(path, params=by_hand, headers=auth(keys[role])).json()
        assert [f["id"] for f in page["features"]] == [f["id"] for f in ours[3]["features"]]

    boxed = {"source": MINE, "bbox": ",".join(map(str, CITY_BOX)), "limit": PAGE}
    ours = _walk(client, keys[role], "/incidents", boxed)
    ogc = _walk(client, keys[role], "/collections/incidents/items", boxed)
    assert (
        _ids(ours) == sorted(_ids(ogc)) == _expected(rows, {"source": MINE, "bbox": boxed["bbox"]})
    )
    assert len(set(_ids(ogc))) == len(_ids(ogc))


def test_a_role_that_cannot_read_incidents_gets_neither(client, keys, rows):
    for path in ("/incidents", "/collections/incidents/items"):
        assert client.get(path, headers=auth(keys["viewer"])).status_code == 403
        assert client.get(path).status_code == 401


# --- local time: the totals of every route agree -----------------------------------------


def _local_2024(rows: pd.DataFrame) -> tuple[int, int]:
    """Incidents of this source in Belize District during 2024: in local time, in UTC."""
    mine = rows[(rows["source"] == SOURCE) & rows["units"].map(lambda u: "BZ-BZ" in u)]
    local = mine["local"].map(lambda t: t.year == 2024).sum()
    utc = mine["occurred"].map(lambda t: t.astimezone(ZoneInfo("UTC")).year == 2024).sum()
    return int(local), int(utc)


def _tile_count(client: TestClient, key: str, **params) -> int:
    """Incidents in the world tile (z0: clustered, each cluster with its count)."""
    response = client.get("/tiles/incidents/0/0/0.mvt", params=params, headers=auth(key))
    assert response.status_code == 200, response.text
    tile = mapbox_vector_tile.decode(response.content) if response.content else {}
    return sum(f["properties"]["count"] for f in tile.get("incidents", {}).get("features", []))


def test_bare_dates_are_local_time_on_every_route(client, keys, rows, db):
    """For Belize District in 2024 with bare dates, /stats, /incidents, the OGC items
    (named parameters, ``datetime``, a date-time property and CQL2), the tiles and a hot
    spot analysis count the same incidents: those of 2024 in Belize time, which here
    are not those of 2024 in UTC."""
    analyst = keys["analyst"]
    local, utc = _local_2024(rows)
    assert local != utc  # the edges make the difference
    sql_local = db.execute(
        "SELECT count(*) FROM incident i JOIN admin_unit u ON u.id = ANY(i.unit_ids) "
        "WHERE i.source = %s AND i.deleted_at IS NULL AND u.code = 'BZ-BZ' "
        "AND i.occurred_at >= '2024-01-01T00:00:00-06:00' "
        "AND i.occurred_at < '2025-01-01T00:00:00-06:00'",
        (SOURCE,),
    ).fetchone()[0]
    assert sql_local == local
    dates = {"occurred_from": "2024-01-01", "occurred_to": "2025-01-01"}
    query = {"source": SOURCE, "unit": "BZ-BZ", **dates}

    stats = client.get("/stats", params=query, headers=auth(analyst))
    assert stats.status_code == 200, stats.text
    assert sum(r["count"] for r in stats.json()["rows"]) == local

    for path in ("/incidents", "/collections/incidents/items"):
        page = client.get(path, params={**query, "limit": 1}, headers=auth(analyst)).json()
        assert page["numberMatched"] == local, path

    items = "/collections/incidents/items"
    base = {"source": SOURCE, "unit": "BZ-BZ", "limit": 1}
    for extra in (
        {"datetime": "2024-01-01/2024-12-31T23:59:59.999"},
        {"datetime": "2024-01-01T00:00:00/2024-12-31 23:59:59.999"},
        {"filter": "occurred_at >= DATE('2024-01-01') AND occurred_at < DATE('2025-01-01')"},
        {"filter": "occurred_at >= TIMESTAMP('2024-01-01T00:00:00') AND "
                   "occurred_at < TIMESTAMP('2025-01-01T00:00:00')"},
    ):  # fmt: skip
        page = client.get(items, params={**base, **extra}, headers=auth(analyst)).json()
        assert page["numberMatched"] == local, extra
    # An equality on the date-time property: the incident at local midnight, not the
    # one six hours later (midnight UTC).
    midnight = client.get(
        items, params={**base, "occurred_at": "2024-01-01T00:00:00"}, headers=auth(analyst)
    ).json()
    assert midnight["numberMatched"] == 1
    feature = midnight["features"][0]["properties"]
    assert datetime.fromisoformat(feature["occurred_at"]) == datetime(2024, 1, 1, tzinfo=TZ)

    assert _tile_count(client, analyst, **query) == local

    body = {
        "method": "gi_star",
        "units": {"type": "grid", "cell_size_m": 4000},
        "area": "BZ-BZ",
        "filters": {**dates, "unit": "BZ-BZ", "sources": [SOURCE]},
    }
    response = client.post("/analyses/hotspots", json=body, headers=auth(analyst))
    assert response.status_code in (201, 202), response.text
    url, deadline = response.headers["location"] + "?format=run", time.monotonic() + 300
    while (run := client.get(url, headers=auth(analyst)).json())["status"] == "running":
        assert time.monotonic() < deadline, "the analysis never finished"
        time.sleep(0.2)
    assert run["status"] == "completed", run
    assert run["summary"]["incidents"] == local


# --- the bbox: one parser, one answer -------------------------------------------------------


@pytest.mark.parametrize(
    "bbox",
    [
        "1,2,3",
        "a,b,c,d",
        "1,2,3,4,5",
        "",
        "nan,17,-88,18",
        "-88.3,17.6,-88.1,17.4",  # south above north
        "-88.1,17.4,-88.3,17.6",  # west of east: across the antimeridian
        "1,2,3,4,5,6,7",
    ],
)
def test_a_malformed_bbox_is_the_same_400_on_both(client, keys, bbox):
    """A malformed bbox is a 400 application/problem+json on both doors, in the same
    words (it was a 422 on /incidents before the two became one read path)."""
    answers = []
    for path in ("/incidents", "/collections/incidents/items"):
        response = client.get(path, params={"bbox": bbox}, headers=auth(keys["analyst"]))
        assert response.status_code == 400, (path, response.text)
        assert response.headers["content-type"] == PROBLEM
        body = response.json()
        assert body["status"] == 400 and "bbox" in body["detail"]
        answers.append(body["detail"])
    assert answers[0] == answers[1]


def test_four_or_six_numbers_on_both(client, keys, rows):
    """A bbox of 4 numbers or of 6 (heights ignored) is taken by both doors."""
    west, south, east, north = CITY_BOX
    expected = _expected(rows, {"bbox": ",".join(map(str, CITY_BOX))})
    assert expected
    for bbox in (f"{west},{south},{east},{north}", f"{west},{south},-5,{east},{north},5"):
        for path in ("/incidents", "/collections/incidents/items"):
            pages = _walk(
                client, keys["analyst"], path, {"source": MINE, "bbox": bbox, "limit": 1000}
            )
            assert sorted(_ids(pages)) == expected, (path, bbox)


def test_units_codes_by_position_and_through_unnest_agree(rows, db):
    """The ``units`` property reads the codes by position for up to four levels and
    through ``unnest`` beyond (``app.ogc.layers._unit_codes``): both give the stored
    units, country first."""
    from app.ogc.layers import _unit_codes

    found = db.execute(
        f"SELECT incident.id, ({_unit_codes(0)})::text, ({_unit_codes(4)})::text "
        "FROM incident WHERE incident.source IN (%s, %s)",
        (SOURCE, OTHER),
    ).fetchall()
    units = dict(zip(rows["id"], rows["units"], strict=True))
    assert len(found) == len(units)
    for fid, every, fast in found:
        assert orjson.loads(every) == orjson.loads(fast) == units[fid]
