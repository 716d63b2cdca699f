"""Record linkage benchmark: three agencies x about 100,000 SYNTHETIC death records each.

What is measured: ``linkage.link.link_records`` end to end (validation and preparation,
exact pair counts per blocking rule, u by random sampling, EM, prediction, clustering with
the decision rules), then ``linkage.consolidate.consolidate`` and a three-list
``linkage.capture.loglinear`` estimate, on records from ``linkage.synthetic`` (misspelt and
swapped names, dates off by days, missing ages, deaths seen by one agency only, manners
classified differently). Quality against the generator's truth is printed too. The issue's
target: under 60 s and under 4 GiB on these 2-core machines. Nothing is asserted; the
figures are printed and written to bench/out/linkage.json.

Run: ``.venv/bin/python -m bench.linkage`` (``--per-source 20000`` for a quick run).
Peak memory is the process's maximum resident set size (DuckDB runs in process).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import resource
import time
from pathlib import Path

import pandas as pd

from linkage.capture import loglinear, overlap_cells
from linkage.consolidate import consolidate
from linkage.link import link_records
from linkage.synthetic import AGENCIES, MANNER_SHARE, synthetic_deaths

OUT = Path(__file__).resolve().parent / "out" / "linkage.json"


def _mean_coverage() -> float:
    """Records per death, on average, so that each source holds about --per-source rows."""
    return sum(
        share * agency.coverage[manner]
        for agency in AGENCIES.values()
        for manner, share in MANNER_SHARE.items()
    )


def _pairs(frame: pd.DataFrame, key: str) -> set[tuple[str, str]]:
    pairs: set[tuple[str, str]] = set()
    for _, group in frame.groupby(key):
        if len(group) > 1:
            pairs.update(itertools.combinations(sorted(group["record_id"]), 2))
    return pairs


def _cpu_s() -> float:
    """CPU seconds of this process (user + system, all threads): honest on a busy machine."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def main() -> None:
    """Generate, link, consolidate, estimate; print and save the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-source", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--output", type=Path, default=OUT)
    args = parser.parse_args()

    n_deaths = round(args.per_source * len(AGENCIES) / _mean_coverage())
    t0 = time.perf_counter()
    records = synthetic_deaths(n_deaths, seed=args.seed)
    generate_s = time.perf_counter() - t0
    truth = records[["record_id", "death_id"]]
    inputs = records.drop(columns="death_id")
    print(f"generated {len(records):,} records of {n_deaths:,} deaths in {generate_s:.1f} s")
    print("records by source:", inputs["source"].value_counts().to_dict())

    t0, c0 = time.perf_counter(), _cpu_s()
    result = link_records(inputs, seed=args.seed)
    link_s, link_cpu_s = time.perf_counter() - t0, _cpu_s() - c0
    t0 = time.perf_counter()
    deaths = consolidate(inputs, result.clusters)
    consolidate_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    estimate = loglinear(overlap_cells(deaths))
    capture_s = time.perf_counter() - t0
    peak = _peak_rss_mib()

    found = _pairs(result.clusters, "cluster_id")
    true = _pairs(truth, "death_id")
    hits = len(found & true)
    precision, recall = hits / max(len(found), 1), hits / max(len(true), 1)

    counts = result.counts
    print(f"\npairs compared: {counts['pairs_compared']:,}")
    for rule, n in counts["pairs_by_blocking_rule"].items():
        print(f"  {n:>12,}  {rule}")
    print("wall seconds by phase:", counts["seconds"])
    print("CPU seconds by phase (all threads):", counts["cpu_seconds"])
    print(
        f"link_records {link_s:.1f} s, consolidate {consolidate_s:.1f} s, "
        f"capture {capture_s:.2f} s; total {link_s + consolidate_s + capture_s:.1f} s"
    )
    print(f"link_records CPU time (user + system, all threads): {link_cpu_s:.1f} s")
    print(f"peak resident memory: {peak:,.0f} MiB")
    print(f"load average at the end: {os.getloadavg()}")
    print(f"pairs returned: {len(result.pairs):,} by band {counts['pairs_by_band']}")
    print(f"clusters: {counts['clusters']:,} (true deaths seen: {truth['death_id'].nunique():,})")
    print(f"quality vs truth: precision {precision:.4f} recall {recall:.4f}")
    print(
        f"three-list estimate: {estimate.total:,.0f} deaths "
        f"[{estimate.lower:,.0f}, {estimate.upper:,.0f}] model {estimate.model} "
        f"(true deaths generated: {n_deaths:,})"
    )

    summary = {
        "per_source_target": args.per_source,
        "records": len(records),
        "records_by_source": counts["records_by_source"],
        "pairs_compared": counts["pairs_compared"],
        "pairs_by_blocking_rule": counts["pairs_by_blocking_rule"],
        "cpu_seconds": counts["cpu_seconds"],
        "seconds": {
            **counts["seconds"],
            "link_records": link_s,
            "link_records_cpu": link_cpu_s,
            "consolidate": consolidate_s,
            "capture": capture_s,
            "generate": generate_s,
        },
        "peak_rss_mib": peak,
        "precision": precision,
        "recall": recall,
        "clusters": counts["clusters"],
        "estimate": estimate.as_dict(),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "load_average": os.getloadavg(),
        },
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(summary, indent=2, default=str))
    print(f"\nwritten to {args.output}")


if __name__ == "__main__":
    main()
