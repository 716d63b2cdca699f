"""Near repeat (issue 19, point 3) on the real PostGIS and the session's real worker: the
Knox test per distance x time band as a run, its JSON and CSV, its errors, and the risk
zones a significant run draws around new incidents (expiring by themselves, public only
without their point and only for non-sensitive categories).

The data: 300 burglaries spread over 2024 in a 3 km square of Belize City, and 60 more
each within 40 m and 5 days after one of them (a planted near-repeat pattern), under a
source of this module; the same again as domestic violence (sensitive) under another.
"""

from __future__ import annotations

import csv
import io
import time
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest
import shapely
from pyproj import Transformer
from shapely.geometry import shape

from app.services.near_repeat import refresh_risk_zones
from tests.conftest import auth, call_service

SOURCE = "near-repeat-test"
SOURCE_DV = "near-repeat-dv"
PROBLEM = "application/problem+json"
CENTRE = (-88.2000, 17.5000)  # Belize City
BANDS = {"distance_bands_m": [100, 500, 1000], "time_bands_days": [7, 14, 28]}
TO_UTM = Transformer.from_crs(4326, 32616, always_xy=True)
TO_LONLAT = Transformer.from_crs(32616, 4326, always_xy=True)


def planted(seed: int = 19) -> tuple[np.ndarray, np.ndarray, pd.Series]:
    """Lon, lat and local times of the planted pattern."""
    rng = np.random.default_rng(seed)
    cx, cy = TO_UTM.transform(*CENTRE)
    xy = rng.uniform(-1500, 1500, (300, 2)) + np.array([cx, cy])
    days = rng.uniform(0, 360, 300)
    src = rng.integers(0, 300, 60)
    xy = np.vstack([xy, xy[src] + rng.uniform(-28, 28, (60, 2))])
    days = np.concatenate([days, days[src] + rng.uniform(0, 5, 60)])
    lon, lat = TO_LONLAT.transform(xy[:, 0], xy[:, 1])
    when = pd.Timestamp("2024-01-01") + pd.to_timedelta(days, "D")
    return np.asarray(lon), np.asarray(lat), pd.Series(when.strftime("%Y-%m-%d %H:%M:%S"))


@pytest.fixture(scope="module")
def data(client, keys, tmp_path_factory) -> None:
    """The planted pattern as burglaries and as domestic violence, imported."""
    lon, lat, when = planted()
    for source, category in ((SOURCE, "burglary"), (SOURCE_DV, "domestic_violence")):
        path = tmp_path_factory.mktemp("near_repeat") / f"{source}.csv"
        pd.DataFrame(
            {
                "source": source,
                "source_id": [f"{source}-{i}" for i in range(len(lon))],
                "category": category,
                "occurred_at": when,
                "longitude": lon.round(7),
                "latitude": lat.round(7),
            }
        ).to_csv(path, index=False)
        with path.open("rb") as f:
            answer = client.post(
                "/imports", files={"file": (path.name, f, "text/csv")},
                headers=auth(keys["admin"]),
            )  # fmt: skip
        assert answer.status_code == 201, answer.text
        assert answer.json()["inserted"] == len(lon)


def run(client, keys, body: dict, *, expect: int = 201) -> dict:
    """POST a near-repeat run and wait for its end; the run, or the problem."""
    answer = client.post("/analyses/near-repeat", json=body, headers=auth(keys["analyst"]))
    if answer.status_code == 202:
        url = answer.headers["Location"]
        deadline = time.monotonic() + 120
        while answer.status_code == 202 or answer.json().get("status") == "running":
            assert time.monotonic() < deadline, answer.text
            time.sleep(0.2)
            answer = client.get(url, params={"format": "run"}, headers=auth(keys["analyst"]))
            if answer.json().get("status") != "running":
                answer = client.get(url, headers=auth(keys["analyst"]))
        expect = 200 if expect == 201 else expect  # a GET of the ended run
    assert answer.status_code == expect, answer.text
    return answer.json()


def body(**extra) -> dict:
    """A request on this module's burglaries."""
    return {
        "filters": {"sources": [SOURCE], "categories": ["burglary"]},
        **BANDS, "permutations": 199, "seed": 7, **extra,
    }  # fmt: skip


def cell(bands: list[dict], d_to: float, t_to: float) -> dict:
    return next(b for b in bands if b["distance_to"] == d_to and b["time_to"] == t_to)


def test_planted_pattern_is_found_near_and_not_far(data, client, keys) -> None:
    """Within 100 m and 7 days the Knox ratio is large and p the smallest possible;
    500-1000 m or 14-28 days away it is not significant."""
    result = run(client, keys, body())
    assert result["kind"] == "near_repeat" and result["status"] == "completed"
    summary = result["summary"]
    assert summary["incidents"] == 360 and summary["seed"] == 7
    bands = summary["bands"]
    assert len(bands) == 9
    near = cell(bands, 100, 7)
    assert near["observed"] >= 60  # every planted follow-up pairs with its source
    assert near["knox_ratio"] > 5
    assert near["p_value"] == pytest.approx(1 / 200)
    assert near["significant"] is True
    for far in (cell(bands, 1000, 7), cell(bands, 100, 28), cell(bands, 1000, 28)):
        assert far["p_value"] > 0.05 and far["significant"] is False, far
    # Pairs add up to those within the last distance band and time band.
    assert sum(b["observed"] for b in bands) <= summary["pairs"]
    assert summary["risk_zone"]["distance_m"] == 100 and summary["risk_zone"]["days"] == 7
    # pointpats' global test on the first cell: the same count.
    assert summary["global_knox"]["statistic"] == near["observed"]


def test_seeded_runs_agree_and_json_matches_csv(data, client, keys) -> None:
    """The same seed gives the same table; the CSV holds the JSON's numbers."""
    a = run(client, keys, body())
    b = run(client, keys, body())
    assert a["id"] != b["id"] and a["summary"]["bands"] == b["summary"]["bands"]
    other = run(client, keys, body(seed=8))
    assert [x["p_value"] for x in other["summary"]["bands"]] != [
        x["p_value"] for x in a["summary"]["bands"]
    ] or [x["expected"] for x in other["summary"]["bands"]] != [
        x["expected"] for x in a["summary"]["bands"]
    ]
    answer = client.get(
        f"/analyses/{a['id']}", params={"format": "csv"}, headers=auth(keys["analyst"])
    )
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(answer.text)))
    assert len(rows) == len(a["summary"]["bands"])
    for row, band in zip(rows, a["summary"]["bands"], strict=True):
        assert float(row["distance_to"]) == band["distance_to"]
        assert float(row["time_to"]) == band["time_to"]
        assert int(row["observed"]) == band["observed"]
        assert float(row["expected"]) == pytest.approx(band["expected"], abs=1e-9)
        assert float(row["p_value"]) == pytest.approx(band["p_value"], abs=1e-12)
        assert float(row["knox_ratio"]) == pytest.approx(band["knox_ratio"], abs=1e-9)
    json_answer = client.get(f"/analyses/{a['id']}", headers=auth(keys["analyst"]))
    assert json_answer.json()["summary"]["bands"] == a["summary"]["bands"]


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"distance_bands_m": [200, 100]}, "strictly increasing"),
        ({"distance_bands_m": [-50, 100]}, "positive"),
        ({"time_bands_days": [7, 7]}, "strictly increasing"),
        ({"time_bands_days": list(range(1, 13))}, "at most 10"),
        ({"distance_bands_m": [100, 50_000]}, "20,000 m"),
        ({"permutations": 5}, "greater than or equal to 19"),
        ({"bbox": [-88.1, 17.4, -88.3, 17.6]}, "min < max"),
        ({"unknown": 1}, "unknown"),
    ],
)
def test_bad_requests_are_422_problems(client, keys, change, words) -> None:
    """Bad bands and options: a 422 problem that says why, before any run is stored."""
    answer = client.post(
        "/analyses/near-repeat", json=body(**change), headers=auth(keys["analyst"])
    )
    assert answer.status_code == 422, answer.text
    assert answer.headers["content-type"].startswith(PROBLEM)
    assert words.lower() in answer.text.lower()


def test_failed_runs_are_422_with_the_reason(data, client, keys) -> None:
    """Too few incidents, an unknown category group: the run fails with a 422 saying why."""
    few = run(client, keys, body(filters={"sources": ["nobody-here"]}), expect=422)
    assert "needs at least 20" in few["detail"]
    group = run(client, keys, body(category_groups=["no-such-group"]), expect=422)
    assert "unknown category group" in group["detail"]
    # A box without the data: too few incidents too.
    empty = run(client, keys, body(bbox=[-89.0, 16.0, -88.9, 16.1]), expect=422)
    assert "0 incidents" in empty["detail"]


def test_only_analysts_run_it(client, keys) -> None:
    """No key: 401; a viewer: 403."""
    assert client.post("/analyses/near-repeat", json=body()).status_code == 401
    viewer = client.post("/analyses/near-repeat", json=body(), headers=auth(keys["viewer"]))
    assert viewer.status_code == 403


def _new_incident(client, keys, source: str, category: str, i: int, at: datetime, lon, lat):
    answer = client.post(
        "/incidents",
        json={
            "source": source, "source_id": f"{source}-new-{i}", "category": category,
            "occurred_at": at.isoformat(),
            "geometry": {"type": "Point", "coordinates": [lon, lat]},
        },
        headers=auth(keys["editor"]),
    )  # fmt: skip
    assert answer.status_code == 201, answer.text
    return answer.json()["id"]


def _features(client, collection: str, key: str | None) -> list[dict]:
    answer = client.get(f"/collections/{collection}/items", params={"limit": 1000},
                        headers=auth(key))  # fmt: skip
    assert answer.status_code == 200, answer.text
    return answer.json()["features"]


def test_risk_zones_for_new_incidents_expire_and_stay_private(data, client, keys, settings) -> None:
    """A significant run with risk_zones draws a zone around each new incident (not the
    old ones), served while its window is open and gone after it; the public layer shows
    the zone only as a grid square around the disc, and never a sensitive run's zone."""
    armed = run(client, keys, body(risk_zones=True))
    assert armed["summary"]["risk_zones_made"] == 0  # the 2024 incidents' windows closed
    dv_filters = {"sources": [SOURCE_DV], "categories": ["domestic_violence"]}
    dv = run(client, keys, body(risk_zones=True, filters=dv_filters))
    assert dv["summary"]["sensitive"] is True and dv["summary"]["risk_zone"] is not None
    now = datetime.now(UTC)
    lon, lat = CENTRE
    fresh = _new_incident(client, keys, SOURCE, "burglary", 1, now - timedelta(days=1), lon, lat)
    # Its 7-day window closes about 25 s from now.
    soon = now - timedelta(days=7) + timedelta(seconds=25)
    closing = _new_incident(client, keys, SOURCE, "burglary", 2, soon, lon + 0.01, lat)
    old = _new_incident(client, keys, SOURCE, "burglary", 3, now - timedelta(days=9), lon, lat)
    sensitive = _new_incident(
        client, keys, SOURCE_DV, "domestic_violence", 1, now - timedelta(hours=5), lon, lat
    )
    outcome = call_service(settings, lambda e: refresh_risk_zones(e, settings))
    assert outcome["zones_made"] >= 3 and outcome["armed_runs"] >= 2
    # A run armed now draws the zones of the open windows itself (in the worker's job).
    later = run(client, keys, body(risk_zones=True))
    assert later["summary"]["risk_zones_made"] == 2  # fresh and closing, not old

    exact = [
        f for f in _features(client, "risk_zones-exact", keys["analyst"])
        if f["properties"]["run_id"] in (armed["id"], dv["id"])
    ]  # fmt: skip
    by_incident = {f["properties"]["incident_id"]: f for f in exact}
    assert set(by_incident) == {fresh, closing, sensitive}
    assert old not in by_incident
    disc = shape(by_incident[fresh]["geometry"])
    x, y = TO_UTM.transform(lon, lat)
    ring = np.array(TO_UTM.transform(*np.array(disc.exterior.coords).T)).T
    np.testing.assert_allclose(np.hypot(ring[:, 0] - x, ring[:, 1] - y), 100, rtol=1e-3)
    assert by_incident[sensitive]["properties"]["sensitive"] is True

    public = [
        f for f in _features(client, "risk_zones", None)
        if f["properties"]["run_id"] in (armed["id"], dv["id"])
    ]  # fmt: skip
    assert len(public) == 2 and {f["properties"]["run_id"] for f in public} == {armed["id"]}
    assert all(set(f["properties"]) == {"run_id", "distance_m", "days", "expires"} for f in public)
    assert {f["id"] for f in public} == {by_incident[fresh]["id"], by_incident[closing]["id"]}
    square = shape(next(f for f in public if f["id"] == by_incident[fresh]["id"])["geometry"])
    assert square.covers(disc)
    # The square is the incident's 500 m grid cell grown by 101 m: its corner says only that.
    for axis in TO_UTM.transform(*shapely.get_coordinates(square).T):
        off = (min(axis) + 101) % 500
        assert min(off, 500 - off) < 0.05
        assert max(axis) - min(axis) == pytest.approx(702, abs=0.5)
    # Analyst-only for the public and for viewers, exact zones included.
    assert client.get("/collections/risk_zones-exact/items").status_code in (401, 403, 404)
    viewer = client.get("/collections/risk_zones-exact/items", headers=auth(keys["viewer"]))
    assert viewer.status_code in (403, 404)

    # The closing zone expires by itself, without any write.
    left = (soon + timedelta(days=7) - datetime.now(UTC)).total_seconds()
    time.sleep(max(left, 0) + 1)
    ids = {f["properties"]["incident_id"] for f in _features(client, "risk_zones-exact",
                                                             keys["analyst"])}  # fmt: skip
    assert closing not in ids and fresh in ids
    public_ids = {f["id"] for f in _features(client, "risk_zones", None)}
    assert by_incident[closing]["id"] not in public_ids
    # The next refresh deletes it.
    again = call_service(settings, lambda e: refresh_risk_zones(e, settings))
    assert again["zones_expired"] >= 1
