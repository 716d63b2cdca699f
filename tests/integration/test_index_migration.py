"""Migration 0011: a database that stored the shipped index definitions before issue 17
gets the renamed, described ones as their next version; a definition an administrator
changed is left alone; the old versions still load; downgrade takes the new ones out.
In a database of its own on the session's cluster."""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from alembic import command
from psycopg import sql

import indexes
from app.core.cluster import Cluster
from app.core.migrate import alembic_config, upgrade
from app.core.settings import Settings
from app.services.indexes import DEFAULTS_DIR

DATABASE = "index_migration"
MIGRATION = Path(__file__).parents[2] / "migrations" / "versions" / "0011_index_names.py"


def _migration():
    spec = importlib.util.spec_from_file_location("index_names", MIGRATION)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def database(cluster: Cluster) -> Iterator[Settings]:
    admin = cluster.url.rsplit("/", 1)[0] + "/postgres"
    with psycopg.connect(admin, autocommit=True) as conn:
        name = sql.Identifier(DATABASE)
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(name))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(name))
    yield Settings(
        environment="test",
        database=cluster.settings.model_copy(update={"name": DATABASE}),
        database_url=None,
        analysis={"warm_up": False},
    )


def _stored(url: str) -> dict[str, list[tuple[int, dict, str]]]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT code, version, definition, created_by FROM index_definition "
            "ORDER BY code, version"
        ).fetchall()
    out: dict[str, list[tuple[int, dict, str]]] = {}
    for code, version, definition, actor in rows:
        out.setdefault(code, []).append((version, definition, actor))
    return out


def test_the_shipped_definitions_move_to_their_new_names(database):
    settings = database
    migration = _migration()
    url = settings.libpq_url
    command.upgrade(alembic_config(settings.sqlalchemy_url), migration.down_revision)
    before = migration.BEFORE
    # What the migration stores is what app/data/indexes ships at this revision, but for
    # the fields added since (the Spanish title, issue 20).
    later = {"title_es"}
    shipped = {
        d.name: {k: v for k, v in d.model_dump(mode="json").items() if k not in later}
        for d in (indexes.load_definition(p.read_text()) for p in DEFAULTS_DIR.glob("*.yaml"))
    }
    assert shipped == migration.AFTER
    changed = {**before["violence-against-women"], "title": "Our own VAWG index"}
    with psycopg.connect(url) as conn:
        for code, definition in (("territorial-violence", before["territorial-violence"]),
                                 ("violence-against-women", changed)):  # fmt: skip
            conn.execute(
                "INSERT INTO index_definition (code, version, definition, created_by) "
                "VALUES (%s, 1, %s, 'demo')",
                [code, json.dumps(definition)],
            )
    upgrade(settings.sqlalchemy_url)
    stored = _stored(url)
    tvi = stored["territorial-violence"]
    assert [v for v, _, _ in tvi] == [1, 2]
    _, definition, actor = tvi[1]
    assert definition == {**shipped["territorial-violence"], "version": 2}
    assert actor.startswith("migration 0011")
    codes = [i["code"] for i in definition["indicators"]]
    assert "youth_violence_per_100k_residents" in codes and "youth_victimisation_rate" not in codes
    # The administrator's own version is not replaced.
    assert [(v, d["title"]) for v, d, _ in stored["violence-against-women"]] == [
        (1, "Our own VAWG index")
    ]
    # The old version still loads: every new field has a default.
    old = indexes.load_definition(tvi[0][1])
    assert "youth_victimisation_rate" in old.indicator_codes
    assert old.treatment.min_units == 20 and old.census_year is None
    # Upgrading again stores nothing more; downgrade takes out what it stored.
    upgrade(settings.sqlalchemy_url)
    assert [v for v, _, _ in _stored(url)["territorial-violence"]] == [1, 2]
    command.downgrade(alembic_config(settings.sqlalchemy_url), migration.down_revision)
    assert [v for v, _, _ in _stored(url)["territorial-violence"]] == [1]
