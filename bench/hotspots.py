"""Gi* hot spot benchmark: cold start, and the API against esda called directly.

Run ``.venv/bin/python -m bench.hotspots [--incidents 60000] [--resolutions 8 9]
[--permutations 999]``.

Everything happens on a throw-away PostgreSQL 15 + PostGIS cluster (temporary directory,
free port on 127.0.0.1) loaded with the Belize demo (``app.demo.load.load_demo``: the
real country and district boundaries, census populations and ``--incidents`` seeded
synthetic incidents). The cluster, the uvicorn processes and the temporary directories
(numba cache included) are removed at the end, also on error, Ctrl-C or SIGTERM. Nothing
is downloaded. No figure is asserted: the script measures and prints.

What is measured, and why
-------------------------
1. **Cold start** (issue 3: esda's numba JIT compiles for ~50 s on the first call in a
   process; the service warms it in the background and ``/ready`` answers 503 until
   then). The service (``app.main:create_app`` under uvicorn, in a subprocess) is started
   with ``NUMBA_CACHE_DIR`` pointing at a fresh, empty temporary directory, so the JIT
   really is cold; then once more with the same directory, now filled by the first start
   (warm cache). For each start: process start → first ``/health`` 200 (imports, app
   built, listening), process start → first ``/ready`` 200 (database reachable and the
   kernels compiled or loaded), and, from that ``/ready``, the first Gi* result:
   ``POST /analyses/hotspots`` (H3 resolution 8, analytic, all demo incidents, whole
   country) polled until the run is completed, and until its GeoJSON layer is
   downloaded. Target: first Gi* result within 5 s of ``/ready``. A first run with
   ``--permutations`` follows, to show whether the warm-up also covered the permutation
   kernel.

2. **Gi* through the API against the floor**, for each ``--resolutions`` (H3 over
   Belize: resolution 8 ≈ 30,000 cells, 9 ≈ 200,000), analytic and with
   ``--permutations`` (seeded). On the warm-cache service: ``POST`` then poll
   ``GET /analyses/{id}?format=run`` every ``--poll-ms`` until the run is completed
   ("API run"), then ``GET /analyses/{id}`` (the GeoJSON layer, "download"); "API end to
   end" is the sum. The run's own server-side duration (``finished_at - created_at``) is
   shown too, free of the polling granularity. The floor is ``esda.G_Local(y, w,
   transform="B", star=True, permutations=..., keep_simulations=False, n_jobs=1)``
   called in this process on the same arrays: the incidents read with psycopg (the
   statement the service runs), binned with ``spatial.points_to_h3`` /
   ``count_by_cell`` into the service's grid (the cells centred in the country and the
   cells holding incidents, as a request's default ``cover``), and binary weights from
   ``spatial.h3_neighbours`` with each cell its own neighbour
   (``spatial.weights.binary_with_self``: exactly what ``spatial.gi_star`` hands esda).
   A warm-up call precedes the timed ones; every call gets a freshly built weights
   object (esda sets the transform of, and caches a sparse matrix on, the W it is given).
   The ratios are API time ÷ floor time (1.00x = no overhead; target ≤ 1.3x end to end
   at 200,000 cells, analytic). The API's z-scores are compared with the floor's
   (max |Δz|).

   A second floor, "esda (Graph)", is the same esda call on a libpysal ``Graph`` of the
   same binary self-including weights (``spatial.weights.binary_with_self_graph``, built
   fresh and untimed for each call): the fastest way to call esda, and what the service
   itself hands esda (``SpatialWeights.star_graph``). esda spends most of its time on a
   ``W`` in per-unit Python loops (its transform and sparse matrix), so this floor is
   several times lower; it is shown so that the ratio against the ``W`` floor is not read
   as overhead the service could not remove. It is measured for analytic runs only (with
   permutations esda's numba kernel dominates either way).

   The service keeps a grid's cells and weights in the worker and its polygons in
   PostGIS, so the first API run of a resolution (new grid for the worker and the
   database) costs more than the next ones: the first run is shown apart ("1st run"),
   the medians include it.

   Peak RSS of the service process is read per API run from ``/proc/<pid>/status``
   (``VmHWM``, reset before each run by writing 5 to ``/proc/<pid>/clear_refs``; psutil
   is not a dependency), next to the size an n x permutations float64 matrix would have:
   memory stays bounded when the peak does not grow with the permutations.

3. **Where the time goes** (in this process, for reference). Once per grid (a worker's
   first run on it; the polygons once per database): the cell ids
   (``spatial.grids.h3_cell_ids``), the neighbours (``spatial.h3_neighbours``), the
   ``Graph`` esda gets (``SpatialWeights.star_graph``), and storing the polygons
   (``h3_polygons_wkb``, their EWKB, + ``app.services.grids.store_grid``, one binary
   COPY). On every run: reading the points,
   binning and counting, ``gi_star`` on the cached weights (esda + bins),
   ``app.services.hotspots.store_cells`` (the COPY of the values; scratch runs, deleted
   afterwards) and the GeoJSON statement of ``GET /analyses/{id}`` run with psycopg (the
   floor of the download). For reference, ``binary_with_self`` (the ``W`` of the floor).

Results are printed as tables and written to ``bench/out/hotspots.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import shutil
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import httpx
import numpy as np
import orjson
import pandas as pd
import psycopg
import shapely
from rich.table import Table

import spatial
from app.core.db import create_engine
from app.core.migrate import upgrade
from app.core.settings import DatabaseSettings, Settings
from app.demo.load import load_demo
from app.sql import analyses as analyses_sql
from app.sql.incidents import IncidentFilter
from bench._common import (
    RunningApp,
    console,
    create_analyst_key,
    launch_app,
    launch_worker,
    literal_sql,
    machine_info,
    ratio,
    session_url,
    step,
    throwaway_cluster,
)

OUT = Path(__file__).resolve().parent / "out" / "hotspots.json"
FIRST_RESOLUTION = 8  # the cold-start request: H3 resolution 8, analytic, on the demo
READY_TIMEOUT_S = 600.0  # a cold numba JIT takes about a minute on 2 cores
T = TypeVar("T")


# -- results -------------------------------------------------------------------------------


@dataclass
class ApiRun:
    """One ``POST /analyses/hotspots`` followed to its GeoJSON layer."""

    resolution: int
    permutations: int
    run_id: int
    post_status: int
    cells: int
    post_s: float  # the POST request alone (the service waits up to analysis.wait_s)
    completed_s: float  # POST sent → poll sees "completed"
    download_s: float  # GET of the GeoJSON layer
    download_mib: float
    server_s: float  # finished_at - created_at of the run row
    job_s: float  # summary.seconds (run_hotspots, from reading to storing)
    peak_rss_mib: float | None  # VmHWM of the service process during this run
    rss_after_mib: float | None  # VmRSS after the run
    posted_at: float = field(repr=False)  # time.perf_counter() when the POST was sent
    end_to_end_s: float = field(init=False)  # completed_s + download_s

    def __post_init__(self) -> None:
        self.end_to_end_s = self.completed_s + self.download_s


@dataclass
class ColdStart:
    numba_cache: str  # "cold" (empty directory) or "warm" (filled by the previous start)
    cache_files_before: int
    cache_files_after: int
    start_to_listening_s: float
    start_to_ready_s: float
    ready_to_first_completed_s: float
    ready_to_first_geojson_s: float
    first_run: dict[str, Any]
    ready_to_first_permutation_completed_s: float
    first_permutation_run: dict[str, Any]


@dataclass
class Config:
    """One (resolution, permutations) case: the API runs and the esda floor."""

    resolution: int
    permutations: int
    cells: int
    api_runs: list[dict[str, Any]]
    api_completed_s: float  # medians over the API runs
    api_download_s: float
    api_end_to_end_s: float
    api_server_s: float
    download_mib: float
    peak_rss_mib: float | None
    sim_matrix_mib: float  # what an n x permutations float64 matrix would take
    api_first_end_to_end_s: float  # the first run of this case (a new grid, if any)
    direct_warmup_s: float
    direct_s: list[float]
    direct_median_s: float
    direct_graph_s: list[float]  # esda on a libpysal Graph of the same weights
    direct_graph_median_s: float
    max_abs_dz: float
    completed_vs_direct: float = field(init=False)
    end_to_end_vs_direct: float = field(init=False)
    end_to_end_vs_graph: float = field(init=False)

    def __post_init__(self) -> None:
        self.completed_vs_direct = self.api_completed_s / self.direct_median_s
        self.end_to_end_vs_direct = self.api_end_to_end_s / self.direct_median_s
        self.end_to_end_vs_graph = self.api_end_to_end_s / self.direct_graph_median_s


# -- helpers -------------------------------------------------------------------------------


def timed(fn: Callable[[], T]) -> tuple[T, float]:
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def proc_status_mib(pid: int, key: str) -> float | None:
    """``VmHWM`` / ``VmRSS`` of a process in MiB, from ``/proc/<pid>/status``."""
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(f"{key}:"):
                return int(line.split()[1]) / 1024  # kB
    return None


def reset_peak_rss(pid: int) -> bool:
    """Reset the process's ``VmHWM`` to its current RSS (Linux ≥ 4.0)."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def count_files(directory: Path) -> int:
    return sum(1 for p in directory.rglob("*") if p.is_file()) if directory.exists() else 0


def hotspot_body(resolution: int, permutations: int, seed: int) -> dict[str, Any]:
    body: dict[str, Any] = {
        "method": "gi_star",
        "units": {"type": "h3", "resolution": resolution},
        "permutations": permutations,
    }
    if permutations:
        body["seed"] = seed
    return body


def run_through_api(
    client: httpx.Client, body: dict[str, Any], pid: int, poll_s: float
) -> tuple[ApiRun, dict[str, float]]:
    """POST the analysis, poll it until completed, download its GeoJSON layer.

    Returns the timings and the z-score of every cell (by cell id)."""
    reset_peak_rss(pid)
    posted_at = time.perf_counter()
    response = client.post("/analyses/hotspots", json=body)
    post_s = time.perf_counter() - posted_at
    if response.status_code not in (201, 202):
        raise RuntimeError(f"POST /analyses/hotspots: {response.status_code} {response.text}")
    location = response.headers["Location"]
    run = response.json()
    while run["status"] == "running":
        time.sleep(poll_s)
        polled = client.get(location, params={"format": "run"})
        polled.raise_for_status()
        run = polled.json()
    completed_s = time.perf_counter() - posted_at
    if run["status"] != "completed":
        raise RuntimeError(f"analysis run {run['id']} {run['status']}: {run.get('message')}")
    t = time.perf_counter()
    layer = client.get(location)
    download_s = time.perf_counter() - t
    layer.raise_for_status()
    peak = proc_status_mib(pid, "VmHWM")
    rss = proc_status_mib(pid, "VmRSS")
    features = orjson.loads(layer.content)["features"]
    z = {f["id"]: f["properties"]["z"] for f in features}
    created = datetime.fromisoformat(run["created_at"])
    finished = datetime.fromisoformat(run["finished_at"])
    result = ApiRun(
        resolution=body["units"]["resolution"],
        permutations=body["permutations"],
        run_id=run["id"],
        post_status=response.status_code,
        cells=len(features),
        post_s=post_s,
        completed_s=completed_s,
        download_s=download_s,
        download_mib=len(layer.content) / 2**20,
        server_s=(finished - created).total_seconds(),
        job_s=float(run["summary"].get("seconds", float("nan"))),
        peak_rss_mib=peak,
        rss_after_mib=rss,
        posted_at=posted_at,
    )
    return result, z


async def load_demo_data(settings: Settings, incidents: int, seed: int) -> int:
    engine = create_engine(settings)
    try:
        report = await load_demo(engine, settings, incidents=incidents, seed=seed, actor="bench")
    finally:
        await engine.dispose()
    return report.incidents.inserted if report.incidents else report.existing_incidents


# -- 1. cold start -------------------------------------------------------------------------


def cold_start(
    app: RunningApp,
    client: httpx.Client,
    cache: str,
    cache_dir: Path,
    files_before: int,
    args: argparse.Namespace,
) -> ColdStart:
    poll_s = args.poll_ms / 1000
    first, _ = run_through_api(
        client, hotspot_body(FIRST_RESOLUTION, 0, args.seed), app.pid, poll_s
    )
    completed_at = first.posted_at + first.completed_s
    body = hotspot_body(FIRST_RESOLUTION, args.permutations, args.seed)
    perm, _ = run_through_api(client, body, app.pid, poll_s)
    return ColdStart(
        numba_cache=cache,
        cache_files_before=files_before,
        cache_files_after=count_files(cache_dir),
        start_to_listening_s=app.listening - app.started,
        start_to_ready_s=app.ready - app.started,
        ready_to_first_completed_s=completed_at - app.ready,
        ready_to_first_geojson_s=completed_at + first.download_s - app.ready,
        first_run=asdict(first),
        # from /ready, the way an analyst would see it after the analytic run
        ready_to_first_permutation_completed_s=perm.posted_at + perm.completed_s - app.ready,
        first_permutation_run=asdict(perm),
    )


# -- 2. the floor: esda called directly ----------------------------------------------------


@dataclass
class Prepared:
    """The arrays of one resolution, built in this process as the service builds them."""

    resolution: int
    ids: list[str]
    geometry: np.ndarray  # the cells' polygons as EWKB, what the service stores
    counts: np.ndarray
    neighbours: Any  # spatial.SpatialWeights
    stages: dict[str, float]


def read_inputs(url: str) -> tuple[shapely.Geometry, np.ndarray, np.ndarray, float]:
    """The study area (the country) and the incidents' coordinates, with the read time."""
    with psycopg.connect(url) as conn:
        area_wkb = conn.execute(literal_sql(analyses_sql.select_area(None))).fetchone()[0]
        points_sql = literal_sql(analyses_sql.select_points(IncidentFilter()))
        t = time.perf_counter()
        rows = conn.execute(points_sql).fetchall()
        lon, lat, _ = np.array(rows, dtype=float).reshape(-1, 3).T
        read_s = time.perf_counter() - t
    return shapely.from_wkb(bytes(area_wkb)), lon, lat, read_s


def prepare(area: shapely.Geometry, lon: np.ndarray, lat: np.ndarray, resolution: int) -> Prepared:
    from spatial.grids import h3_cell_ids, h3_polygons_wkb
    from spatial.weights import binary_with_self

    # The service's grid (a request's default): the cells whose centre is in the area,
    # and the cells outside it that hold incidents (``app.services.grids.with_cells``).
    area_ids, cells_s = timed(lambda: h3_cell_ids(area, resolution, cover="center"))
    point_cells, bin_s = timed(lambda: spatial.points_to_h3(lon, lat, resolution))
    held = {c for c in point_cells if c is not None}
    ids = sorted(set(area_ids) | held)
    counts, count_s = timed(lambda: spatial.count_by_cell(point_cells, ids))
    neighbours, neighbours_s = timed(lambda: spatial.h3_neighbours(ids))
    _, graph_s = timed(lambda: neighbours.star_graph)
    geometry, polygons_s = timed(lambda: h3_polygons_wkb(ids))
    _, self_s = timed(lambda: binary_with_self(neighbours))
    return Prepared(
        resolution=resolution,
        ids=ids,
        geometry=geometry,
        counts=counts,
        neighbours=neighbours,
        stages={
            "grid: h3_cell_ids": cells_s,
            "grid: h3_neighbours": neighbours_s,
            "grid: star_graph (Graph for esda)": graph_s,
            "grid: h3_polygons_wkb (EWKB)": polygons_s,
            "run: points_to_h3": bin_s,
            "run: count_by_cell": count_s,
            "floor: binary_with_self (its W)": self_s,
        },
    )


def direct_g_local(
    prepared: Prepared, permutations: int, seed: int, repeats: int, *, graph: bool = False
) -> tuple[float, list[float], np.ndarray]:
    """esda.G_Local on the prepared arrays, given a libpysal W (or, with ``graph``, a
    libpysal Graph): (warm-up seconds, timed seconds, Zs)."""
    import warnings

    from esda.getisord import G_Local

    from spatial.weights import binary_with_self, binary_with_self_graph

    build = binary_with_self_graph if graph else binary_with_self
    y = np.asarray(prepared.counts, dtype=float)
    times: list[float] = []
    zs = np.empty(0)
    for _ in range(repeats + 1):
        w = build(prepared.neighbours)  # fresh for every call, untimed
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            t = time.perf_counter()
            g = G_Local(
                y, w, transform="B", star=True, permutations=permutations,
                seed=seed if permutations else None, keep_simulations=False, n_jobs=1,
            )  # fmt: skip
            times.append(time.perf_counter() - t)
        zs = np.asarray(g.Zs, dtype=float)
    return times[0], times[1:], zs


def extra_stages(settings: Settings, prepared: Prepared, api_run_id: int) -> dict[str, float]:
    """gi_star, storing the grid and the values, and the GeoJSON statement, timed here."""
    stages: dict[str, float] = {}
    spatial.gi_star(prepared.counts, prepared.neighbours)  # the Graph is built already
    gi, stages["run: gi_star (analytic, cached weights)"] = timed(
        lambda: spatial.gi_star(prepared.counts, prepared.neighbours)
    )
    url = session_url(settings)
    try:
        from app.services.grids import Grid, store_grid
        from app.services.hotspots import Cells, store_cells

        table = pd.DataFrame(
            {"cell_id": prepared.ids, "count": prepared.counts, "z": gi.z, "p": gi.p,
             "p_sim": None, "bin": gi.bin}
        )  # fmt: skip
        with psycopg.connect(url, autocommit=True) as conn:
            scratch = conn.execute(
                "INSERT INTO analysis_run (kind, method, parameters, created_by) "
                "VALUES ('bench-scratch', 'gi_star', '{}', 'bench') RETURNING id"
            ).fetchone()[0]
        key = f"bench:{scratch}"
        ids = np.asarray(prepared.ids, dtype=object)
        grid = Grid(key, "h3", {"resolution": prepared.resolution}, ids)

        async def store() -> tuple[float, float]:
            engine = create_engine(settings)
            try:
                t = time.perf_counter()
                # owned by the scratch run, so deleted with it; the polygons as EWKB
                await store_grid(engine, key, "h3", {}, ids, prepared.geometry, scratch)
                grid_s = time.perf_counter() - t
                t = time.perf_counter()
                cells = Cells(ids, None, prepared.counts, grid=grid)
                await store_cells(engine, scratch, table, cells)
                return grid_s, time.perf_counter() - t
            finally:
                await engine.dispose()

        grid_s, values_s = asyncio.run(store())
        stages["grid: store_grid (COPY polygons)"] = grid_s
        stages["run: store_cells (COPY values)"] = values_s
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("DELETE FROM analysis_run WHERE id = %s", [scratch])
    except Exception as exc:  # the app is being worked on: report, do not stop the benchmark
        console.print(f"[yellow]store_cells not timed: {exc!r}")
    with psycopg.connect(url) as conn:
        geojson_sql = literal_sql(analyses_sql.select_cells_geojson(api_run_id))
        t = time.perf_counter()
        conn.execute(geojson_sql).fetchone()
        stages["download: GeoJSON statement (psycopg)"] = time.perf_counter() - t
    return stages


def run_config(
    app: RunningApp,
    client: httpx.Client,
    prepared: Prepared,
    permutations: int,
    args: argparse.Namespace,
) -> tuple[Config, list[ApiRun]]:
    poll_s = args.poll_ms / 1000
    runs: list[ApiRun] = []
    z_api: dict[str, float] = {}
    body = hotspot_body(prepared.resolution, permutations, args.seed)
    for _ in range(args.repeats):
        run, z_api = run_through_api(client, body, app.pid, poll_s)
        runs.append(run)
    warmup_s, direct_s, zs = direct_g_local(prepared, permutations, args.seed, args.repeats)
    # With permutations, esda's numba kernel dominates and the Graph floor adds minutes.
    graph_s = [float("nan")]
    if not permutations:
        _, graph_s, zs_graph = direct_g_local(
            prepared, permutations, args.seed, args.repeats, graph=True
        )
        if not np.array_equal(zs, zs_graph):
            console.print("[red]esda on a Graph and on a W disagree")
    z_from_api = np.array([z_api.get(i, np.nan) for i in prepared.ids], dtype=float)
    peaks = [r.peak_rss_mib for r in runs if r.peak_rss_mib is not None]
    n = len(prepared.ids)
    config = Config(
        resolution=prepared.resolution,
        permutations=permutations,
        cells=n,
        api_runs=[asdict(r) for r in runs],
        api_completed_s=statistics.median(r.completed_s for r in runs),
        api_download_s=statistics.median(r.download_s for r in runs),
        api_end_to_end_s=statistics.median(r.end_to_end_s for r in runs),
        api_server_s=statistics.median(r.server_s for r in runs),
        api_first_end_to_end_s=runs[0].end_to_end_s,
        download_mib=runs[-1].download_mib,
        peak_rss_mib=max(peaks) if peaks else None,
        sim_matrix_mib=n * permutations * 8 / 2**20,
        direct_warmup_s=warmup_s,
        direct_s=direct_s,
        direct_median_s=statistics.median(direct_s),
        direct_graph_s=graph_s,
        direct_graph_median_s=statistics.median(graph_s),
        max_abs_dz=float(np.nanmax(np.abs(z_from_api - zs))) if len(z_api) == n else float("nan"),
    )
    return config, runs


def stage_order(item: tuple[str, float]) -> int:
    """Stages grouped as: once per grid, every run, the download, the floor's own."""
    return ("grid", "run", "download", "floor").index(item[0].split(":")[0])


# -- report --------------------------------------------------------------------------------


def fmt_s(x: float | None) -> str:
    return "—" if x is None else f"{x:.2f}"


def fmt_mib(x: float | None) -> str:
    return "—" if x is None else f"{x:,.0f}"


def print_summary(result: dict[str, Any]) -> None:
    m, cfg = result["machine"], result["config"]
    console.rule("[bold]bench.hotspots")
    console.print(
        f"{m['cores']} cores ({m['cpu']}), {m['memory_gib']} GiB · PostgreSQL {m['postgresql']}"
        f" · PostGIS {m['postgis']} · Python {m['python']} · esda {result['versions']['esda']}"
        f" · numba {result['versions']['numba']}\n"
        f"demo: {result['demo']['incidents']:,} incidents over Belize; "
        f"median of {cfg['repeats']} runs; polling every {cfg['poll_ms']} ms"
    )

    cold = Table(
        title="Cold start (target: first Gi* result within 5 s of /ready)", title_justify="left"
    )
    for name in (
        "numba cache",
        "cache files",
        "start → /health",
        "start → /ready",
        "/ready → 1st Gi* done",
        "/ready → 1st GeoJSON",
        f"/ready → 1st {cfg['permutations']}-perm done",
    ):
        cold.add_column(name, justify="left" if name == "numba cache" else "right")
    for c in result["cold_start"]:
        cold.add_row(
            c["numba_cache"],
            f"{c['cache_files_before']} → {c['cache_files_after']}",
            f"{c['start_to_listening_s']:.2f} s",
            f"{c['start_to_ready_s']:.2f} s",
            f"{c['ready_to_first_completed_s']:.2f} s",
            f"{c['ready_to_first_geojson_s']:.2f} s",
            f"{c['ready_to_first_permutation_completed_s']:.2f} s",
        )
    console.print(cold)

    api = Table(
        title="Gi* through the API vs esda.G_Local called directly (seconds; target ≤ 1.3x end"
        " to end at ~200,000 cells, analytic)",
        title_justify="left",
    )
    for name in (
        "H3 res",
        "cells",
        "perms",
        "API run",
        "(server)",
        "download",
        "MiB",
        "1st run e2e",
        "API end to end",
        "esda (W)",
        "esda (Graph)",
        "run/W",
        "e2e/W",
        "e2e/Graph",
        "peak RSS MiB",
        "n*perm MiB",
        "max |Δz|",
    ):
        api.add_column(name, justify="right")
    for c in result["configs"]:
        api.add_row(
            str(c["resolution"]),
            f"{c['cells']:,}",
            str(c["permutations"]),
            fmt_s(c["api_completed_s"]),
            fmt_s(c["api_server_s"]),
            fmt_s(c["api_download_s"]),
            f"{c['download_mib']:.0f}",
            fmt_s(c["api_first_end_to_end_s"]),
            fmt_s(c["api_end_to_end_s"]),
            f"{c['direct_median_s']:.3f}",
            f"{c['direct_graph_median_s']:.3f}" if not c["permutations"] else "—",
            ratio(c["completed_vs_direct"]),
            ratio(c["end_to_end_vs_direct"]),
            ratio(c["end_to_end_vs_graph"]) if not c["permutations"] else "—",
            fmt_mib(c["peak_rss_mib"]),
            fmt_mib(c["sim_matrix_mib"]) if c["permutations"] else "—",
            f"{c['max_abs_dz']:.1e}",
        )
    console.print(api)

    stages = Table(
        title="Where the time goes (seconds, timed in this process on the same data). grid:"
        " once per grid (the worker's first run on it; the polygons once per database);"
        " run: every run; download: GET /analyses/{id}",
        title_justify="left",
    )
    stages.add_column("stage")
    for b in result["breakdown"]:
        stages.add_column(f"res {b['resolution']} ({b['cells']:,} cells)", justify="right")
    names = list(result["breakdown"][0]["stages"]) if result["breakdown"] else []
    for name in names:
        stages.add_row(name, *(fmt_s(b["stages"].get(name)) for b in result["breakdown"]))
    console.print(stages)
    console.print(f"written to {result['output']}")


# -- main ----------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.hotspots", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--incidents", type=int, default=60_000, help="demo incidents")
    parser.add_argument("--resolutions", type=int, nargs="+", default=[8, 9], help="H3 resolutions")
    parser.add_argument("--permutations", type=int, default=999, help="permutation runs")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per case")
    parser.add_argument("--seed", type=int, default=42, help="seed of demo and permutations")
    parser.add_argument("--poll-ms", type=int, default=50, help="polling interval of a run")
    parser.add_argument("--output", type=Path, default=OUT, help="JSON results file")
    args = parser.parse_args(argv)

    import esda
    import numba

    # SIGTERM unwinds like Ctrl-C, so the cluster, the servers and the files are removed.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    started = datetime.now(UTC)
    base = Path(tempfile.mkdtemp(prefix="observatory-bench-hotspots-"))
    cache_dir = base / "numba-cache"
    cache_dir.mkdir()
    cold_starts: list[ColdStart] = []
    configs: list[Config] = []
    breakdown: list[dict[str, Any]] = []
    try:
        step("starting a throw-away PostgreSQL + PostGIS cluster")
        with throwaway_cluster(base, DatabaseSettings().statement_timeout_ms) as settings:
            upgrade(settings.sqlalchemy_url)
            step(f"loading the demo: boundaries + {args.incidents:,} incidents")
            loaded, demo_s = timed(
                lambda: asyncio.run(load_demo_data(settings, args.incidents, args.seed))
            )
            url = session_url(settings)
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute("VACUUM ANALYZE")
            machine = machine_info(settings.libpq_url)
            key = create_analyst_key(url)
            headers = {"Authorization": f"Bearer {key}"}
            env = {"NUMBA_CACHE_DIR": str(cache_dir)}

            for cache in ("cold", "warm"):
                files_before = count_files(cache_dir)
                step(f"1/3 cold start, {cache} numba cache ({files_before} files)")
                with (
                    launch_app(
                        settings, base / f"uvicorn-{cache}.log", env=env,
                        ready_timeout_s=READY_TIMEOUT_S, poll_s=0.05,
                    ) as app,
                    # The runs are computed by a worker beside the API (issue 18).
                    launch_worker(settings, base / f"worker-{cache}.log", env=env),
                    httpx.Client(base_url=app.base, headers=headers, timeout=600) as client,
                ):  # fmt: skip
                    cold_starts.append(
                        cold_start(app, client, cache, cache_dir, files_before, args)
                    )
                    if cache == "cold":
                        continue
                    # Load the kernels the service compiled, for the floor's warm-up call.
                    numba.config.CACHE_DIR = str(cache_dir)
                    spatial.enable_numba_cache()
                    area, lon, lat, read_s = read_inputs(url)
                    for resolution in args.resolutions:
                        step(f"2/3 H3 resolution {resolution}: preparing the arrays")
                        prepared = prepare(area, lon, lat, resolution)
                        for permutations in dict.fromkeys((0, args.permutations)):
                            step(
                                f"2/3 H3 resolution {resolution} ({len(prepared.ids):,} cells),"
                                f" {permutations} permutations: API, then esda directly"
                            )
                            config, runs = run_config(app, client, prepared, permutations, args)
                            configs.append(config)
                        step(f"3/3 H3 resolution {resolution}: stage times in this process")
                        stages = {"run: read points (psycopg)": read_s, **prepared.stages}
                        stages |= extra_stages(settings, prepared, runs[-1].run_id)
                        stages = dict(sorted(stages.items(), key=stage_order))
                        breakdown.append(
                            {"resolution": resolution, "cells": len(prepared.ids), "stages": stages}
                        )
    finally:
        shutil.rmtree(base, ignore_errors=True)

    result: dict[str, Any] = {
        "benchmark": "bench.hotspots",
        "started_at": started.isoformat(timespec="seconds"),
        "config": {
            "incidents": args.incidents,
            "resolutions": args.resolutions,
            "permutations": args.permutations,
            "repeats": args.repeats,
            "seed": args.seed,
            "poll_ms": args.poll_ms,
        },
        "machine": machine,
        "versions": {"esda": esda.__version__, "numba": numba.__version__},
        "demo": {"incidents": loaded, "load_s": round(demo_s, 2)},
        "cold_start": [asdict(c) for c in cold_starts],
        "configs": [asdict(c) for c in configs],
        "breakdown": breakdown,
        "output": str(args.output),
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2, default=str) + "\n")
    print_summary(result)


if __name__ == "__main__":
    main()
