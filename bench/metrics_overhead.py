"""What the request metrics (``app.core.metrics.RequestMetrics``) cost on the fastest path: a
cached tile, answered by ``app.ogc.tilecache.CachedTiles`` before routing.

Run ``.venv/bin/python -m bench.metrics_overhead [--requests 20000] [--rounds 5]``.

On a throw-away cluster (categories and the Belize districts), the same app is built
twice, with and without the metrics middleware, and one cached tile of ``units-1`` is
requested over and over:

* **in process**: the ASGI app called directly (no socket, no HTTP parsing), rounds
  alternating between the two apps; this isolates the middleware and is the harshest
  ratio, since nothing else dilutes it;
* **over HTTP**: two uvicorn processes (the second serves ``app_without_metrics``), the
  keep-alive client of ``bench.serving`` at concurrency 1 and 16, alternating too.

No figure is asserted. In process, the fastest round of each app (CPU time); over
HTTP, medians of throughput and of the server's CPU time per tile.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
from fastapi import FastAPI

from app.core.metrics import RequestMetrics
from app.core.migrate import upgrade
from app.core.settings import Settings
from app.main import create_app
from bench._common import ROOT, free_port, step, throwaway_cluster

TILE = "/tiles/units-1/6/16/28.mvt"


def app_without_metrics() -> FastAPI:
    """``create_app`` less the metrics middleware (a uvicorn factory for the comparison)."""
    app = create_app()
    app.user_middleware = [m for m in app.user_middleware if m.cls is not RequestMetrics]
    return app


def load_data(settings: Settings) -> None:
    from app.services.boundaries import import_boundaries
    from app.services.categories import load_categories
    from tests.conftest import BELIZE, call_service

    upgrade(settings.sqlalchemy_url)
    call_service(settings, lambda e: load_categories(e, settings.territory.categories_file))
    call_service(
        settings,
        lambda e: import_boundaries(
            e, BELIZE / "boundaries" / "belize_adm1_districts.geojson", level=1,
            code_field="iso_3166_2", name_field="district", actor="bench",
        ),
    )  # fmt: skip


async def _asgi_round(app: FastAPI, requests: int) -> float:
    """Seconds per request for ``requests`` GETs of the cached tile."""
    scope = {
        "type": "http", "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": "1.1", "method": "GET", "scheme": "http", "path": TILE,
        "raw_path": TILE.encode(), "root_path": "", "query_string": b"",
        "headers": [(b"host", b"127.0.0.1")], "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
    }  # fmt: skip
    statuses: list[int] = []

    async def receive() -> dict:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    # CPU time of this process: other processes on the machine disturb it much less
    # than they disturb the wall clock.
    t0 = time.process_time()
    for _ in range(requests):
        await app(dict(scope), receive, send)
    seconds = (time.process_time() - t0) / requests
    assert set(statuses) == {200}, set(statuses)
    return seconds


async def in_process(settings: Settings, requests: int, rounds: int) -> dict[str, float]:
    with_metrics = create_app(settings)
    without = create_app(settings)
    without.user_middleware = [m for m in without.user_middleware if m.cls is not RequestMetrics]
    times: dict[str, list[float]] = {"with": [], "without": []}
    async with contextlib.AsyncExitStack() as stack:
        for app in (with_metrics, without):
            await stack.enter_async_context(app.router.lifespan_context(app))
            await _asgi_round(app, 10)  # builds the stack, fills the cache
        for _ in range(rounds):
            times["without"].append(await _asgi_round(without, requests))
            times["with"].append(await _asgi_round(with_metrics, requests))
    hits = with_metrics.state.tile_cache.hits
    assert hits >= requests * rounds, hits  # every timed request was a cache hit
    # The fastest round of each: the least disturbed by whatever else the machine runs.
    return {k: min(v) for k, v in times.items()}


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (from /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def over_http(
    settings: Settings, requests: int, rounds: int, logs: Path
) -> dict[tuple[str, int], tuple[float, float]]:
    """(tiles/s, server CPU µs per tile), medians over the rounds. The server's CPU time
    per request is the steadier figure on a shared machine: throughput also moves with
    whatever else competes for the cores."""
    from bench.serving import run_load

    runs: dict[tuple[str, int], list[tuple[float, float]]] = {}
    with contextlib.ExitStack() as stack:
        servers = {
            "with": stack.enter_context(_serve(settings, "app.main:create_app", logs / "a.log")),
            "without": stack.enter_context(
                _serve(settings, "bench.metrics_overhead:app_without_metrics", logs / "b.log")
            ),
        }
        for base, _ in servers.values():
            run_load("ours", "tiles", "warm", base, {}, [TILE] * 100, 1, 30)
        for c in (1, 16):
            for _ in range(max(3, rounds // 4)):
                for name, (base, pid) in servers.items():
                    paths = [TILE] * (requests * 4)  # ~5 s a round over HTTP
                    cpu = cpu_seconds(pid)
                    result = run_load("ours", "tiles", name, base, {}, paths, c, 60)
                    cpu = cpu_seconds(pid) - cpu
                    assert result.errors == 0
                    runs.setdefault((name, c), []).append((result.per_s, cpu / result.requests))
    return {
        k: (statistics.median(r for r, _ in v), statistics.median(u for _, u in v))
        for k, v in runs.items()
    }


@contextlib.contextmanager
def _serve(settings: Settings, factory: str, log_path: Path) -> Iterator[tuple[str, int]]:
    """uvicorn serving ``factory`` on a free loopback port, until /health answers."""
    port = free_port()
    env = {
        **os.environ,
        "OBSERVATORY_DATABASE_URL": settings.libpq_url,
        "OBSERVATORY_ENVIRONMENT": "test",
        "OBSERVATORY_ANALYSIS__WARM_UP": "false",
    }
    command = [
        sys.executable, "-m", "uvicorn", "--factory", factory, "--host", "127.0.0.1",
        "--port", str(port), "--log-level", "warning", "--no-access-log",
    ]  # fmt: skip
    with log_path.open("wb") as log:
        server = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=log)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{base}/health", timeout=5).status_code == 200:
                    break
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"uvicorn did not start:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.2)
        yield base, server.pid
    finally:
        server.terminate()
        server.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=5_000)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--skip-http", action="store_true")
    args = parser.parse_args()
    with (
        tempfile.TemporaryDirectory(prefix="bench-metrics-") as tmp,
        throwaway_cluster(Path(tmp), 60_000) as cluster_settings,
    ):
        settings = Settings(
            environment="test", database=cluster_settings.database, analysis={"warm_up": False}
        )
        measure(settings, args, Path(tmp))


def measure(settings: Settings, args: argparse.Namespace, tmp: Path) -> None:
    step("loading the districts")
    load_data(settings)
    step(f"in process: {args.rounds} rounds of {args.requests} cached tiles per app")
    asgi = asyncio.run(in_process(settings, args.requests, args.rounds))
    extra = asgi["with"] - asgi["without"]
    print(
        f"in process: without {asgi['without'] * 1e6:.1f} µs/tile, "
        f"with {asgi['with'] * 1e6:.1f} µs/tile: +{extra * 1e6:.1f} µs "
        f"({extra / asgi['without']:+.1%})"
    )
    if args.skip_http:
        return
    step("over HTTP: two uvicorn processes")
    http = over_http(settings, args.requests, args.rounds, tmp)
    for c in (1, 16):
        (w, w_cpu), (wo, wo_cpu) = http[("with", c)], http[("without", c)]
        print(
            f"HTTP c={c}: without {wo:,.0f} tiles/s, {wo_cpu * 1e6:.0f} µs server CPU/tile; "
            f"with {w:,.0f} tiles/s, {w_cpu * 1e6:.0f} µs server CPU/tile "
            f"(CPU {w_cpu / wo_cpu - 1:+.1%})"
        )


if __name__ == "__main__":
    main()
