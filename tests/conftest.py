"""Test fixtures: a throw-away PostgreSQL 15 + PostGIS cluster for the whole session.

Nothing is mocked. If PostGIS cannot start, every database test errors loudly; a skip
would hide a broken store, so none of these fixtures ever skips.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import psycopg.sql
import pytest
from fastapi.testclient import TestClient

from app import security
from app.core.cluster import Cluster
from app.core.migrate import upgrade
from app.core.settings import DATA_DIR, DatabaseSettings, Settings
from app.main import create_app

ROOT = Path(__file__).parents[1]
FIXTURES = Path(__file__).parent / "fixtures"
BELIZE = DATA_DIR / "belize"
ROLES = ("viewer", "analyst", "editor", "admin")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def new_cluster(
    tmp_path_factory: pytest.TempPathFactory, directory: str, database: str
) -> Iterator[Cluster]:
    """A throw-away cluster on a free port of 127.0.0.1, destroyed afterwards."""
    base = tmp_path_factory.mktemp(directory)
    base.chmod(0o755)  # the postgres user must reach the data directory when we are root
    for parent in base.parents:
        if parent in (Path("/tmp"), Path("/")):
            break
        parent.chmod(parent.stat().st_mode | 0o005)
    db = DatabaseSettings(data_dir=base / "data", port=_free_port(), name=database)
    cluster = Cluster(db)
    cluster.start()  # raises (and so fails the suite) when PostgreSQL/PostGIS cannot run
    try:
        yield cluster
    finally:
        cluster.destroy()


def migrated_settings(cluster: Cluster) -> Settings:
    """Test settings for ``cluster``, its schema migrated."""
    settings = Settings(
        environment="test",
        database=cluster.settings,
        database_url=None,
        # Tests compile the statistics kernels when they first need them; the start-up
        # warm-up itself is exercised by the end-to-end test of `observatory up`.
        analysis={"warm_up": False},
    )
    upgrade(settings.sqlalchemy_url)
    return settings


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with new_cluster(tmp_path_factory, "postgres", "observatory_test") as cluster:
        yield cluster


@pytest.fixture(scope="session")
def settings(cluster: Cluster) -> Settings:
    return migrated_settings(cluster)


def run(coro):
    """Run a coroutine from a synchronous test."""
    return asyncio.run(coro)


async def _with_engine(settings: Settings, fn):
    from app.core.db import create_engine

    engine = create_engine(settings)
    try:
        return await fn(engine)
    finally:
        await engine.dispose()


def call_service(settings: Settings, fn):
    """Call ``fn(engine)`` (an async service function) on a fresh engine."""
    return run(_with_engine(settings, fn))


@pytest.fixture(scope="session")
def db_url(settings: Settings) -> str:
    return settings.libpq_url


@pytest.fixture
def db(db_url: str) -> Iterator[psycopg.Connection]:
    with psycopg.connect(db_url, autocommit=True) as conn:
        yield conn


def _live_workers(db_url: str) -> set[int]:
    with psycopg.connect(db_url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT id FROM procrastinate.procrastinate_workers "
            "WHERE last_heartbeat > now() - interval '1 minute'"
        ).fetchall()
    return {r[0] for r in rows}


@contextlib.contextmanager
def worker_process(
    database_url: str,
    log: Path,
    *,
    concurrency: int = 2,
    queues: str | None = None,
    env: dict[str, str] | None = None,
) -> Iterator[subprocess.Popen]:
    """``observatory worker`` on ``database_url`` (warm-up off; ``queues``: comma-separated,
    default the service's), once it has registered with the queue; stopped (SIGTERM,
    then SIGKILL) afterwards. Its log goes to ``log``."""
    before = _live_workers(database_url)
    environment = {
        **{k: v for k, v in os.environ.items() if not k.startswith("OBSERVATORY_")},
        "OBSERVATORY_ENVIRONMENT": "test",
        "OBSERVATORY_DATABASE_URL": database_url,
        "OBSERVATORY_ANALYSIS__WARM_UP": "false",
        # A killed worker's job is taken back within seconds. Every worker on one
        # database must agree on these: a worker silent for stalled_s is taken for dead.
        "OBSERVATORY_WORKER__HEARTBEAT_S": "1",
        "OBSERVATORY_WORKER__STALLED_S": "6",
        **(env or {}),
    }
    command = [sys.executable, "-m", "app.cli", "worker", "--concurrency", str(concurrency)]
    command += ["--queues", queues] if queues else []
    with log.open("ab") as out:
        process = subprocess.Popen(
            command, cwd=ROOT, env=environment, stdout=out, stderr=subprocess.STDOUT
        )
    try:
        deadline = time.monotonic() + 120
        while not _live_workers(database_url) - before:
            if process.poll() is not None:
                pytest.fail(f"observatory worker exited:\n{log.read_text()[-4000:]}")
            if time.monotonic() > deadline:
                pytest.fail(f"observatory worker never registered:\n{log.read_text()[-4000:]}")
            time.sleep(0.1)
        yield process
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@pytest.fixture(scope="session")
def worker(settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """One real worker process for the session: the API queues analyses, it runs them.
    No schedule: a nightly evaluation of the monitors firing in the middle of the suite
    would change public answers between two snapshots (tests of schedules start their
    own worker)."""
    log = tmp_path_factory.mktemp("worker") / "worker.log"
    with worker_process(settings.libpq_url, log, env={"OBSERVATORY_WORKER__SCHEDULES": "{}"}):
        yield


@pytest.fixture(scope="session")
def base_data(settings: Settings, worker: None) -> Settings:
    """Categories and the real Belize boundaries (country + 6 districts), loaded once."""
    from app.services.boundaries import import_boundaries
    from app.services.categories import load_categories

    call_service(settings, lambda e: load_categories(e, settings.territory.categories_file))
    boundaries = BELIZE / "boundaries"
    call_service(
        settings,
        lambda e: import_boundaries(
            e,
            boundaries / "belize_adm0_naturalearth_10m.geojson",
            level=0,
            code_field="ISO_A2",
            name_field="ADMIN",
            actor="tests",
        ),
    )
    call_service(
        settings,
        lambda e: import_boundaries(
            e,
            boundaries / "belize_adm1_districts.geojson",
            level=1,
            code_field="iso_3166_2",
            name_field="district",
            actor="tests",
        ),
    )
    return settings


@pytest.fixture(scope="session")
def keys(settings: Settings, db_url: str) -> dict[str, str]:
    """One API key per role."""
    out = {}
    with psycopg.connect(db_url, autocommit=True) as conn:
        for role in ROLES:
            key, prefix, key_hash = security.new_key()
            conn.execute(
                "INSERT INTO api_key (name, prefix, hash, role) VALUES (%s, %s, %s, %s)",
                [f"test-{role}", prefix, key_hash, role],
            )
            out[role] = key
    return out


DEMO_TEMPLATE = "observatory_demo_template"


@pytest.fixture(scope="session")
def demo_template(cluster: Cluster) -> str:
    """The Belize demo exactly as ``observatory demo`` loads it (``load_demo``'s defaults:
    60,000 synthetic incidents, seed 42, the demo census and hot spot run), loaded once
    into a database that nothing else connects to; :func:`demo_database` copies it for
    each module that needs the demo in a database of its own."""
    from app.demo.load import load_demo

    settings = _fresh_database(cluster, DEMO_TEMPLATE)
    upgrade(settings.sqlalchemy_url)
    call_service(settings, lambda e: load_demo(e, settings))
    return DEMO_TEMPLATE


def _fresh_database(cluster: Cluster, name: str, template: str | None = None) -> Settings:
    """Settings for database ``name`` on ``cluster``, (re)created empty or as a copy of
    ``template``."""
    admin = cluster.url.rsplit("/", 1)[0] + "/postgres"
    with psycopg.connect(admin, autocommit=True) as conn:
        ident = psycopg.sql.Identifier(name)
        conn.execute(psycopg.sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(ident))
        create = psycopg.sql.SQL("CREATE DATABASE {}").format(ident)
        if template is not None:
            create += psycopg.sql.SQL(" TEMPLATE {}").format(psycopg.sql.Identifier(template))
        conn.execute(create)
    return Settings(
        environment="test",
        database=cluster.settings.model_copy(update={"name": name}),
        database_url=None,
        analysis={"warm_up": False},
    )


def demo_database(cluster: Cluster, template: str, name: str) -> Settings:
    """Database ``name``, (re)created as a copy of the demo (``template``: the
    ``demo_template`` fixture): the same rows as loading the demo into it, in a second
    rather than twenty."""
    return _fresh_database(cluster, name, template)


def auth(key: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"} if key else {}


@pytest.fixture(scope="session")
def client(base_data: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(base_data)) as client:
        # As a load balancer would: no request before the worker says it is warm (its
        # layer catalog can take more than /ready's own wait on a busy machine).
        deadline = time.monotonic() + 120
        while client.get("/ready").status_code != 200:
            assert time.monotonic() < deadline, client.get("/ready").text
        yield client


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """A skipped test is a failure here: a missing server must never pass silently."""
    outcome = yield
    report = outcome.get_result()
    if report.skipped and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        report.longrepr = f"skipped tests count as failures in this project: {report.longrepr}"
