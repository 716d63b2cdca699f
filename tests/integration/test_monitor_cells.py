"""The stored H3 cells of incidents (issue 19, migration 0018): an H3 monitor's series read
from ``incident_h3`` equal the series of every incident's point assigned in Python
(``spatial.grids.points_to_h3``, a pandas pivot), whether the cells are computed on the
way (first evaluation) or read back; a moved incident gets its new cell, a deleted one
disappears, a point without a cell is counted nowhere, a point an open transaction is
moving is not stored stale (nor waited for); filling the cells sends no
incident change notification; the migration goes down and up again.

Demo-like data (``generate_incidents``, 6,000 incidents, seed 11) in a database of its own
on the session's cluster.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import datetime
from zoneinfo import ZoneInfo

import geopandas as gpd
import numpy as np
import pandas as pd
import psycopg
import pytest
from alembic import command
from h3.api import basic_int as h3_int
from psycopg import sql

from app.core.cluster import Cluster
from app.core.migrate import alembic_config, upgrade
from app.core.settings import Settings
from app.demo.incidents import generate_incidents
from app.demo.load import COUNTRY, DEMO_SOURCE, DISTRICTS
from app.schemas.monitors import load_monitor
from app.services import monitors
from spatial.grids import points_to_h3
from tests.conftest import call_service

DATABASE = "monitor_cells"
TZ = "America/Belize"
PROPERTY = monitors.DEFAULTS_DIR / "property-crime-h3-weekly.yaml"


def _database(cluster: Cluster, name: str) -> Settings:
    admin = cluster.url.rsplit("/", 1)[0] + "/postgres"
    with psycopg.connect(admin, autocommit=True) as conn:
        ident = sql.Identifier(name)
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(ident))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(ident))
    settings = Settings(
        environment="test",
        database=cluster.settings.model_copy(update={"name": name}),
        database_url=None,
        analysis={"warm_up": False},
    )
    upgrade(settings.sqlalchemy_url)
    return settings


@pytest.fixture(scope="module")
def demo(cluster: Cluster) -> Iterator[Settings]:
    """Categories, districts and 6,000 demo-like incidents; no cell stored yet."""
    from app.services.boundaries import import_boundaries
    from app.services.categories import load_categories
    from app.services.imports import import_frame
    from app.services.incident_rows import ReadOptions

    settings = _database(cluster, DATABASE)
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
    frame = generate_incidents(districts, n=6000, seed=11)
    frame = frame.astype(object).where(frame.notna(), "").astype(str)
    frame = frame.replace({"nan": "", "<NA>": "", "None": ""})
    call_service(
        settings,
        lambda e: import_frame(
            e, settings, frame, ReadOptions(source=DEMO_SOURCE), actor="tests",
            filename="demo.csv", fmt="csv",
        ),
    )  # fmt: skip
    yield settings


@pytest.fixture(scope="module")
def definition():
    return load_monitor(PROPERTY.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def last(demo: Settings) -> pd.Timestamp:
    with psycopg.connect(demo.libpq_url) as conn:
        latest = conn.execute("SELECT max(occurred_at) FROM incident").fetchone()[0]
    return monitors.last_complete_period(latest, datetime.now(ZoneInfo(TZ)), "week", TZ)


def series(settings: Settings, definition, last: pd.Timestamp) -> monitors._Series:
    """The service's series (``_series``, as ``evaluate_monitor`` reads it)."""

    async def read(engine):
        async with engine.connect() as conn:
            return await monitors._series(conn, definition, TZ, last)

    return call_service(settings, read)


def reference(url: str, last: pd.Timestamp) -> tuple[list, list[str], np.ndarray]:
    """Every live property incident's point and local week read one by one, cells by
    ``points_to_h3`` (points without a valid cell left out), a pandas pivot over every
    week from the first to ``last``."""
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT ST_X(i.geom), ST_Y(i.geom), "
            "date_trunc('week', i.occurred_at AT TIME ZONE %s) "
            "FROM incident AS i JOIN category AS c ON c.code = i.category "
            "WHERE c.category_group = 'property' AND i.deleted_at IS NULL",
            [TZ],
        ).fetchall()
    lon = np.array([r[0] for r in rows], dtype=float)
    lat = np.array([r[1] for r in rows], dtype=float)
    frame = pd.DataFrame({"place": points_to_h3(lon, lat, 8), "period": [r[2] for r in rows]})
    frame = frame[frame["place"].notna() & (frame["period"] <= last)]
    counts = frame.groupby(["place", "period"]).size().rename("n").reset_index()
    weeks = pd.date_range(counts["period"].min(), last, freq="W-MON")
    table = counts.pivot_table(index="place", columns="period", values="n", aggfunc="sum")
    table = table.reindex(columns=weeks, fill_value=0).fillna(0)
    return list(weeks), list(table.index), table.to_numpy(dtype=float)


def assert_equal_reference(got: monitors._Series, url: str, last: pd.Timestamp) -> None:
    periods, places, counts = reference(url, last)
    assert got.periods == periods and got.places == places
    np.testing.assert_array_equal(got.counts, counts)


def stored(url: str, incident_id: int | None = None) -> dict[int, int]:
    """incident id -> stored resolution-8 cell (unsigned, as h3 gives it)."""
    where = "" if incident_id is None else f" AND incident_id = {int(incident_id)}"
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            f"SELECT incident_id, cell FROM incident_h3 WHERE resolution = 8{where}"
        ).fetchall()
    return {i: c for i, c in rows}


def property_incidents(url: str) -> list[tuple[int, float, float]]:
    with psycopg.connect(url) as conn:
        return conn.execute(
            "SELECT i.id, ST_X(i.geom), ST_Y(i.geom) FROM incident AS i "
            "JOIN category AS c ON c.code = i.category "
            "WHERE c.category_group = 'property' AND i.deleted_at IS NULL ORDER BY i.id"
        ).fetchall()


def test_the_series_equal_python_s_assignment_computed_then_stored(demo, definition, last):
    url = demo.libpq_url
    assert stored(url) == {}
    # First evaluation: every cell computed on the way, and stored.
    first = series(demo, definition, last)
    assert_equal_reference(first, url, last)
    points = property_incidents(url)
    cells = stored(url)
    assert len(cells) == len(points) > 3000
    for incident_id, lon, lat in points[::97]:
        assert cells[incident_id] == h3_int.latlng_to_cell(lat, lon, 8)
    # Second: every cell read back.
    again = series(demo, definition, last)
    assert again.places == first.places and again.periods == first.periods
    np.testing.assert_array_equal(again.counts, first.counts)
    assert first.counts.sum() > 3000


def test_filling_the_cells_sends_no_incident_change_notification(demo, definition, last):
    url = demo.libpq_url
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("DELETE FROM incident_h3 WHERE incident_id % 5 = 0")
    with psycopg.connect(url, autocommit=True) as listener:
        listener.execute("LISTEN observatory_data")
        series(demo, definition, last)
        heard = [n.payload for n in listener.notifies(timeout=1.0, stop_after=10)]
    assert not [p for p in heard if p.startswith("incident")], heard
    assert len(stored(url)) == len(property_incidents(url))


def test_a_moved_incident_gets_its_new_cell(demo, definition, last):
    url = demo.libpq_url
    series(demo, definition, last)  # every cell stored
    moved, lon, lat = property_incidents(url)[10]
    kept = property_incidents(url)[11][0]
    before = stored(url, moved)[moved]
    assert before == h3_int.latlng_to_cell(lat, lon, 8)
    new_lon, new_lat = -88.7686, 17.2514  # Belmopan, far from where it was
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "UPDATE incident SET geom = ST_SetSRID(ST_MakePoint(%s, %s), 4326) WHERE id = %s",
            [new_lon, new_lat, moved],
        )
        # A write that leaves the point where it is keeps the cell.
        conn.execute("UPDATE incident SET geom = geom, victim_age = 40 WHERE id = %s", [kept])
    assert stored(url, moved) == {}  # the trigger dropped the stale cell
    assert kept in stored(url, kept)
    got = series(demo, definition, last)
    assert_equal_reference(got, url, last)
    after = stored(url, moved)[moved]
    assert after == h3_int.latlng_to_cell(new_lat, new_lon, 8) != before


def test_a_point_being_moved_by_an_open_transaction_is_not_stored_stale(demo, definition, last):
    """An import moving an incident and not yet committed: the evaluation neither waits
    for it nor stores the cell of the old point (which the import's trigger, having run
    already, would never drop); the next evaluation stores the new one."""
    url = demo.libpq_url
    series(demo, definition, last)
    moving, *_ = property_incidents(url)[30]
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("DELETE FROM incident_h3 WHERE incident_id = %s", [moving])
    new_lon, new_lat = -88.4, 18.39  # Corozal
    with psycopg.connect(url) as writer:  # a transaction left open
        writer.execute(
            "UPDATE incident SET geom = ST_SetSRID(ST_MakePoint(%s, %s), 4326) WHERE id = %s",
            [new_lon, new_lat, moving],
        )

        async def read(engine):
            async with engine.connect() as conn:
                return await monitors._series(conn, definition, TZ, last)

        got = call_service(demo, lambda e: asyncio.wait_for(read(e), 20))
        assert_equal_reference(got, url, last)  # the committed (old) point, counted
        assert stored(url, moving) == {}
        writer.commit()
    assert_equal_reference(series(demo, definition, last), url, last)
    assert stored(url, moving)[moving] == h3_int.latlng_to_cell(new_lat, new_lon, 8)


def test_a_deleted_incident_disappears(demo, definition, last):
    url = demo.libpq_url
    before = series(demo, definition, last)
    (gone, *_), (hidden, *_) = property_incidents(url)[20:22]
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("DELETE FROM incident WHERE id = %s", [gone])
        conn.execute("UPDATE incident SET deleted_at = now() WHERE id = %s", [hidden])
    assert stored(url, gone) == {}  # by the foreign key
    got = series(demo, definition, last)
    assert_equal_reference(got, url, last)
    assert got.counts.sum() in (before.counts.sum() - 2, before.counts.sum() - 1)


def test_a_point_without_a_cell_is_counted_nowhere_and_not_computed_again(demo, definition, last):
    url = demo.libpq_url
    before = series(demo, definition, last)
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            "INSERT INTO incident (source, source_id, category, occurred_at, geom) "
            "SELECT 'tests', 'off-the-globe', 'burglary', max(occurred_at) - interval '30 days', "
            "ST_SetSRID(ST_MakePoint(200, 17.5), 4326) FROM incident RETURNING id"
        ).fetchone()
    off = row[0]
    got = series(demo, definition, last)
    np.testing.assert_array_equal(got.counts, before.counts)
    assert stored(url, off) == {off: 0}  # no cell: not read again
    assert_equal_reference(series(demo, definition, last), url, last)


def test_the_migration_goes_down_and_up(cluster: Cluster):
    settings = _database(cluster, "monitor_cells_migration")
    url = settings.libpq_url
    objects = (
        "SELECT to_regclass('incident_h3') IS NOT NULL, "
        "EXISTS (SELECT FROM pg_trigger WHERE tgname = 'incident_h3_forget'), "
        "EXISTS (SELECT FROM pg_proc WHERE proname = 'incident_h3_forget')"
    )
    with psycopg.connect(url) as conn:
        assert conn.execute(objects).fetchone() == (True, True, True)
    command.downgrade(alembic_config(settings.sqlalchemy_url), "0017")
    with psycopg.connect(url) as conn:
        assert conn.execute(objects).fetchone() == (False, False, False)
    upgrade(settings.sqlalchemy_url)
    with psycopg.connect(url) as conn:
        assert conn.execute(objects).fetchone() == (True, True, True)
