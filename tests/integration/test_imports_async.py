"""Imports as jobs (issue 18): ``?async=true``, or a file above ``api.async_import_mb``,
is answered 202 and imported by the session's worker process, with the same result as
a synchronous import; bad input fails the batch with its reason, without a retry; a
worker SIGKILLed mid-import leaves the batch to another worker, which imports it once."""

from __future__ import annotations

import signal
import time

import pandas as pd
from fastapi.testclient import TestClient

from app.main import create_app
from tests.conftest import auth, call_service, worker_process
from tests.integration.helpers import write_incident_csv

BAD = [
    ({"category": "jaywalking"}, "unknown category 'jaywalking'"),
    ({"occurred_at": "2099-01-01"}, "occurred_at is in the future"),
    ({"longitude": "-74.0", "latitude": "40.7"}, "outside the territory"),
]


def _file(tmp_path, source: str):
    """200 valid rows, three bad ones, and a repeat of the first row's key."""
    path = write_incident_csv(tmp_path / f"{source}.csv", n=200, source=source, seed=23)
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    first = frame.iloc[0].to_dict()
    bad = [{**first, "source_id": f"{source}-bad{i}", **o} for i, (o, _) in enumerate(BAD)]
    rows = [frame.iloc[:50], pd.DataFrame(bad), frame.iloc[50:], pd.DataFrame([first])]
    pd.concat(rows).to_csv(path, index=False)
    return path


def _post(client, path, key, **params):
    with path.open("rb") as fh:
        return client.post(
            "/imports",
            params=params,
            files={"file": (path.name, fh, "text/csv")},
            headers=auth(key),
        )


def _wait(client, url: str, key: str, timeout: float = 90.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        batch = client.get(url, headers=auth(key)).json()
        if batch["status"] in ("completed", "failed"):
            return batch
        assert time.monotonic() < deadline, f"batch still {batch['status']}: {batch}"
        time.sleep(0.2)


def _shape(batch: dict, source: str) -> tuple:
    counts = tuple(batch[k] for k in ("received", "inserted", "updated", "unchanged", "rejected"))
    rejections = [
        (r["row_number"], (r["source_id"] or "").removeprefix(source), r["reason"])
        for r in batch["rejections"]
    ]
    return counts, rejections


def _job(db, batch_id: int) -> tuple:
    return db.execute(
        "SELECT status::text, attempts FROM procrastinate.procrastinate_jobs "
        "WHERE task_name = 'import_file' AND (args->>'batch_id')::integer = %s",
        [batch_id],
    ).fetchall()


def _upload_kept(db, batch_id: int) -> bool:
    row = db.execute("SELECT 1 FROM import_upload WHERE batch_id = %s", [batch_id]).fetchone()
    return row is not None


def test_async_import_equals_the_synchronous_one(client, keys, tmp_path, db):
    editor = keys["editor"]
    sync = _post(client, _file(tmp_path, "sync-twin"), editor)
    assert sync.status_code == 201, sync.text
    queued = _post(client, _file(tmp_path, "async-twin"), editor, **{"async": "true"})
    assert queued.status_code == 202, queued.text
    body = queued.json()
    assert body["status"] in ("queued", "running", "completed")
    assert queued.headers["location"].endswith(f"/imports/{body['id']}")
    done = _wait(client, queued.headers["location"], editor)
    assert done["status"] == "completed", done
    assert done["progress"] == 1.0
    expected = _shape(sync.json(), "sync-twin")
    assert expected[0] == (204, 200, 0, 0, 4)  # 3 bad rows and one repeated key
    assert _shape(done, "async-twin") == expected
    reasons = [r[2] for r in expected[1]]
    assert all(any(want in got for got in reasons) for _, want in BAD), reasons
    assert "duplicate of row 1 (same source and source_id)" in reasons
    # The worker's batch is the user's record: listed, its rejected rows downloadable.
    csv = client.get(f"/imports/{body['id']}/rejections.csv", headers=auth(editor))
    assert csv.status_code == 200 and csv.text.count("\n") == 5
    assert _job(db, body["id"]) == [("succeeded", 1)]
    assert not _upload_kept(db, body["id"])
    # The incidents are stored once: importing the same file again changes nothing.
    again = _post(client, _file(tmp_path, "async-twin"), editor, **{"async": "true"})
    redone = _wait(client, again.headers["location"], editor)
    assert (redone["status"], redone["inserted"], redone["unchanged"]) == ("completed", 0, 200)


def test_bad_file_fails_with_its_reason_and_is_not_retried(client, keys, tmp_path, db):
    path = _file(tmp_path, "no-source")
    frame = pd.read_csv(path, dtype=str, keep_default_na=False).drop(columns="source")
    frame.to_csv(path, index=False)
    queued = _post(client, path, keys["editor"], **{"async": "true"})
    assert queued.status_code == 202, queued.text
    batch_id = queued.json()["id"]
    done = _wait(client, queued.headers["location"], keys["editor"])
    assert done["status"] == "failed"
    assert "the file has no 'source' column" in done["error"]
    assert done["inserted"] == 0 and done["rejections"] == []
    # The job ended (the batch holds the failure) after one attempt: no retry; the file
    # is gone.
    assert _job(db, batch_id) == [("succeeded", 1)]
    assert not _upload_kept(db, batch_id)


def test_wrong_format_is_refused_before_queueing(client, keys, tmp_path):
    path = tmp_path / "notes.pdf"
    path.write_text("source,source_id\n")
    with path.open("rb") as fh:
        response = client.post(
            "/imports",
            params={"async": "true"},
            files={"file": ("notes.pdf", fh, "application/pdf")},
            headers=auth(keys["editor"]),
        )
    assert response.status_code in (400, 415, 422), response.text
    assert response.headers["content-type"] == "application/problem+json"


def test_files_above_the_threshold_are_imported_as_jobs(base_data, keys, tmp_path):
    # 0.001 MB: the ~20 KB file is above it; without ?async it is still a job.
    settings = base_data.model_copy(
        update={"api": base_data.api.model_copy(update={"async_import_mb": 0.001})}
    )
    path = _file(tmp_path, "threshold")
    assert path.stat().st_size > 0.001 * (1 << 20)
    with TestClient(create_app(settings)) as client:
        queued = _post(client, path, keys["editor"])
        assert queued.status_code == 202, queued.text
        done = _wait(client, queued.headers["location"], keys["editor"])
    assert (done["status"], done["inserted"], done["rejected"]) == ("completed", 200, 4)


def test_a_retried_job_stores_one_result(client, keys, tmp_path, db, base_data):
    from app.services.import_jobs import run_queued_import

    queued = _post(client, _file(tmp_path, "retried"), keys["editor"], **{"async": "true"})
    done = _wait(client, queued.headers["location"], keys["editor"])
    assert done["status"] == "completed"
    # The job run again (a retry after its result was stored) writes nothing.
    again = call_service(
        base_data, lambda engine: run_queued_import(engine, base_data, done["id"], final=False)
    )
    assert again == ("skipped", None)
    after = client.get(queued.headers["location"], headers=auth(keys["editor"])).json()
    assert after == done
    stored = db.execute("SELECT count(*) FROM incident WHERE source = 'retried'").fetchone()[0]
    rejected = db.execute(
        "SELECT count(*) FROM import_rejection WHERE batch_id = %s", [done["id"]]
    ).fetchone()[0]
    assert (stored, rejected) == (200, 4)


def _queue_on(settings, path, queue: str) -> int:
    """A batch queued as the API queues it (batch, file, job), its job sent to ``queue``,
    which only the test's own workers take."""
    from app.services.incident_rows import ReadOptions
    from app.sql import imports as sql
    from app.worker.queue import make_app

    async def go(engine):
        async with engine.begin() as conn:
            insert = sql.insert_queued_batch(path.name, "csv", ReadOptions().as_dict(), "tests")
            batch_id = (await conn.execute(insert)).scalar_one()
            await conn.execute(sql.insert_upload(batch_id, path.read_bytes()))
        app = make_app(settings)
        async with app.open_async():
            deferrer = app.configure_task("import_file", queue=queue, lock=f"import:{batch_id}")
            await deferrer.defer_async(batch_id=batch_id)
        return batch_id

    return call_service(settings, go)


def _batch(db, batch_id: int) -> dict:
    row = db.execute(
        "SELECT status, inserted, error FROM import_batch WHERE id = %s", [batch_id]
    ).fetchone()
    return {"status": row[0], "inserted": row[1], "error": row[2]}


def _import_job(db, batch_id: int) -> dict:
    """The batch's one job: status, attempts, and how often a worker started it."""
    rows = db.execute(
        "SELECT j.status::text, j.attempts, (SELECT count(*) FROM "
        "procrastinate.procrastinate_events e WHERE e.job_id = j.id AND e.type = 'started') "
        "FROM procrastinate.procrastinate_jobs j "
        "WHERE j.task_name = 'import_file' AND (j.args->>'batch_id')::integer = %s",
        [batch_id],
    ).fetchall()
    assert len(rows) == 1, rows
    return dict(zip(("status", "attempts", "started"), rows[0], strict=True))


def _until(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)
    return value


def test_a_killed_workers_import_is_imported_once_by_another(base_data, client, keys, tmp_path, db):
    source, rows = "killed-async-import", 40_000
    path = write_incident_csv(tmp_path / "killed-async.csv", n=rows, source=source, seed=29)
    batch_id = _queue_on(base_data, path, "import-kill-test")
    writing = (
        "SELECT count(*) > 0 FROM pg_stat_activity WHERE query ILIKE '%incident_staging%'"
        " AND state = 'active' AND pid <> pg_backend_pid()"
    )
    with worker_process(
        base_data.libpq_url, tmp_path / "first.log", queues="import-kill-test"
    ) as worker:
        # The batch running and its rows being written, then the worker killed.
        _until(lambda: _batch(db, batch_id)["status"] != "queued", 120, "the import to start")
        _until(lambda: db.execute(writing).fetchone()[0], 120, "the rows to be written")
        assert _batch(db, batch_id)["status"] == "running", "ended before it could be killed"
        worker.send_signal(signal.SIGKILL)
        worker.wait()
    # Nobody said the job stopped: it stalled. The killed transaction left no row, and
    # the batch is not taken for interrupted while its job may still run.
    assert _import_job(db, batch_id)["status"] == "doing"
    left = db.execute("SELECT count(*) FROM incident WHERE source = %s", [source]).fetchone()[0]
    assert left == 0
    editor = auth(keys["editor"])
    listed = client.get(f"/imports/{batch_id}", headers=editor).json()
    assert listed["status"] == "running", listed
    with worker_process(base_data.libpq_url, tmp_path / "second.log", queues="import-kill-test"):
        _until(lambda: _batch(db, batch_id)["status"] != "running", 300, "the import to end")
        # The job ends a moment after the batch it committed.
        job = _until(
            lambda: (j := _import_job(db, batch_id))["status"] != "doing" and j, 60, "the job"
        )
    batch = _batch(db, batch_id)
    assert batch == {"status": "completed", "inserted": rows, "error": None}, batch
    stored = db.execute(
        "SELECT count(*), count(DISTINCT source_id), count(*) FILTER "
        "(WHERE import_batch_id = %s) FROM incident WHERE source = %s",
        [batch_id, source],
    ).fetchone()
    assert stored == (rows, rows, rows)  # once each, by this batch
    assert job == {"status": "succeeded", "attempts": 2, "started": 2}
    assert not _upload_kept(db, batch_id)
    done = client.get(f"/imports/{batch_id}", headers=editor).json()
    assert (done["status"], done["inserted"], done["progress"]) == ("completed", rows, 1.0)
    # /jobs names what the job was for: the batch and its file.
    listed = client.get("/jobs", params={"status": "succeeded"}, headers=auth(keys["admin"]))
    mine = next(j for j in listed.json()["jobs"] if j["batch_id"] == batch_id)
    assert mine["task"] == "import_file" and mine["filename"] == "killed-async.csv"
    assert (
        mine["run_id"] is None and mine["purpose"] == f"import batch {batch_id} (killed-async.csv)"
    )
