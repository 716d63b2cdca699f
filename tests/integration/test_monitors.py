"""Early warning (issue 19) on the Belize demo: the shipped monitors, their evaluation
into alerts, the routes, the published view and the audit of an analyst's change.

The demo (60,000 synthetic incidents, seed 42, 2021-2025) has two neighbourhoods whose
incidence appears and grows in its last two years, Ladyville north and Independence east
(``app.demo.incidents.EMERGING``). The shipped property-crime monitor (H3 resolution 8,
weekly, Farrington flexible) is evaluated at each of the last 12 complete weeks of the
data, as 12 nights would: both neighbourhoods get alerts, and the rest of Belize (about
1,100 cells with property crime) few. Counts per cell and week are small there (one or
two a week in the busiest cells of each neighbourhood), so not every week alarms.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import geopandas as gpd
import h3
import psycopg
import pytest
import shapely
from fastapi.testclient import TestClient
from psycopg import sql

from app.core.cluster import Cluster
from app.core.migrate import upgrade
from app.core.settings import Settings
from app.demo.incidents import EMERGING, generate_incidents
from app.demo.load import COUNTRY, DEMO_SOURCE, DISTRICTS
from app.main import create_app
from app.services import monitors
from tests.conftest import auth, call_service

DATABASE = "monitors_demo"
PROPERTY = "property-crime-h3-weekly"
VAWG = "violence-against-women-district-monthly"
TZ = ZoneInfo("America/Belize")
# The demo's last complete week is the one of Monday 2025-12-22; evaluate 12 weeks.
LAST_WEEK = datetime(2025, 12, 22, tzinfo=TZ)
NEAR_KM = 2.5


@pytest.fixture(scope="module")
def demo(cluster: Cluster) -> Iterator[Settings]:
    """Categories, districts and the demo's incidents (no census, no hot spot run) in a
    database of its own, and the shipped monitors."""
    from app.services.boundaries import import_boundaries
    from app.services.categories import load_categories
    from app.services.imports import import_frame
    from app.services.incident_rows import ReadOptions

    admin = cluster.url.rsplit("/", 1)[0] + "/postgres"
    with psycopg.connect(admin, autocommit=True) as conn:
        name = sql.Identifier(DATABASE)
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(name))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(name))
    settings = Settings(
        environment="test",
        database=cluster.settings.model_copy(update={"name": DATABASE}),
        database_url=None,
        analysis={"warm_up": False},
    )
    upgrade(settings.sqlalchemy_url)
    call_service(settings, lambda e: load_categories(e, settings.territory.categories_file))
    for path, level, code, name in ((COUNTRY, 0, "ISO_A2", "ADMIN"),
                                    (DISTRICTS, 1, "iso_3166_2", "district")):  # fmt: skip
        call_service(
            settings,
            lambda e, p=path, lv=level, c=code, n=name: import_boundaries(
                e, p, level=lv, code_field=c, name_field=n, actor="tests"
            ),
        )
    districts = gpd.read_file(DISTRICTS).rename(columns={"iso_3166_2": "code", "district": "name"})
    frame = generate_incidents(districts, seed=42)
    frame = frame.astype(object).where(frame.notna(), "").astype(str)
    frame = frame.replace({"nan": "", "<NA>": "", "None": ""})
    call_service(
        settings,
        lambda e: import_frame(
            e, settings, frame, ReadOptions(source=DEMO_SOURCE), actor="tests",
            filename="demo.csv", fmt="csv",
        ),
    )  # fmt: skip
    stored = call_service(settings, lambda e: monitors.load_default_definitions(e, actor="tests"))
    assert sorted(stored) == sorted(["homicides-shootings-district-monthly", PROPERTY, VAWG]), (
        stored
    )
    yield settings


@pytest.fixture(scope="module")
def keys(demo: Settings) -> dict[str, str]:
    from app.services.keys import create_key

    return {
        role: call_service(demo, lambda e, r=role: create_key(e, role=r, name=r, actor="tests"))
        for role in ("viewer", "analyst", "admin")
    }


@pytest.fixture(scope="module")
def client(demo: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(demo)) as c:
        yield c


@pytest.fixture(scope="module")
def evaluated(demo: Settings) -> list[monitors.MonitorOutcome]:
    """The property monitor at each of the demo's last 12 weeks, oldest first (as 12
    nights would), then every monitor at the data's end."""

    async def run(engine):
        tz = demo.territory.timezone
        out = await monitors.evaluate_all(engine, tz, codes=[PROPERTY], periods=12)
        out += await monitors.evaluate_all(engine, tz)
        return out

    return call_service(demo, run)


def _near(outline: dict) -> int | None:
    """The index of the emerging neighbourhood within NEAR_KM of the alert, if any."""
    centre = shapely.geometry.shape(outline).centroid
    for i, place in enumerate(EMERGING):
        if h3.great_circle_distance((centre.y, centre.x), (place.lat, place.lon)) < NEAR_KM:
            return i
    return None


def test_the_weeks_are_the_demo_s_last(evaluated):
    weekly = [o for o in evaluated if o.monitor == PROPERTY][:12]
    assert [o.period for o in weekly][-3:] == ["2025-W50", "2025-W51", "2025-W52"]
    assert weekly[0].period == "2025-W41"
    # ~1,100 cells with property crime; a dozen reach the minimum count in a week.
    assert all(1_000 < o.places < 1_300 for o in weekly), [o.places for o in weekly]
    assert all(5 <= o.evaluated <= 40 for o in weekly), [o.evaluated for o in weekly]


def test_the_growing_neighbourhoods_raise_alerts_and_few_places_elsewhere(evaluated, client, keys):
    listed = client.get(
        "/alerts", params={"monitor": PROPERTY, "limit": 1000}, headers=auth(keys["analyst"])
    )
    assert listed.status_code == 200, listed.text
    alerts = listed.json()["items"]
    near, elsewhere = {0: 0, 1: 0}, 0
    for a in alerts:
        detail = client.get(f"/alerts/{a['id']}", headers=auth(keys["analyst"])).json()
        assert detail["place_kind"] == "h3" and detail["outline"]["type"] == "MultiPolygon"
        where = _near(detail["outline"])
        if where is None:
            elsewhere += 1
        else:
            near[where] += 1
    assert near[0] >= 1 and near[1] >= 1, near
    # The neighbourhoods are ~40 cells of Belize's ~1,100 with property crime.
    assert elsewhere <= 8, elsewhere
    assert sum(near.values()) >= 3, near


def test_an_alert_carries_two_years_of_its_series_and_its_counts_are_the_incidents(
    evaluated, client, keys, demo
):
    alerts = client.get(
        "/alerts", params={"monitor": PROPERTY, "period": "2025-W52"}, headers=auth(keys["analyst"])
    ).json()["items"]
    if not alerts:  # the last week alarmed nowhere: take the latest alert
        alerts = client.get(
            "/alerts", params={"monitor": PROPERTY}, headers=auth(keys["analyst"])
        ).json()["items"]
    a = client.get(f"/alerts/{alerts[0]['id']}", headers=auth(keys["analyst"])).json()
    series = a["series"]
    assert len(series) == 104
    assert series[-1]["period"] == a["period"] and series[-1]["alarm"] is True
    assert series[-1]["observed"] == a["observed"] and a["observed"] > a["threshold"]
    assert a["observed"] >= 3 and a["expected"] < a["threshold"]
    assert 1 <= a["lasted"] <= 104
    # The observed count is the incidents of the cells in that ISO week (local time).
    year, week = (int(x) for x in a["period"].split("-W"))
    start = datetime.fromisocalendar(year, week, 1).replace(tzinfo=TZ)
    with psycopg.connect(demo.libpq_url) as conn:
        rows = conn.execute(
            "SELECT ST_X(geom), ST_Y(geom) FROM incident WHERE deleted_at IS NULL "
            "AND category IN ('burglary', 'theft') AND occurred_at >= %s AND occurred_at < %s",
            [start, start + timedelta(days=7)],
        ).fetchall()
    cells = set(a["cells"])
    assert sum(h3.latlng_to_cell(lat, lon, 8) in cells for lon, lat in rows) == a["observed"]
    # Each cell of the group is alarmed; the group's outline covers exactly its cells.
    outline = shapely.geometry.shape(a["outline"])
    for cell in cells:
        lat, lon = h3.cell_to_latlng(cell)
        assert outline.contains(shapely.Point(lon, lat))


def test_evaluating_again_updates_rather_than_duplicates(demo, evaluated, client, keys):
    analyst = auth(keys["analyst"])
    before = client.get("/alerts", params={"limit": 1000}, headers=analyst).json()["items"]

    async def run(engine):
        tz = demo.territory.timezone
        night = await monitors.evaluate_all(engine, tz, codes=[PROPERTY],
                                            now=LAST_WEEK + timedelta(days=8))  # fmt: skip
        return night, await monitors.evaluate_all(engine, tz, codes=[PROPERTY], periods=12)

    (again,), caught_up = call_service(demo, run)
    last = [o for o in evaluated if o.monitor == PROPERTY][11]
    assert again.period == last.period == "2025-W52"
    assert again.alarms == last.alarms and again.alerts_new == 0
    assert again.alerts_updated == last.alerts_new + last.alerts_updated
    # Catching up on the 12 weeks again: the same alarms, no new alert, and no alert taken
    # back to an earlier period.
    weekly = [o for o in evaluated if o.monitor == PROPERTY][:12]
    assert [o.alarms for o in caught_up] == [o.alarms for o in weekly]
    assert sum(o.alerts_new for o in caught_up) == 0
    after = client.get("/alerts", params={"limit": 1000}, headers=analyst).json()["items"]
    assert [(a["id"], a["period"], a["lasted"]) for a in after] == [
        (a["id"], a["period"], a["lasted"]) for a in before
    ]


def test_an_analyst_acknowledges_with_a_note_and_the_audit_log_shows_it(evaluated, client, keys):
    analyst = auth(keys["analyst"])
    (first, *_) = client.get("/alerts", params={"state": "new"}, headers=analyst).json()["items"]
    url = f"/alerts/{first['id']}"
    assert client.patch(url, json={"state": "acknowledged"}).status_code == 401
    viewer = client.patch(
        url, json={"state": "acknowledged", "note": "x"}, headers=auth(keys["viewer"])
    )
    assert viewer.status_code == 403
    no_note = client.patch(url, json={"state": "acknowledged"}, headers=analyst)
    assert no_note.status_code == 422 and "note" in no_note.json()["detail"]
    done = client.patch(
        url, json={"state": "acknowledged", "note": "patrols asked for"}, headers=analyst
    )
    assert done.status_code == 200, done.text
    assert done.json()["state"] == "acknowledged" and done.json()["note"] == "patrols asked for"
    assert done.json()["state_changed_by"].endswith(":analyst")
    log = client.get(
        "/audit", params={"entity": "alert", "entity_id": str(first["id"])},
        headers=auth(keys["admin"]),
    ).json()  # fmt: skip
    (entry,) = log["entries"]
    assert entry["action"] == "acknowledge" and entry["actor"].endswith(":analyst")
    assert entry["before"] == {"state": "new", "note": None}
    assert entry["after"] == {"state": "acknowledged", "note": "patrols asked for"}
    closed = client.patch(url, json={"state": "closed"}, headers=analyst)
    assert closed.status_code == 200 and closed.json()["state"] == "closed"
    again = client.patch(url, json={"state": "acknowledged", "note": "x"}, headers=analyst)
    assert again.status_code == 409


def test_a_public_caller_sees_no_sensitive_monitor_or_alert_and_no_small_count(
    evaluated, client, keys, demo
):
    # A sensitive monitor that alarms readily: VAWG per district, EARS C1 at alpha 0.5.
    body = {
        "name": "vawg-test-readily", "title": "test", "sensitive": True, "min_count": 1,
        "incidents": {"category_groups": ["violence_against_women"], "victim_sex": "female"},
        "places": {"kind": "units", "level": 1}, "step": "month",
        "detector": {"name": "ears", "parameters": {"method": "C1", "alpha": 0.5}},
    }  # fmt: skip
    assert client.post("/monitors", json=body, headers=auth(keys["analyst"])).status_code == 403
    posted = client.post("/monitors", json=body, headers=auth(keys["admin"]))
    assert posted.status_code == 201, posted.text

    async def run(engine):
        return await monitors.evaluate_all(engine, demo.territory.timezone, codes=[body["name"]])

    (outcome,) = call_service(demo, run)
    assert outcome.alarms >= 1, outcome
    analyst = client.get("/alerts", params={"limit": 1000}, headers=auth(keys["analyst"]))
    sensitive = [a for a in analyst.json()["items"] if a["sensitive"]]
    assert sensitive and {a["monitor"] for a in sensitive} <= {body["name"], VAWG}
    for key in (None, keys["viewer"]):
        public = client.get("/alerts", params={"limit": 1000}, headers=auth(key)).json()["items"]
        assert public and not any(a["sensitive"] for a in public)
        assert {a["id"] for a in public} == {
            a["id"] for a in analyst.json()["items"] if not a["sensitive"]
        }
        for a in sensitive[:3]:
            assert client.get(f"/alerts/{a['id']}", headers=auth(key)).status_code == 404
        codes = {m["code"] for m in client.get("/monitors", headers=auth(key)).json()["items"]}
        assert codes == {PROPERTY, "homicides-shootings-district-monthly"}
        assert client.get(f"/monitors/{VAWG}", headers=auth(key)).status_code == 404
        detail = client.get(f"/alerts/{public[0]['id']}", headers=auth(key)).json()
        # No count below privacy.min_count (5), no note, no point.
        for point in [detail, *detail["series"]]:
            assert point["observed"] is None or point["observed"] >= 5, point
        assert detail["note"] is None and detail["state_changed_by"] is None
        assert detail["outline"] is None or detail["outline"]["type"] == "MultiPolygon"
    # An analyst sees the small counts the public does not.
    detail = client.get(f"/alerts/{public[0]['id']}", headers=auth(keys["analyst"])).json()
    assert any(p["observed"] is not None and p["observed"] < 5 for p in detail["series"])
    codes = {
        m["code"] for m in client.get("/monitors", headers=auth(keys["analyst"])).json()["items"]
    }
    assert {VAWG, body["name"]} <= codes


def test_a_monitor_definition_is_checked_before_it_is_stored(client, keys):
    admin = auth(keys["admin"])
    bad = {
        "name": "bad", "title": "bad", "places": {"kind": "h3", "level": 1}, "step": "day",
        "detector": {"name": "ears", "parameters": {}},
    }  # fmt: skip
    answer = client.post("/monitors", json=bad, headers=admin)
    assert answer.status_code == 422
    assert "places" in answer.json()["detail"] and "step" in answer.json()["detail"]
    unknown = {
        "name": "bad", "title": "bad", "places": {"kind": "units", "level": 1}, "step": "month",
        "detector": {"name": "ears", "parameters": {"window": 3}},
    }  # fmt: skip
    answer = client.post("/monitors", json=unknown, headers=admin)
    assert answer.status_code == 422 and "window" in answer.json()["detail"]
    assert client.get("/monitors/bad", headers=admin).status_code == 404


def test_the_nightly_task_evaluates_every_monitor_through_the_queue(
    evaluated, demo, tmp_path, client, keys
):
    """A worker started on the database runs the missed nightly slot of
    ``evaluate_monitors`` (worker.schedules) once: every monitor is evaluated again, its
    open alerts updated in place."""
    import json
    import time

    from tests.conftest import worker_process

    analyst = auth(keys["analyst"])
    before = client.get("/alerts", params={"limit": 1000}, headers=analyst).json()["items"]
    schedules = {"OBSERVATORY_WORKER__SCHEDULES": json.dumps({"evaluate_monitors": "41 2 * * *"})}
    with worker_process(demo.libpq_url, tmp_path / "worker.log", queues="schedules", env=schedules):
        deadline = time.monotonic() + 120
        with psycopg.connect(demo.libpq_url, autocommit=True) as db:
            while True:
                status = db.execute(
                    "SELECT status FROM procrastinate.procrastinate_jobs "
                    "WHERE task_name = 'evaluate_monitors' ORDER BY id DESC LIMIT 1"
                ).fetchone()
                if status is not None and status[0] in ("succeeded", "failed"):
                    break
                assert time.monotonic() < deadline, (tmp_path / "worker.log").read_text()[-3000:]
                time.sleep(0.2)
    assert status[0] == "succeeded", (tmp_path / "worker.log").read_text()[-3000:]
    after = client.get("/alerts", params={"limit": 1000}, headers=analyst).json()["items"]
    # Same alerts (an alarm that goes on updates its alert); the latest ones touched.
    assert {a["id"] for a in after} == {a["id"] for a in before}
    changed = {a["id"] for a in after} - {(a["id"]) for a in before if a in after}
    assert changed, "no alert was updated by the nightly evaluation"


def test_the_cli_lists_monitors_runs_them_and_lists_alerts(evaluated, demo, client, keys):
    import os
    import subprocess
    import sys

    env = {**os.environ, "OBSERVATORY_DATABASE_URL": demo.libpq_url, "COLUMNS": "250"}

    def cli(*args: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "app.cli", *args], env=env, capture_output=True, text=True
        )
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout

    listed = cli("monitors", "list")
    assert PROPERTY in listed and "H3 res 8" in listed and "units level 1" in listed
    ran = cli("monitors", "run", "--monitor", "homicides-shootings-district-monthly")
    assert "homicides-shootings-district-monthly" in ran and "2025-12" in ran
    alerts = client.get("/alerts", params={"limit": 1000}, headers=auth(keys["analyst"]))
    new = [a for a in alerts.json()["items"] if a["state"] == "new"]
    shown = cli("alerts", "list", "--state", "new")
    assert all(f" {a['period']} " in shown for a in new) and str(new[0]["id"]) in shown
    assert "closed" not in cli("alerts", "list", "--state", "new")
    assert "no monitor nope" in cli_fail(env, "monitors", "run", "--monitor", "nope")


def cli_fail(env, *args: str) -> str:
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-m", "app.cli", *args], env=env, capture_output=True, text=True
    )
    assert done.returncode == 1, done.stdout + done.stderr
    return done.stdout + done.stderr


def test_alerts_are_a_layer_items_tiles_style_and_qgis_project(evaluated, client, keys):
    import io
    import zipfile

    import mapbox_vector_tile

    from tests.integration.test_privacy_matrix import tile_of

    analyst = auth(keys["analyst"])
    listed = client.get("/alerts", params={"limit": 1000}, headers=analyst).json()["items"]
    public_ids = {a["id"] for a in listed if not a["sensitive"]}
    sensitive_ids = {a["id"] for a in listed if a["sensitive"]}
    for key in (None, keys["viewer"]):
        ids = [c["id"] for c in client.get("/collections", headers=auth(key)).json()["collections"]]
        assert "alerts" in ids and "alerts-sensitive" not in ids
        page = client.get("/collections/alerts/items", params={"limit": 1000}, headers=auth(key))
        assert page.status_code == 200, page.text
        features = page.json()["features"]
        assert {f["id"] for f in features} == public_ids
        assert all(f["geometry"]["type"] == "MultiPolygon" for f in features)
        assert all(f["properties"]["observed"] is None for f in features)
        assert client.get("/collections/alerts-sensitive/items", headers=auth(key)).status_code in (
            401, 403, 404,
        )  # fmt: skip
    page = client.get("/collections/alerts-sensitive/items", headers=analyst).json()
    assert {f["id"] for f in page["features"]} == sensitive_ids
    mine = client.get("/collections/alerts/items", params={"limit": 1000}, headers=analyst).json()
    assert all(f["properties"]["observed"] >= 3 for f in mine["features"])
    # A vector tile over Ladyville north carries its alerts.
    z, x, y = tile_of(EMERGING[0].lon, EMERGING[0].lat, 12)
    tile = client.get(f"/tiles/alerts/{z}/{x}/{y}.mvt")
    assert tile.status_code == 200
    layer = mapbox_vector_tile.decode(tile.content)["alerts"]
    assert layer["features"] and all(f["properties"]["state"] for f in layer["features"])
    style = client.get("/styles/default.json").json()
    assert "alerts-fill" in {layer["id"] for layer in style["layers"]}
    assert "alerts-sensitive-fill" not in {layer["id"] for layer in style["layers"]}
    qml = client.get("/styles/alerts.qml")
    assert qml.status_code == 200 and "acknowledged" in qml.text
    project = client.get("/qgis/project.qgz", params={"embed_key": "false"}, headers=analyst)
    with zipfile.ZipFile(io.BytesIO(project.content)) as archive:
        text = "".join(archive.read(n).decode("utf-8", "replace") for n in archive.namelist())
    assert "typename='alerts'" in text and "typename='alerts-sensitive'" in text


def test_an_import_queues_one_evaluation(evaluated, demo, client, keys, tmp_path):
    """After an import that changed incidents one evaluation waits in the queue (a
    queueing lock: a second import does not add another)."""
    from tests.integration.helpers import write_incident_csv

    def waiting() -> int:
        with psycopg.connect(demo.libpq_url) as db:
            return db.execute(
                "SELECT count(*) FROM procrastinate.procrastinate_jobs WHERE task_name = "
                "'evaluate_monitors' AND status = 'todo' AND queueing_lock = 'evaluate_monitors'"
            ).fetchone()[0]

    assert waiting() == 0
    for i in range(2):
        path = write_incident_csv(tmp_path / f"{i}.csv", n=5, source=f"monitor-import-{i}")
        with path.open("rb") as f:
            answer = client.post(
                "/imports", files={"file": ("few.csv", f, "text/csv")},
                headers=auth(keys["admin"]),
            )  # fmt: skip
        assert answer.status_code == 201, answer.text
        assert answer.json()["inserted"] == 5
        assert waiting() == 1


def test_a_glr_cusum_monitor_is_judged_on_its_charted_range(evaluated, demo, client, keys):
    """The negative-binomial GLR CUSUM accumulates: an alert's last charted period is an
    alarm, and its run of alarms is what the chart shows."""
    body = {
        "name": "all-incidents-district-glr", "title": "All incidents by district (GLR)",
        "places": {"kind": "units", "level": 1}, "step": "month", "min_count": 3,
        "detector": {"name": "glrnb", "parameters": {"c_arl": 2.0}},
    }  # fmt: skip
    assert client.post("/monitors", json=body, headers=auth(keys["admin"])).status_code == 201

    async def run(engine):
        return await monitors.evaluate_all(
            engine, demo.territory.timezone, codes=[body["name"]], periods=6
        )

    outcomes = call_service(demo, run)
    assert [o.period for o in outcomes] == [f"2025-{m:02d}" for m in range(7, 13)]
    assert all(o.places == 6 and o.evaluated == 6 for o in outcomes), outcomes
    listed = client.get(
        "/alerts", params={"monitor": body["name"]}, headers=auth(keys["analyst"])
    ).json()["items"]
    assert sum(o.alarms for o in outcomes) >= 1 and listed
    for a in listed:
        detail = client.get(f"/alerts/{a['id']}", headers=auth(keys["analyst"])).json()
        assert len(detail["series"]) == 24 and detail["series"][-1]["alarm"] is True
        run_length = 0
        for point in reversed(detail["series"]):
            if not point["alarm"]:
                break
            run_length += 1
        assert detail["lasted"] == run_length
