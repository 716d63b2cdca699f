"""Early warning benchmark (issue 19): the nightly evaluation of every shipped monitor on
the demo, end to end through the task, against the same detector calls on the arrays.

Run ``.venv/bin/python -m bench.early_warning [--incidents 60000] [--repeats 3]``.

Everything happens on a throw-away PostgreSQL 15 + PostGIS cluster (temporary directory,
free port on 127.0.0.1) loaded with the demo's boundaries, categories and seeded
synthetic incidents (``generate_incidents``, 60,000 over five years, as ``make run``)
and the shipped monitors (``app/data/monitors``: property crime per H3 resolution-8 cell
weekly, homicides and shootings per district monthly, violence against women per
district monthly). Cluster, worker and files are removed at the end, also on error,
Ctrl-C or SIGTERM. No figure is asserted: the script measures and prints (and writes
``bench/out/early_warning.json``).

Per monitor also "series": reading its incidents and building its count arrays (the
service's ``_series``, part of ``evaluate_monitor``), timed apart; and "first series",
the same on the first evaluation after the import, which computes the H3 cells of the
incidents and stores them (``incident_h3``, migration 0018; later evaluations read them
and compute only those of new or moved incidents).

1. **Direct**: for each monitor, its count series are built once (untimed, with the
   service's own reader), then the detector calls the evaluation makes are timed on the
   arrays: for every place with at least ``min_count`` incidents in the latest complete
   period, the detector at that period, and for an alarm again over the chart's two
   years (the GLR CUSUM over the chart's range at once), as
   ``app.services.monitors.evaluate_monitor`` does. This is the floor.
2. **Service**: ``evaluate_monitor`` in this process for each monitor: reading the
   series (H3: the stored cells), the same detector calls, grouping, storing alerts.
3. **Task body**: what the task runs, in this process: ``evaluate_all`` (every
   monitor; the next two monitors' series read, and the previous one's alerts stored,
   while this one's detector runs) and
   ``refresh_risk_zones`` (near-repeat risk zones; none here).
4. **Task**: the ``evaluate_monitors`` job deferred to a real ``observatory worker``
   (idle, no schedule), timed from its ``started`` event to its ``succeeded`` event
   (the database's clock), and from the defer to the end as a caller sees it.

The four ways are interleaved in every round (after one warm-up round) and the medians
shown: the machine is shared, and interleaving keeps a busy moment from falling on one
way only. Their CPU seconds too (this process, the database's backends, the worker),
means over the rounds: steadier than wall times on a busy machine.

Targets (issue 19): the whole nightly evaluation under 60 s on these 2-core machines,
and within 1.5x the direct detector calls, per detector and in total.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import geopandas as gpd
import numpy as np
import psycopg

from app.core.db import create_engine
from app.core.migrate import upgrade
from app.core.settings import DatabaseSettings, Settings
from app.worker.queue import make_app
from bench._common import console, launch_worker, ratio, step, throwaway_cluster

OUT = Path(__file__).parent / "out" / "early_warning.json"
WORKER_ENV = {"OBSERVATORY_WORKER__SCHEDULES": "{}", "OBSERVATORY_ANALYSIS__WARM_UP": "false"}
TICK_S = 1 / os.sysconf("SC_CLK_TCK")


class CpuMeter:
    """CPU seconds (user + system) of this process, of a worker process and of the
    database's backends, read from /proc (the throw-away cluster runs on this machine).
    On a shared machine wall times follow the load; CPU seconds much less, so their
    ratio is the steadier figure (a sum of CPU that could overlap on two cores, so not
    below the wall time of a quiet machine)."""

    def __init__(self, url: str) -> None:
        self.conn = psycopg.connect(url, autocommit=True)

    @staticmethod
    def _proc(pid: int) -> float:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            return 0.0
        return (int(fields[11]) + int(fields[12])) * TICK_S

    def database(self) -> float:
        """CPU seconds so far of every client backend of the database but this one's
        (not autovacuum's: it runs when it likes)."""
        pids = self.conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
            "AND backend_type = 'client backend' AND pid <> pg_backend_pid()"
        ).fetchall()
        return sum(self._proc(p) for (p,) in pids)

    def worker(self, pid: int) -> float:
        """CPU seconds so far of the worker process."""
        return self._proc(pid)


async def load(settings: Settings, incidents: int, seed: int) -> None:
    """Categories, the real boundaries, the demo's incidents and the shipped monitors
    (not ``load_demo``: no population, hot spot run or evaluation)."""
    from app.demo.incidents import generate_incidents
    from app.demo.load import COUNTRY, DEMO_SOURCE, DISTRICTS
    from app.services.boundaries import import_boundaries
    from app.services.categories import load_categories
    from app.services.imports import import_frame
    from app.services.incident_rows import ReadOptions
    from app.services.monitors import load_default_definitions

    engine = create_engine(settings)
    try:
        await load_categories(engine, settings.territory.categories_file)
        for path, level, code, name in ((COUNTRY, 0, "ISO_A2", "ADMIN"),
                                        (DISTRICTS, 1, "iso_3166_2", "district")):  # fmt: skip
            await import_boundaries(
                engine, path, level=level, code_field=code, name_field=name, actor="bench"
            )
        districts = gpd.read_file(DISTRICTS).rename(
            columns={"iso_3166_2": "code", "district": "name"}
        )
        frame = generate_incidents(districts, n=incidents, seed=seed)
        frame = frame.astype(object).where(frame.notna(), "").astype(str)
        frame = frame.replace({"nan": "", "<NA>": "", "None": ""})
        await import_frame(
            engine, settings, frame, ReadOptions(source=DEMO_SOURCE), actor="bench",
            filename="demo.csv", fmt="csv",
        )  # fmt: skip
        await load_default_definitions(engine, actor="bench")
    finally:
        await engine.dispose()


def detect(definition: Any, counts: np.ndarray, n_periods: int) -> tuple[int, int]:
    """The detector calls of ``evaluate_monitor`` on a places x periods array: how many
    places were candidates and how many alarmed."""
    from app.services.monitors import CHART, run_detector

    n = n_periods
    candidates = np.flatnonzero(counts[:, n - 1] >= definition.min_count)
    chart = list(range(max(0, n - CHART[definition.step]), n))
    cumulative = definition.detector.name == "glrnb"
    alarms = 0
    for i in candidates:
        y = counts[i]
        if cumulative or run_detector(definition, y, [n - 1]).alarm[-1]:
            alarms += bool(run_detector(definition, y, chart).alarm[-1])
    return len(candidates), alarms


async def _job(app: Any, url: str) -> dict[str, float]:
    """Defer one ``evaluate_monitors`` job and wait for it: worker-side and caller times."""
    started = time.perf_counter()
    job_id = await app.configure_task("evaluate_monitors").defer_async()
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        while True:
            cur = await conn.execute(
                "SELECT status::text FROM procrastinate.procrastinate_jobs WHERE id = %s",
                [job_id],
            )
            status = (await cur.fetchone())[0]
            if status in ("succeeded", "failed"):
                break
            await asyncio.sleep(0.02)
        wall = time.perf_counter() - started
        if status != "succeeded":
            raise RuntimeError(f"evaluate_monitors job {job_id} {status}")
        cur = await conn.execute(
            "SELECT type::text, min(at) FROM procrastinate.procrastinate_events "
            "WHERE job_id = %s GROUP BY type",
            [job_id],
        )
        events = dict(await cur.fetchall())
    return {"server_s": (events["succeeded"] - events["started"]).total_seconds(), "wall_s": wall}


async def measure_ways(
    settings: Settings, repeats: int, worker_pid: int
) -> tuple[list[dict[str, Any]], dict[str, float], list[dict[str, float]]]:
    """Every way, interleaved in each of ``repeats`` rounds after a warm-up round (the
    machine is shared: interleaving keeps a busy moment from falling on one way only):
    per monitor the direct detector calls and ``evaluate_monitor``; the task's body in
    this process (``evaluate_all``, ``refresh_risk_zones``); the task on the worker."""
    from app.schemas.monitors import load_monitor
    from app.services import monitors
    from app.services.near_repeat import refresh_risk_zones
    from app.sql import monitors as monitor_sql

    tz = settings.territory.timezone
    now = datetime.now(ZoneInfo(tz))
    engine = create_engine(settings)
    app = make_app(settings)
    per: dict[str, dict[str, Any]] = {}
    body: dict[str, list[float]] = {"evaluate_all_s": [], "refresh_risk_zones_s": []}
    task = []
    meter = CpuMeter(settings.libpq_url)
    # CPU seconds summed over the timed rounds: per monitor direct/service, and the
    # task's body and the task (the worker process and the database's backends).
    cpu: dict[str, float] = defaultdict(float)
    try:
        async with engine.connect() as conn:
            records = await monitors.list_definitions(conn, include_sensitive=True)
            latest = (await conn.execute(monitor_sql.latest_incident())).scalar_one()
        series = {}
        first: dict[str, float] = {}
        for record in records:  # the arrays (and the first read, cells stored), untimed
            definition = load_monitor(record.definition)
            last = monitors.last_complete_period(latest, now, definition.step, tz)
            started = time.perf_counter()
            async with engine.connect() as conn:
                series[record.code] = (
                    definition,
                    await monitors._series(conn, definition, tz, last),
                )
            first[record.code] = time.perf_counter() - started
        async with app.open_async():
            for k in range(repeats + 1):
                for record in records:
                    definition, data = series[record.code]
                    n = len(data.periods)
                    started = time.perf_counter()
                    last = monitors.last_complete_period(latest, now, definition.step, tz)
                    async with engine.connect() as conn:
                        await monitors._series(conn, definition, tz, last)
                    read = time.perf_counter() - started
                    started, cpu0 = time.perf_counter(), time.process_time()
                    candidates, alarms = detect(definition, data.counts, n)
                    direct = time.perf_counter() - started
                    direct_cpu = time.process_time() - cpu0
                    db0 = meter.database()
                    started, cpu0 = time.perf_counter(), time.process_time()
                    outcome = await monitors.evaluate_monitor(engine, record, tz, now=now)
                    service = time.perf_counter() - started
                    service_cpu = time.process_time() - cpu0 + meter.database() - db0
                    assert (outcome.evaluated, outcome.alarms) == (candidates, alarms), outcome
                    row = per.setdefault(record.code, {
                        "monitor": record.code, "detector": definition.detector.name,
                        "places": len(data.places), "periods": n, "candidates": candidates,
                        "alarms": alarms, "direct": [], "service": [], "series": [],
                        "first_series_s": first[record.code],
                    })  # fmt: skip
                    if k:
                        row["direct"].append(direct)
                        row["service"].append(service)
                        row["series"].append(read)
                        cpu[f"direct:{record.code}"] += direct_cpu / repeats
                        cpu[f"service:{record.code}"] += service_cpu / repeats
                db0, cpu0 = meter.database(), time.process_time()
                started = time.perf_counter()
                await monitors.evaluate_all(engine, tz)
                middle = time.perf_counter()
                body_cpu = time.process_time() - cpu0 + meter.database() - db0
                await refresh_risk_zones(engine, settings)
                ended = time.perf_counter()
                db0, worker0 = meter.database(), meter.worker(worker_pid)
                job = await _job(app, settings.libpq_url)
                task_cpu = meter.worker(worker_pid) - worker0 + meter.database() - db0
                if k:
                    cpu["evaluate_all"] += body_cpu / repeats
                    cpu["task"] += task_cpu / repeats
                    body["evaluate_all_s"].append(middle - started)
                    body["refresh_risk_zones_s"].append(ended - middle)
                    task.append(job)
    finally:
        meter.conn.close()
        await engine.dispose()
    rows = [
        {**{k: v for k, v in r.items() if k not in ("direct", "service", "series")},
         "direct_s": statistics.median(r["direct"]), "service_s": statistics.median(r["service"]),
         "series_s": statistics.median(r["series"]),
         "direct_cpu_s": cpu[f"direct:{code}"], "service_cpu_s": cpu[f"service:{code}"]}
        for code, r in per.items()
    ]  # fmt: skip
    summary = {k: statistics.median(v) for k, v in body.items()}
    summary |= {"evaluate_all_cpu_s": cpu["evaluate_all"], "task_cpu_s": cpu["task"]}
    return rows, summary, task


def report(
    rows: list[dict[str, Any]], body: dict[str, float], task: list[dict[str, float]]
) -> dict[str, Any]:
    """Print per monitor, per detector and in total; return the summary."""
    from rich.table import Table

    table = Table(title="Monitors: direct detector calls against evaluate_monitor")
    for col in ("monitor", "detector", "places", "periods", "candidates", "alarms",
                "first series s", "series s", "direct s", "service s",
                "service / direct"):  # fmt: skip
        table.add_column(col, justify="left" if col in ("monitor", "detector") else "right")
    for r in rows:
        table.add_row(
            r["monitor"], r["detector"], f"{r['places']:,}", str(r["periods"]),
            f"{r['candidates']:,}", str(r["alarms"]), f"{r['first_series_s']:.3f}",
            f"{r['series_s']:.3f}", f"{r['direct_s']:.3f}", f"{r['service_s']:.3f}",
            ratio(r["service_s"] / r["direct_s"]),
        )  # fmt: skip
    console.print(table)
    by_detector: dict[str, dict[str, float]] = defaultdict(lambda: {"direct_s": 0, "service_s": 0})
    for r in rows:
        by_detector[r["detector"]]["direct_s"] += r["direct_s"]
        by_detector[r["detector"]]["service_s"] += r["service_s"]
    table = Table(title="Per detector (its monitors summed)")
    for col in ("detector", "direct s", "service s", "service / direct"):
        table.add_column(col, justify="left" if col == "detector" else "right")
    for name, t in sorted(by_detector.items()):
        table.add_row(name, f"{t['direct_s']:.3f}", f"{t['service_s']:.3f}",
                      ratio(t["service_s"] / t["direct_s"]))  # fmt: skip
    console.print(table)
    direct = sum(r["direct_s"] for r in rows)
    service = sum(r["service_s"] for r in rows)
    server = statistics.median(t["server_s"] for t in task)
    wall = statistics.median(t["wall_s"] for t in task)
    table = Table(title="Every monitor: the nightly task (targets: < 60 s, <= 1.5x direct)")
    for col in ("what", "seconds", "/ direct"):
        table.add_column(col, justify="left" if col == "what" else "right")
    table.add_row("direct detector calls (sum)", f"{direct:.3f}", "1.00x")
    table.add_row("evaluate_monitor in process (sum)", f"{service:.3f}", ratio(service / direct))
    inside = body["evaluate_all_s"] + body["refresh_risk_zones_s"]
    table.add_row("task body in process: evaluate_all", f"{body['evaluate_all_s']:.3f}",
                  ratio(body["evaluate_all_s"] / direct))  # fmt: skip
    table.add_row("  + refresh_risk_zones", f"{inside:.3f}", ratio(inside / direct))
    table.add_row("evaluate_monitors task, worker side", f"{server:.3f}", ratio(server / direct))
    table.add_row("evaluate_monitors task, defer to end", f"{wall:.3f}", ratio(wall / direct))
    console.print(table)
    table = Table(
        title="CPU seconds (this process and the database's backends; the task: the worker's)"
    )
    for col in ("what", "CPU s", "/ direct"):
        table.add_column(col, justify="left" if col == "what" else "right")
    direct_cpu = sum(r["direct_cpu_s"] for r in rows)
    table.add_row("direct detector calls (sum)", f"{direct_cpu:.3f}", "1.00x")
    for r in rows:
        table.add_row(f"  evaluate_monitor {r['monitor']}", f"{r['service_cpu_s']:.3f}",
                      ratio(r["service_cpu_s"] / r["direct_cpu_s"]))  # fmt: skip
    service_cpu = sum(r["service_cpu_s"] for r in rows)
    table.add_row("evaluate_monitor (sum)", f"{service_cpu:.3f}", ratio(service_cpu / direct_cpu))
    for what, key in (("task body in process: evaluate_all", "evaluate_all_cpu_s"),
                      ("evaluate_monitors task, worker side", "task_cpu_s")):  # fmt: skip
        table.add_row(what, f"{body[key]:.3f}", ratio(body[key] / direct_cpu))
    console.print(table)
    return {
        "direct_cpu_s": direct_cpu, "service_cpu_s": service_cpu,
        "per_detector": dict(by_detector),
        "direct_s": direct, "service_s": service, **body,
        "task_server_s": server, "task_wall_s": wall,
    }  # fmt: skip


def measure(args: argparse.Namespace, base: Path) -> None:
    """Load, then the three measurements, on a throw-away cluster under ``base``."""
    arguments = {**vars(args), "output": str(args.output)}
    results: dict[str, Any] = {"started": datetime.now(UTC).isoformat(), "args": arguments}
    step("starting a throw-away PostgreSQL + PostGIS cluster")
    with throwaway_cluster(base, DatabaseSettings().statement_timeout_ms) as settings:
        upgrade(settings.sqlalchemy_url)
        step(f"loading boundaries, {args.incidents:,} demo incidents and the shipped monitors")
        asyncio.run(load(settings, args.incidents, args.seed))
        step(f"direct calls, evaluate_monitor, the task's body and the task: {args.repeats} rounds")
        with launch_worker(settings, base / "worker.log", env=WORKER_ENV) as worker:
            rows, body, task = asyncio.run(measure_ways(settings, args.repeats, worker.pid))
        results |= {"monitors": rows, "task_body": body, "task": task}
        results["summary"] = report(results["monitors"], results["task_body"], results["task"])
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=2, default=str))
    step(f"results written to {args.output}")


def main(argv: list[str] | None = None) -> None:
    """Parse the options and run the benchmark in a temporary directory."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.early_warning", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--incidents", type=int, default=60_000, help="demo incidents")
    parser.add_argument("--seed", type=int, default=42, help="seed of the demo incidents")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of each way")
    parser.add_argument("--output", type=Path, default=OUT, help="JSON results file")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    base = Path(tempfile.mkdtemp(prefix="observatory-bench-ew-"))
    try:
        measure(args, base)
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
