"""Backups: `observatory backup` then `observatory restore`, through the real CLI and the
PostgreSQL tools, compared table by table (row counts and checksums of every row).

The databases here are their own (on the session's cluster): a demo database as the
source, an empty one to restore into; the suite's database is never restored over.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from app.core.cluster import Cluster
from app.core.migrate import upgrade
from app.core.settings import Settings
from tests.conftest import call_service


def _settings(cluster: Cluster, name: str) -> Settings:
    return Settings(
        environment="test",
        database=cluster.settings.model_copy(update={"name": name}),
        database_url=None,
        analysis={"warm_up": False},
    )


def _admin_url(cluster: Cluster) -> str:
    return cluster.url.rsplit("/", 1)[0] + "/postgres"


def _recreate(cluster: Cluster, name: str) -> None:
    with psycopg.connect(_admin_url(cluster), autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


@pytest.fixture(scope="module")
def source(cluster: Cluster) -> Iterator[Settings]:
    """A migrated database with the demo (boundaries, population, index definitions,
    incidents, a hot spot run), keys, audit entries and a soft-deleted incident."""
    from app.demo.load import load_demo
    from app.services.keys import create_key

    _recreate(cluster, "backup_source")
    settings = _settings(cluster, "backup_source")
    upgrade(settings.sqlalchemy_url)
    call_service(settings, lambda e: load_demo(e, settings, incidents=3_000, seed=7))
    call_service(settings, lambda e: create_key(e, role="admin", name="backup", actor="tests"))
    with psycopg.connect(settings.libpq_url, autocommit=True) as conn:
        conn.execute(
            "UPDATE incident SET deleted_at = now() WHERE id = (SELECT min(id) FROM incident)"
        )
    yield settings


def _cli(settings: Settings, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OBSERVATORY_DATABASE_URL": settings.libpq_url}
    return subprocess.run(
        [sys.executable, "-m", "app.cli", *args], env=env, capture_output=True, text=True
    )


def fingerprint(url: str) -> dict[str, tuple[int, str]]:
    """Every table of the public schema: (row count, md5 of all its rows in text form,
    sorted), and every sequence: (last value, is_called)."""
    out: dict[str, tuple] = {}
    with psycopg.connect(url, autocommit=True) as conn:
        tables = [
            r[0]
            for r in conn.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1"
            )
        ]
        for table in tables:
            query = sql.SQL(
                "SELECT count(*), md5(coalesce(string_agg(t::text, E'\\n' ORDER BY t::text), ''))"
                " FROM {} t"
            ).format(sql.Identifier(table))
            out[table] = tuple(conn.execute(query).fetchone())
        for (sequence,) in conn.execute(
            "SELECT sequencename FROM pg_sequences WHERE schemaname = 'public'"
        ):
            query = sql.SQL("SELECT last_value, is_called FROM {}").format(sql.Identifier(sequence))
            out[f"sequence {sequence}"] = tuple(conn.execute(query).fetchone())
    return out


def test_backup_restores_an_identical_database(cluster, source, tmp_path):
    archive = tmp_path / "observatory.dump"
    made = _cli(source, "backup", str(archive))
    assert made.returncode == 0, made.stdout + made.stderr
    assert archive.stat().st_size > 0 and not Path(f"{archive}.partial").exists()
    before = fingerprint(source.libpq_url)
    for table in ("incident", "admin_unit", "population", "api_key", "audit_log"):
        assert before[table][0] > 0, table  # the comparison below has something to compare

    # Into an empty database (PostGIS created by the restore).
    _recreate(cluster, "backup_restored")
    target = _settings(cluster, "backup_restored")
    restored = _cli(target, "restore", "--yes", str(archive))
    assert restored.returncode == 0, restored.stdout + restored.stderr
    assert fingerprint(target.libpq_url) == before

    # Over a database that changed since: every table is put back as it was.
    with psycopg.connect(target.libpq_url, autocommit=True) as conn:
        conn.execute("DELETE FROM incident WHERE id % 3 = 0")
        conn.execute("UPDATE admin_unit SET name = 'changed' WHERE level = 1")
        conn.execute("INSERT INTO audit_log (actor, action, entity) VALUES ('x', 'y', 'z')")
        conn.execute("TRUNCATE population")
    assert fingerprint(target.libpq_url) != before
    again = _cli(target, "restore", "--yes", str(archive))
    assert again.returncode == 0, again.stdout + again.stderr
    assert fingerprint(target.libpq_url) == before
    # The restored database is a working one: the service's schema is current.
    upgrade(target.sqlalchemy_url)
    assert fingerprint(target.libpq_url) == before


def test_a_bad_archive_changes_nothing_and_says_why(cluster, source, tmp_path):
    archive = tmp_path / "good.dump"
    assert _cli(source, "backup", str(archive)).returncode == 0
    _recreate(cluster, "backup_restored")
    target = _settings(cluster, "backup_restored")
    assert _cli(target, "restore", "--yes", str(archive)).returncode == 0
    before = fingerprint(target.libpq_url)

    # Not an archive at all.
    junk = tmp_path / "junk.dump"
    junk.write_bytes(b"not a pg_dump archive\n" * 100)
    failed = _cli(target, "restore", "--yes", str(junk))
    assert failed.returncode == 1 and "junk.dump" in failed.stdout, failed.stdout
    # A truncated archive: pg_restore fails midway, and its one transaction rolls back.
    cut = tmp_path / "cut.dump"
    cut.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    failed = _cli(target, "restore", "--yes", str(cut))
    assert failed.returncode == 1 and "error" in failed.stdout.lower(), failed.stdout
    assert fingerprint(target.libpq_url) == before


def test_the_password_never_shows(cluster, source, tmp_path):
    """A failing backup reports the server's complaint, never the secret."""
    secret = "Sup3r-s3cret-pw"
    url = source.libpq_url.replace(f":{cluster.password}@", f":{secret}@")
    env = {**os.environ, "OBSERVATORY_DATABASE_URL": url}
    failed = subprocess.run(
        [sys.executable, "-m", "app.cli", "backup", str(tmp_path / "x.dump")],
        env=env, capture_output=True, text=True,
    )  # fmt: skip
    assert failed.returncode == 1
    assert "password authentication failed" in failed.stdout, failed.stdout
    assert secret not in failed.stdout + failed.stderr
    assert not (tmp_path / "x.dump").exists()

    # While the tools run, the password is in their environment, not their arguments.
    from app.services.backup import _target, redact

    target = _target(Settings(environment="test", database_url=url))
    assert not any(secret in arg for arg in target.args)
    assert target.env["PGPASSWORD"] == secret
    assert redact(f"could not connect with {secret}", secret) == "could not connect with ***"
