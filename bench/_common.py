"""Helpers shared by the benchmarks: a throw-away cluster, the app under uvicorn, reporting.

Everything here binds to 127.0.0.1 only and cleans up after itself (the cluster is
destroyed and the server terminated on the way out of their context managers, also on
error or Ctrl-C).
"""

from __future__ import annotations

import contextlib
import os
import platform
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psycopg
from rich.console import Console
from sqlalchemy import ClauseElement, TextClause, bindparam
from sqlalchemy.dialects import postgresql

from app import security
from app.core.cluster import Cluster
from app.core.settings import DatabaseSettings, Settings

ROOT = Path(__file__).resolve().parent.parent

# Wide enough for the tables when the output is a file or a pipe.
console = Console(width=max(Console().width, 132))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def step(message: str) -> None:
    console.log(f"[bold cyan]{message}")


def literal_sql(stmt: ClauseElement, **params: Any) -> str:
    """Compile a SQLAlchemy statement to plain SQL text with its values inlined."""
    compiled = stmt.compile(dialect=postgresql.psycopg.dialect())
    wanted = [bindparam(k, v) for k, v in params.items() if k in compiled.params]
    if wanted:  # bindparam() infers the SQL type from the value, which literal_binds needs
        stmt = stmt.bindparams(*wanted) if isinstance(stmt, TextClause) else stmt.params(params)
    sql = str(
        stmt.compile(dialect=postgresql.psycopg.dialect(), compile_kwargs={"literal_binds": True})
    )
    return sql.replace("%%", "%")  # the dialect escapes % for its paramstyle; we send no params


def session_url(settings: Settings) -> str:
    """The libpq URL with the session options the app's engine sets (app/core/db.py)."""
    timeout = settings.database.statement_timeout_ms
    return psycopg.conninfo.make_conninfo(
        settings.libpq_url,
        options=f"-c statement_timeout={timeout} -c max_parallel_workers_per_gather=0",
    )


@contextlib.contextmanager
def throwaway_cluster(base: Path, statement_timeout_ms: int) -> Iterator[Settings]:
    """Start a private cluster under ``base`` on a free port; destroy it on the way out."""
    base.chmod(0o755)  # the postgres user must reach the data directory when we are root
    db = DatabaseSettings(
        data_dir=base / "data",
        port=free_port(),
        name="observatory_bench",
        statement_timeout_ms=statement_timeout_ms,
    )
    cluster = Cluster(db)
    try:
        cluster.start()
        yield Settings(environment="test", database=db, database_url=None)
    finally:
        step("destroying the throw-away cluster")
        cluster.destroy()


def create_analyst_key(url: str) -> str:
    key, prefix, key_hash = security.new_key()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO api_key (name, prefix, hash, role) VALUES (%s, %s, %s, %s)",
            ["bench-analyst", prefix, key_hash, "analyst"],
        )
    return key


@dataclass
class RunningApp:
    """A uvicorn subprocess serving the app, with the moments (``time.perf_counter``) it
    was started, first answered ``/health`` with 200 and first answered ``/ready`` with 200."""

    base: str
    process: subprocess.Popen
    started: float
    listening: float
    ready: float

    @property
    def pid(self) -> int:
        return self.process.pid


@contextlib.contextmanager
def launch_app(
    settings: Settings,
    log_path: Path,
    *,
    env: Mapping[str, str] | None = None,
    ready_timeout_s: float = 60.0,
    poll_s: float = 0.2,
) -> Iterator[RunningApp]:
    """Serve ``app.main:create_app`` with uvicorn in a subprocess on a free loopback port;
    yield it once ``/ready`` answers 200 (polled every ``poll_s``); terminate it on exit.

    ``env`` is added to the service's environment (on top of this process's and the
    database settings)."""
    port = free_port()
    full_env = {
        **os.environ,
        "OBSERVATORY_DATABASE_URL": settings.libpq_url,
        "OBSERVATORY_DATABASE__STATEMENT_TIMEOUT_MS": str(settings.database.statement_timeout_ms),
        "OBSERVATORY_ENVIRONMENT": "test",
        **(env or {}),
    }
    command = [
        sys.executable, "-m", "uvicorn", "--factory", "app.main:create_app",
        "--host", "127.0.0.1", "--port", str(port),
        "--log-level", "warning", "--no-access-log",
    ]  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    with log_path.open("wb") as log:
        started = time.perf_counter()
        server = subprocess.Popen(command, cwd=ROOT, env=full_env, stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + ready_timeout_s
        listening: float | None = None
        path = "/health"
        while True:
            if server.poll() is not None:
                raise RuntimeError(f"uvicorn exited:\n{log_path.read_text()[-3000:]}")
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{base}{path}", timeout=5).status_code == 200:
                    now = time.perf_counter()
                    if listening is None:
                        listening, path = now, "/ready"
                        continue
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"uvicorn not ready in {ready_timeout_s:g} s:\n{log_path.read_text()[-3000:]}"
                )
            time.sleep(poll_s)
        yield RunningApp(base, server, started, listening, now)
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


@contextlib.contextmanager
def launch_worker(
    settings: Settings,
    log_path: Path,
    *,
    env: Mapping[str, str] | None = None,
    concurrency: int = 1,
    ready_timeout_s: float = 180.0,
) -> Iterator[subprocess.Popen]:
    """``observatory worker`` in a subprocess (the analyses run there, app.worker); yield
    it once it has registered with the job queue (after its numba warm-up); stop it on
    exit."""
    full_env = {
        **os.environ,
        "OBSERVATORY_DATABASE_URL": settings.libpq_url,
        "OBSERVATORY_DATABASE__STATEMENT_TIMEOUT_MS": str(settings.database.statement_timeout_ms),
        "OBSERVATORY_ENVIRONMENT": "test",
        **(env or {}),
    }
    command = [sys.executable, "-m", "app.cli", "worker", "--concurrency", str(concurrency)]

    def live() -> set[int]:
        with psycopg.connect(settings.libpq_url, autocommit=True) as conn:
            return {
                r[0]
                for r in conn.execute(
                    "SELECT id FROM procrastinate.procrastinate_workers "
                    "WHERE last_heartbeat > now() - interval '1 minute'"
                )
            }

    before = live()
    with log_path.open("ab") as log:
        worker = subprocess.Popen(command, cwd=ROOT, env=full_env, stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + ready_timeout_s
        while not live() - before:
            if worker.poll() is not None:
                raise RuntimeError(f"the worker exited:\n{log_path.read_text()[-3000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"the worker never registered:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.05)
        yield worker
    finally:
        worker.terminate()
        try:
            worker.wait(timeout=30)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()


@contextlib.contextmanager
def serve_app(settings: Settings, log_path: Path) -> Iterator[str]:
    """Serve ``app.main:create_app`` with uvicorn in a subprocess; yield its base URL."""
    with launch_app(settings, log_path) as app:
        yield app.base


def machine_info(url: str) -> dict[str, Any]:
    cpu_model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    with psycopg.connect(url) as conn:
        pg = conn.execute("SHOW server_version").fetchone()[0]
        postgis = conn.execute("SELECT postgis_lib_version()").fetchone()[0]
        geos = conn.execute("SELECT postgis_geos_version()").fetchone()[0]
        settings = dict(
            conn.execute(
                "SELECT name, current_setting(name) FROM pg_settings WHERE name = ANY(%s)",
                [["shared_buffers", "work_mem", "max_wal_size", "synchronous_commit", "fsync"]],
            ).fetchall()
        )
        indexes = [
            r[0]
            for r in conn.execute(
                "SELECT indexname FROM pg_indexes WHERE tablename = 'incident' ORDER BY 1"
            ).fetchall()
        ]
    return {
        "cores": os.cpu_count(),
        "cpu": cpu_model,
        "memory_gib": round(mem_gib, 1),
        "os": platform.platform(),
        "python": platform.python_version(),
        "postgresql": pg,
        "postgis": postgis,
        "geos": geos,
        "pg_settings": settings,
        "incident_indexes": indexes,
    }


def ratio(x: float) -> str:
    return f"{x:.2f}x"
