"""Job queue benchmark (issue 18): enqueue-to-start latency, throughput with 1, 2 and 4
workers, and a Gi* run and a KDE run through the queue against the same run computed
in-process.

Run ``.venv/bin/python -m bench.jobs [--incidents 60000] [--latency-jobs 200]
[--throughput-jobs 1000] [--workers 1 2 4] [--repeats 3]``.

Everything happens on a throw-away PostgreSQL 15 + PostGIS cluster (temporary directory,
free port on 127.0.0.1) loaded with the Belize demo; the workers are real
``observatory worker`` subprocesses (concurrency 1 each). Cluster, workers and files are
removed at the end, also on error, Ctrl-C or SIGTERM. No figure is asserted: the script
measures and prints (and writes ``bench/out/jobs.json``).

1. **Latency, enqueue to start**, one idle worker: ``--latency-jobs`` trivial jobs
   (``noop``) deferred one at a time, each after the previous one ended; the latency is
   the job's ``started`` event minus its ``deferred`` event (both the database's clock).
   The worker hears of a job by LISTEN/NOTIFY. Target: p50 under 100 ms.
2. **Throughput**: ``--throughput-jobs`` trivial jobs deferred in one batch to 1, 2 and
   4 idle workers; jobs a second from the first ``deferred`` event to the last
   ``succeeded`` one. This is the queue's own cost per job (fetch, start, finish).
3. **Gi* through the queue against in-process**: H3 resolution 8 over Belize, all demo
   incidents, analytic (the issue's case), ``--repeats`` times each, warm: through the
   queue = the run stored and its job deferred (``app.services.jobs.enqueue_run``) until
   the run's row says completed (polled every 20 ms), on one idle warm worker; in-process
   = the same request computed in this process (``app.services.jobs.run_here``, what the
   CLI does). Target: queue overhead under 5 % of the run.
4. **KDE through the queue against in-process**: the surface (GeoTIFF) and hot areas of
   every demo incident at the default bandwidth and cell size, ``--repeats`` times each,
   warm. Through the queue as for Gi*; in-process = the same run stored and computed in
   this process by the worker's own code (``app.services.jobs.execute_run``), files
   stored as large objects both ways. A KDE run is shorter than the Gi* run, so the
   queue's fixed cost weighs more.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import signal
import statistics
import sys
import tempfile
import time
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg

from app.core.db import create_engine
from app.core.migrate import upgrade
from app.core.settings import DatabaseSettings, Settings
from app.demo.load import load_demo
from app.schemas.analyses import HotspotRequest
from app.schemas.surfaces import KdeRequest
from app.services import jobs
from app.services.hotspots import run_hotspots
from app.sql import analyses as analyses_sql
from app.worker.queue import make_app
from app.worker.tasks import WORKS
from bench._common import console, launch_worker, step, throwaway_cluster

OUT = Path(__file__).parent / "out" / "jobs.json"
GI_STAR = {"method": "gi_star", "units": {"type": "h3", "resolution": 8}}
# Workers of the benchmark: no schedule (its housekeeping job would count as a job).
WORKER_ENV = {"OBSERVATORY_WORKER__SCHEDULES": "{}", "OBSERVATORY_ANALYSIS__WARM_UP": "false"}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def event_times(url: str, job_ids: list[int]) -> dict[int, dict[str, datetime]]:
    """Per job, the moment of each event (deferred, started, succeeded)."""
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT job_id, type::text, min(at) FROM procrastinate.procrastinate_events "
            "WHERE job_id = ANY(%s) GROUP BY job_id, type",
            [job_ids],
        ).fetchall()
    out: dict[int, dict[str, datetime]] = {}
    for job_id, kind, at in rows:
        out.setdefault(job_id, {})[kind] = at
    return out


async def wait_done(url: str, job_ids: list[int], timeout_s: float = 600) -> None:
    deadline = time.monotonic() + timeout_s
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        while True:
            cur = await conn.execute(
                "SELECT count(*) FROM procrastinate.procrastinate_jobs "
                "WHERE id = ANY(%s) AND status NOT IN ('succeeded', 'failed')",
                [job_ids],
            )
            if (await cur.fetchone())[0] == 0:
                return
            if time.monotonic() > deadline:
                raise RuntimeError("jobs did not finish in time")
            await asyncio.sleep(0.005)


async def latency(settings: Settings, n: int) -> dict[str, float]:
    app = make_app(settings)
    ids = []
    async with app.open_async():
        for _ in range(n):
            job_id = await app.configure_task("noop").defer_async()
            await wait_done(settings.libpq_url, [job_id])
            ids.append(job_id)
    events = event_times(settings.libpq_url, ids)
    ms = [(e["started"] - e["deferred"]).total_seconds() * 1000 for e in events.values()]
    return {"jobs": n, "p50_ms": percentile(ms, 50), "p99_ms": percentile(ms, 99),
            "max_ms": max(ms)}  # fmt: skip


async def throughput(settings: Settings, n: int) -> dict[str, float]:
    app = make_app(settings)
    async with app.open_async():
        ids = await app.configure_task("noop").batch_defer_async(*({} for _ in range(n)))
    await wait_done(settings.libpq_url, ids)
    events = event_times(settings.libpq_url, ids)
    first = min(e["deferred"] for e in events.values())
    last = max(e["succeeded"] for e in events.values())
    seconds = (last - first).total_seconds()
    return {"jobs": n, "seconds": seconds, "jobs_per_s": n / seconds}


async def gi_star(settings: Settings, repeats: int) -> dict[str, Any]:
    body = HotspotRequest.model_validate(GI_STAR)
    parameters = body.model_dump(mode="json")
    request = body.model_dump(mode="json", exclude_unset=True)
    engine = create_engine(settings)
    app = make_app(settings)
    queued, here, server = [], [], []
    try:
        async with app.open_async():
            for repeat in range(repeats + 1):  # the first of each way is a warm-up
                started = time.perf_counter()
                run_id = await jobs.enqueue_run(
                    app, engine, "bench", "hotspots", body.method, parameters, request
                )
                if not await jobs.wait_for_run(engine, run_id, 600, max_pause_s=0.02):
                    raise RuntimeError("the queued run did not finish")
                queued_s = time.perf_counter() - started
                with psycopg.connect(settings.libpq_url) as conn:
                    status, took = conn.execute(
                        "SELECT status, extract(epoch FROM finished_at - created_at) "
                        "FROM analysis_run WHERE id = %s",
                        [run_id],
                    ).fetchone()
                assert status == "completed", status

                started = time.perf_counter()
                await jobs.run_here(
                    engine, "hotspots", body.method, parameters, "bench",
                    lambda run_id, progress: run_hotspots(engine, settings, body, run_id, progress),
                )  # fmt: skip
                if repeat:
                    queued.append(queued_s)
                    server.append(float(took))
                    here.append(time.perf_counter() - started)
    finally:
        await engine.dispose()
    q, h = statistics.median(queued), statistics.median(here)
    return {
        "case": "Gi*, H3 resolution 8, Belize, analytic",
        "through_queue_s": queued, "in_process_s": here, "server_side_s": server,
        "median_queue_s": q, "median_in_process_s": h,
        "overhead_s": q - h, "overhead_pct": 100 * (q - h) / h,
    }  # fmt: skip


async def kde(settings: Settings, repeats: int) -> dict[str, Any]:
    """A KDE run through the queue against the same run computed here (execute_run)."""
    body = KdeRequest()
    parameters = body.model_dump(mode="json")
    engine = create_engine(settings)
    app = make_app(settings)
    queued, here, summary = [], [], {}
    try:
        async with app.open_async():
            for repeat in range(repeats + 1):  # the first of each way is a warm-up
                started = time.perf_counter()
                run_id = await jobs.enqueue_run(
                    app, engine, "bench", "kde", "quartic", parameters, parameters
                )
                if not await jobs.wait_for_run(engine, run_id, 600, max_pause_s=0.02):
                    raise RuntimeError("the queued KDE run did not finish")
                queued_s = time.perf_counter() - started

                started = time.perf_counter()
                async with engine.begin() as conn:
                    insert = analyses_sql.insert_run("kde", "quartic", parameters, "bench")
                    local_id = (await conn.execute(insert)).scalar_one()
                outcome = await jobs.execute_run(
                    engine, settings, local_id, WORKS, request=None, final=True
                )
                if outcome != "completed":
                    raise RuntimeError(f"the in-process KDE run ended {outcome}")
                if repeat:
                    queued.append(queued_s)
                    here.append(time.perf_counter() - started)
        with psycopg.connect(settings.libpq_url) as conn:
            summary = conn.execute(
                "SELECT summary FROM analysis_run WHERE id = %s", [run_id]
            ).fetchone()[0]
    finally:
        await engine.dispose()
    q, h = statistics.median(queued), statistics.median(here)
    return {
        "case": f"KDE, {int(summary.get('incidents', 0)):,} incidents, bandwidth "
        f"{summary.get('bandwidth_m', 0):.0f} m, {summary.get('rows')} x "
        f"{summary.get('cols')} cells",
        "through_queue_s": queued, "in_process_s": here,
        "median_queue_s": q, "median_in_process_s": h,
        "overhead_s": q - h, "overhead_pct": 100 * (q - h) / h,
    }  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.jobs", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--incidents", type=int, default=60_000, help="demo incidents")
    parser.add_argument("--latency-jobs", type=int, default=200, help="jobs for the latency")
    parser.add_argument("--throughput-jobs", type=int, default=1000, help="jobs per throughput")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4], help="worker counts")
    parser.add_argument("--repeats", type=int, default=3, help="Gi* and KDE runs per way")
    parser.add_argument("--output", type=Path, default=OUT, help="JSON results file")
    args = parser.parse_args(argv)

    import spatial

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    base = Path(tempfile.mkdtemp(prefix="observatory-bench-jobs-"))
    try:
        measure(args, base, spatial)
    finally:
        shutil.rmtree(base, ignore_errors=True)


def measure(args: argparse.Namespace, base: Path, spatial: Any) -> None:
    """The four measurements on a throw-away cluster under ``base``."""
    arguments = {**vars(args), "output": str(args.output)}
    results: dict[str, Any] = {"started": datetime.now(UTC).isoformat(), "args": arguments}
    step("starting a throw-away PostgreSQL + PostGIS cluster")
    with throwaway_cluster(base, DatabaseSettings().statement_timeout_ms) as settings:
        upgrade(settings.sqlalchemy_url)
        step(f"loading the demo: boundaries + {args.incidents:,} incidents")

        async def load() -> None:
            engine = create_engine(settings)
            try:
                await load_demo(engine, settings, incidents=args.incidents, actor="bench")
            finally:
                await engine.dispose()

        asyncio.run(load())

        step(f"1/4 latency: {args.latency_jobs} jobs one at a time, one idle worker")
        with launch_worker(settings, base / "latency.log", env=WORKER_ENV):
            time.sleep(1)
            results["latency"] = asyncio.run(latency(settings, args.latency_jobs))
        console.print(results["latency"])

        results["throughput"] = []
        for count in args.workers:
            step(f"2/4 throughput: {args.throughput_jobs} jobs, {count} worker(s)")
            with ExitStack() as stack:
                for i in range(count):
                    log = base / f"throughput-{count}-{i}.log"
                    stack.enter_context(launch_worker(settings, log, env=WORKER_ENV))
                time.sleep(1)
                row = {"workers": count, **asyncio.run(throughput(settings, args.throughput_jobs))}
            results["throughput"].append(row)
            console.print(row)

        step("3/4 Gi* H3 resolution 8: warming the kernels here and in a worker")
        spatial.warm_up()
        warm = {**WORKER_ENV, "OBSERVATORY_ANALYSIS__WARM_UP": "true"}
        with launch_worker(settings, base / "gi.log", env=warm):
            results["gi_star"] = asyncio.run(gi_star(settings, args.repeats))
            console.print(results["gi_star"])
            step("4/4 KDE of every incident: through the queue and in-process")
            results["kde"] = asyncio.run(kde(settings, args.repeats))
        console.print(results["kde"])

    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=2, default=str))
    step(f"results written to {args.output}")


if __name__ == "__main__":
    main()
