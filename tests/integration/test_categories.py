"""The category vocabulary through HTTP and the CLI (issue 16, point 5): public reading,
admin saving as CSV, JSON or a form upload, every bad row listed, upsert or replace,
categories in use kept, and every change a version in the audit log.

A database of its own (in the suite's cluster): these tests replace the vocabulary,
which the other tests' database must keep.
"""

from __future__ import annotations

import csv
import io
import os
import subprocess
import sys
from collections.abc import Iterator

import psycopg
import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from app import security
from app.core.cluster import Cluster
from app.core.migrate import upgrade
from app.core.settings import DATA_DIR, Settings
from app.main import create_app
from app.schemas.categories import CategoryList, CategoryReportPublic
from app.services.boundaries import import_boundaries
from tests.conftest import BELIZE, ROLES, auth, call_service

DATABASE = "observatory_categories"
PROBLEM = "application/problem+json"
SHIPPED = (DATA_DIR / "categories.csv").read_text()
SHIPPED_ROWS = list(csv.DictReader(io.StringIO(SHIPPED)))
SENSITIVE = sorted(r["code"] for r in SHIPPED_ROWS if r["sensitive"] == "true")


@pytest.fixture(scope="module")
def vocabulary_settings(cluster: Cluster, settings: Settings) -> Settings:
    """A fresh, migrated database with Belize's districts and no vocabulary."""
    db = cluster.settings
    server = f"postgresql://{db.user}:{cluster.password}@{db.host}:{db.port}"
    with psycopg.connect(f"{server}/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{DATABASE}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{DATABASE}"')
    own = settings.model_copy(update={"database_url": SecretStr(f"{server}/{DATABASE}")})
    upgrade(own.sqlalchemy_url)
    call_service(
        own,
        lambda e: import_boundaries(
            e,
            BELIZE / "boundaries" / "belize_adm1_districts.geojson",
            level=1,
            code_field="iso_3166_2",
            name_field="district",
            actor="tests",
        ),
    )
    return own


@pytest.fixture(scope="module")
def own_keys(vocabulary_settings: Settings) -> dict[str, str]:
    out = {}
    with psycopg.connect(vocabulary_settings.libpq_url, autocommit=True) as conn:
        for role in ROLES:
            key, prefix, key_hash = security.new_key()
            conn.execute(
                "INSERT INTO api_key (name, prefix, hash, role) VALUES (%s, %s, %s, %s)",
                [f"categories-{role}", prefix, key_hash, role],
            )
            out[role] = key
    return out


@pytest.fixture(scope="module")
def api(vocabulary_settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(vocabulary_settings)) as client:
        yield client


@pytest.fixture
def own_db(vocabulary_settings: Settings) -> Iterator[psycopg.Connection]:
    with psycopg.connect(vocabulary_settings.libpq_url, autocommit=True) as conn:
        yield conn


def _post_csv(api, key, text: str, **params):
    headers = {**auth(key), "Content-Type": "text/csv"}
    return api.post("/categories", content=text.encode(), headers=headers, params=params)


def _vocabulary(api) -> CategoryList:
    response = api.get("/categories")
    assert response.status_code == 200, response.text
    return CategoryList.model_validate(response.json())


def _import(api, key, source_id: str, category: str):
    content = (
        "source,source_id,category,occurred_at,longitude,latitude\n"
        f"cat-test,{source_id},{category},2024-03-01 10:00,-88.1962,17.5046\n"
    ).encode()
    return api.post("/imports", files={"file": ("one.csv", content)}, headers=auth(key))


def _versions(db) -> list[tuple]:
    return db.execute(
        "SELECT entity_id, actor, before, after FROM audit_log "
        "WHERE entity = 'category_vocabulary' ORDER BY id"
    ).fetchall()


def test_a_fresh_installation_gets_its_vocabulary_through_the_api(api, own_keys, own_db):
    empty = _vocabulary(api)
    assert (empty.version, empty.categories) == (0, [])
    # No vocabulary yet: the import says where to save one (not only the CLI).
    refused = _import(api, own_keys["editor"], "before", "theft")
    assert refused.status_code == 422
    assert "POST /categories" in refused.json()["detail"]

    for key, status in ((None, 401), (own_keys["viewer"], 403), (own_keys["editor"], 403)):
        assert _post_csv(api, key, SHIPPED).status_code == status
    assert _versions(own_db) == []

    saved = _post_csv(api, own_keys["admin"], SHIPPED)
    assert saved.status_code == 200, saved.text
    report = CategoryReportPublic.model_validate(saved.json())
    assert report.version == 1 and report.received == len(SHIPPED_ROWS) == 10
    assert report.inserted == sorted(r["code"] for r in SHIPPED_ROWS)
    assert report.updated == report.deleted == report.kept == []

    # Public: every category with its flag, as the public /stats names the sensitive ones.
    listed = _vocabulary(api)
    assert listed.version == 1
    assert {
        c.code: (c.name, c.category_group, c.sensitive, c.description) for c in listed.categories
    } == {
        r["code"]: (r["name"], r["category_group"], r["sensitive"] == "true", r["description"])
        for r in SHIPPED_ROWS
    }
    assert sorted(c.code for c in listed.categories if c.sensitive) == SENSITIVE
    stats = api.get("/stats", params={"level": 1, "by": "category", "period": "2024"})
    assert stats.status_code == 200, stats.text
    assert stats.json()["parameters"]["sensitive_categories"] == SENSITIVE

    assert _import(api, own_keys["editor"], "after", "theft").status_code == 201
    (version,) = _versions(own_db)
    assert version[0] == "1" and version[1].startswith("key:")
    assert version[2] == {"version": 0, "categories": []}
    assert [c["code"] for c in version[3]["categories"]] == sorted(r["code"] for r in SHIPPED_ROWS)


def test_every_bad_row_is_listed_and_nothing_is_saved(api, own_keys, own_db):
    before = (_vocabulary(api), len(_versions(own_db)))
    text = (
        "code,name,category_group,sensitive,description\n"
        "theft,Theft changed,property,false,\n"  # valid, but the file fails as a whole
        ",No code,property,false,\n"
        "Bad Code!,Spaces,property,false,\n"
        "arson,Arson,property,maybe,\n"
        "arson,Arson again,property,false,\n"
        "vandalism,,Property Damage,,\n"
        "fraud,theft,property,false,\n"
    )
    response = _post_csv(api, own_keys["admin"], text)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == PROBLEM
    body = response.json()
    assert "6 invalid row(s) of 7; nothing was saved" in body["detail"]
    assert {r["row"]: r["reason"] for r in body["rows"]} == {
        2: "missing code",
        3: "code 'Bad Code!' is not lower-case letters, digits, _ or - (at most 64)",
        4: "sensitive 'maybe' is not true or false",
        5: "duplicate of row 4 (same code)",
        6: "missing name; category_group 'Property Damage' is not lower-case letters, "
        "digits, _ or - (at most 64); missing sensitive (true or false)",
        7: "name 'theft' is the code of row 1",
    }
    assert [r["code"] for r in body["rows"]] == [
        None,
        "Bad Code!",
        "arson",
        "arson",
        "vandalism",
        "fraud",
    ]

    for text, fragment in (
        ("code,name,sensitive\nx,X,false\n", "missing column(s) category_group"),
        (
            "code,name,category_group,sensitive,colour\nx,X,g,false,red\n",
            "unknown column(s) 'colour'",
        ),
        ("code,name,category_group,sensitive\n", "no categories"),
        ("", "the file is empty"),
    ):
        refused = _post_csv(api, own_keys["admin"], text)
        assert refused.status_code == 422, (text, refused.text)
        assert fragment in refused.json()["detail"], (text, refused.json())
    bad_json = api.post(
        "/categories", json=[{"code": "x", "name": "X", "category_group": "g"}, "text"],
        headers=auth(own_keys["admin"]),
    )  # fmt: skip
    assert bad_json.status_code == 422
    assert [r["reason"] for r in bad_json.json()["rows"]] == [
        "missing sensitive (true or false)",
        "not an object with code, name, category_group, sensitive, description",
    ]
    other = api.post(
        "/categories",
        content=b"<categories/>",
        headers={**auth(own_keys["admin"]), "Content-Type": "application/xml"},
    )
    assert other.status_code == 415 and other.headers["content-type"] == PROBLEM
    assert (_vocabulary(api), len(_versions(own_db))) == before


def test_json_upserts_a_new_version_and_the_same_body_none(api, own_keys, own_db):
    current = _vocabulary(api)
    edited = [c.model_dump() for c in current.categories if c.code in ("theft", "suicide")]
    for c in edited:
        if c["code"] == "theft":
            c["name"] = "Theft (simple)"
        else:
            c["sensitive"] = False  # a used or unused flag may change; it applies at once
    edited.append(
        {"code": "arson", "name": "Arson", "category_group": "property", "sensitive": "no"}
    )
    body = {"categories": edited, "version": current.version}
    saved = api.post("/categories", json=body, headers=auth(own_keys["admin"]))
    assert saved.status_code == 200, saved.text
    report = saved.json()
    assert report["version"] == current.version + 1
    assert (report["inserted"], report["updated"]) == (["arson"], ["suicide", "theft"])
    assert report["kept"] == sorted(
        c.code for c in current.categories if c.code not in ("theft", "suicide")
    )
    listed = {c.code: c for c in _vocabulary(api).categories}
    assert len(listed) == 11 and listed["theft"].name == "Theft (simple)"
    assert not listed["suicide"].sensitive and listed["arson"].description == ""

    # The same body again changes nothing: no new version; a stale version is a 409.
    again = api.post("/categories", json=edited, headers=auth(own_keys["admin"]))
    assert again.json()["version"] == report["version"] and again.json()["unchanged"] == [
        "arson", "suicide", "theft",
    ]  # fmt: skip
    stale = api.post("/categories", json=body, headers=auth(own_keys["admin"]))
    assert stale.status_code == 409 and "another save came in between" in stale.json()["detail"]

    # The audit log holds each version whole: the new one's before is the last one's after.
    *_, previous, latest = _versions(own_db)
    assert latest[0] == str(report["version"])
    assert latest[2]["categories"] == previous[3]["categories"]
    assert latest[3]["updated"] == ["suicide", "theft"] and latest[3]["replace"] is False
    page = api.get(
        "/audit", params={"entity": "category_vocabulary"}, headers=auth(own_keys["admin"])
    )
    assert page.status_code == 200
    assert [e["entity_id"] for e in page.json()["entries"]][:2] == [latest[0], previous[0]]


def test_replace_deletes_unused_categories_only(api, own_keys, own_db):
    assert _import(api, own_keys["editor"], "arson-1", "arson").status_code == 201
    stored = [c.model_dump() for c in _vocabulary(api).categories]
    without = [c for c in stored if c["code"] not in ("arson", "road_traffic_death")]
    versions = len(_versions(own_db))
    refused = api.post(
        "/categories", json=without, params={"replace": "true"}, headers=auth(own_keys["admin"])
    )
    assert refused.status_code == 409, refused.text
    assert refused.json()["in_use"] == [{"code": "arson", "incidents": 1}]
    assert "arson (1 incidents)" in refused.json()["detail"]
    assert len(_vocabulary(api).categories) == len(stored) and len(_versions(own_db)) == versions

    # A soft-deleted incident still holds its category (it may be restored).
    own_db.execute("UPDATE incident SET deleted_at = now() WHERE source_id = 'arson-1'")
    assert (
        api.post(
            "/categories", json=without, params={"replace": "true"}, headers=auth(own_keys["admin"])
        ).status_code
        == 409
    )

    kept = [c for c in stored if c["code"] != "road_traffic_death"]
    upload = io.StringIO()
    writer = csv.DictWriter(upload, fieldnames=list(kept[0]))
    writer.writeheader()
    writer.writerows(kept)
    replaced = api.post(
        "/categories",
        files={"file": ("vocabulary.csv", upload.getvalue().encode(), "text/csv")},
        params={"replace": "true"},
        headers=auth(own_keys["admin"]),
    )
    assert replaced.status_code == 200, replaced.text
    assert replaced.json()["deleted"] == ["road_traffic_death"]
    assert replaced.json()["unchanged"] == sorted(c["code"] for c in kept)
    assert "road_traffic_death" not in {c.code for c in _vocabulary(api).categories}
    latest = _versions(own_db)[-1]
    assert latest[3]["replace"] is True and latest[3]["source"] == "vocabulary.csv"


def test_the_cli_saves_through_the_same_path(vocabulary_settings, own_db, tmp_path):
    env = {
        **os.environ,
        "OBSERVATORY_DATABASE_URL": vocabulary_settings.libpq_url,
        "COLUMNS": "200",
    }
    bad = tmp_path / "bad.csv"
    bad.write_text("code,name,category_group,sensitive\nok,Ok,g,false\nnope,Nope,g,perhaps\n")
    command = [sys.executable, "-m", "app.cli", "import", "categories"]
    versions = len(_versions(own_db))
    failed = subprocess.run([*command, str(bad)], env=env, capture_output=True, text=True)
    assert failed.returncode == 1
    assert "1 invalid row(s) of 2" in failed.stdout
    assert "row 2 (nope): sensitive 'perhaps' is not true or false" in failed.stdout
    assert len(_versions(own_db)) == versions

    good = tmp_path / "good.csv"
    good.write_text("code,name,category_group,sensitive\nkidnapping,Kidnapping,violent,true\n")
    done = subprocess.run([*command, str(good)], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    assert '"inserted": [\n    "kidnapping"\n  ]' in done.stdout
    latest = _versions(own_db)[-1]
    assert latest[0] == str(versions + 1) and latest[1].startswith("cli:")
    assert own_db.execute(
        "SELECT sensitive FROM category WHERE code = 'kidnapping'"
    ).fetchone() == (True,)
