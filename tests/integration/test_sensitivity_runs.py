"""An index's sensitivity as a run a worker computes (issue 18): ``GET
/indexes/{code}/sensitivity`` reuses the run of the same resolved parameters on the
same data, or queues one and waits for it (202 with the run to poll when it waits too
long); ``POST`` always queues a new run; bad input is refused before a run is stored."""

from __future__ import annotations

import re
import time

import geopandas as gpd
import pytest
from fastapi.testclient import TestClient

from app.demo.incidents import generate_incidents
from app.main import create_app
from app.services.imports import import_frame
from app.services.incident_rows import ReadOptions
from app.services.indexes import load_default_definitions
from app.services.tables import load_demo_population
from tests.conftest import BELIZE, auth, call_service

SOURCE = "sensitivity-runs"
TVI = "/indexes/territorial-violence"


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
    call_service(
        base_data,
        lambda e: import_frame(
            e, base_data, frame, ReadOptions(), actor="tests", filename="sr.csv", fmt="csv"
        ),
    )
    call_service(base_data, lambda e: load_default_definitions(e, actor="tests"))
    return base_data


def _run_id(response) -> int:
    return int(re.search(r"/analyses/(\d+)\?format=run", response.headers["link"]).group(1))


def _runs(db) -> int:
    return db.execute("SELECT count(*) FROM analysis_run WHERE kind = 'sensitivity'").fetchone()[0]


def _get(client, key, **params):
    return client.get(f"{TVI}/sensitivity", params={"period": "2024", **params}, headers=auth(key))


def test_a_get_reuses_the_run_of_the_same_data(client, keys, index_data, db):
    analyst = keys["analyst"]
    first = _get(client, analyst, runs=120, seed=7)
    assert first.status_code == 200, first.text
    bands = first.json()
    assert bands["runs"] == 120 and bands["seed"] == 7 and bands["period"] == "2024"
    assert sorted(r["nominal_rank"] for r in bands["rows"]) == [1, 2, 3, 4, 5, 6]
    again = _get(client, analyst, runs=120, seed=7)
    assert _run_id(again) == _run_id(first) and again.json() == bands
    # An admin (exact figures too) is served the same stored run.
    assert _run_id(_get(client, keys["admin"], runs=120, seed=7)) == _run_id(first)
    run = client.get(f"/analyses/{_run_id(first)}?format=run", headers=auth(analyst)).json()
    assert run["kind"] == "sensitivity" and run["status"] == "completed"
    assert run["parameters"]["version"] >= 1 and run["parameters"]["data_version"]
    assert run["summary"]["sensitivity"] == bands
    # The definition's runs and seed, given or left out: one run.
    default = _get(client, analyst)
    assert _run_id(_get(client, analyst, runs=1000, seed=1)) == _run_id(default)
    # A write to the data the index reads is a new data version: computed again, the same.
    db.execute(
        "UPDATE incident SET attributes = attributes "
        "WHERE id = (SELECT min(id) FROM incident WHERE source = %s)",
        [SOURCE],
    )
    changed = _get(client, analyst, runs=120, seed=7)
    assert _run_id(changed) != _run_id(first) and changed.json() == bands


def test_a_get_that_waits_too_long_answers_the_run_to_poll(base_data, keys, index_data):
    hasty = base_data.model_copy(
        update={"analysis": base_data.analysis.model_copy(update={"read_wait_s": 0})}
    )
    analyst = auth(keys["analyst"])
    with TestClient(create_app(hasty)) as client:
        response = client.get(
            f"{TVI}/sensitivity", params={"period": "2024", "runs": 1500, "seed": 3},
            headers=analyst,
        )  # fmt: skip
        assert response.status_code == 202, response.text
        run = response.json()
        assert run["kind"] == "sensitivity" and run["status"] == "running"
        location = response.headers["location"]
        assert location.endswith(f"{TVI}/sensitivity/runs/{run['id']}")
        deadline = time.monotonic() + 120
        while (polled := client.get(location, headers=analyst)).status_code == 202:
            assert time.monotonic() < deadline, "the sensitivity run never finished"
            time.sleep(0.2)
        assert polled.status_code == 200, polled.text
        assert polled.json()["runs"] == 1500 and polled.json()["seed"] == 3
        wrong_index = location.replace("territorial-violence", "another-index")
        assert client.get(wrong_index, headers=analyst).status_code == 404


def test_a_posted_run_and_refusals(client, keys, index_data, db):
    analyst = auth(keys["analyst"])
    body = {"period": "2024", "runs": 80, "seed": 2}
    posted = client.post(f"{TVI}/sensitivity", json=body, headers=analyst)
    assert posted.status_code in (201, 202), posted.text
    run = posted.json()
    assert run["kind"] == "sensitivity" and run["parameters"]["runs"] == 80
    deadline = time.monotonic() + 120
    while (bands := client.get(posted.headers["location"], headers=analyst)).status_code == 202:
        assert time.monotonic() < deadline, "the sensitivity run never finished"
        time.sleep(0.2)
    assert bands.status_code == 200 and bands.json()["runs"] == 80
    # The same bands as the GET computes (the seed fixes them).
    assert _get(client, keys["analyst"], runs=80, seed=2).json() == bands.json()
    again = client.post(f"{TVI}/sensitivity", json=body, headers=analyst)
    assert again.json()["id"] != run["id"]  # a POST is always a new run
    # Refused before a run is stored.
    before = _runs(db)
    for params, status in (
        ({"period": "2024-Q1"}, 422),  # not a period of this index's kind
        ({"period": "2024", "runs": 5001}, 422),
        ({"period": "2024", "version": 99}, 404),
    ):
        response = _get(client, keys["analyst"], **params)
        assert response.status_code == status, (params, response.text)
        assert response.headers["content-type"] == "application/problem+json"
    unknown = client.get("/indexes/no-such-index/sensitivity?period=2024", headers=analyst)
    assert unknown.status_code == 404
    extra = client.post(f"{TVI}/sensitivity", json={**body, "colour": "red"}, headers=analyst)
    assert extra.status_code == 422
    assert _runs(db) == before
    viewer = auth(keys["viewer"])
    assert client.post(f"{TVI}/sensitivity", json=body, headers=viewer).status_code == 403
    assert client.get(posted.headers["location"], headers=viewer).status_code == 403
