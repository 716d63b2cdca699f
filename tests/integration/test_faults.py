"""Behaviour under faults, on a cluster of its own that these tests stop and start (the
session's cluster, which every other test uses, is never touched).

A real uvicorn serves the app; clients time out after 5 s, so a hanging request fails
the test instead of stalling it. Nothing here asserts a latency.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import psycopg
import pytest

from app import security
from app.core.cluster import Cluster
from app.core.settings import Settings
from tests.conftest import BELIZE, _free_port, auth, call_service, migrated_settings, new_cluster
from tests.integration.helpers import import_csv, write_incident_csv

CLIENT_TIMEOUT_S = 5  # "no hanging requests": anything slower fails the test
PROBLEM = "application/problem+json"
ROOT = Path(__file__).resolve().parents[2]


# -- helpers shared with test_worker_kill.py: a cluster and a uvicorn of their own ---------


def migrated_with_districts(cluster: Cluster) -> Settings:
    """The cluster migrated, with the categories and the Belize country and districts."""
    from app.services.boundaries import import_boundaries
    from app.services.categories import load_categories

    settings = migrated_settings(cluster)
    call_service(settings, lambda e: load_categories(e, settings.territory.categories_file))
    boundaries = BELIZE / "boundaries"
    for path, level, code, name in (
        ("belize_adm0_naturalearth_10m.geojson", 0, "ISO_A2", "ADMIN"),
        ("belize_adm1_districts.geojson", 1, "iso_3166_2", "district"),
    ):
        call_service(
            settings,
            lambda e, path=path, level=level, code=code, name=name: import_boundaries(
                e, boundaries / path, level=level, code_field=code, name_field=name,
                actor="tests",
            ),
        )  # fmt: skip
    return settings


def create_key(settings: Settings, role: str) -> str:
    key, prefix, key_hash = security.new_key()
    with psycopg.connect(settings.libpq_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO api_key (name, prefix, hash, role) VALUES (%s, %s, %s, %s)",
            [f"faults-{role}", prefix, key_hash, role],
        )
    return key


def service_env(settings: Settings) -> dict[str, str]:
    return {
        **os.environ,
        "OBSERVATORY_DATABASE_URL": settings.libpq_url,
        "OBSERVATORY_ENVIRONMENT": "test",
        "OBSERVATORY_ANALYSIS__WARM_UP": "false",
    }


@contextlib.contextmanager
def uvicorn_process(
    settings: Settings, log: Path, *, workers: int = 1, env: dict[str, str] | None = None
) -> Iterator[tuple[subprocess.Popen, str]]:
    """uvicorn on 127.0.0.1 (a free port) against ``settings``' database (and ``env``), its
    output in ``log``, in a session of its own (so that ``os.killpg`` reaches its workers
    too); yields the process and its base URL once ``/health`` answers, terminates it
    after."""
    port = _free_port()
    with log.open("ab") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "app.main:create_app", "--factory",
             "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning",
             "--workers", str(workers)],
            cwd=ROOT, env={**service_env(settings), **(env or {})}, stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"uvicorn did not start:\n{log.read_text(errors='replace')[-6000:]}")
            time.sleep(0.2)
        yield process, base
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, 9)
                process.wait()


# -- fixtures ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fault_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with new_cluster(tmp_path_factory, "faults", "observatory_faults") as cluster:
        yield cluster


@pytest.fixture(scope="module")
def fault_settings(fault_cluster: Cluster, tmp_path_factory) -> Settings:
    """Migrated, with categories, the Belize districts and 2,000 incidents."""
    settings = migrated_with_districts(fault_cluster)
    csv_path = write_incident_csv(
        tmp_path_factory.mktemp("faults-data") / "few.csv", n=2000, source="faults", seed=3
    )
    assert import_csv(settings, csv_path).inserted == 2000
    return settings


@pytest.fixture(scope="module")
def analyst_key(fault_settings: Settings) -> str:
    return create_key(fault_settings, "analyst")


@pytest.fixture(scope="module")
def server(fault_settings: Settings, tmp_path_factory) -> Iterator[str]:
    """uvicorn on 127.0.0.1, one worker, against the fault cluster."""
    log = tmp_path_factory.mktemp("faults-server") / "uvicorn.log"
    with uvicorn_process(fault_settings, log) as (_, base):
        yield base
    print(log.read_text(errors="replace")[-6000:])


def _assert_unavailable(response: httpx.Response) -> None:
    assert response.status_code == 503, (response.request.url, response.text)
    assert response.headers["content-type"] == PROBLEM
    assert response.headers["retry-after"].isdigit()
    body = response.json()
    assert body["status"] == 503 and "database" in body["detail"]


def test_database_stopped_answers_503_then_recovers_by_itself(fault_cluster, server, analyst_key):
    analyst = auth(analyst_key)
    items = f"{server}/collections/units-1/items?limit=3"
    tile = f"{server}/tiles/units-1/6/16/28.mvt"
    with httpx.Client(timeout=CLIENT_TIMEOUT_S) as http:
        # Warm: the layer catalog, the items count (so the next items request streams
        # straight away) and the analyst's key are all cached by the worker.
        assert http.get(items).status_code == 200
        assert http.get(tile).status_code == 200
        assert http.get(f"{server}/incidents?limit=5", headers=analyst).status_code == 200

        fault_cluster.stop()
        try:
            _assert_unavailable(http.get(f"{server}/incidents?limit=5", headers=analyst))
            # Streamed: the failure comes before the status line, so it is a clean 503.
            _assert_unavailable(http.get(items))
            _assert_unavailable(http.get(f"{server}/collections/units-1/items/1"))
            _assert_unavailable(http.get(f"{server}/tiles/units-1/7/32/57.mvt"))  # uncached
            # A key the worker has not seen yet cannot be checked: 503, not 401.
            unknown = security.new_key()[0]
            _assert_unavailable(http.get(f"{server}/incidents", headers=auth(unknown)))
            _assert_unavailable(http.get(f"{server}/ready"))
            # What needs no database still works: liveness, and tiles already cached.
            assert http.get(f"{server}/health").status_code == 200
            assert http.get(tile).status_code == 200
            metrics = http.get(f"{server}/metrics").text
            assert 'route="/incidents",status="503"' in metrics
            assert 'route="/collections/{collection_id}/items",status="503"' in metrics
        finally:
            fault_cluster.start()

        # Back without restarting the service: the pool replaces its dead connections.
        assert http.get(f"{server}/incidents?limit=5", headers=analyst).status_code == 200
        page = http.get(items)
        assert page.status_code == 200 and page.json()["numberReturned"] == 3
        assert http.get(f"{server}/tiles/units-1/7/32/57.mvt").status_code == 200
        assert http.get(f"{server}/ready").status_code == 200


def test_requests_during_a_stop_and_start_get_an_answer_or_a_clean_503(
    fault_cluster, server, analyst_key
):
    """Clients keep asking while the database goes down and comes back: each request
    gets a complete 200 or a 503 problem, within the client timeout, never a 500."""
    urls = [
        f"{server}/incidents?limit=50",
        f"{server}/collections/incidents/items?limit=50",
        f"{server}/collections/units-1/items?limit=6",
        f"{server}/units?level=1",
    ]
    outcomes: list[tuple[str, int, str]] = []
    broken: list[str] = []
    stop = threading.Event()

    def client(worker: int) -> None:
        # A failure inside a thread would only warn: it is kept and asserted below.
        try:
            ask(worker)
        except Exception as exc:
            broken.append(f"client {worker}: {exc!r}")

    def ask(worker: int) -> None:
        with httpx.Client(timeout=CLIENT_TIMEOUT_S, headers=auth(analyst_key)) as http:
            n = 0
            while not stop.is_set():
                n += 1
                # Uncached tiles too: a new tile each time.
                url = urls[n % len(urls)] if n % 5 else (
                    f"{server}/tiles/incidents/14/{4000 + worker * 1000 + n}/7300.mvt"
                )  # fmt: skip
                try:
                    response = http.get(url)
                except httpx.TimeoutException:
                    broken.append(f"timeout: {url}")
                    continue
                except httpx.RemoteProtocolError as exc:
                    # Possible only for a stream whose data had started when the database
                    # went away: the body is cut short (visibly), never a valid short page.
                    assert "/items" in url, (url, exc)
                    outcomes.append((url, -1, ""))
                    continue
                kind = response.headers.get("content-type", "")
                if response.status_code == 200 and "json" in kind:
                    orjson.loads(response.content)  # complete, parseable
                outcomes.append((url, response.status_code, kind))

    threads = [threading.Thread(target=client, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    try:
        time.sleep(1)
        fault_cluster.stop()
        time.sleep(2)
        fault_cluster.start()
        time.sleep(2)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=30)
    assert not broken, broken
    statuses = {status for _, status, _ in outcomes}
    assert statuses <= {200, 503, -1}, [o for o in outcomes if o[1] not in (200, 503, -1)]
    assert all(kind == PROBLEM for _, status, kind in outcomes if status == 503)
    assert 503 in statuses  # the outage was seen …
    last = outcomes[-len(urls) * 2 :]
    assert all(status == 200 for _, status, _ in last), last  # … and it is over


def test_an_import_cut_by_a_database_restart_leaves_nothing_and_reruns(
    fault_cluster, fault_settings, tmp_path
):
    source = "restarted"
    path = write_incident_csv(tmp_path / "restart.csv", n=150_000, source=source, seed=21)
    command = [sys.executable, "-m", "app.cli", "import", "incidents", str(path)]
    env = service_env(fault_settings)
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    with psycopg.connect(fault_settings.libpq_url, autocommit=True) as db:
        deadline = time.monotonic() + 120
        # Strike while the batch's rows are being written (COPY or upsert in progress).
        while not db.execute(
            "SELECT count(*) > 0 FROM pg_stat_activity WHERE query ILIKE '%incident_staging%' "
            "AND state = 'active' AND pid <> pg_backend_pid()"
        ).fetchone()[0]:
            if process.poll() is not None:
                pytest.fail(f"the import ended too early:\n{process.communicate()[0].decode()}")
            assert time.monotonic() < deadline, "the import never started writing"
            time.sleep(0.02)
    fault_cluster.stop()
    fault_cluster.start()
    output = process.communicate(timeout=120)[0].decode()
    assert process.returncode != 0, output
    assert "database is not reachable" in output or "Error" in output, output

    with psycopg.connect(fault_settings.libpq_url, autocommit=True) as db:
        count = "SELECT count(*) FROM incident WHERE source = %s"
        assert db.execute(count, [source]).fetchone()[0] == 0
        batch = db.execute(
            "SELECT id, status, inserted FROM import_batch WHERE filename = 'restart.csv' "
            "ORDER BY id DESC"
        ).fetchone()
        assert batch[2] == 0 and batch[1] in ("running", "failed")
        assert not db.execute(
            "SELECT count(*) FROM import_rejection WHERE batch_id = %s", [batch[0]]
        ).fetchone()[0]

        rerun = subprocess.run(command, env=env, capture_output=True, text=True)
        assert rerun.returncode == 0, rerun.stdout + rerun.stderr
        assert db.execute(count, [source]).fetchone()[0] == 150_000
