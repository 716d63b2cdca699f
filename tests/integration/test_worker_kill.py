"""A worker killed mid-request loses nothing it acknowledged (issue 7, point 4).

The service runs as a real uvicorn with two worker processes on a cluster of its own
(``test_faults``' helpers). Editors' clients post incidents without pause; one worker is
killed with SIGKILL while requests are in flight (uvicorn's supervisor starts a new one),
then the whole server, and a fresh server is started. Then, in the database:

* every incident that got a 201 is there exactly once, with the id the 201 gave;
* every incident that is there is whole: its units assigned and its audit entry written
  (one transaction), whether or not its client got an answer;
* a write cut off without an answer can be sent again: it is then created (201) if it
  was lost, or refused as a duplicate (409) if it had been stored, never stored twice.

An import is killed with its server while its rows are being written: it stays
``running`` while its session lives, is then reported as interrupted (``failed``, with
the reason) and has left no row behind; the same upload sent again completes.

No timing is asserted; clients time out after 30 s so that a hang fails the test.
"""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psycopg
import pytest

from app.core.cluster import Cluster
from app.core.settings import Settings
from tests.conftest import auth, new_cluster
from tests.integration.helpers import write_incident_csv
from tests.integration.test_faults import (
    create_key,
    migrated_with_districts,
    uvicorn_process,
)

SOURCE = "worker-kill"
# Below one worker's pool (10 connections + 10 overflow), so requests never wait for a
# connection: pool timeouts (503) are not what this file tests.
CLIENTS = 16
CLIENT_TIMEOUT_S = 30
# Belize City and Belmopan: points well inside a district.
TOWNS = ((-88.1962, 17.5046), (-88.7590, 17.2514))


@pytest.fixture(scope="module")
def kill_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with new_cluster(tmp_path_factory, "worker-kill", "observatory_worker_kill") as cluster:
        yield cluster


@pytest.fixture(scope="module")
def kill_settings(kill_cluster: Cluster) -> Settings:
    return migrated_with_districts(kill_cluster)


@pytest.fixture(scope="module")
def editor_key(kill_settings: Settings) -> str:
    return create_key(kill_settings, "editor")


# -- the server's processes ----------------------------------------------------------------


def _worker_pids(supervisor: int) -> list[int]:
    """uvicorn's worker processes (multiprocessing spawns), not its resource tracker."""
    pids = []
    for task in Path(f"/proc/{supervisor}/task").iterdir():
        for child in (task / "children").read_text().split():
            try:
                cmdline = Path(f"/proc/{child}/cmdline").read_bytes()
            except OSError:
                continue
            if b"spawn_main" in cmdline:
                pids.append(int(child))
    return pids


def _client_connections(pid: int, port: int) -> int:
    """How many established TCP connections to ``port`` (our clients') ``pid`` holds."""
    inodes = set()
    for row in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = row.split()
        local_port = int(fields[1].split(":")[1], 16)
        if local_port == port and fields[3] == "01":  # ESTABLISHED
            inodes.add(fields[9])
    held = 0
    fd_dir = Path(f"/proc/{pid}/fd")
    for fd in fd_dir.iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:[") and target[8:-1] in inodes:
            held += 1
    return held


def _wait_for(condition, what: str, timeout_s: float = 60, poll_s: float = 0.1) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(poll_s)


# -- the writers ---------------------------------------------------------------------------


@dataclass
class Outcomes:
    acknowledged: dict[str, int] = field(default_factory=dict)  # source_id -> id in the 201
    unanswered: dict[str, str] = field(default_factory=dict)  # source_id -> the error
    refused: dict[str, tuple[int, str]] = field(default_factory=dict)
    sent: int = 0
    not_connected: int = 0  # no server to connect to: nothing was sent


def _incident(n: int) -> dict:
    lon, lat = TOWNS[n % len(TOWNS)]
    return {
        "source": SOURCE,
        "source_id": f"wk-{n:06d}",
        "category": ("theft", "robbery", "burglary", "assault")[n % 4],
        "occurred_at": f"2024-{1 + n % 12:02d}-{1 + n % 28:02d}T{n % 24:02d}:15:00",
        "geometry": {"type": "Point", "coordinates": [lon + (n % 97) * 1e-4, lat]},
        "victim_sex": ("female", "male", "unknown")[n % 3],
        "victim_age": 15 + n % 60,
        "attributes": {"client": "test_worker_kill", "n": n},
    }


async def _post_until(
    base: str, key: str, outcomes: Outcomes, first: int, stop: threading.Event
) -> None:
    """``CLIENTS`` concurrent clients post new incidents until ``stop`` is set; source ids
    from ``first`` on, each used once."""
    numbers = iter(range(first, first + 1_000_000))
    limits = httpx.Limits(max_connections=CLIENTS, max_keepalive_connections=CLIENTS)
    async with httpx.AsyncClient(
        base_url=base, headers=auth(key), timeout=CLIENT_TIMEOUT_S, limits=limits
    ) as http:

        async def client() -> None:
            while not stop.is_set():
                body = _incident(next(numbers))
                source_id = body["source_id"]
                outcomes.sent += 1
                try:
                    response = await http.post("/incidents", json=body)
                except httpx.TimeoutException as exc:
                    pytest.fail(f"a write hung for {CLIENT_TIMEOUT_S} s: {exc!r}")
                except httpx.ConnectError:
                    outcomes.not_connected += 1
                    await asyncio.sleep(0.05)  # the server is gone
                    continue
                except httpx.TransportError as exc:  # sent, and cut off before an answer
                    outcomes.unanswered[source_id] = repr(exc)
                    await asyncio.sleep(0.05)  # the server is going or gone
                    continue
                if response.status_code == 201:
                    outcomes.acknowledged[source_id] = response.json()["id"]
                else:
                    outcomes.refused[source_id] = (response.status_code, response.text[:300])

        await asyncio.gather(*(client() for _ in range(CLIENTS)))


class Writers:
    """The posting clients in a thread of their own, so the test can kill meanwhile."""

    def __init__(self, base: str, key: str, outcomes: Outcomes, first: int) -> None:
        self.outcomes = outcomes
        self.stop = threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, args=(base, key, first))

    def _run(self, base: str, key: str, first: int) -> None:
        try:
            asyncio.run(_post_until(base, key, self.outcomes, first, self.stop))
        except BaseException as exc:  # re-raised in the test's thread
            self.error = exc

    def __enter__(self) -> Writers:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join(timeout=CLIENT_TIMEOUT_S + 10)
        assert not self.thread.is_alive(), "the writers did not stop"
        if self.error is not None:
            raise self.error

    def wait_acknowledged(self, n: int) -> None:
        _wait_for(
            lambda: len(self.outcomes.acknowledged) >= n or self.error is not None,
            f"{n} acknowledged writes",
        )
        if self.error is not None:
            raise self.error


# -- the scenario: writes and an import, a worker killed, then the server ---------------


@dataclass
class Scenario:
    outcomes: Outcomes
    unanswered_by_phase: dict[str, int]
    import_path: Path
    import_rows: int
    import_source: str
    killed_batch: int
    upload: dict[str, object]
    base: str  # a fresh server started after the kills


@pytest.fixture(scope="module")
def scenario(kill_settings, editor_key, tmp_path_factory) -> Iterator[Scenario]:
    tmp = tmp_path_factory.mktemp("worker-kill")
    source, rows = "killed-import", 40_000
    path = write_incident_csv(tmp / "killed.csv", n=rows, source=source, seed=11)
    editor = auth(editor_key)
    log = tmp / "uvicorn.log"
    outcomes = Outcomes()
    phases: dict[str, int] = {}
    upload: dict[str, object] = {}

    def post_import(base: str) -> None:
        with path.open("rb") as f:
            try:
                upload["response"] = httpx.post(
                    f"{base}/imports", headers=editor, files={"file": (path.name, f, "text/csv")},
                    timeout=120,
                )  # fmt: skip
            except httpx.TransportError as exc:
                upload["error"] = exc

    writing = (
        "SELECT count(*) > 0 FROM pg_stat_activity WHERE query ILIKE '%incident_staging%'"
        " AND state = 'active' AND pid <> pg_backend_pid()"
    )
    with (
        psycopg.connect(kill_settings.libpq_url, autocommit=True) as db,
        uvicorn_process(kill_settings, log, workers=2) as (server, base),
    ):
        port = int(base.rsplit(":", 1)[1])
        _wait_for(lambda: len(_worker_pids(server.pid)) == 2, "two uvicorn workers")
        with Writers(base, editor_key, outcomes, first=0) as writers:
            writers.wait_acknowledged(40)
            # 1. The worker holding the most client connections, killed mid-flight.
            victim = max(_worker_pids(server.pid), key=lambda pid: _client_connections(pid, port))
            assert _client_connections(victim, port) > 0, "no client reached the workers"
            os.kill(victim, signal.SIGKILL)
            # uvicorn's supervisor replaces it, and the writes go on.
            _wait_for(
                lambda: len(set(_worker_pids(server.pid)) - {victim}) == 2,
                "uvicorn to replace the killed worker",
            )
            phases["one worker killed"] = len(outcomes.unanswered)
            writers.wait_acknowledged(len(outcomes.acknowledged) + 30)
            # 2. An import, while the writes go on; it is listed as running while it lives.
            poster = threading.Thread(target=post_import, args=(base,))
            poster.start()
            _wait_for(
                lambda: upload or db.execute(writing).fetchone()[0], "the import to write",
                poll_s=0.01,
            )  # fmt: skip
            assert not upload, f"the import ended before it could be killed: {upload}"
            batch_id = db.execute(
                "SELECT id FROM import_batch WHERE filename = %s AND status = 'running'",
                [path.name],
            ).fetchone()[0]
            listed = httpx.get(f"{base}/imports/{batch_id}", headers=editor, timeout=30).json()
            assert listed["status"] == "running", listed  # the check leaves it alone
            # 3. The whole server killed: supervisor and workers at once, all mid-flight.
            before = len(outcomes.unanswered)
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
            poster.join(timeout=60)
            _wait_for(
                lambda: outcomes.not_connected > 0 or writers.error is not None,
                "the writers to find the server gone",
            )
            phases["server killed"] = len(outcomes.unanswered) - before
    print(
        f"sent {outcomes.sent}, acknowledged {len(outcomes.acknowledged)}, unanswered per "
        f"phase {phases}, refused {len(outcomes.refused)}, not connected {outcomes.not_connected}"
    )
    with uvicorn_process(kill_settings, log) as (_, base):
        yield Scenario(outcomes, phases, path, rows, source, batch_id, upload, base)


def _stored(settings: Settings) -> dict[str, dict]:
    """Every incident of the writers, with what its transaction also wrote."""
    with psycopg.connect(settings.libpq_url) as conn:
        rows = conn.execute(
            """
            SELECT i.source_id, i.id, cardinality(i.unit_ids) AS units,
                   (SELECT count(*) FROM audit_log a
                    WHERE a.entity = 'incident' AND a.entity_id = i.id::text
                      AND a.action = 'create') AS audits
            FROM incident i WHERE i.source = %s
            """,
            [SOURCE],
        ).fetchall()
    stored: dict[str, dict] = {}
    for source_id, id_, units, audits in rows:
        assert source_id not in stored, f"{source_id} stored twice"  # (unique, but say so)
        stored[source_id] = {"id": id_, "units": units, "audits": audits}
    return stored


# -- the tests -----------------------------------------------------------------------------


def test_no_acknowledged_write_is_lost(scenario, kill_settings, editor_key):
    outcomes = scenario.outcomes
    assert not outcomes.refused, list(outcomes.refused.items())[:5]
    assert all(scenario.unanswered_by_phase.values()), (
        f"a kill cut no write short: {scenario.unanswered_by_phase}"
    )
    stored = _stored(kill_settings)
    print(f"stored {len(stored)}, of them unanswered {len(set(stored) & set(outcomes.unanswered))}")
    lost = [s for s in outcomes.acknowledged if s not in stored]
    assert not lost, (
        f"{len(lost)} of {len(outcomes.acknowledged)} acknowledged writes are missing "
        f"(unanswered per phase: {scenario.unanswered_by_phase}): {lost[:10]}"
    )
    for source_id, id_ in outcomes.acknowledged.items():
        assert stored[source_id]["id"] == id_, (source_id, id_, stored[source_id])
    # Whole or absent, answered or not: its units and its audit entry came with the row.
    for source_id, row in stored.items():
        assert row["units"] >= 2 and row["audits"] == 1, (source_id, row)
    # Nothing is stored that no client sent.
    assert set(stored) <= set(outcomes.acknowledged) | set(outcomes.unanswered)

    # A client that got no answer sends its write again: created if it was lost, a 409
    # if it had been stored; never a second copy.
    with httpx.Client(
        base_url=scenario.base, headers=auth(editor_key), timeout=CLIENT_TIMEOUT_S
    ) as http:
        for source_id in outcomes.unanswered:
            n = int(source_id.removeprefix("wk-"))
            status = http.post("/incidents", json=_incident(n)).status_code
            assert status == (409 if source_id in stored else 201), (source_id, status)
    again = _stored(kill_settings)
    assert set(again) == set(outcomes.acknowledged) | set(outcomes.unanswered)
    assert all(row["units"] >= 2 and row["audits"] == 1 for row in again.values())


def test_a_killed_import_is_reported_interrupted_and_reruns(scenario, kill_settings, editor_key):
    assert "error" in scenario.upload, scenario.upload  # the upload got no answer
    batch_id, source = scenario.killed_batch, scenario.import_source
    with (
        psycopg.connect(kill_settings.libpq_url, autocommit=True) as db,
        httpx.Client(base_url=scenario.base, headers=auth(editor_key), timeout=120) as http,
    ):
        # The batch's session ends when PostgreSQL notices its client is gone (at once in
        # COPY, at the end of the statement in the upsert); from then on the batch is
        # reported as interrupted.
        _wait_for(
            lambda: http.get(f"/imports/{batch_id}").json()["status"] != "running",
            "the killed batch to be reported interrupted",
        )
        batch = http.get(f"/imports/{batch_id}").json()
        assert batch["status"] == "failed", batch
        assert batch["error"].startswith("interrupted"), batch
        assert batch["finished_at"] is not None and batch["inserted"] == 0, batch
        assert batch["rejections"] == []
        left = "SELECT count(*) FROM incident WHERE source = %s OR import_batch_id = %s"
        assert db.execute(left, [source, batch_id]).fetchone()[0] == 0
        listed = {b["id"]: b for b in http.get("/imports").json()["batches"]}
        assert listed[batch_id]["status"] == "failed"

        path = scenario.import_path
        with path.open("rb") as f:
            rerun = http.post("/imports", files={"file": (path.name, f, "text/csv")})
        assert rerun.status_code == 201, rerun.text
        report = rerun.json()
        assert report["status"] == "completed", report
        assert report["inserted"] == scenario.import_rows, report
        mine = "SELECT count(*) FROM incident WHERE source = %s AND import_batch_id = %s"
        assert db.execute(mine, [source, report["id"]]).fetchone()[0] == scenario.import_rows
        # The interrupted batch stays on record as it was.
        assert http.get(f"/imports/{batch_id}").json()["status"] == "failed"


def test_a_write_is_acknowledged_only_once_committed(scenario, kill_settings, editor_key):
    """Deterministic form of the race the kills above can only hit by chance: a
    constraint checked at commit (deferred) refuses the incident, so its transaction
    rolls back after the handler returned. The client must not be told 201."""
    with psycopg.connect(kill_settings.libpq_url, autocommit=True) as db:
        db.execute(
            """
            CREATE FUNCTION refuse_at_commit() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                IF NEW.attributes ->> 'refuse_at_commit' = 'yes' THEN
                    RAISE EXCEPTION 'refused at commit (test_worker_kill)';
                END IF;
                RETURN NULL;
            END $$;
            CREATE CONSTRAINT TRIGGER refuse_at_commit AFTER INSERT ON incident
                DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION refuse_at_commit();
            """
        )
        try:
            body = _incident(999_999) | {"attributes": {"refuse_at_commit": "yes"}}
            with httpx.Client(base_url=scenario.base, timeout=CLIENT_TIMEOUT_S) as http:
                status = http.post("/incidents", json=body, headers=auth(editor_key)).status_code
            stored = db.execute(
                "SELECT count(*) FROM incident WHERE source = %s AND source_id = %s",
                [SOURCE, body["source_id"]],
            ).fetchone()[0]
        finally:
            db.execute("DROP TRIGGER refuse_at_commit ON incident")
            db.execute("DROP FUNCTION refuse_at_commit()")
    assert stored == 0  # the database refused it …
    assert status >= 400, f"… but the client was told {status}"  # app.deps.ConnDep's scope
