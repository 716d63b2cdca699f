"""Serving under writes (issue 22): map tiles while an editor enters incidents.

Run ``.venv/bin/python -m bench.writes [--clients 16] [--duration 30] [--workers 2]``.

On a throw-away PostgreSQL 15 + PostGIS cluster loaded with the Belize demo
(``app.demo.load.load_demo``: boundaries, populations, the default index, ``--incidents``
seeded incidents and the demo's public hot spot run; as ``bench.load``), the service runs
under uvicorn with ``--workers`` processes. Its map tiles, the hot set a map view opens, are
fetched until each worker has them cached: districts (``units-1``) and the hot spot run at
z5-z10 over the country and z10-z12 around incidents, incident tiles at z10, z12 and z14
around incidents (analyst key). Then two phases of ``--duration`` seconds, ``--clients``
clients fetching those tiles at random, back to back:

* **still**: nobody writes;
* **under writes**: meanwhile one editor posts an incident every ``--write-every`` seconds
  (``POST /incidents``, at the place of a random demo incident, occurred now).

Per layer and phase: requests, the share answered from a worker's tile cache (the
``X-Cache`` header), p50 / p99 / max latency. The issue's target, under writes: hit rate
>= 90 % for the districts' and the hot spot run's tiles, p99 < 100 ms. Every write drops
the incident tiles that hold its point (old and new position) in every worker, and no
other tile (``app.ogc.tilecache``). Written to ``bench/out/writes.json``. Nothing is
downloaded and nothing is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import shutil
import signal
import sys
import tempfile
import time
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import psycopg
from rich.table import Table

from app import security
from app.core.migrate import upgrade
from app.core.settings import DatabaseSettings
from bench._common import (
    console,
    create_analyst_key,
    launch_app,
    machine_info,
    session_url,
    step,
    throwaway_cluster,
)
from bench.load import (
    BELIZE_BBOX,
    READY_TIMEOUT_S,
    load_demo_data,
    quantile_ms,
    tile_of,
    tiles_over,
)

OUT = Path(__file__).resolve().parent / "out" / "writes.json"
TARGET_HIT_RATE = 0.90
TARGET_P99_MS = 100.0


def create_editor_key(url: str) -> str:
    """An editor's API key (incidents may be posted with it)."""
    key, prefix, key_hash = security.new_key()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO api_key (name, prefix, hash, role) VALUES (%s, %s, %s, %s)",
            ["bench-editor", prefix, key_hash, "editor"],
        )
    return key


def plan_tiles(base: str, url: str, seed: int) -> tuple[dict[str, list[str]], list[tuple]]:
    """The tile URLs of each layer, and the places of demo incidents (for the writes)."""
    rng = random.Random(seed)
    with httpx.Client(base_url=base, timeout=60) as http:
        collections = http.get("/collections").json()["collections"]
    hotspots = max(
        (c["id"] for c in collections if c["id"].startswith("hotspots-")),
        key=lambda c: int(c.split("-", 1)[1]),
    )
    with psycopg.connect(url) as conn:
        points = conn.execute(
            "SELECT ST_X(geom), ST_Y(geom) FROM incident TABLESAMPLE SYSTEM (50) "
            "REPEATABLE (%s) WHERE deleted_at IS NULL LIMIT 5000",
            [seed],
        ).fetchall()
    rng.shuffle(points)
    near = sorted({tile_of(lon, lat, z) for lon, lat in points[:40] for z in (10, 11, 12)})
    country = [t for z in range(5, 11) for t in tiles_over(BELIZE_BBOX, z)]
    tiles = {
        layer: [f"/tiles/{layer}/{z}/{x}/{y}.mvt" for z, x, y in (*country, *near)]
        for layer in ("units-1", hotspots)
    }
    incident_tiles = sorted(
        {tile_of(lon, lat, z) for lon, lat in points[:60] for z in (10, 12, 14)}
    )
    tiles["incidents"] = [f"/tiles/incidents/{z}/{x}/{y}.mvt" for z, x, y in incident_tiles]
    return tiles, points[60:]


def layer_of(path: str) -> str:
    """The layer a tile URL names, with the hot spot run's id left out."""
    layer = path.split("/")[2]
    return "hotspots" if layer.startswith("hotspots-") else layer


class Record:
    """Latencies and cache hits per layer."""

    def __init__(self) -> None:
        self.latency: dict[str, list[float]] = defaultdict(list)
        self.hits: dict[str, int] = defaultdict(int)
        self.errors: dict[str, int] = defaultdict(int)

    def summary(self, seconds: float) -> list[dict[str, Any]]:
        """One row per layer."""
        rows = []
        for layer in sorted(self.latency):
            ordered = sorted(self.latency[layer])
            rows.append(
                {
                    "layer": layer,
                    "requests": len(ordered),
                    "per_s": len(ordered) / seconds,
                    "hit_rate": self.hits[layer] / len(ordered),
                    "p50_ms": quantile_ms(ordered, 0.50),
                    "p99_ms": quantile_ms(ordered, 0.99),
                    "max_ms": ordered[-1] * 1e3,
                    "errors": self.errors[layer],
                }
            )
        return rows


async def fetch_tiles(
    base: str, urls: list[str], analyst: dict[str, str], clients: int, seconds: float, seed: int
) -> Record:
    """``clients`` clients fetching ``urls`` at random for ``seconds``."""
    record = Record()
    deadline = time.perf_counter() + seconds

    async def client(n: int) -> None:
        rng = random.Random(seed * 1000 + n)
        async with httpx.AsyncClient(base_url=base, timeout=30, headers=analyst) as http:
            while time.perf_counter() < deadline:
                url = rng.choice(urls)
                layer = layer_of(url)
                t = time.perf_counter()
                try:
                    response = await http.get(url)
                except httpx.HTTPError:
                    record.errors[layer] += 1
                    continue
                record.latency[layer].append(time.perf_counter() - t)
                if response.status_code != 200:
                    record.errors[layer] += 1
                record.hits[layer] += response.headers.get("x-cache") == "hit"

    await asyncio.gather(*(client(n) for n in range(clients)))
    return record


async def write_incidents(
    base: str, editor: dict[str, str], places: list[tuple], every_s: float, seconds: float
) -> list[float]:
    """Post an incident every ``every_s`` seconds for ``seconds``; their latencies."""
    latencies = []
    deadline = time.perf_counter() + seconds
    async with httpx.AsyncClient(base_url=base, timeout=30, headers=editor) as http:
        n = 0
        while time.perf_counter() < deadline:
            lon, lat = places[n % len(places)]
            body = {
                "source": "bench-writes",
                "source_id": f"w{n}-{time.time_ns()}",
                "category": "theft",
                "occurred_at": datetime.now(UTC).isoformat(),
                "geometry": {"type": "Point", "coordinates": [lon, lat]},
            }
            t = time.perf_counter()
            response = await http.post("/incidents", json=body)
            latencies.append(time.perf_counter() - t)
            if response.status_code != 201:
                console.print(f"write failed: {response.status_code} {response.text[:200]}")
            n += 1
            await asyncio.sleep(max(0.0, every_s - (time.perf_counter() - t)))
    return latencies


async def warm(base: str, urls: list[str], analyst: dict[str, str], times: int) -> None:
    """Fetch every URL ``times`` times (each worker then holds most of them)."""
    async with httpx.AsyncClient(base_url=base, timeout=60, headers=analyst) as http:
        for _ in range(times):
            for i in range(0, len(urls), 8):
                await asyncio.gather(*(http.get(u) for u in urls[i : i + 8]))


async def phases(
    base: str, tiles: dict[str, list[str]], places: list[tuple], keys: dict, args
) -> dict[str, Any]:
    """The still phase, then the phase under writes."""
    urls = [u for layer in tiles.values() for u in layer]
    still = await fetch_tiles(base, urls, keys["analyst"], args.clients, args.duration, args.seed)
    fetching = fetch_tiles(base, urls, keys["analyst"], args.clients, args.duration, args.seed + 1)
    writing = write_incidents(base, keys["editor"], places, args.write_every, args.duration)
    under, writes = await asyncio.gather(fetching, writing)
    ordered = sorted(writes)
    return {
        "still": still.summary(args.duration),
        "under_writes": under.summary(args.duration),
        "writes": {
            "count": len(writes),
            "p50_ms": quantile_ms(ordered, 0.5),
            "max_ms": ordered[-1] * 1e3 if ordered else None,
        },
    }


def print_summary(result: dict[str, Any]) -> None:
    """The phases as one table, with the targets."""
    table = Table(title="Tiles while an editor writes (X-Cache hit rate, latency)")
    for column in ("phase", "layer", "requests", "req/s", "hit rate", "p50 ms", "p99 ms",
                   "max ms", "errors"):  # fmt: skip
        table.add_column(column, justify="left" if column in ("phase", "layer") else "right")
    for phase in ("still", "under_writes"):
        for row in result[phase]:
            table.add_row(
                phase.replace("_", " "), row["layer"], f"{row['requests']:,}",
                f"{row['per_s']:.0f}", f"{row['hit_rate']:.1%}", f"{row['p50_ms']:.1f}",
                f"{row['p99_ms']:.1f}", f"{row['max_ms']:.0f}", str(row["errors"]),
            )  # fmt: skip
    console.print(table)
    writes = result["writes"]
    console.print(
        f"writes: {writes['count']} incidents posted, p50 {writes['p50_ms']:.1f} ms, "
        f"max {writes['max_ms']:.0f} ms"
    )
    for row in result["under_writes"]:
        if row["layer"] in ("units-1", "hotspots"):
            ok = row["hit_rate"] >= TARGET_HIT_RATE and row["p99_ms"] < TARGET_P99_MS
            console.print(
                f"target under writes, {row['layer']}: hit rate {row['hit_rate']:.1%} "
                f"(>= {TARGET_HIT_RATE:.0%}), p99 {row['p99_ms']:.1f} ms "
                f"(< {TARGET_P99_MS:.0f}): {'met' if ok else 'NOT met'}"
            )


def parser() -> argparse.ArgumentParser:
    """The benchmark's options (``bench.serving``'s phase "under writes" takes its defaults)."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.writes", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--clients", type=int, default=16, help="concurrent tile clients")
    parser.add_argument("--duration", type=float, default=30.0, help="seconds per phase")
    parser.add_argument("--write-every", type=float, default=1.0, help="seconds between writes")
    parser.add_argument("--workers", type=int, default=2, help="uvicorn worker processes")
    parser.add_argument("--incidents", type=int, default=60_000, help="demo incidents")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--output", type=Path, default=OUT, help="JSON results file")
    return parser


def measure(args: argparse.Namespace) -> dict[str, Any]:
    """Both phases on a throw-away demo cluster, destroyed on the way out; the results."""
    started_at = datetime.now(UTC)
    base_dir = Path(tempfile.mkdtemp(prefix="observatory-bench-writes-"))
    try:
        step("starting a throw-away PostgreSQL + PostGIS cluster")
        with throwaway_cluster(base_dir, DatabaseSettings().statement_timeout_ms) as settings:
            upgrade(settings.sqlalchemy_url)
            step(f"loading the demo: boundaries, populations, index, {args.incidents:,} incidents")
            asyncio.run(load_demo_data(settings, args.incidents, args.seed))
            url = session_url(settings)
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute("VACUUM ANALYZE")
            machine = machine_info(settings.libpq_url)
            keys = {
                "analyst": {"Authorization": f"Bearer {create_analyst_key(url)}"},
                "editor": {"Authorization": f"Bearer {create_editor_key(url)}"},
            }
            env = {"OBSERVATORY_ANALYSIS__WARM_UP": "false", "UVICORN_WORKERS": str(args.workers)}
            step(f"starting uvicorn with {args.workers} worker(s)")
            with launch_app(
                settings, base_dir / "uvicorn.log", env=env, ready_timeout_s=READY_TIMEOUT_S
            ) as app:
                tiles, places = plan_tiles(app.base, url, args.seed)
                urls = [u for layer in tiles.values() for u in layer]
                step(f"warming {len(urls)} tiles ({3 * args.workers} fetches each)")
                asyncio.run(warm(app.base, urls, keys["analyst"], 3 * args.workers))
                step(f"two phases of {args.duration:g} s, {args.clients} clients: still, then "
                     f"one write every {args.write_every:g} s")  # fmt: skip
                result = asyncio.run(phases(app.base, tiles, places, keys, args))
            server_log = (base_dir / "uvicorn.log").read_text(errors="replace")
    finally:
        shutil.rmtree(base_dir, ignore_errors=True)
    return result | {
        "started_at": started_at.isoformat(),
        "arguments": {k: str(v) for k, v in vars(args).items()},
        "tiles": {layer: len(v) for layer, v in tiles.items()},
        "machine": machine,
        "server_log_tail": server_log[-20000:],
        "server_log_warnings": [
            line
            for line in server_log.splitlines()
            if "WARNING" in line or "layer catalog built" in line
        ][:400],
        "server_log": server_log,
    }


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark (see the module docstring)."""
    args = parser().parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    result = measure(args)
    print_summary(result)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.with_suffix(".log").write_text(result.pop("server_log"))
    args.output.write_text(json.dumps(result, indent=2, default=str))
    console.print(f"written to {args.output} (the server's log beside it, .log)")


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
