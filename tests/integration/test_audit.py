"""Keys (rotate, revoke, list with last use), the audit log query and incident restore,
on the real PostGIS through the ASGI app and the real CLI."""

from __future__ import annotations

import csv
import io
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import psycopg

from app import security
from tests.conftest import auth

GEOJSON = "application/geo+json"


def _cli(settings, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OBSERVATORY_DATABASE_URL": settings.libpq_url, "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-m", "app.cli", *args], env=env, capture_output=True, text=True
    )


def _new_key(db: psycopg.Connection, role: str, name: str) -> tuple[int, str]:
    key, prefix, key_hash = security.new_key()
    key_id = db.execute(
        "INSERT INTO api_key (name, prefix, hash, role) VALUES (%s, %s, %s, %s) RETURNING id",
        [name, prefix, key_hash, role],
    ).fetchone()[0]
    return key_id, key


def _incident(source_id: str) -> dict:
    return {
        "source": "audit-test",
        "source_id": source_id,
        "category": "theft",
        "occurred_at": "2024-03-01T10:00:00-06:00",
        "geometry": {"type": "Point", "coordinates": [-88.1962, 17.5046]},  # Belize City
        "victim_sex": "male",
        "victim_age": 40,
    }


# -- keys --------------------------------------------------------------------------------


def test_rotate_over_http_replaces_the_key_at_once(client, keys, db):
    admin = auth(keys["admin"])
    key_id, old = _new_key(db, "analyst", "rotating-http")
    # Used (and so cached by the worker) before the rotation.
    assert client.get("/incidents?limit=1", headers=auth(old)).status_code == 200

    rotated = client.post(f"/keys/{key_id}/rotate", headers=admin)
    assert rotated.status_code == 201, rotated.text
    body = rotated.json()
    assert body["id"] != key_id and body["key"].startswith("obs_")
    assert (body["name"], body["role"], body["revoked_at"]) == ("rotating-http", "analyst", None)

    assert client.get("/incidents?limit=1", headers=auth(old)).status_code == 401
    assert client.get("/incidents?limit=1", headers=auth(body["key"])).status_code == 200
    # The old key is gone for good; rotating it again finds nothing.
    again = client.post(f"/keys/{key_id}/rotate", headers=admin)
    assert again.status_code == 404
    assert again.headers["content-type"] == "application/problem+json"
    assert (
        client.post(f"/keys/{body['id']}/rotate", headers=auth(keys["editor"])).status_code == 403
    )

    entry = db.execute(
        "SELECT actor, before, after FROM audit_log WHERE entity = 'api_key' "
        "AND action = 'rotate' AND entity_id = %s",
        [str(key_id)],
    ).fetchone()
    assert entry[0].startswith("key:") and entry[0].endswith(":test-admin")
    assert entry[1]["id"] == key_id and entry[2]["id"] == body["id"]
    assert entry[2]["prefix"] == body["prefix"] and "hash" not in entry[2]


def test_cli_rotate_revoke_and_list_with_last_use(client, settings, db):
    key_id, old = _new_key(db, "editor", "rotating-cli")
    _new_key(db, "viewer", "never-used-cli")
    assert client.get("/incidents?limit=1", headers=auth(old)).status_code == 200

    listed = _cli(settings, "keys", "list")
    assert listed.returncode == 0, listed.stderr
    row = next(line for line in listed.stdout.splitlines() if "rotating-cli" in line)
    today = datetime.now(UTC).strftime("%Y-%m-%d")
    assert row.count(today) == 2, row  # created and last used today
    unused = next(line for line in listed.stdout.splitlines() if "never-used-cli" in line)
    assert "never" in unused

    rotated = _cli(settings, "keys", "rotate", str(key_id))
    assert rotated.returncode == 0, rotated.stdout + rotated.stderr
    new_key = rotated.stdout.strip().splitlines()[-1]
    assert new_key.startswith("obs_") and new_key != old
    new_row = db.execute(
        "SELECT id, name, role, revoked_at FROM api_key WHERE prefix = %s",
        [security.split_key(new_key)],
    ).fetchone()
    assert new_row[1:] == ("rotating-cli", "editor", None)
    assert db.execute("SELECT revoked_at IS NOT NULL FROM api_key WHERE id = %s", [key_id])
    # The new secret is stored hashed only, and works.
    assert db.execute("SELECT count(*) FROM api_key WHERE hash = %s", [new_key]).fetchone()[0] == 0
    assert client.get("/incidents?limit=1", headers=auth(new_key)).status_code == 200

    # Revoked keys leave the default list and show with --all.
    assert _cli(settings, "keys", "revoke", str(new_row[0])).returncode == 0
    active = _cli(settings, "keys", "list").stdout
    assert "rotating-cli" not in active
    everything = _cli(settings, "keys", "list", "--all").stdout
    assert everything.count("rotating-cli") == 2
    # Rotating or revoking a revoked key is a clear error, not a new key.
    for command in ("rotate", "revoke"):
        failed = _cli(settings, "keys", command, str(key_id))
        assert failed.returncode == 1 and f"no active key {key_id}" in failed.stdout
    actions = [
        r[0]
        for r in db.execute(
            "SELECT action FROM audit_log WHERE entity = 'api_key' AND entity_id IN (%s, %s) "
            "ORDER BY id",
            [str(key_id), str(new_row[0])],
        )
    ]
    assert actions == ["rotate", "revoke"]


# -- incident restore -----------------------------------------------------------------------


def test_editor_restores_a_deleted_incident_with_fresh_units(client, keys, db):
    editor, analyst = auth(keys["editor"]), auth(keys["analyst"])
    created = client.post("/incidents", json=_incident("restore-1"), headers=editor)
    assert created.status_code == 201, created.text
    incident_id = created.json()["id"]
    assert client.delete(f"/incidents/{incident_id}", headers=editor).status_code == 204
    # Boundaries replaced while it was deleted: its stored units are stale.
    db.execute("UPDATE incident SET unit_ids = '{}' WHERE id = %s", [incident_id])

    assert client.post(f"/incidents/{incident_id}/restore", headers=analyst).status_code == 403
    restored = client.post(f"/incidents/{incident_id}/restore", headers=editor)
    assert restored.status_code == 200, restored.text
    assert restored.headers["content-type"].startswith(GEOJSON)
    props = restored.json()["properties"]
    assert props["units"] == ["BZ", "BZ-BZ"]
    assert client.get(f"/incidents/{incident_id}", headers=analyst).status_code == 200
    listed = client.get("/incidents?source=audit-test&limit=100", headers=analyst).json()
    assert incident_id in [f["id"] for f in listed["features"]]

    # Not deleted (any more), or unknown: 404 problem.
    for target in (incident_id, 987_654_321):
        response = client.post(f"/incidents/{target}/restore", headers=editor)
        assert response.status_code == 404
        assert response.headers["content-type"] == "application/problem+json"

    audit = db.execute(
        "SELECT action, actor, before, after FROM audit_log WHERE entity = 'incident' "
        "AND entity_id = %s ORDER BY id",
        [str(incident_id)],
    ).fetchall()
    assert [a[0] for a in audit] == ["create", "delete", "restore"]
    restore = audit[-1]
    assert restore[1].endswith(":test-editor")
    assert restore[2]["deleted_at"] is not None and restore[2]["source_id"] == "restore-1"
    assert restore[3]["source_id"] == "restore-1"


# -- the audit log ---------------------------------------------------------------------------


def _entries(client, admin, **params) -> list[dict]:
    response = client.get("/audit", params=params, headers=admin)
    assert response.status_code == 200, response.text
    return response.json()["entries"]


def test_audit_log_filters_pages_and_csv(client, keys, db):
    admin, editor = auth(keys["admin"]), auth(keys["editor"])
    start = datetime.now(UTC) - timedelta(seconds=1)
    created = client.post("/incidents", json=_incident("audit-1"), headers=editor).json()
    incident_id = str(created["id"])
    client.patch(f"/incidents/{incident_id}", json={"victim_age": 41}, headers=editor)
    client.delete(f"/incidents/{incident_id}", headers=editor)
    client.post(f"/incidents/{incident_id}/restore", headers=editor)

    mine = _entries(client, admin, entity="incident", entity_id=incident_id)
    assert [e["action"] for e in mine] == ["restore", "delete", "update", "create"]  # newest first
    assert mine[2]["before"]["victim_age"] == 40 and mine[2]["after"]["victim_age"] == 41
    assert {e["actor"] for e in mine} == {mine[0]["actor"]}
    assert mine[0]["actor"].endswith(":test-editor")

    # Filters combine; lists are comma-separated or repeated.
    changes = _entries(
        client, admin, entity="incident", entity_id=incident_id, action="update,delete"
    )
    assert [e["action"] for e in changes] == ["delete", "update"]
    assert _entries(client, admin, entity_id=incident_id, actor="someone-else") == []
    by_actor = _entries(client, admin, actor=mine[0]["actor"], entity_id=incident_id)
    assert len(by_actor) == 4
    # from inclusive, to exclusive: the window of this test has all four, before it none.
    window = _entries(client, admin, entity_id=incident_id, **{"from": start.isoformat()})
    assert len(window) == 4
    assert _entries(client, admin, entity_id=incident_id, to=start.isoformat()) == []
    expected = db.execute(
        "SELECT count(*) FROM audit_log WHERE entity = 'incident' AND at >= %s", [start]
    ).fetchone()[0]
    assert len(_entries(client, admin, entity="incident", **{"from": start.isoformat()})) == (
        expected
    )

    # Paging: one entry a page, following next links, visits each entry once.
    url, seen = f"/audit?entity=incident&entity_id={incident_id}&limit=1", []
    while url:
        page = client.get(url, headers=admin).json()
        assert page["number_returned"] == len(page["entries"]) <= 1
        seen += [e["id"] for e in page["entries"]]
        url = next((link["href"] for link in page["links"] if link["rel"] == "next"), None)
    assert seen == [e["id"] for e in mine]

    # CSV: the same rows, before/after as JSON text.
    download = client.get(
        "/audit", params={"entity_id": incident_id, "format": "csv"}, headers=admin
    )
    assert download.status_code == 200
    assert download.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(download.text)))
    assert [r["action"] for r in rows] == [e["action"] for e in mine]
    assert rows[2]["action"] == "update" and '"victim_age":41' in rows[2]["after"]


def test_audit_log_is_for_admins_and_checks_parameters(client, keys):
    assert client.get("/audit").status_code == 401
    for role in ("viewer", "analyst", "editor"):
        assert client.get("/audit", headers=auth(keys[role])).status_code == 403
    admin = auth(keys["admin"])
    for params in (
        {"from": "2025-01-01T00:00:00"},  # no time zone
        {"from": "2025-02-01T00:00:00Z", "to": "2025-01-01T00:00:00Z"},
        {"from": "yesterday"},
        {"limit": "0"},
        {"before": "x"},
        {"format": "xml"},
    ):
        response = client.get("/audit", params=params, headers=admin)
        assert response.status_code == 422, (params, response.text)
        assert response.headers["content-type"] == "application/problem+json"
    # A huge limit is clamped, not refused.
    assert client.get("/audit?limit=10000000", headers=admin).status_code == 200
