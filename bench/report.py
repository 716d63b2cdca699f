"""Periodic report benchmark (issue 20): the quarterly report of the demo, end to end.

Run ``.venv/bin/python -m bench.report [--incidents 60000] [--period 2025Q2]
[--definition quarterly-public] [--repeats 3]``.

Everything happens on a throw-away PostgreSQL 15 + PostGIS cluster (temporary directory,
free port on 127.0.0.1) loaded with the Belize demo as ``make run`` loads it (boundaries,
census, index definitions, synthetic incidents, the demo's hot spot run and the monitors'
alerts). Cluster and files are removed at the end, also on error, Ctrl-C or SIGTERM. No
figure is asserted: the script measures and prints (and writes ``bench/out/report.json``).

1. **End to end**: ``observatory report quarterly --period ... --out report.pdf``, the
   CLI in a fresh process (Python start, imports, the figures from the database, the
   charts and maps, HTML, WeasyPrint's PDF), ``--repeats`` times: wall time, and the
   CLI process's own peak resident memory (``ru_maxrss`` of the CLI, taken by a small
   launcher process: see ``LAUNCHER``). Targets: under 20 s and
   under 500 MiB.
2. **Stages**, in this process, once warm: the document (every figure through the
   service's own answers), the HTML (charts and maps as SVG), the PDF from that HTML, the
   bundle (CSV and XLSX).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from app.core.db import create_engine
from app.core.migrate import upgrade
from app.core.settings import DatabaseSettings, Settings
from app.demo.load import load_demo
from bench._common import console, step, throwaway_cluster

OUT = Path(__file__).parent / "out" / "report.json"
# A small Python process between this one and the CLI: it starts the CLI and writes the
# CLI's own peak (wait4's ru_maxrss, kB) to the file named first. Measured from here, the
# peak would be this process's: Linux folds the memory high-water mark of the process
# image an exec replaces into the new one's ru_maxrss, and subprocess starts the child
# by vfork + exec from this process (which holds the loaded demo, ~700 MiB).
LAUNCHER = """
import os, subprocess, sys
child = subprocess.Popen(sys.argv[2:])
_, status, usage = os.wait4(child.pid, 0)
open(sys.argv[1], "w").write(str(usage.ru_maxrss))
sys.exit(os.waitstatus_to_exitcode(status))
"""
ROOT = Path(__file__).parents[1]


async def _load(settings: Settings, incidents: int) -> None:
    engine = create_engine(settings)
    try:
        await load_demo(engine, settings, incidents=incidents)
    finally:
        await engine.dispose()


def end_to_end(settings: Settings, args: argparse.Namespace, base: Path) -> list[dict]:
    """The CLI in a fresh process, ``args.repeats`` times: seconds and peak MiB each."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OBSERVATORY_")}
    env |= {"OBSERVATORY_DATABASE_URL": settings.libpq_url, "OBSERVATORY_ENVIRONMENT": "test"}
    out = []
    for i in range(args.repeats):
        pdf = base / f"report-{i}.pdf"
        peak_file = base / f"report-{i}.peak"
        command = [sys.executable, "-c", LAUNCHER, str(peak_file),
                   sys.executable, "-m", "app.cli", "report", "quarterly", "--period",
                   args.period, "--out", str(pdf), "--definition", args.definition]  # fmt: skip
        log = base / f"report-{i}.log"
        started = time.perf_counter()
        with log.open("wb") as sink:
            done = subprocess.run(command, cwd=ROOT, env=env, stdout=sink, stderr=sink)
        seconds = time.perf_counter() - started
        if done.returncode != 0:
            raise SystemExit(log.read_text()[-2000:])
        # the CLI's own peak resident memory (kB on Linux), as the launcher measured it
        peak = int(peak_file.read_text()) / 1024
        out.append({"seconds": seconds, "peak_mib": peak, "bytes": pdf.stat().st_size})
        console.print(
            f"  run {i + 1}: {seconds:.1f} s, peak {peak:.0f} MiB, {pdf.stat().st_size:,} B"
        )
    return out


async def stages(settings: Settings, args: argparse.Namespace) -> dict:
    """The document, HTML, PDF and bundle timed apart, in this process (warm: twice)."""
    from app.services.reports import build_here
    from reports import render

    engine = create_engine(settings)
    try:
        times: dict[str, float] = {}
        for _ in range(2):
            t0 = time.perf_counter()
            doc = await build_here(engine, settings, args.definition, args.period)
            t1 = time.perf_counter()
            html = render.render_html(doc)
            t2 = time.perf_counter()
            render.render_pdf(doc, html)
            t3 = time.perf_counter()
            render.bundle(doc)
            t4 = time.perf_counter()
            times = {"document": t1 - t0, "html": t2 - t1, "pdf": t3 - t2, "bundle": t4 - t3}
        return times
    finally:
        await engine.dispose()


def measure(args: argparse.Namespace, base: Path) -> None:
    """Load the demo in a throw-away cluster, then time the report both ways."""
    results: dict = {"incidents": args.incidents, "period": args.period,
                     "definition": args.definition}  # fmt: skip
    with throwaway_cluster(base, DatabaseSettings().statement_timeout_ms) as settings:
        upgrade(settings.sqlalchemy_url)
        step(f"loading the demo ({args.incidents:,} incidents, hot spots, alerts)")
        asyncio.run(_load(settings, args.incidents))
        step(f"end to end: the CLI writes the {args.period} PDF, {args.repeats} times")
        runs = end_to_end(settings, args, base)
        step("stages in this process (warm)")
        results["stages"] = asyncio.run(stages(settings, args))
    results["end_to_end"] = runs
    median = statistics.median(r["seconds"] for r in runs)
    peak = max(r["peak_mib"] for r in runs)
    results["summary"] = {"median_s": median, "peak_mib": peak}
    console.print(f"end to end: median {median:.1f} s (target < 20 s), peak {peak:.0f} MiB "
                  "(target < 500 MiB)")  # fmt: skip
    console.print("stages: " + ", ".join(f"{k} {v:.2f} s" for k, v in results["stages"].items()))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=2, default=str))
    step(f"results written to {args.output}")


def main(argv: list[str] | None = None) -> None:
    """Parse the options and run the benchmark in a temporary directory."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.report", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--incidents", type=int, default=60_000, help="demo incidents")
    parser.add_argument("--period", default="2025Q2", help="the report's quarter")
    parser.add_argument("--definition", default="quarterly-public", help="report definition")
    parser.add_argument("--repeats", type=int, default=3, help="end-to-end runs")
    parser.add_argument("--output", type=Path, default=OUT, help="JSON results file")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    base = Path(tempfile.mkdtemp(prefix="observatory-bench-report-"))
    try:
        measure(args, base)
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
