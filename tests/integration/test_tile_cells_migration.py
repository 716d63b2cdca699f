"""Migration 0019 (the incident tile cells): upgrading counts the incidents already
stored, its triggers keep counting, TRUNCATE empties the cells, downgrade takes tables,
triggers and functions out and leaves incident writable; its grid is the service's. In
a database of its own on the session's cluster."""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from alembic import command
from psycopg import sql

from app.core.cluster import Cluster
from app.core.migrate import alembic_config
from app.core.settings import Settings
from app.ogc.layers import incidents_layer
from app.sql import tiles

DATABASE = "tile_cells_migration"
MIGRATION = Path(__file__).parents[2] / "migrations" / "versions" / "0019_incident_tile_cells.py"


def _migration():
    spec = importlib.util.spec_from_file_location("incident_tile_cells", MIGRATION)
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
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(name))


def _insert(conn, source_id: str, lon: float, lat: float, when: str = "2024-03-10") -> None:
    conn.execute(
        "INSERT INTO incident (source, source_id, category, occurred_at, geom) "
        "VALUES ('m', %s, 'theft', %s, ST_SetSRID(ST_MakePoint(%s, %s), 4326))",
        [source_id, when, lon, lat],
    )


def _counts(conn) -> tuple[int, int]:
    """Incidents counted at z0 (every incident is in one cell a zoom) and at z2 by month."""
    return conn.execute(
        "SELECT (SELECT coalesce(sum(n), 0) FROM incident_tile_cell WHERE z = 0), "
        "(SELECT coalesce(sum(n), 0) FROM incident_tile_month WHERE z = 2)"
    ).fetchone()


def _rows_and_keys(conn) -> tuple[int, int]:
    """Rows of incident_tile_cell, and its distinct keys."""
    return conn.execute(
        "SELECT count(*), count(DISTINCT (z, cx, cy, category)) FROM incident_tile_cell"
    ).fetchone()


def test_upgrade_counts_what_is_there_and_downgrade_takes_it_out(database):
    url = database.libpq_url
    config = alembic_config(database.sqlalchemy_url)
    command.upgrade(config, "0018")
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO category (code, name, category_group) "
            "VALUES ('theft', 'Theft', 'property')"
        )
        _insert(conn, "a", -88.19, 17.50)
        _insert(conn, "b", -88.19, 17.51, "2024-04-01T05:00:00Z")
    command.upgrade(config, "0019")
    with psycopg.connect(url, autocommit=True) as conn:
        assert _counts(conn) == (2, 2)
        # 05:00 UTC on 1 April is 23:00 on 31 March in Belize: both are March's.
        months = conn.execute("SELECT DISTINCT month FROM incident_tile_month").fetchall()
        assert [str(m) for (m,) in months] == ["2024-03-01"]
        rows, keys = _rows_and_keys(conn)
        assert rows == keys >= 12  # the refill: one row a key, z0-z11
        _insert(conn, "c", -88.30, 17.20)
        conn.execute("UPDATE incident SET deleted_at = now() WHERE source_id = 'a'")
        assert _counts(conn) == (2, 2)
        # Appended deltas: "a"'s removal is a row of -1 beside its cells' +2 (or +1).
        rows, keys = _rows_and_keys(conn)
        assert rows > keys
        (removed,) = conn.execute("SELECT incident_tiles_compact()").fetchone()
        after, kept = _rows_and_keys(conn)
        # One row a key; "a"'s own cells (those it did not share with "b") are gone.
        assert after == kept < keys and removed >= rows - after  # cells and months
        assert _counts(conn) == (2, 2)
        conn.execute("TRUNCATE incident CASCADE")
        assert _counts(conn) == (0, 0)
        _insert(conn, "d", -88.30, 17.20)
    command.downgrade(config, "0018")
    with psycopg.connect(url, autocommit=True) as conn:
        gone = conn.execute(
            "SELECT to_regclass('incident_tile_cell'), to_regclass('incident_tile_month'), "
            "to_regclass('incident_tile_zone'), to_regprocedure('incident_tiles_refill(text)'), "
            "to_regprocedure('incident_tiles_compact()')"
        ).fetchone()
        assert gone == (None, None, None, None, None)
        triggers = conn.execute(
            "SELECT tgname FROM pg_trigger WHERE tgname LIKE 'incident_tiles%'"
        ).fetchall()
        assert triggers == []
        _insert(conn, "e", -88.31, 17.21)  # incident is writable without the cells
        conn.execute("DELETE FROM incident WHERE source_id = 'e'")
    command.upgrade(config, "0019")
    with psycopg.connect(url, autocommit=True) as conn:
        assert _counts(conn) == (1, 1)  # "d", counted again by the upgrade


def test_the_migration_grid_is_the_services():
    migration = _migration()
    assert list(migration.ZOOMS) == list(tiles.AGGREGATE_ZOOMS)
    assert tuple(migration.MONTH_ZOOMS) == tiles.MONTH_ZOOMS
    assert migration.CLUSTER_CELLS == tiles.CLUSTER_CELLS
    # Every clustered zoom of the incidents layer has its cells.
    assert incidents_layer().tiles.cluster_below == max(migration.ZOOMS) + 1
