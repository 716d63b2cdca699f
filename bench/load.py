"""Load benchmark: a bounded, mixed loopback load on the service (issue 7).

Run ``.venv/bin/python -m bench.load [--clients 64] [--duration 60] [--workers 2]``.

On a throw-away PostgreSQL 15 + PostGIS cluster (temporary data directory, free port on
127.0.0.1, destroyed at the end, also on error, Ctrl-C or SIGTERM, together with the
server) loaded with the Belize demo (``app.demo.load.load_demo``: real boundaries and
populations, the default composite index, ``--incidents`` seeded synthetic incidents and
the demo's public hot spot run), the service runs under uvicorn with ``--workers``
processes (the Dockerfile runs 2), the analysis warm-up off, beside one ``observatory
worker`` (the rank bands of ``/rankings`` are a sensitivity run it computes; its schedules
off). Nothing is downloaded and nothing is asserted.

Load
----
``--clients`` asyncio tasks, each with its own ``httpx.AsyncClient`` of one keep-alive
connection (at most ``--clients`` requests in flight), send requests back to back for
``--duration`` seconds. Each request is drawn (seeded, per client) from this
mix of kinds; the weights are ``MIX`` below (``--mix rankings=0`` changes one):

* public, no key: ``tiles-public-*``, tiles of the districts (``units-1``) and of the
  demo's public hot spot run (``hotspots-<id>``); ``stats``, four ``/stats`` tables;
  ``rankings``, ``/rankings`` of the demo index for its latest period; ``items-public``,
  items of ``units-1`` and of the hot spot run (bbox of a z12 tile where incidents are);
* analyst key: ``items-incidents``, ``/collections/incidents/items`` (``limit=100``, bbox
  of a z13 tile where incidents are), and ``tiles-incidents-*``.

Tiles come in two kinds. ``*-cached`` tiles are a hot set (z5-z12 over the country for
the public layers, z10-z14 around incidents for the incidents layer), each fetched three
times per worker before the clock starts, as the tiles every map view opens: they are
served from the workers' tile caches. ``*-new`` tiles are z14/z15 tiles around randomly
drawn incidents that no one asked for before, each requested once (a map user panning
into new ground): PostGIS renders them.

Before the load, each kind is timed alone (``--alone`` requests, one at a time: "alone
p50"), which separates a request's own cost from its wait under load. A response counts
as an error when it is not 200 (or 304), when the connection breaks, or after
``--timeout`` seconds; 5xx are counted apart too. Reported per kind: requests,
requests/s, p50 / p99 / max latency (ms), errors, 5xx, mean KiB; the CPU the service
processes, PostgreSQL and this client used during the load (in cores: client, server and
database share the machine); and the service's peak memory: ``VmHWM`` of each uvicorn
process (the supervisor and its workers, from ``/proc``), reset just before the load, and
their sum. The issue's target: zero errors and zero 5xx, p99 under 1 s for cached tiles
and for stats.

Stalls (issue 22: once per run every kind and the probe waited 5-7 s): every request
slower than ``SLOW_S`` is kept with its start time, and the probe's samples with theirs;
the spans where requests took longer than ``STALL_S`` are printed with the kinds they hit
and what the probe saw meanwhile. The database logs its checkpoints, autovacuum runs, lock
waits and statements slower than 0.5 s; the service its slow requests and event-loop
blocks (``app.core.watchdog``), each line with its time and process. Written to
``bench/out/load.json`` (with the tail of the server's log), the logs beside it: the
service's (``.log``), the database's (``.pg.log``) and the worker's (``.worker.log``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import random
import re
import shutil
import signal
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict, deque
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import psycopg
from rich.table import Table

from app.core.db import create_engine
from app.core.migrate import upgrade
from app.core.settings import DatabaseSettings, Settings
from app.demo.load import load_demo
from bench._common import (
    console,
    create_analyst_key,
    launch_app,
    launch_worker,
    machine_info,
    session_url,
    step,
    throwaway_cluster,
)

OUT = Path(__file__).resolve().parent / "out" / "load.json"
BELIZE_BBOX = (-89.25, 15.88, -87.45, 18.50)  # west, south, east, north
READY_TIMEOUT_S = 120

# kind -> weight of the mix (the shares need not add up to 1).
MIX: dict[str, float] = {
    "tiles-public-cached": 0.30,
    "tiles-public-new": 0.05,
    "tiles-incidents-cached": 0.15,
    "tiles-incidents-new": 0.10,
    "items-public": 0.10,
    "items-incidents": 0.10,
    "stats": 0.12,
    "rankings": 0.08,
}
# The latency target applies to these kinds.
TARGET_KINDS = ("tiles-public-cached", "tiles-incidents-cached", "stats")
TARGET_P99_MS = 1_000.0
ANALYST_KINDS = frozenset({"tiles-incidents-cached", "tiles-incidents-new", "items-incidents"})
# Requests slower than this are kept with their start time; spans of requests slower than
# STALL_S are the stalls (the target: none longer than 2 s).
SLOW_S = 1.0
STALL_S = 2.0
# The worker computes the rankings' bands; its schedules would start reports and
# evaluations (missed slots) in the middle of the load.
WORKER_ENV = {"OBSERVATORY_WORKER__SCHEDULES": "{}", "OBSERVATORY_ANALYSIS__WARM_UP": "false"}
# What the database logs during the load (bench/out/load.pg.log).
PG_LOGGING = {
    "log_checkpoints": "on",
    "log_autovacuum_min_duration": "0",
    "log_lock_waits": "on",
    "deadlock_timeout": "200ms",
    "log_min_duration_statement": "500ms",
    "log_line_prefix": "%m [%p] %a ",
}


# -- tiles ---------------------------------------------------------------------------------


def tile_of(lon: float, lat: float, z: int) -> tuple[int, int, int]:
    n = 2**z
    x = int((lon + 180.0) / 360.0 * n)
    y = int((1.0 - math.asinh(math.tan(math.radians(lat))) / math.pi) / 2.0 * n)
    return z, min(max(x, 0), n - 1), min(max(y, 0), n - 1)


def tile_bounds(z: int, x: int, y: int) -> tuple[float, float, float, float]:
    n = 2**z

    def lat(row: int) -> float:
        return math.degrees(math.atan(math.sinh(math.pi * (1 - 2 * row / n))))

    return x / n * 360.0 - 180.0, lat(y + 1), (x + 1) / n * 360.0 - 180.0, lat(y)


def tiles_over(bbox: tuple[float, float, float, float], z: int) -> list[tuple[int, int, int]]:
    _, x0, y0 = tile_of(bbox[0], bbox[3], z)
    _, x1, y1 = tile_of(bbox[2], bbox[1], z)
    return [(z, x, y) for x in range(x0, x1 + 1) for y in range(y0, y1 + 1)]


def bbox_text(b: tuple[float, float, float, float]) -> str:
    return ",".join(f"{v:.6f}" for v in b)


# -- the request plan ----------------------------------------------------------------------


@dataclass
class Plan:
    """Every URL the load may ask for, per kind, with the analyst's kinds marked."""

    repeated: dict[str, list[str]]  # kind -> hot set, drawn with replacement
    new: dict[str, deque[str]]  # kind -> tiles asked once each, popped in order
    fallback: dict[str, list[str]]  # kind -> used if its `new` list runs out
    analyst_kinds: frozenset[str]
    details: dict[str, Any] = field(default_factory=dict)

    def next_url(self, kind: str, rng: random.Random) -> str:
        if kind in self.new:
            if self.new[kind]:
                return self.new[kind].popleft()
            return rng.choice(self.fallback[kind])
        return rng.choice(self.repeated[kind])


def build_plan(base: str, analyst: dict[str, str], url: str, seed: int) -> Plan:
    rng = random.Random(seed)
    with httpx.Client(base_url=base, timeout=120) as http:
        collections = http.get("/collections").json()["collections"]
        hotspots = sorted(
            (c["id"] for c in collections if c["id"].startswith("hotspots-")),
            key=lambda c: int(c.split("-", 1)[1]),
        )
        index = http.get("/indexes").json()["items"][0]["code"]
        periods = http.get(f"/indexes/{index}/periods").json()
        period = periods["latest"] or periods["periods"][-1]
    with psycopg.connect(url) as conn:
        points = conn.execute(
            "SELECT ST_X(geom), ST_Y(geom) FROM incident TABLESAMPLE SYSTEM (50) REPEATABLE (%s)"
            " WHERE deleted_at IS NULL LIMIT 20000",
            [seed],
        ).fetchall()
    rng.shuffle(points)

    public_layers = ["units-1", *hotspots[-1:]]
    public_hot = [
        f"/tiles/{layer}/{z}/{x}/{y}.mvt"
        for layer in public_layers
        for zoom in range(5, 10)
        for z, x, y in tiles_over(BELIZE_BBOX, zoom)
    ]
    # Where people look closer: the z10-z12 tiles of the first incidents drawn.
    near = {tile_of(lon, lat, z) for lon, lat in points[:40] for z in (10, 11, 12)}
    public_hot += [f"/tiles/{layer}/{z}/{x}/{y}.mvt" for layer in public_layers
                   for z, x, y in sorted(near)]  # fmt: skip
    incidents_hot = sorted({tile_of(lon, lat, z) for lon, lat in points[:60] for z in (10, 12, 14)})
    incidents_hot_urls = [f"/tiles/incidents/{z}/{x}/{y}.mvt" for z, x, y in incidents_hot]

    seen = set(incidents_hot)
    incidents_new: list[str] = []
    public_new: list[str] = []
    for i, (lon, lat) in enumerate(points[60:]):
        tile = tile_of(lon, lat, 15 if i % 2 else 14)
        if tile in seen:
            continue
        seen.add(tile)
        z, x, y = tile
        if i % 4 == 3:
            public_new.append(f"/tiles/{public_layers[i % len(public_layers)]}/{z}/{x}/{y}.mvt")
        else:
            incidents_new.append(f"/tiles/incidents/{z}/{x}/{y}.mvt")

    z12 = sorted({tile_of(lon, lat, 12) for lon, lat in points[:200]})
    z13 = sorted({tile_of(lon, lat, 13) for lon, lat in points[:200]})
    public_items = ["/collections/units-1/items?limit=6",
                    "/collections/units-1/items?limit=2"]  # fmt: skip
    for layer in hotspots[-1:]:
        public_items += [
            f"/collections/{layer}/items?limit=200&bbox={bbox_text(tile_bounds(*t))}"
            for t in z12[:20]
        ]
    incident_items = [
        f"/collections/incidents/items?limit=100&bbox={bbox_text(tile_bounds(*t))}"
        for t in z13[:40]
    ]
    stats = [
        # Tables of the public lattice (app.services.lattice): every caller may ask them.
        "/stats?level=1&by=category&by=period&period=year",
        "/stats?level=1&by=victim_sex&by=age_group&period=2024",
        "/stats?level=1&by=category_group&by=period&period=quarter",
        "/stats?unit=BZ-BZ&by=category&by=period&period=month",
    ]
    rankings = [f"/rankings?index={index}&period={period}"]
    return Plan(
        repeated={
            "tiles-public-cached": public_hot,
            "tiles-incidents-cached": incidents_hot_urls,
            "items-public": public_items,
            "items-incidents": incident_items,
            "stats": stats,
            "rankings": rankings,
        },
        new={
            "tiles-public-new": deque(public_new),
            "tiles-incidents-new": deque(incidents_new),
        },
        fallback={
            "tiles-public-new": public_hot,
            "tiles-incidents-new": incidents_hot_urls,
        },
        analyst_kinds=ANALYST_KINDS,
        details={
            "hotspot_layers": hotspots,
            "public_tile_layers": public_layers,
            "index": index,
            "period": period,
            "hot_public_tiles": len(public_hot),
            "hot_incident_tiles": len(incidents_hot_urls),
            "new_public_tiles": len(public_new),
            "new_incident_tiles": len(incidents_new),
            "stats_urls": stats,
            "ranking_urls": rankings,
        },
    )


# -- the load ------------------------------------------------------------------------------


@dataclass
class KindResult:
    kind: str
    requests: int
    per_s: float
    p50_ms: float
    p99_ms: float
    max_ms: float
    errors: int
    errors_5xx: int
    mean_kib: float
    statuses: dict[str, int]
    error_samples: list[str]
    fallback_used: int = 0


def quantile_ms(ordered: list[float], q: float) -> float:
    if not ordered:
        return math.nan
    return ordered[min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1)] * 1e3


class Recorder:
    def __init__(self) -> None:
        self.latency: dict[str, list[float]] = defaultdict(list)
        self.sizes: dict[str, list[int]] = defaultdict(list)
        self.statuses: dict[str, Counter] = defaultdict(Counter)
        self.errors: dict[str, list[str]] = defaultdict(list)
        # (start, seconds, kind, status) of requests slower than SLOW_S; start in epoch s.
        self.slow: list[tuple[float, float, str, str]] = []

    def add(
        self,
        kind: str,
        seconds: float,
        status: str,
        size: int,
        error: str | None,
        started: float | None = None,
    ) -> None:
        if seconds > SLOW_S and started is not None:
            self.slow.append((started, seconds, kind, status))
        self.latency[kind].append(seconds)
        self.sizes[kind].append(size)
        self.statuses[kind][status] += 1
        if error is not None:
            self.errors[kind].append(error)

    def summary(self, kind: str, seconds: float) -> KindResult:
        ordered = sorted(self.latency[kind])
        statuses = self.statuses[kind]
        sizes = self.sizes[kind]
        return KindResult(
            kind=kind,
            requests=len(ordered),
            per_s=len(ordered) / seconds,
            p50_ms=quantile_ms(ordered, 0.50),
            p99_ms=quantile_ms(ordered, 0.99),
            max_ms=ordered[-1] * 1e3 if ordered else math.nan,
            errors=len(self.errors[kind]),
            errors_5xx=sum(n for s, n in statuses.items() if s.startswith("5")),
            mean_kib=sum(sizes) / len(sizes) / 1024 if sizes else 0.0,
            statuses={s: statuses[s] for s in sorted(statuses)},
            error_samples=self.errors[kind][:5],
        )


async def one_request(
    http: httpx.AsyncClient, kind: str, url: str, headers: dict[str, str], rec: Recorder
) -> None:
    t, started = time.perf_counter(), time.time()
    try:
        response = await http.get(url, headers=headers)
    except httpx.HTTPError as exc:
        name = type(exc).__name__
        rec.add(kind, time.perf_counter() - t, name, 0, f"{name}: {url}", started)
        return
    elapsed = time.perf_counter() - t
    ok = response.status_code in (200, 304)
    error = None if ok else f"{response.status_code} {url}: {response.text[:200]}"
    rec.add(kind, elapsed, str(response.status_code), len(response.content), error, started)


async def run_load(
    base: str,
    plan: Plan,
    mix: dict[str, float],
    analyst: dict[str, str],
    clients: int,
    duration_s: float,
    timeout_s: float,
    seed: int,
    rec: Recorder,
) -> float:
    kinds = [k for k, w in mix.items() if w > 0]
    weights = [mix[k] for k in kinds]
    # One client with one keep-alive connection per simulated user (a browser tab, a QGIS
    # session): httpx's pool costs ~2.7x more CPU per request when 64 tasks share one
    # client of 64 connections (5.7 against 2.1 ms here), CPU the server needs.
    # identity: a map client would take gzip, but decompressing it here would cost the
    # cores the server needs; the server only gzips tiles, and sizes are then comparable.
    limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
    # The clients are made before the clock starts, with one TLS context between them:
    # each made its own (the CA bundle read again, 64 times) while the first clients'
    # requests were being timed, and every request over 2 s of a run fell in its first
    # 2.5 s with the probe (its own process) answered in under 0.3 s.
    context = ssl.create_default_context()
    async with contextlib.AsyncExitStack() as stack:
        https = [
            await stack.enter_async_context(
                httpx.AsyncClient(
                    base_url=base, limits=limits, timeout=timeout_s, verify=context,
                    headers={"Accept-Encoding": "identity"},
                )
            )
            for _ in range(clients)
        ]  # fmt: skip
        deadline = time.perf_counter() + duration_s

        async def client(i: int) -> None:
            rng = random.Random(seed * 1000 + i)
            while time.perf_counter() < deadline:
                kind = rng.choices(kinds, weights)[0]
                headers = analyst if kind in plan.analyst_kinds else {}
                await one_request(https[i], kind, plan.next_url(kind, rng), headers, rec)

        started = time.perf_counter()
        await asyncio.gather(*(client(i) for i in range(clients)))
        return time.perf_counter() - started


async def warm(base: str, plan: Plan, analyst: dict[str, str], workers: int) -> Counter:
    """Fetch every repeated URL a few times per worker, each on a new connection: kept-alive
    connections all landed on the worker whose loop accepted first, and the other met its
    first requests, and its stats and rankings caches empty, under the load."""
    statuses: Counter = Counter()
    limits = httpx.Limits(max_connections=8 * workers)
    close = {"Connection": "close"}
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=120, headers=close) as http:
        semaphore = asyncio.Semaphore(8 * workers)

        async def get(kind: str, url: str) -> None:
            async with semaphore:
                headers = analyst if kind in plan.analyst_kinds else {}
                try:
                    statuses[str((await http.get(url, headers=headers)).status_code)] += 1
                except httpx.HTTPError as exc:  # shown in the results; the load decides
                    statuses[type(exc).__name__] += 1

        jobs = [
            get(kind, url)
            for kind, urls in plan.repeated.items()
            for url in urls
            for _ in range(3 * workers)
        ]
        await asyncio.gather(*jobs)
    return statuses


def settle_rankings(base: str, plan: Plan, timeout_s: float = 180.0) -> float:
    """Wait until every ranking answers 200: its sensitivity run stored and completed.
    The run's completion moves every worker's data version, which empties the stats and
    rankings caches (keyed on it) of every worker at once; measured under load, that
    stampede held /rankings 10-25 s and ran the pools dry. Returns the seconds waited."""
    started = time.perf_counter()
    with httpx.Client(base_url=base, timeout=120) as http:
        for url in plan.repeated["rankings"]:
            while http.get(url).status_code != 200:
                if time.perf_counter() - started > timeout_s:
                    raise RuntimeError(f"{url} never answered 200 in {timeout_s:g} s")
                time.sleep(1.0)
    time.sleep(1.0)  # every worker hears of the completed run (NOTIFY)
    return time.perf_counter() - started


async def alone(
    base: str, plan: Plan, analyst: dict[str, str], repeats: int, seed: int
) -> dict[str, float]:
    """Median latency (ms) of each kind with nothing else running: one request at a time."""
    rng = random.Random(seed)
    medians: dict[str, float] = {}
    async with httpx.AsyncClient(base_url=base, timeout=120) as http:
        for kind in MIX:
            headers = analyst if kind in plan.analyst_kinds else {}
            times = []
            for _ in range(repeats):
                url = plan.next_url(kind, rng)
                t = time.perf_counter()
                status = (await http.get(url, headers=headers)).status_code
                times.append(time.perf_counter() - t)
                if status != 200:
                    console.print(f"[red]alone: {status} {url}")
            medians[kind] = statistics.median(times) * 1e3
    return medians


# A second client in its own process: one cached public tile every PROBE_INTERVAL_S on a
# new connection (so it lands on any worker), with the standard library only. It shares
# no event loop with the load client, so its latencies show the server's own queueing.
PROBE_INTERVAL_S = 0.1
PROBE = """
import http.client, json, sys, time
host, port, path = sys.argv[1], int(sys.argv[2]), sys.argv[3]
seconds, interval = float(sys.argv[4]), float(sys.argv[5])
out, end = [], time.monotonic() + seconds
while time.monotonic() < end:
    t, wall = time.perf_counter(), time.time()
    try:
        c = http.client.HTTPConnection(host, port, timeout=60)
        c.request("GET", path)
        r = c.getresponse(); r.read(); c.close()
        out.append([time.perf_counter() - t, r.status, wall])
    except OSError as e:
        out.append([time.perf_counter() - t, type(e).__name__, wall])
    time.sleep(interval)
print(json.dumps(out))
"""


def start_probe(base: str, path: str, seconds: float) -> subprocess.Popen:
    host, port = base.removeprefix("http://").split(":")
    return subprocess.Popen(
        [sys.executable, "-c", PROBE, host, port, path, str(seconds), str(PROBE_INTERVAL_S)],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip


def probe_result(probe: subprocess.Popen) -> dict[str, Any]:
    out, _ = probe.communicate(timeout=120)
    samples = json.loads(out)
    ordered = sorted(s[0] for s in samples)
    return {
        "requests": len(samples),
        "p50_ms": quantile_ms(ordered, 0.5),
        "p99_ms": quantile_ms(ordered, 0.99),
        "max_ms": ordered[-1] * 1e3 if ordered else math.nan,
        "statuses": dict(Counter(str(s[1]) for s in samples)),
        "slow": [[s[2], s[0]] for s in samples if s[0] > SLOW_S],
    }


_BLOCK = re.compile(
    r"^(\S+ \S+) \[(\d+)\] WARNING:observatory:event loop was blocked for ([0-9.]+) s .*: "
    r"(held by code on the loop|another thread of the process held the GIL|not run)"
)


def loop_blocks(server_log: str) -> list[tuple[float, float, str, str]]:
    """The event-loop blocks the service logged (``app.core.watchdog``): (end, seconds,
    worker pid, what held the loop), end in epoch seconds."""
    out = []
    for line in server_log.splitlines():
        if match := _BLOCK.match(line):
            at, pid, seconds, verdict = match.groups()
            end = datetime.strptime(at, "%Y-%m-%d %H:%M:%S,%f").timestamp()  # local time
            out.append((end, float(seconds), pid, verdict))
    return out


def stalls(
    slow: list[tuple[float, float, str, str]],
    probe_slow: list,
    origin: float,
    blocks: list[tuple[float, float, str, str]] = (),
) -> list:
    """Spans in which requests took longer than STALL_S (overlapping ones merged), with
    the kinds they hit, the probe's slowest sample and the event-loop blocks the service
    logged meanwhile, by worker and cause ("not run": the machine's other processes had
    the cores; "held by code on the loop": the service's own); times in seconds from the
    start of the load."""
    spans: list[list] = []
    for started, seconds, kind, _ in sorted(r for r in slow if r[1] > STALL_S):
        end = started + seconds
        if spans and started <= spans[-1][1]:
            spans[-1][1] = max(spans[-1][1], end)
            spans[-1][2][kind] += 1
        else:
            spans.append([started, end, Counter({kind: 1})])
    out = []
    for begin, end, kinds in spans:
        probe = [s for w, s in probe_slow if w < end and w + s > begin]
        held: Counter = Counter()
        for block_end, seconds, pid, verdict in blocks:
            if block_end > begin and block_end - seconds < end:
                held[f"{pid}: {verdict}"] += round(seconds, 2)
        out.append(
            {
                "from_s": round(begin - origin, 2),
                "to_s": round(end - origin, 2),
                "at": datetime.fromtimestamp(begin, UTC).strftime("%H:%M:%S.%f")[:-3],
                "requests_over_stall": dict(kinds),
                "probe_max_ms": round(max(probe) * 1e3) if probe else None,
                "loop_blocked_s": {k: round(v, 2) for k, v in sorted(held.items())},
            }
        )
    return out


# -- memory --------------------------------------------------------------------------------


def children(pid: int) -> list[int]:
    out: list[int] = []
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            text = (task / "children").read_text().split()
            out += [int(c) for c in text]
    return out


def status_kib(pid: int, key: str) -> int | None:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(f"{key}:"):
                return int(line.split()[1])
    return None


def service_processes(pid: int) -> dict[int, str]:
    """The uvicorn process and, with --workers > 1, its worker processes (not the
    multiprocessing helpers such as the resource tracker: those have no socket)."""
    workers = [c for c in children(pid) if "uvicorn" in _cmdline(c) or "spawn_main" in _cmdline(c)]
    if not workers:
        return {pid: "uvicorn (single process)"}
    return {pid: "uvicorn supervisor", **{c: "worker" for c in workers}}


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def cpu_seconds(pid: int, *, children: bool = False) -> float:
    """User + system CPU time of a process (and of its reaped children) from /proc."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    ticks = int(fields[11]) + int(fields[12])  # utime, stime
    if children:
        ticks += int(fields[13]) + int(fields[14])  # cutime, cstime
    return ticks / os.sysconf("SC_CLK_TCK")


def postgres_cpu_seconds(data_dir: Path) -> float:
    """CPU time of the cluster: the postmaster, its live backends and those that ended."""
    try:
        postmaster = int((data_dir / "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return math.nan
    return cpu_seconds(postmaster, children=True) + sum(
        cpu_seconds(c) for c in children(postmaster)
    )


def reset_peaks(pids: list[int]) -> bool:
    done = True
    for pid in pids:
        try:
            Path(f"/proc/{pid}/clear_refs").write_text("5")  # VmHWM := VmRSS (Linux >= 4.0)
        except OSError:
            done = False
    return done


# -- report --------------------------------------------------------------------------------


def fmt_ms(x: float) -> str:
    return "-" if math.isnan(x) else f"{x:,.0f}" if x >= 100 else f"{x:.1f}"


def print_summary(result: dict[str, Any]) -> None:
    load = result["load"]
    table = Table(
        title=f"{result['config']['clients']} clients, {load['seconds']:.0f} s, "
        f"{result['config']['workers']} uvicorn worker(s)"
    )
    for column in ("kind", "alone p50 ms", "requests", "req/s", "p50 ms", "p99 ms", "max ms",
                   "errors", "5xx", "KiB"):  # fmt: skip
        table.add_column(column, justify="left" if column == "kind" else "right")
    for k in [*load["kinds"], load["total"]]:
        mark = " *" if k["kind"] in TARGET_KINDS else ""
        table.add_row(
            k["kind"] + mark, fmt_ms(k.get("alone_p50_ms", math.nan)), f"{k['requests']:,}",
            f"{k['per_s']:,.1f}", fmt_ms(k["p50_ms"]), fmt_ms(k["p99_ms"]), fmt_ms(k["max_ms"]),
            str(k["errors"]), str(k["errors_5xx"]), f"{k['mean_kib']:.1f}",
        )  # fmt: skip
    console.print(table)
    console.print(f"* the issue's target: p99 under {TARGET_P99_MS:,.0f} ms; and no errors or 5xx")

    memory = Table(title="service processes: memory (VmHWM, reset before the load) and CPU")
    for column in ("process", "pid", "peak RSS MiB", "RSS at end MiB", "CPU (cores)"):
        memory.add_column(column, justify="left" if column == "process" else "right")
    for p in result["memory"]["processes"]:
        memory.add_row(
            p["role"], str(p["pid"]),
            f"{p['peak_kib'] / 1024:.0f}" if p["peak_kib"] else "-",
            f"{p['rss_kib'] / 1024:.0f}" if p["rss_kib"] else "-", f"{p['cpu_cores']:.2f}",
        )  # fmt: skip
    memory.add_row(
        "all processes", "", f"{result['memory']['peak_total_kib'] / 1024:.0f}", "",
        f"{load['service_cpu_cores']:.2f}",
    )  # fmt: skip
    console.print(memory)
    verdict = result["verdict"]
    console.print(
        f"errors {verdict['errors']}, 5xx {verdict['errors_5xx']}; target kinds over "
        f"{TARGET_P99_MS:,.0f} ms at p99: {verdict['over_target'] or 'none'}; "
        f"CPU during the load, in cores: service {load['service_cpu_cores']:.2f}, PostgreSQL "
        f"{load['postgres_cpu_cores']:.2f}, this client {load['client_cpu_share']:.2f} "
        f"(of {result['machine']['cores']})"
    )
    probe = load["probe"]
    console.print(
        f"probe (its own process, a new connection each time, {PROBE_INTERVAL_S:g} s apart): "
        f"cached tile {probe['path']}: {probe['requests']} requests, p50 "
        f"{fmt_ms(probe['p50_ms'])} ms, p99 {fmt_ms(probe['p99_ms'])} ms, max "
        f"{fmt_ms(probe['max_ms'])} ms, statuses {probe['statuses']}"
    )
    spans = load["stalls"]
    console.print(
        f"stalls (requests over {STALL_S:g} s, overlapping spans merged): "
        + ("none" if not spans else "")
    )
    for span in spans:
        console.print(
            f"  {span['from_s']:.1f}-{span['to_s']:.1f} s into the load ({span['at']} UTC): "
            f"{span['requests_over_stall']}, probe "
            + (f"max {span['probe_max_ms']} ms" if span["probe_max_ms"] else "under 1 s")
            + "; event loop "
            f"blocked (s, by worker and cause): {span['loop_blocked_s'] or 'never'}"
        )
    if verdict["processes_gone_after_load"] or not verdict["server_alive_after_load"]:
        console.print(f"[red]service processes gone during the load: "
                      f"{verdict['processes_gone_after_load']}")  # fmt: skip
    for k in load["kinds"]:
        for sample in k["error_samples"]:
            console.print(f"[red]{k['kind']}: {sample}")


# -- main ----------------------------------------------------------------------------------


async def load_demo_data(settings: Settings, incidents: int, seed: int) -> None:
    engine = create_engine(settings)
    try:
        await load_demo(engine, settings, incidents=incidents, seed=seed, actor="bench")
    finally:
        await engine.dispose()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.load", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--clients", type=int, default=64, help="concurrent clients")
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of load")
    parser.add_argument("--workers", type=int, default=2, help="uvicorn worker processes")
    parser.add_argument("--incidents", type=int, default=60_000, help="demo incidents")
    parser.add_argument("--timeout", type=float, default=30.0, help="client timeout, seconds")
    parser.add_argument("--alone", type=int, default=5, help="requests per kind, alone, first")
    parser.add_argument("--seed", type=int, default=42, help="seed of demo and request mix")
    parser.add_argument(
        "--mix", nargs="*", default=[], metavar="KIND=WEIGHT",
        help=f"change weights of the mix, e.g. rankings=0 (kinds: {', '.join(MIX)})",
    )  # fmt: skip
    parser.add_argument("--output", type=Path, default=OUT, help="JSON results file")
    args = parser.parse_args(argv)
    mix = dict(MIX)
    for item in args.mix:
        kind, _, weight = item.partition("=")
        if kind not in MIX or not weight:
            parser.error(f"--mix takes KIND=WEIGHT with KIND one of {', '.join(MIX)}")
        mix[kind] = float(weight)

    # SIGTERM unwinds like Ctrl-C, so the cluster, the server and the files are removed.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    started_at = datetime.now(UTC)
    base_dir = Path(tempfile.mkdtemp(prefix="observatory-bench-load-"))
    try:
        step("starting a throw-away PostgreSQL + PostGIS cluster")
        with throwaway_cluster(base_dir, DatabaseSettings().statement_timeout_ms) as settings:
            upgrade(settings.sqlalchemy_url)
            step(f"loading the demo: boundaries, populations, index, {args.incidents:,} incidents")
            t = time.perf_counter()
            asyncio.run(load_demo_data(settings, args.incidents, args.seed))
            demo_s = time.perf_counter() - t
            url = session_url(settings)
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute("VACUUM ANALYZE")
                for name, value in PG_LOGGING.items():
                    conn.execute(f"ALTER SYSTEM SET {name} = '{value}'")
                conn.execute("SELECT pg_reload_conf()")
            machine = machine_info(settings.libpq_url)
            analyst = {"Authorization": f"Bearer {create_analyst_key(url)}"}
            step(f"starting uvicorn with {args.workers} worker(s)")
            env = {
                "OBSERVATORY_ANALYSIS__WARM_UP": "false",
                "UVICORN_WORKERS": str(args.workers),
            }
            step("starting one observatory worker (the rankings' bands)")
            with (
                launch_worker(settings, base_dir / "worker.log", env=WORKER_ENV),
                launch_app(
                    settings, base_dir / "uvicorn.log", env=env, ready_timeout_s=READY_TIMEOUT_S
                ) as app,
            ):
                plan = build_plan(app.base, analyst, url, args.seed)
                step(
                    f"warming {sum(len(v) for v in plan.repeated.values())} repeated URLs "
                    f"({3 * args.workers} fetches each)"
                )
                warm_statuses = asyncio.run(warm(app.base, plan, analyst, args.workers))
                waited = settle_rankings(app.base, plan)
                step(f"rankings' bands computed ({waited:.0f} s more); warming again")
                warm_statuses += asyncio.run(warm(app.base, plan, analyst, args.workers))
                step(f"each kind alone: {args.alone} requests, one at a time")
                solo = asyncio.run(alone(app.base, plan, analyst, args.alone, args.seed))
                processes = service_processes(app.pid)
                peaks_reset = reset_peaks(list(processes))
                step(f"load: {args.clients} clients for {args.duration:g} s")
                rec = Recorder()
                data_dir = settings.database.data_dir
                service_cpu = {pid: cpu_seconds(pid) for pid in processes}
                pg_cpu = postgres_cpu_seconds(data_dir)
                cpu = time.process_time()
                hot = plan.repeated["tiles-public-cached"]
                probe_path = next((u for u in hot if "/hotspots-" in u), hot[0])
                probe = start_probe(app.base, probe_path, args.duration)
                origin = time.time()
                seconds = asyncio.run(
                    run_load(app.base, plan, mix, analyst, args.clients, args.duration,
                             args.timeout, args.seed, rec)
                )  # fmt: skip
                client_cpu = (time.process_time() - cpu) / seconds
                probed = probe_result(probe) | {"path": probe_path}
                service_cpu = {
                    pid: (cpu_seconds(pid) - before) / seconds
                    for pid, before in service_cpu.items()
                }
                pg_cpu = (postgres_cpu_seconds(data_dir) - pg_cpu) / seconds
                memory = [
                    {
                        "pid": pid,
                        "role": role,
                        "peak_kib": status_kib(pid, "VmHWM"),
                        "rss_kib": status_kib(pid, "VmRSS"),
                        "cpu_cores": service_cpu[pid],
                    }
                    for pid, role in processes.items()
                ]
                server_alive = app.process.poll() is None
                replaced = sorted(set(processes) - set(service_processes(app.pid)))
            server_log = (base_dir / "uvicorn.log").read_text(errors="replace")
            pg_log = (data_dir / "server.log").read_text(errors="replace")
            worker_log = (base_dir / "worker.log").read_text(errors="replace")
    except BaseException:
        with contextlib.suppress(OSError):
            console.print((base_dir / "uvicorn.log").read_text(errors="replace")[-4000:])
        raise
    finally:
        shutil.rmtree(base_dir, ignore_errors=True)

    kinds = [
        asdict(rec.summary(k, seconds)) | {"alone_p50_ms": solo[k]} for k in MIX if rec.latency[k]
    ]
    everything = Recorder()
    for k in MIX:
        for lat, size in zip(rec.latency[k], rec.sizes[k], strict=True):
            everything.latency["total"].append(lat)
            everything.sizes["total"].append(size)
        everything.statuses["total"].update(rec.statuses[k])
        everything.errors["total"] += rec.errors[k]
    total = asdict(everything.summary("total", seconds))
    for kind in kinds:
        if kind["kind"] in plan.new:
            kind["fallback_used"] = kind["requests"] - (
                plan.details[f"new_{'public' if 'public' in kind['kind'] else 'incident'}_tiles"]
                - len(plan.new[kind["kind"]])
            )
    over = [k["kind"] for k in kinds if k["kind"] in TARGET_KINDS and k["p99_ms"] > TARGET_P99_MS]
    workers = [m for m in memory if m["role"] != "uvicorn supervisor"]
    result = {
        "benchmark": "bench.load",
        "started_at": started_at.isoformat(),
        "config": {
            "clients": args.clients,
            "duration_s": args.duration,
            "workers": args.workers,
            "incidents": args.incidents,
            "timeout_s": args.timeout,
            "alone_repeats": args.alone,
            "seed": args.seed,
            "mix": mix,
        },
        "machine": machine,
        "demo_load_s": demo_s,
        "plan": plan.details,
        "warm_statuses": dict(sorted(warm_statuses.items())),
        "load": {
            "seconds": seconds,
            "kinds": kinds,
            "total": total,
            "client_cpu_share": client_cpu,
            "probe": probed,
            "service_cpu_cores": sum(service_cpu.values()),
            "postgres_cpu_cores": pg_cpu,
            "stalls": stalls(rec.slow, probed["slow"], origin, loop_blocks(server_log)),
            "slow_requests": [
                [round(t - origin, 3), round(d, 3), k, st] for t, d, k, st in sorted(rec.slow)
            ],
        },
        "memory": {
            "processes": memory,
            "peaks_reset_before_load": peaks_reset,
            "peak_total_kib": sum(m["peak_kib"] or 0 for m in memory),
            "peak_workers_kib": sum(m["peak_kib"] or 0 for m in workers),
        },
        "verdict": {
            "errors": total["errors"],
            "errors_5xx": total["errors_5xx"],
            "over_target": over,
            "server_alive_after_load": server_alive,
            "processes_gone_after_load": replaced,
        },
        "server_log_tail": server_log[-4000:],
    }
    print_summary(result)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2, default=str))
    args.output.with_suffix(".log").write_text(server_log)
    args.output.with_suffix(".pg.log").write_text(pg_log)
    args.output.with_suffix(".worker.log").write_text(worker_log)
    console.print(f"written to {args.output} (the server's log beside it, .log)")


if __name__ == "__main__":
    main()
