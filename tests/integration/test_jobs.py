"""The job queue with real worker processes on the real PostgreSQL (issue 18): runs done
once by several workers, a SIGKILLed worker's run finished by another, bad input not
retried, cancelling, schedules, and what /jobs, /schedules, /metrics and /ready say.

Every worker here is an ``observatory worker`` subprocess beside the session's worker
(tests.conftest). Runs that must go to one chosen worker are queued on a queue of their
own, which only that worker takes jobs from (a worker takes the service's queues
unless told otherwise).
"""

from __future__ import annotations

import contextlib
import json
import re
import signal
import threading
import time
from collections.abc import Iterator
from datetime import datetime
from zoneinfo import ZoneInfo

import geopandas as gpd
import psycopg
import pytest
from croniter import croniter
from fastapi.testclient import TestClient

from app.demo.incidents import generate_incidents
from app.main import create_app
from app.services.imports import import_frame
from app.services.incident_rows import ReadOptions
from app.sql import analyses as sql
from app.worker.queue import make_app
from tests.conftest import BELIZE, auth, call_service, new_cluster, worker_process
from tests.integration.helpers import import_csv, write_incident_csv
from tests.integration.test_faults import migrated_with_districts

SOURCE = "jobs-test"
QUICK = {"method": "gi_star", "units": {"type": "h3", "resolution": 5}}
# Long enough to be killed or cancelled in the middle: ~30,000 cells, 499 permutations.
LONG = {"method": "gi_star", "units": {"type": "h3", "resolution": 8}, "permutations": 499}


@pytest.fixture(scope="module")
def incidents(base_data):
    """5,000 synthetic incidents (the demo generator) under their own source."""
    districts = gpd.read_file(BELIZE / "boundaries" / "belize_adm1_districts.geojson").rename(
        columns={"iso_3166_2": "code", "district": "name"}
    )
    frame = generate_incidents(districts, n=5_000, seed=18).assign(source=SOURCE)
    frame = frame.astype(object).where(frame.notna(), "").astype(str)
    report = call_service(
        base_data,
        lambda engine: import_frame(
            engine, base_data, frame, ReadOptions(), actor="tests", filename="jobs.csv",
            fmt="csv",
        ),
    )  # fmt: skip
    assert report.inserted == 5_000
    return report


def _body(spec: dict, source: str = SOURCE) -> dict:
    return {**spec, "filters": {"sources": [source]}}


def _queue_run(settings, spec: dict, queue: str) -> int:
    """A run stored as the API stores it, its job sent to ``queue``."""
    from app.schemas.analyses import HotspotRequest

    body = HotspotRequest.model_validate(spec)

    async def go(engine):
        async with engine.begin() as conn:
            insert = sql.insert_run("hotspots", body.method, body.model_dump(mode="json"), "tests")
            run_id = (await conn.execute(insert)).scalar_one()
        app = make_app(settings)
        async with app.open_async():
            deferrer = app.configure_task("analysis", queue=queue, lock=f"run:{run_id}")
            await deferrer.defer_async(
                run_id=run_id, request=body.model_dump(mode="json", exclude_unset=True)
            )
        return run_id

    return call_service(settings, go)


def _run(db, run_id: int) -> dict:
    row = db.execute(
        "SELECT status, message, summary, (SELECT count(*) FROM analysis_cell_value v "
        "WHERE v.run_id = r.id) FROM analysis_run r WHERE id = %s",
        [run_id],
    ).fetchone()
    return {"status": row[0], "message": row[1], "summary": row[2], "cells": row[3]}


def _job(db, run_id: int) -> dict:
    """The run's job: status, attempts, how often a worker started it, and how often it
    was handed back to the queue while it ran (``deferred_for_retry``: by a watchman
    after its worker was silent for ``worker.stalled_s``, or after a transient error)."""
    row = db.execute(
        "SELECT j.id, j.status::text, j.attempts, j.worker_id, "
        "(SELECT count(*) FILTER (WHERE e.type = 'started') FROM "
        "procrastinate.procrastinate_events e WHERE e.job_id = j.id), "
        "(SELECT count(*) FILTER (WHERE e.type = 'deferred_for_retry') FROM "
        "procrastinate.procrastinate_events e WHERE e.job_id = j.id) "
        "FROM procrastinate.procrastinate_jobs j WHERE j.task_name = 'analysis' "
        "AND (j.args->>'run_id')::bigint = %s",
        [run_id],
    ).fetchall()
    assert len(row) == 1, row  # one job per run
    job_id, status, attempts, worker_id, started, handed_back = row[0]
    return {
        "id": job_id, "status": status, "attempts": attempts, "worker": worker_id,
        "started": started, "handed_back": handed_back,
    }  # fmt: skip


@contextlib.contextmanager
def _heartbeat_gaps(db_url: str) -> Iterator[dict[int, float]]:
    """The longest silence (seconds since its last heartbeat) seen of each worker while
    the block runs, sampled every 0.2 s: what a watchman judges a worker dead by."""
    longest: dict[int, float] = {}
    done = threading.Event()

    def sample() -> None:
        with psycopg.connect(db_url, autocommit=True) as conn:
            while not done.wait(0.2):
                for worker, age in conn.execute(
                    "SELECT id, extract(epoch FROM now() - last_heartbeat)::float "
                    "FROM procrastinate.procrastinate_workers"
                ):
                    longest[worker] = max(age, longest.get(worker, 0.0))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        yield longest
    finally:
        done.set()
        sampler.join(10)


def _wait(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)
    return value


def _hasty(settings):
    """Settings whose API answers 202 at once (wait_s 0)."""
    return settings.model_copy(
        update={"analysis": settings.analysis.model_copy(update={"wait_s": 0})}
    )


def test_fifty_runs_on_two_more_workers_complete_each_once(
    base_data, keys, incidents, db, tmp_path
):
    """50 queued runs on three workers: each computed and stored exactly once.

    A worker silent for ``stalled_s`` (6 s here) is taken for dead and its job handed to
    another: on a machine loaded far beyond its cores a live worker can miss its
    heartbeats that long, and its job then starts a second time. That second start finds
    the run locked, then ended, and stores nothing (jobs.execute_run): the result is still
    stored once. So: every run completed with one result; a job started more than once
    only after it was handed back; one start and one attempt for every other job."""
    with (
        _heartbeat_gaps(base_data.libpq_url) as gaps,
        worker_process(base_data.libpq_url, tmp_path / "w1.log"),
        worker_process(base_data.libpq_url, tmp_path / "w2.log"),
        TestClient(create_app(_hasty(base_data))) as client,
    ):
        analyst = auth(keys["analyst"])
        ids = []
        for seed in range(50):
            body = _body({**QUICK, "permutations": 9, "seed": seed})
            response = client.post("/analyses/hotspots", json=body, headers=analyst)
            assert response.status_code in (201, 202), response.text
            ids.append(response.json()["id"])
        _wait(lambda: all(_run(db, i)["status"] != "running" for i in ids), 600, "the 50 runs")
        # Read while the workers live: a stopped worker's id is cleared from its jobs.
        jobs = [_job(db, i) for i in ids]
    runs = [_run(db, i) for i in ids]
    assert {r["status"] for r in runs} == {"completed"}, [r["message"] for r in runs]
    for run in runs:  # one result each: every unit's values once
        assert run["cells"] == run["summary"]["units"] > 50
    assert {j["status"] for j in jobs} == {"succeeded"}
    why = f"longest heartbeat silence per worker (s): {gaps}; jobs: {jobs}"
    # procrastinate counts an attempt when it ends: one start, one attempt each, unless
    # the job was handed back while it ran (a start per hand-back at most).
    for job in jobs:
        if job["handed_back"] == 0:
            assert job["started"] == 1 and job["attempts"] == 1, why
        else:
            assert 1 <= job["started"] <= 1 + job["handed_back"], why
    # Most jobs run undisturbed; a hand-back is the exception, never the rule.
    assert sum(j["handed_back"] == 0 for j in jobs) >= 40, why
    assert len({j["worker"] for j in jobs}) >= 2, "the work was shared between workers"


def test_a_killed_workers_run_is_finished_by_another(base_data, incidents, db, tmp_path):
    run_id = _queue_run(base_data, _body(LONG), "kill-test")
    first = tmp_path / "first.log"
    with worker_process(base_data.libpq_url, first, queues="kill-test") as worker:
        # Its job, and the run computing, before the kill.
        _wait(lambda: _job(db, run_id)["status"] == "doing", 120, "the job to start")
        _wait(lambda: _run(db, run_id)["message"] not in (None, "started"), 120, "its progress")
        assert _run(db, run_id)["status"] == "running"
        worker.send_signal(signal.SIGKILL)
        worker.wait()
    assert _job(db, run_id)["status"] == "doing"  # nobody said it stopped: it stalled
    with worker_process(base_data.libpq_url, tmp_path / "second.log", queues="kill-test"):
        _wait(lambda: _run(db, run_id)["status"] != "running", 600, "the run to end")
    run, job = _run(db, run_id), _job(db, run_id)
    assert run["status"] == "completed", run["message"]
    assert run["cells"] == run["summary"]["units"] > 10_000  # stored once
    assert job["status"] == "succeeded" and job["started"] == 2 and job["attempts"] == 2


def test_bad_input_fails_the_run_at_once_without_retry(client, keys, incidents, db):
    body = _body({"units": {"type": "admin", "level": 1}})  # 6 districts: too few units
    response = client.post("/analyses/hotspots", json=body, headers=auth(keys["analyst"]))
    assert response.status_code == 422, response.text
    run_id = response.json()["run_id"]
    assert "at least 30 units" in _run(db, run_id)["message"]
    job = _job(db, run_id)
    assert job["attempts"] == 1 and job["started"] == 1 and job["status"] == "succeeded"


def test_cancel_a_queued_and_a_running_run(base_data, client, keys, incidents, db, tmp_path):
    analyst = auth(keys["analyst"])
    queued = _queue_run(base_data, _body(QUICK), "nobody-takes-this")
    response = client.post(f"/analyses/{queued}/cancel", headers=analyst)
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "cancelled"
    assert _job(db, queued)["status"] == "cancelled"
    assert client.get(f"/analyses/{queued}", headers=analyst).status_code == 409
    again = client.post(f"/analyses/{queued}/cancel", headers=analyst)
    assert again.status_code == 409 and "cancelled" in again.json()["detail"]
    assert client.post("/analyses/999999/cancel", headers=analyst).status_code == 404
    viewer = client.post(f"/analyses/{queued}/cancel", headers=auth(keys["viewer"]))
    assert viewer.status_code == 403

    running = _queue_run(base_data, _body(LONG), "cancel-test")
    with worker_process(base_data.libpq_url, tmp_path / "cancel.log", queues="cancel-test"):
        _wait(lambda: _job(db, running)["status"] == "doing", 120, "the job to start")
        response = client.post(f"/analyses/{running}/cancel", headers=analyst)
        assert response.status_code == 200 and response.json()["status"] == "cancelled"
        _wait(lambda: _job(db, running)["status"] != "doing", 60, "the job to stop")
    assert _job(db, running)["status"] in ("aborted", "succeeded")
    run = _run(db, running)
    assert run["status"] == "cancelled" and run["summary"] == {}


def test_a_kde_run_answers_its_files_not_cells(client, keys, incidents):
    """``GET /analyses/{id}`` of a KDE run: the run with links to its GeoTIFF and hot
    areas (a KDE run stores no cells), which serve them."""
    analyst = auth(keys["analyst"])
    body = {"filters": {"sources": [SOURCE]}, "bandwidth_m": 3000, "cell_size_m": 300}
    posted = client.post("/analyses/kde", json=body, headers=analyst)
    assert posted.status_code in (201, 202), posted.text
    url = f"/analyses/{posted.json()['id']}"
    deadline = time.monotonic() + 120
    while (response := client.get(url, headers=analyst)).status_code == 202:
        assert time.monotonic() < deadline, "the KDE run never finished"
        time.sleep(0.2)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    run = response.json()
    assert run["kind"] == "kde" and run["status"] == "completed"
    assert run["summary"]["incidents"] == 5_000 and run["summary"]["bandwidth_m"] == 3000
    links = {link["rel"]: link for link in run["links"]}
    assert links["self"]["href"].endswith(url)
    tif = client.get(links["enclosure"]["href"], headers=analyst)
    assert tif.status_code == 200 and tif.content[:4] == b"II*\x00"  # a little-endian TIFF
    areas = client.get(links["alternate"]["href"], headers=analyst)
    assert areas.status_code == 200 and areas.json()["type"] == "FeatureCollection"
    assert len(areas.json()["features"]) == run["summary"]["areas"] > 0
    listed = client.get("/analyses?kind=kde", headers=analyst).json()["runs"]
    assert next(r for r in listed if r["id"] == run["id"])["links"] == run["links"]
    table = client.get(f"{url}?format=csv", headers=analyst)
    assert table.status_code == 422 and "kde.tif" in table.json()["detail"]


def test_jobs_metrics_and_ready_show_the_queue(base_data, client, keys, incidents, db):
    waiting = _queue_run(base_data, _body(QUICK), "nobody-takes-this")
    admin = auth(keys["admin"])
    listed = client.get("/jobs", headers=admin)
    assert listed.status_code == 200, listed.text
    job = next(j for j in listed.json()["jobs"] if j["run_id"] == waiting)
    assert job["status"] == "todo" and job["queue"] == "nobody-takes-this" and job["age_s"] >= 0
    # What the job is for: the run's id and kind.
    assert (job["run_kind"], job["batch_id"]) == ("hotspots", None)
    assert job["purpose"] == f"hotspots run {waiting}"
    assert listed.json()["workers"], "the session's worker is alive"
    assert client.get("/jobs", headers=auth(keys["analyst"])).status_code == 403
    bad = client.get("/jobs?status=sleeping", headers=admin)
    assert bad.status_code == 422
    metrics = client.get("/metrics").text

    def gauge(name: str) -> float:
        return float(re.search(rf"^{name} (\S+)$", metrics, re.M).group(1))

    assert gauge("observatory_queue_depth") >= 1
    assert gauge("observatory_queue_oldest_queued_seconds") > 0
    assert gauge("observatory_workers_live") >= 1
    ready = client.get("/ready").json()
    assert ready["workers"]["seen_last_minute"] >= 1
    client.post(f"/analyses/{waiting}/cancel", headers=auth(keys["analyst"]))
    assert _job(db, waiting)["status"] == "cancelled"


def _defers(db, cron_slot: int) -> int:
    return db.execute(
        "SELECT count(*) FROM procrastinate.procrastinate_periodic_defers "
        "WHERE periodic_id = 'housekeeping' AND defer_timestamp = %s",
        [cron_slot],
    ).fetchone()[0]


def test_a_schedule_fires_and_a_missed_slot_runs_once(base_data, keys, db, tmp_path):
    # Every 2 seconds (a sixth field: seconds).
    every = {"OBSERVATORY_WORKER__SCHEDULES": json.dumps({"housekeeping": "* * * * * */2"})}
    settings = base_data.model_copy(
        update={
            "worker": base_data.worker.model_copy(
                update={"schedules": {"housekeeping": "* * * * * */2"}}
            )
        }
    )
    started = time.time()
    with (
        worker_process(base_data.libpq_url, tmp_path / "cron.log", env=every),
        TestClient(create_app(settings)) as client,
    ):

        def fired():
            listed = client.get("/schedules", headers=auth(keys["admin"])).json()
            (schedule,) = listed["schedules"]
            last = schedule["last_run"]
            if last and datetime.fromisoformat(last).timestamp() > started + 1:
                return schedule if schedule["last_outcome"] == "succeeded" else None
            return None

        schedule = _wait(fired, 60, "the schedule to fire")
    assert schedule["cron"] == "* * * * * */2" and schedule["timezone"] == "America/Belize"
    assert datetime.fromisoformat(schedule["next_run"]) > datetime.fromisoformat(
        schedule["last_run"]
    )
    assert schedule["last_ended_at"] is not None

    # New Year, 00:00 local time (Belize, UTC-6): missed when the worker starts, so it
    # runs once, now; a second worker (or a restart) does not run it again.
    yearly = {"OBSERVATORY_WORKER__SCHEDULES": json.dumps({"housekeeping": "0 0 1 1 *"})}
    zone = ZoneInfo(base_data.territory.timezone)
    slot = int(datetime(datetime.now(zone).year, 1, 1, tzinfo=zone).timestamp())
    before = _defers(db, slot)
    for name in ("yearly-1.log", "yearly-2.log"):
        with worker_process(base_data.libpq_url, tmp_path / name, env=yearly):
            _wait(lambda: _defers(db, slot) > 0, 60, "the missed slot to be deferred")
            time.sleep(1)
    assert before == 0 and _defers(db, slot) == 1


def test_schedules_need_an_admin(client, keys, base_data):
    assert client.get("/schedules").status_code == 401
    assert client.get("/schedules", headers=auth(keys["analyst"])).status_code == 403
    listed = client.get("/schedules", headers=auth(keys["admin"])).json()["schedules"]
    # Every schedule configured (worker.schedules, whatever later issues add), in order,
    # each next run read in the territory's time zone.
    configured = base_data.worker.schedules
    assert [s["name"] for s in listed] == list(configured) and "housekeeping" in configured
    zone = ZoneInfo(base_data.worker.timezone or base_data.territory.timezone)
    for schedule in listed:
        assert schedule["cron"] == configured[schedule["name"]]
        next_run = datetime.fromisoformat(schedule["next_run"])
        expected = croniter(schedule["cron"], datetime.now(zone)).get_next(datetime)
        assert next_run == expected and next_run.utcoffset() == expected.utcoffset()
    # The shipped housekeeping slot: 03:17 in Belize (UTC-6).
    if configured["housekeeping"] == "17 3 * * *":
        next_run = datetime.fromisoformat(listed[0]["next_run"])
        assert (next_run.utcoffset().total_seconds(), next_run.hour, next_run.minute) == (
            -6 * 3600, 3, 17,
        )  # fmt: skip


def test_a_database_restart_during_a_run_is_retried_and_completes(tmp_path_factory, tmp_path):
    with new_cluster(tmp_path_factory, "jobs-restart", "observatory_jobs_restart") as cluster:
        settings = migrated_with_districts(cluster)
        csv_path = write_incident_csv(tmp_path / "few.csv", n=3000, source="restart", seed=5)
        assert import_csv(settings, csv_path).inserted == 3000
        run_id = _queue_run(settings, _body(LONG, "restart"), "analyses")
        with worker_process(settings.libpq_url, tmp_path / "restart.log"):
            with psycopg.connect(settings.libpq_url, autocommit=True) as db:
                _wait(lambda: _job(db, run_id)["status"] == "doing", 120, "the job to start")
                _wait(lambda: _run(db, run_id)["message"] not in (None, "started"), 120, "progress")
            cluster.stop()  # every connection of the worker is cut in the middle of the run
            time.sleep(2)
            cluster.start()
            with psycopg.connect(settings.libpq_url, autocommit=True) as db:
                _wait(lambda: _run(db, run_id)["status"] != "running", 600, "the run to end")
                run, job = _run(db, run_id), _job(db, run_id)
        log = (tmp_path / "restart.log").read_text()
        assert run["status"] == "completed", (run["message"], log[-3000:])
        assert run["cells"] == run["summary"]["units"] > 10_000  # stored once
        assert job["status"] == "succeeded" and job["started"] >= 2, job
