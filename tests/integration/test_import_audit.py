"""Imports and the audit trail (issue 14, points 4-7): an audit entry per incident an import
inserts or changes, with before and after; a re-import never touches a deleted incident;
two imports sharing keys neither deadlock nor show SQL; headers differing only by spaces
all survive. On the real PostGIS, through the ASGI app where a caller is concerned."""

from __future__ import annotations

import re
import threading
import time

import pandas as pd
import psycopg
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy.exc import DBAPIError

from app.core.errors import ProblemError, database_unavailable, install_error_handlers
from tests.conftest import auth, call_service
from tests.integration.helpers import import_csv, write_incident_csv

# What a message a caller can read must never hold: SQL, backend process ids.
LEAKS = re.compile(r"\[SQL|SELECT|INSERT|UPDATE|incident_staging|[Pp]rocess \d+|\bpid\b")


def _audit(client, admin: dict, incident_id: int) -> list[dict]:
    response = client.get(
        "/audit", params={"entity": "incident", "entity_id": str(incident_id)}, headers=admin
    )
    assert response.status_code == 200, response.text
    return response.json()["entries"]


def _ids(db, source: str) -> dict[str, int]:
    return dict(
        db.execute("SELECT source_id, id FROM incident WHERE source = %s", [source]).fetchall()
    )


def _post_csv(client, editor: dict, name: str, frame: pd.DataFrame):
    return client.post(
        "/imports",
        files={"file": (name, frame.to_csv(index=False).encode(), "text/csv")},
        headers=editor,
    )


# -- point 4: one audit entry per incident an import inserts or changes -----------------------


def test_each_imported_and_reimported_incident_has_its_audit_history(
    client, keys, settings, tmp_path, db
):
    admin, editor = auth(keys["admin"]), auth(keys["editor"])
    path = write_incident_csv(tmp_path / "hist.csv", n=30, source="hist", seed=14)
    first = import_csv(settings, path)
    assert first.inserted == 30
    ids = _ids(db, "hist")
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)

    # Every inserted incident: one 'import' entry, no before, the whole record after.
    sid = frame.loc[3, "source_id"]
    [created] = _audit(client, admin, ids[sid])
    assert created["action"] == "import" and created["before"] is None
    after = created["after"]
    assert after["import_batch_id"] == first.batch_id
    assert (after["source"], after["source_id"]) == ("hist", sid)
    assert after["category"] == frame.loc[3, "category"]
    assert after["victim_age"] == int(frame.loc[3, "victim_age"])
    assert after["longitude"] == pytest.approx(float(frame.loc[3, "longitude"]))
    assert created["actor"] == "tests"

    # Change the category of three and move one; re-import.
    changed = {3: "homicide", 4: "robbery", 5: "burglary"}
    old = {i: frame.loc[i, "category"] for i in changed}
    for i, category in changed.items():
        frame.loc[i, "category"] = category if old[i] != category else "theft"
    latitude = float(frame.loc[5, "latitude"])
    frame.loc[5, "latitude"] = str(round(latitude + 0.001, 6))
    frame.to_csv(path, index=False)
    second = import_csv(settings, path)
    assert (second.inserted, second.updated, second.unchanged) == (0, 3, 27)

    entries = _audit(client, admin, ids[frame.loc[5, "source_id"]])
    assert [e["action"] for e in entries] == ["import", "import"]  # newest first
    update = entries[0]
    # Only the changed fields, before and after; the batches before and after.
    assert update["before"] == {
        "import_batch_id": first.batch_id,
        "category": old[5],
        "latitude": pytest.approx(latitude, abs=1e-7),
    }
    assert update["after"]["import_batch_id"] == second.batch_id
    assert update["after"]["category"] == frame.loc[5, "category"]
    assert update["after"]["latitude"] == pytest.approx(float(frame.loc[5, "latitude"]))
    assert (update["after"]["source"], update["after"]["source_id"]) == (
        "hist",
        frame.loc[5, "source_id"],
    )
    assert set(update["after"]) == {
        "import_batch_id", "source", "source_id", "category", "latitude"
    }  # fmt: skip
    # An unchanged incident got no entry from the re-import.
    assert len(_audit(client, admin, ids[frame.loc[10, "source_id"]])) == 1
    count = db.execute(
        "SELECT count(*) FROM audit_log WHERE entity = 'incident' AND action = 'import' "
        "AND after->>'import_batch_id' = %s",
        [str(second.batch_id)],
    ).fetchone()[0]
    assert count == 3

    # The incident keeps every batch that wrote it, not only the last.
    batches = db.execute(
        "SELECT import_batch_id, import_batch_ids FROM incident WHERE id = %s",
        [ids[frame.loc[5, "source_id"]]],
    ).fetchone()
    assert batches == (second.batch_id, [first.batch_id, second.batch_id])
    assert db.execute(
        "SELECT import_batch_ids FROM incident WHERE id = %s", [ids[frame.loc[10, "source_id"]]]
    ).fetchone()[0] == [first.batch_id]

    # A PATCH between two imports: the history reads import, update, import, and the
    # second import's before is the PATCHed value.
    target = ids[frame.loc[4, "source_id"]]
    patched = client.patch(f"/incidents/{target}", json={"victim_age": 99}, headers=editor)
    assert patched.status_code == 200, patched.text
    frame.loc[4, "victim_age"] = "55"
    frame.to_csv(path, index=False)
    third = import_csv(settings, path)
    assert third.updated == 1
    history = _audit(client, admin, target)
    assert [e["action"] for e in history] == ["import", "update", "import", "import"]
    assert history[0]["before"] == {"import_batch_id": second.batch_id, "victim_age": 99}
    assert history[0]["after"]["victim_age"] == 55


# -- point 5: a re-import never resurrects nor silently changes a deleted incident ----------


DELETED = re.compile(
    r"incident (\d+) \(deleted-src, d-1\) was deleted on \d{4}-\d{2}-\d{2}: "
    r"restore it first with POST /incidents/(\d+)/restore"
)


def _deleted_one(client, editor, settings, tmp_path, db) -> tuple[int, pd.DataFrame]:
    frame = pd.DataFrame(
        {
            "source": ["deleted-src", "deleted-src"],
            "source_id": ["d-1", "d-2"],
            "category": ["theft", "theft"],
            "occurred_at": ["2024-02-01 10:00", "2024-02-02 10:00"],
            "longitude": ["-88.1962", "-88.1962"],
            "latitude": ["17.5046", "17.5046"],
        }
    )
    response = _post_csv(client, editor, "deleted.csv", frame)
    assert response.status_code == 201 and response.json()["inserted"] == 2
    incident_id = _ids(db, "deleted-src")["d-1"]
    assert client.delete(f"/incidents/{incident_id}", headers=editor).status_code == 204
    return incident_id, frame


def test_reimporting_a_deleted_incident_rejects_the_row_and_changes_nothing(
    client, keys, settings, tmp_path, db
):
    editor, admin = auth(keys["editor"]), auth(keys["admin"])
    incident_id, frame = _deleted_one(client, editor, settings, tmp_path, db)
    stored = db.execute(
        "SELECT category, deleted_at, updated_at FROM incident WHERE id = %s", [incident_id]
    ).fetchone()
    frame["category"] = "robbery"  # both rows changed
    response = _post_csv(client, editor, "deleted.csv", frame)
    assert response.status_code == 201, response.text
    report = response.json()
    assert (report["inserted"], report["updated"], report["rejected"]) == (0, 1, 1)
    [rejection] = report["rejections"]
    assert rejection["row_number"] == 1 and rejection["source_id"] == "d-1"
    match = DELETED.fullmatch(rejection["reason"])
    assert match, rejection["reason"]
    assert match.groups() == (str(incident_id), str(incident_id))
    assert rejection["raw"]["category"] == "robbery"  # the row as received, to fix and resend
    # Nothing of the deleted incident changed, and no import entry was written for it.
    assert (
        db.execute(
            "SELECT category, deleted_at, updated_at FROM incident WHERE id = %s", [incident_id]
        ).fetchone()
        == stored
    )
    assert [e["action"] for e in _audit(client, admin, incident_id)] == ["delete", "import"]
    assert client.get(f"/incidents/{incident_id}", headers=editor).status_code == 404

    # The other doors refuse too: POST with the same key, PATCH of the id.
    body = {
        "source": "deleted-src",
        "source_id": "d-1",
        "category": "robbery",
        "occurred_at": "2024-02-01T10:00:00-06:00",
        "geometry": {"type": "Point", "coordinates": [-88.1962, 17.5046]},
    }
    assert client.post("/incidents", json=body, headers=editor).status_code == 409
    patched = client.patch(f"/incidents/{incident_id}", json={"victim_age": 3}, headers=editor)
    assert patched.status_code == 404

    # Restored, the same file updates it, audited.
    assert client.post(f"/incidents/{incident_id}/restore", headers=editor).status_code == 200
    again = _post_csv(client, editor, "deleted.csv", frame).json()
    assert (again["updated"], again["rejected"], again["unchanged"]) == (1, 0, 1)
    history = _audit(client, admin, incident_id)
    assert [e["action"] for e in history] == ["import", "restore", "delete", "import"]
    assert history[0]["before"]["category"] == "theft"
    assert history[0]["after"]["category"] == "robbery"


def test_a_deleted_incident_in_a_later_chunk_is_rejected_with_its_own_row(
    base_data, settings, tmp_path, db, monkeypatch
):
    import app.services.imports as imports

    monkeypatch.setattr(imports, "CHUNK_ROWS", 1)
    path = write_incident_csv(tmp_path / "chunked.csv", n=3, source="deleted-chunks", seed=6)
    assert import_csv(settings, path).inserted == 3
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    gone = frame.loc[1, "source_id"]
    db.execute(
        "UPDATE incident SET deleted_at = '2024-06-30T23:00:00-06:00' "
        "WHERE source = 'deleted-chunks' AND source_id = %s",
        [gone],
    )
    frame["category"] = "homicide"
    frame.to_csv(path, index=False)
    report = import_csv(settings, path)
    assert (report.updated + report.unchanged, report.rejected) == (2, 1)
    row_number, source_id, reason, raw = db.execute(
        "SELECT row_number, source_id, reason, raw FROM import_rejection WHERE batch_id = %s",
        [report.batch_id],
    ).fetchone()
    assert (row_number, source_id, raw["source_id"], raw["category"]) == (2, gone, gone, "homicide")
    assert "was deleted on 2024-07-01: restore it first with POST /incidents/" in reason


def test_post_and_patch_of_a_deleted_incident_say_what_the_import_says(
    client, keys, settings, tmp_path, db
):
    editor = auth(keys["editor"])
    frame = pd.DataFrame(
        {
            "source": ["deleted-src"],
            "source_id": ["d-1"],
            "category": ["theft"],
            "occurred_at": ["2024-02-01 10:00"],
            "longitude": ["-88.1962"],
            "latitude": ["17.5046"],
        }
    )
    response = _post_csv(client, editor, "deleted-doors.csv", frame)
    if not response.json()["rejected"]:  # run alone: make the deleted incident here
        incident_id = _ids(db, "deleted-src")["d-1"]
        assert client.delete(f"/incidents/{incident_id}", headers=editor).status_code == 204
        response = _post_csv(client, editor, "deleted-doors.csv", frame)
    reason = response.json()["rejections"][0]["reason"]
    incident_id = int(DELETED.fullmatch(reason).group(1))
    body = {
        "source": "deleted-src",
        "source_id": "d-1",
        "category": "theft",
        "occurred_at": "2024-02-01T10:00:00-06:00",
        "geometry": {"type": "Point", "coordinates": [-88.1962, 17.5046]},
    }
    posted = client.post("/incidents", json=body, headers=editor)
    assert posted.status_code == 409 and posted.json()["detail"] == reason
    patched = client.patch(f"/incidents/{incident_id}", json={"victim_age": 3}, headers=editor)
    assert patched.status_code == 404 and patched.json()["detail"] == reason


# -- point 6: concurrent imports sharing keys in opposite order -------------------------------


def _waiting(db, n: int, timeout: float = 60) -> None:
    """Wait until ``n`` import sessions wait for a row lock."""
    deadline = time.monotonic() + timeout
    sql = (
        "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
        "AND query ILIKE '%incident%' AND pid <> pg_backend_pid()"
    )
    while db.execute(sql).fetchone()[0] < n:
        assert time.monotonic() < deadline, "the imports never waited for the held row"
        time.sleep(0.02)


def _holding(db_url: str, source: str, source_id: str) -> psycopg.Connection:
    """A session holding one incident's row lock, so that both imports queue behind it."""
    holder = psycopg.connect(db_url)
    holder.execute(
        "SELECT 1 FROM incident WHERE source = %s AND source_id = %s FOR UPDATE",
        [source, source_id],
    )
    return holder


def _post_while_held(client, editor, db, holder, files: dict[str, pd.DataFrame]) -> dict:
    """Post the files at once from threads; ``holder`` (a session holding a row they
    need) commits once every import waits for it, so all are mid-way together."""
    responses: dict[str, object] = {}

    def post(name: str, data: pd.DataFrame) -> None:
        responses[name] = _post_csv(client, editor, name, data)

    threads = [threading.Thread(target=post, args=item) for item in files.items()]
    try:
        for t in threads:
            t.start()
        _waiting(db, len(files))
    finally:
        holder.commit()
        holder.close()
    for t in threads:
        t.join(timeout=120)
    return responses


@pytest.mark.parametrize("round_", range(3))
def test_two_imports_sharing_keys_in_opposite_order_both_complete(
    client, keys, settings, db, db_url, round_
):
    """One file lists the keys ascending, the other descending; a third session holds the
    middle row so that both are mid-way when it is released: the old row-by-row order
    then deadlocks (one 201, one 503 with SQL in its stored error)."""
    editor = auth(keys["editor"])
    source = f"race-{round_}"
    n = 200
    frame = pd.DataFrame(
        {
            "source": source,
            "source_id": [f"k{i:04d}" for i in range(n)],
            "category": "theft",
            "occurred_at": "2024-03-01 12:00",
            "longitude": "-88.1962",
            "latitude": "17.5046",
        }
    )
    assert _post_csv(client, editor, "race-0.csv", frame).json()["inserted"] == n
    ascending = frame.assign(category="robbery")
    descending = frame.assign(category="burglary").iloc[::-1]
    holder = _holding(db_url, source, f"k{n // 2:04d}")
    files = {"race-up.csv": ascending, "race-down.csv": descending}
    responses = _post_while_held(client, editor, db, holder, files)
    statuses = {name: r.status_code for name, r in responses.items()}
    assert statuses == {"race-up.csv": 201, "race-down.csv": 201}, {
        name: r.text for name, r in responses.items()
    }
    for name, r in responses.items():
        assert r.json()["updated"] == n and r.json()["error"] is None, name
    # The one that committed last holds every row, and its audit entries start from the
    # values the other one wrote.
    final = db.execute(
        "SELECT array_agg(DISTINCT category) FROM incident WHERE source = %s", [source]
    ).fetchone()[0]
    assert final in (["robbery"], ["burglary"])
    last = responses["race-up.csv" if final == ["robbery"] else "race-down.csv"].json()
    befores = db.execute(
        "SELECT DISTINCT before->>'category' FROM audit_log WHERE entity = 'incident' "
        "AND action = 'import' AND after->>'import_batch_id' = %s",
        [str(last["id"])],
    ).fetchall()
    assert befores == [("burglary" if final == ["robbery"] else "robbery",)]


def test_keys_two_imports_insert_at_once_end_updated_with_their_true_before(
    client, keys, db, db_url
):
    """Both files bring the same new keys with other values; a third session has inserted
    the middle key without committing, so both wait mid-way. The one that inserted the
    first keys inserts the rest, and updates the middle key once it is committed; the
    other, waiting behind it, then updates them all, each audit entry holding the values
    the one before wrote."""
    editor, admin = auth(keys["editor"]), auth(keys["admin"])
    source, n = "race-new", 100
    frame = pd.DataFrame(
        {
            "source": source,
            "source_id": [f"k{i:04d}" for i in range(n)],
            "category": "robbery",
            "occurred_at": "2024-03-01 12:00",
            "longitude": "-88.1962",
            "latitude": "17.5046",
        }
    )
    middle = f"k{n // 2:04d}"
    holder = psycopg.connect(db_url)
    holder.execute(
        "INSERT INTO incident (source, source_id, category, occurred_at, geom) "
        "VALUES (%s, %s, 'homicide', '2024-03-01T18:00:00Z', "
        "ST_SetSRID(ST_MakePoint(-88.1962, 17.5046), 4326))",
        [source, middle],
    )
    files = {"new-up.csv": frame, "new-down.csv": frame.assign(category="theft")[::-1]}
    responses = _post_while_held(client, editor, db, holder, files)
    assert {r.status_code for r in responses.values()} == {201}, [
        r.text for r in responses.values()
    ]
    reports = {name: r.json() for name, r in responses.items()}
    counts = sorted((r["inserted"], r["updated"], r["unchanged"]) for r in reports.values())
    assert counts == [(0, n, 0), (n - 1, 1, 0)], counts
    first = next(r for r in reports.values() if r["inserted"])
    second = next(r for r in reports.values() if not r["inserted"])
    incident_id = _ids(db, source)[middle]
    history = _audit(client, admin, incident_id)
    assert [e["after"]["import_batch_id"] for e in history] == [second["id"], first["id"]]
    first_category = "robbery" if first["filename"] == "new-up.csv" else "theft"
    # Before the first import: the row the third session inserted (plain SQL, no batch).
    assert history[1]["before"] == {
        "import_batch_id": None, "category": "homicide", "victim_sex": None
    }  # fmt: skip
    assert history[1]["after"]["victim_sex"] == "unknown"
    assert history[0]["before"] == {"import_batch_id": first["id"], "category": first_category}
    assert db.execute(
        "SELECT import_batch_ids FROM incident WHERE id = %s", [incident_id]
    ).fetchone()[0] == [first["id"], second["id"]]


def _import_in_thread(settings, path, results: dict, name: str) -> threading.Thread:
    from app.services.imports import import_incidents
    from app.services.incident_rows import ReadOptions

    def run() -> None:
        try:
            results[name] = call_service(
                settings,
                lambda engine: import_incidents(
                    engine, settings, path, ReadOptions(), actor="tests"
                ),
            )
        except Exception as exc:  # the test inspects it
            results[name] = exc

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def _crossing_deadlock(settings, db, db_url, tmp_path, monkeypatch, source: str) -> dict:
    """Two batches of two one-row chunks, k1 then k2 and k2 then k1: key order within a
    statement cannot help across chunks, and a held k2 makes them deadlock for sure."""
    import app.services.imports as imports

    monkeypatch.setattr(imports, "CHUNK_ROWS", 1)
    base = pd.DataFrame(
        {
            "source": source,
            "source_id": ["k1", "k2"],
            "category": "theft",
            "occurred_at": "2024-03-01 12:00",
            "longitude": "-88.1962",
            "latitude": "17.5046",
        }
    )
    base.to_csv(tmp_path / "base.csv", index=False)
    assert import_csv(settings, tmp_path / "base.csv").inserted == 2
    base.assign(category="robbery").to_csv(tmp_path / "up.csv", index=False)
    base.assign(category="burglary").iloc[::-1].to_csv(tmp_path / "down.csv", index=False)
    results: dict = {}
    holder = _holding(db_url, source, "k2")
    try:
        threads = [_import_in_thread(settings, tmp_path / "down.csv", results, "down")]
        _waiting(db, 1)  # 'down' queues first for k2 …
        threads.append(_import_in_thread(settings, tmp_path / "up.csv", results, "up"))
        _waiting(db, 2)  # … and 'up' behind it, holding k1
    finally:
        holder.commit()
        holder.close()
    for t in threads:
        t.join(timeout=120)
    return results


def test_a_deadlock_across_chunks_is_retried(settings, db, db_url, tmp_path, monkeypatch):
    results = _crossing_deadlock(settings, db, db_url, tmp_path, monkeypatch, "crossing")
    assert {name: type(r).__name__ for name, r in results.items()} == {
        "up": "ImportReport",
        "down": "ImportReport",
    }, results
    assert all(r.updated == 2 for r in results.values())
    # The retried batch's audit entries start from the other batch's values.
    final = db.execute(
        "SELECT array_agg(DISTINCT category) FROM incident WHERE source = 'crossing'"
    ).fetchone()[0]
    assert final in (["robbery"], ["burglary"])


def test_a_deadlock_that_persists_fails_with_a_true_reason_and_no_sql(
    base_data, settings, db, db_url, tmp_path, monkeypatch
):
    import app.services.imports as imports

    monkeypatch.setattr(imports, "ATTEMPTS", 1, raising=False)  # (absent before the fix)
    results = _crossing_deadlock(settings, db, db_url, tmp_path, monkeypatch, "crossing-1")
    failed = [r for r in results.values() if isinstance(r, Exception)]
    assert len(failed) == 1, results
    [error] = failed
    # What editors read in GET /imports/{id}: the reason, without SQL or process ids.
    stored = db.execute(
        "SELECT status, error FROM import_batch WHERE status = 'failed' "
        "AND filename IN ('up.csv', 'down.csv') ORDER BY id DESC LIMIT 1"
    ).fetchone()
    assert not LEAKS.search(stored[1]), stored[1]
    assert stored[1].startswith("deadlock with another import") and "run it again" in stored[1]
    assert isinstance(error, ProblemError) and error.status == 409, repr(error)
    assert error.detail == stored[1]


def _real_deadlock(db_url: str) -> psycopg.Error:
    """A genuine 40P01 from PostgreSQL: two sessions locking two rows crosswise."""
    with psycopg.connect(db_url, autocommit=True) as setup:
        setup.execute("CREATE TABLE IF NOT EXISTS deadlock_probe (id int PRIMARY KEY)")
        setup.execute("INSERT INTO deadlock_probe VALUES (1), (2) ON CONFLICT DO NOTHING")
    errors: list[psycopg.Error] = []
    barrier = threading.Barrier(2)

    def cross(first: int, second: int) -> None:
        with psycopg.connect(db_url) as conn:
            try:
                conn.execute("SELECT 1 FROM deadlock_probe WHERE id = %s FOR UPDATE", [first])
                barrier.wait()
                conn.execute("SELECT 1 FROM deadlock_probe WHERE id = %s FOR UPDATE", [second])
            except psycopg.Error as exc:
                errors.append(exc)

    threads = [threading.Thread(target=cross, args=a) for a in ((1, 2), (2, 1))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(errors) == 1 and errors[0].sqlstate == "40P01"
    return errors[0]


def test_a_deadlock_is_a_conflict_not_an_unreachable_database(db_url):
    orig = _real_deadlock(db_url)
    wrapped = DBAPIError.instance(
        "SELECT 1 FROM deadlock_probe WHERE id = %(id)s FOR UPDATE", {"id": 2}, orig, psycopg.Error
    )
    assert not database_unavailable(wrapped)
    app = FastAPI()
    install_error_handlers(app)

    @app.get("/boom")
    async def boom() -> None:
        raise wrapped

    with TestClient(app, raise_server_exceptions=False) as client:
        response = client.get("/boom")
    assert response.status_code == 409, response.text
    detail = response.json()["detail"]
    assert "not reachable" not in detail and "deadlock" in detail
    assert not LEAKS.search(response.text), response.text


# -- point 7: headers differing only by spaces ----------------------------------------------


def test_headers_differing_only_by_spaces_keep_every_value(client, keys, db):
    content = (
        "source,source_id,category,occurred_at,longitude,latitude,note,note ,Note,note\n"
        "hdr,h-1,theft,2024-01-01 10:00,-88.1962,17.5046,first,second,third,fourth\n"
    )
    response = client.post(
        "/imports",
        files={"file": ("headers.csv", content.encode(), "text/csv")},
        headers=auth(keys["editor"]),
    )
    assert response.status_code == 201, response.text
    report = response.json()
    assert (report["inserted"], report["rejected"]) == (1, 0)
    attributes = db.execute(
        "SELECT attributes FROM incident WHERE source = 'hdr' AND source_id = 'h-1'"
    ).fetchone()[0]
    assert attributes == {"note": "first", "note_2": "second", "Note": "third", "note_3": "fourth"}
    [warning] = report["warnings"]
    assert "'note ' (column 8) → 'note_2'" in warning and "'note' (column 10) → 'note_3'" in warning
    listed = client.get("/imports", headers=auth(keys["editor"])).json()["batches"]
    assert next(b for b in listed if b["id"] == report["id"])["warnings"] == [warning]
