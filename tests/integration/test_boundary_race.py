"""Incidents written while a boundary upload runs get the new units (issue 14, points 1, 8).

A boundary upload replaces a level's units and reassigns every incident in one
transaction. Imports and API writes that ran meanwhile used to compute their units
against the boundaries not yet replaced, and the reassignment, whose snapshot predates
them, never saw their rows: they kept the old district for good.

On a cluster of its own (nothing here is visible to other modules), with a real uvicorn
for the API and one engine per import (each import in a thread of its own, with its own
event loop and connections), the districts (level 1) are shifted by ~0.01 degrees while
ten imports of 200 points and editors' API writes (create, move, delete, restore) run.
The points all lie in the strip that changes district with the shift, well inside a
district both before and after it. Afterwards every incident's district is the one
``ST_Contains`` gives with the final boundaries.

* Round 1 makes the bad interleaving certain: a test transaction holds a row lock on one
  old incident, so the upload's reassignment stalls with its snapshot taken (as it does
  for minutes on a large store), and the writers start only then. The row lock is let
  go once every writer has finished or is waiting for the boundary upload.
* Round 2 shifts the districts back with no help: the upload and the writers start
  together, in whatever order the scheduler gives (no deadlock, nothing misplaced).

Point 8: a page after a write reports the new numberMatched, the OGC route's.

No timing is asserted; clients time out after 60 s so that a hang fails the test.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import geopandas as gpd
import httpx
import numpy as np
import psycopg
import pytest
import shapely

from app.core.cluster import Cluster
from app.core.settings import Settings
from app.services.boundaries import import_boundaries
from tests.conftest import BELIZE, auth, call_service, new_cluster
from tests.integration.helpers import import_csv, write_points_csv
from tests.integration.test_faults import create_key, migrated_with_districts, uvicorn_process

ADM1 = BELIZE / "boundaries" / "belize_adm1_districts.geojson"
SHIFT = (0.01, 0.01)  # degrees east and north, ~1.5 km
# Points at least this far (degrees, ~55 m) inside their district, before and after.
MARGIN = 0.0005
IMPORTS = 10
IMPORT_ROWS = 200
POSTERS = 3  # API clients creating incidents
POSTS = 10  # incidents each
EDITORS = 2  # API clients that create, move, delete and restore
EDITS = 4  # incidents each
CLIENT_TIMEOUT_S = 60
WAIT_S = 120


# -- the cluster, the server, the boundaries ----------------------------------------------


@pytest.fixture(scope="module")
def race_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with new_cluster(tmp_path_factory, "boundary-race", "observatory_boundary_race") as cluster:
        yield cluster


@pytest.fixture(scope="module")
def race_settings(race_cluster: Cluster) -> Settings:
    return migrated_with_districts(race_cluster)


@pytest.fixture(scope="module")
def editor_key(race_settings: Settings) -> str:
    return create_key(race_settings, "editor")


@pytest.fixture(scope="module")
def analyst_key(race_settings: Settings) -> str:
    return create_key(race_settings, "analyst")


@pytest.fixture(scope="module")
def server(race_settings: Settings, tmp_path_factory) -> Iterator[str]:
    log = tmp_path_factory.mktemp("boundary-race-server") / "uvicorn.log"
    with uvicorn_process(race_settings, log) as (_, base):
        yield base
    print(log.read_text(errors="replace")[-6000:])


@dataclass(frozen=True)
class Boundaries:
    original: Path
    shifted: Path
    strip: np.ndarray  # (n, 2) lon/lat: points whose district changes with the shift


@pytest.fixture(scope="module")
def boundaries(tmp_path_factory) -> Boundaries:
    districts = gpd.read_file(ADM1)
    shifted = districts.copy()
    shifted["geometry"] = districts.geometry.translate(*SHIFT)
    path = tmp_path_factory.mktemp("boundary-race-files") / "districts_shifted.geojson"
    shifted.to_file(path, driver="GeoJSON")

    rng = np.random.default_rng(14)
    west, south, east, north = districts.total_bounds
    x = rng.uniform(west, east, 400_000)
    y = rng.uniform(south, north, 400_000)

    def district_of(frame: gpd.GeoDataFrame) -> np.ndarray:
        """Index of the district each point lies well inside, or -1."""
        out = np.full(len(x), -1)
        for i, geom in enumerate(shapely.buffer(frame.geometry.array, -MARGIN)):
            shapely.prepare(geom)
            out[shapely.contains_xy(geom, x, y)] = i
        return out

    before, after = district_of(districts), district_of(shifted)
    moved = (before >= 0) & (after >= 0) & (before != after)
    strip = np.column_stack([x[moved], y[moved]]).round(6)
    assert len(strip) > 1_000, len(strip)
    return Boundaries(original=ADM1, shifted=path, strip=strip)


def _upload(settings: Settings, path: Path):
    return call_service(
        settings,
        lambda e: import_boundaries(
            e, path, level=1, code_field="iso_3166_2", name_field="district", actor="race"
        ),
    )


# -- the writers ---------------------------------------------------------------------------


@dataclass
class Writers:
    """Threads that write incidents; each records its outcome or its exception."""

    threads: list[threading.Thread] = field(default_factory=list)
    done: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self, name: str, work: Callable[[], None]) -> None:
        def run() -> None:
            try:
                work()
            except BaseException as exc:  # reported by the test
                with self.lock:
                    self.errors.append(f"{name}: {exc.__class__.__name__}: {exc}")
            finally:
                with self.lock:
                    self.done.append(name)

        thread = threading.Thread(target=run, name=name, daemon=True)
        thread.start()
        self.threads.append(thread)

    def join(self) -> None:
        for thread in self.threads:
            thread.join(WAIT_S)
            assert not thread.is_alive(), f"{thread.name} did not finish"
        assert not self.errors, self.errors


def _body(source: str, source_id: str, point) -> dict:
    return {
        "source": source,
        "source_id": source_id,
        "category": "theft",
        "occurred_at": "2024-03-01T10:00:00",
        "geometry": {"type": "Point", "coordinates": [float(point[0]), float(point[1])]},
    }


def _start_writers(
    writers: Writers,
    settings: Settings,
    server: str,
    editor_key: str,
    strip: np.ndarray,
    tmp_path: Path,
    tag: str,
    seed: int,
) -> None:
    """Imports (one engine each, in threads) and API clients (through uvicorn)."""
    rng = np.random.default_rng(seed)

    def points(n: int) -> np.ndarray:
        return strip[rng.integers(0, len(strip), n)]

    for k in range(IMPORTS):
        chosen = points(IMPORT_ROWS)
        path = write_points_csv(
            tmp_path / f"{tag}-{k}.csv", chosen[:, 0], chosen[:, 1], source=f"{tag}-import-{k}"
        )

        def work(path: Path = path) -> None:
            report = import_csv(settings, path)
            assert report.inserted == IMPORT_ROWS, report

        writers.start(f"{tag}-import-{k}", work)

    for k in range(POSTERS):
        chosen = points(POSTS)

        def post(k: int = k, chosen: np.ndarray = chosen) -> None:
            with httpx.Client(
                base_url=server, headers=auth(editor_key), timeout=CLIENT_TIMEOUT_S
            ) as http:
                for n, point in enumerate(chosen):
                    response = http.post("/incidents", json=_body(f"{tag}-api", f"{k}-{n}", point))
                    assert response.status_code == 201, response.text

        writers.start(f"{tag}-poster-{k}", post)

    for k in range(EDITORS):
        chosen = points(2 * EDITS)

        def edit(k: int = k, chosen: np.ndarray = chosen) -> None:
            with httpx.Client(
                base_url=server, headers=auth(editor_key), timeout=CLIENT_TIMEOUT_S
            ) as http:
                for n in range(EDITS):
                    body = _body(f"{tag}-edit", f"{k}-{n}", chosen[2 * n])
                    created = http.post("/incidents", json=body)
                    assert created.status_code == 201, created.text
                    url = f"/incidents/{created.json()['id']}"
                    geometry = {"type": "Point", "coordinates": list(chosen[2 * n + 1])}
                    moved = http.patch(url, json={"geometry": geometry})
                    assert moved.status_code == 200, moved.text
                    assert http.delete(url).status_code == 204
                    restored = http.post(f"{url}/restore")
                    assert restored.status_code == 200, restored.text

        writers.start(f"{tag}-editor-{k}", edit)


def _advisory_waiters(db: psycopg.Connection) -> int:
    """Sessions waiting for an advisory lock (the writers, once a boundary upload holds
    the units lock; the import batch locks are never waited for)."""
    return db.execute(
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
    ).fetchone()[0]


def _stalled_reassignments(db: psycopg.Connection) -> int:
    """Boundary uploads whose reassignment of every incident waits for a row lock."""
    return db.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
        "AND query LIKE 'UPDATE incident i SET unit_ids%' AND query LIKE '%WHERE TRUE%'"
    ).fetchone()[0]


def _wait_for(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.05)


# -- the check -----------------------------------------------------------------------------


def _misplaced(db: psycopg.Connection) -> tuple[int, int, list]:
    """(incidents whose district is not the one ST_Contains gives with the stored
    boundaries, live incidents, a few examples)."""
    rows = db.execute(
        """
        SELECT i.id, i.source, i.source_id,
               (SELECT u.code FROM admin_unit u
                WHERE u.level = 1 AND ST_Contains(u.geom, i.geom) ORDER BY u.id LIMIT 1),
               (SELECT u.code FROM admin_unit u WHERE u.level = 1 AND u.id = ANY(i.unit_ids))
        FROM incident i WHERE i.deleted_at IS NULL ORDER BY i.id
        """
    ).fetchall()
    bad = [r for r in rows if r[3] is None or r[3] != r[4]]
    return len(bad), len(rows), bad[:5]


def _run_round(
    *,
    settings: Settings,
    db: psycopg.Connection,
    server: str,
    editor_key: str,
    boundaries: Boundaries,
    path: Path,
    tmp_path: Path,
    tag: str,
    seed: int,
    stall: bool,
) -> None:
    outcome: dict = {}

    def upload() -> None:
        try:
            outcome["report"] = _upload(settings, path)
        except BaseException as exc:  # reported by the test
            outcome["error"] = exc

    uploader = threading.Thread(target=upload, name=f"{tag}-upload", daemon=True)
    writers = Writers()
    if stall:
        # Hold one old incident so that the upload's reassignment stalls on it, its
        # snapshot taken; the writers start only then.
        with psycopg.connect(settings.libpq_url) as blocker:
            held = blocker.execute(
                "SELECT id FROM incident WHERE deleted_at IS NULL ORDER BY id LIMIT 1 FOR UPDATE"
            ).fetchone()
            assert held is not None
            uploader.start()
            _wait_for(
                lambda: _stalled_reassignments(db) == 1,
                "the boundary upload's reassignment to stall on the held row",
            )
            _start_writers(
                writers, settings, server, editor_key, boundaries.strip, tmp_path, tag, seed
            )
            total = len(writers.threads)
            _wait_for(
                lambda: len(writers.done) + _advisory_waiters(db) >= total,
                "every writer to finish or to wait for the boundary upload",
            )
            blocker.rollback()
    else:
        uploader.start()
        _start_writers(writers, settings, server, editor_key, boundaries.strip, tmp_path, tag, seed)
    uploader.join(WAIT_S)
    assert not uploader.is_alive(), "the boundary upload did not finish"
    writers.join()
    assert "error" not in outcome, outcome.get("error")
    assert outcome["report"].updated == 6

    written = db.execute(
        "SELECT count(*) FROM incident WHERE source LIKE %s AND deleted_at IS NULL", [f"{tag}-%"]
    ).fetchone()[0]
    assert written == IMPORTS * IMPORT_ROWS + POSTERS * POSTS + EDITORS * EDITS
    misplaced, live, examples = _misplaced(db)
    assert misplaced == 0, (
        f"{misplaced} of {live} incidents are not in the district ST_Contains gives "
        f"(id, source, source_id, expected, stored): {examples}"
    )


def test_writes_during_a_boundary_upload_get_the_new_districts(
    race_settings, server, editor_key, boundaries, tmp_path
):
    settings = race_settings
    # Old incidents, in the strip too: the upload reassigns them itself.
    before = boundaries.strip[:50]
    path = write_points_csv(tmp_path / "before.csv", before[:, 0], before[:, 1], source="before")
    assert import_csv(settings, path).inserted == 50
    with psycopg.connect(settings.libpq_url, autocommit=True) as db:
        assert _misplaced(db)[0] == 0
        common = dict(
            settings=settings, db=db, server=server, editor_key=editor_key,
            boundaries=boundaries, tmp_path=tmp_path,
        )  # fmt: skip
        # Round 1: shift the districts, the writers certainly inside the upload's window.
        _run_round(**common, path=boundaries.shifted, tag="shift", seed=1, stall=True)
        # Round 2: shift them back, upload and writers started together.
        _run_round(**common, path=boundaries.original, tag="back", seed=2, stall=False)


# -- point 8: numberMatched follows the data version ----------------------------------------


def test_later_pages_count_a_write_made_after_the_first(
    race_settings, server, editor_key, analyst_key, boundaries
):
    source = "count-cache"
    with httpx.Client(base_url=server, timeout=CLIENT_TIMEOUT_S) as http:
        editor, analyst = auth(editor_key), auth(analyst_key)
        for n in range(12):
            body = _body(source, f"c{n}", boundaries.strip[n])
            assert http.post("/incidents", json=body, headers=editor).status_code == 201

        first = http.get(f"/incidents?source={source}&limit=5", headers=analyst).json()
        assert first["numberMatched"] == 12
        body = _body(source, "c12", boundaries.strip[12])
        assert http.post("/incidents", json=body, headers=editor).status_code == 201

        next_url = next(link["href"] for link in first["links"] if link["rel"] == "next")
        second = http.get(next_url, headers=analyst).json()
        ogc = http.get(
            f"/collections/incidents/items?source={source}&limit=5", headers=analyst
        ).json()
        assert ogc["numberMatched"] == 13
        assert second["numberMatched"] == 13, "page 2 kept the count from before the write"
        assert second["numberReturned"] == 5

        # A deletion counts too, on the page after it.
        gone = http.get(f"/incidents?source={source}&limit=1", headers=analyst).json()
        deleted = http.delete(f"/incidents/{gone['features'][0]['id']}", headers=editor)
        assert deleted.status_code == 204
        third = http.get(
            next(link["href"] for link in second["links"] if link["rel"] == "next"),
            headers=analyst,
        ).json()
        assert third["numberMatched"] == 12
