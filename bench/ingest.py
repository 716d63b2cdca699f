"""Ingest and GeoJSON-paging benchmark: the service against its own floors.

Run ``.venv/bin/python -m bench.ingest [--rows 1000000] [--pages 30]``.

Everything happens on a throw-away PostgreSQL 15 + PostGIS cluster (temporary data
directory, free port on 127.0.0.1) that is destroyed at the end, also on error or Ctrl-C.
The cluster is migrated and loaded with the categories and the real Belize boundaries
(country = level 0, six districts = level 1), exactly as the tests do. Nothing is
downloaded. No figure is asserted: the script measures and prints.

What is measured, and why
-------------------------
1. **Import** (the product path). ``N`` seeded synthetic incidents
   (``generate_incidents``) are written to a CSV file, then
   ``app.services.imports.import_incidents`` imports it end to end into the empty
   ``incident`` table with all its indexes: "write" streams the file chunk by chunk:
   read → validate → COPY into a temp staging table → upsert with the point-in-polygon join
   that sets ``unit_ids``, the next chunk's validation overlapping this chunk's write. The
   progress callback timestamps the stages; each stage runs from the end of the
   previous one to its own last report, so the stages add up to the total
   ("finish" is the rest: rejections, batch bookkeeping, audit row, commit).

2. **Floors** (what PostgreSQL alone costs for the same rows into the same table).
   After ``TRUNCATE incident RESTART IDENTITY`` the same rows are COPYed from a
   pre-formatted CSV in COPY format (geometry as hex EWKB), timed around the COPY only.
   import rows/s ÷ raw COPY rows/s is the efficiency of the import path (goal ≥ 0.5x).
   Then the unit assignment the service would otherwise need
   (``app.sql.units.assign_incident_units``: point-in-polygon, then nearest unit within
   the tolerance) runs as UPDATEs over the whole table, so COPY + UPDATE shows what the
   spatial join costs on top of a bare COPY. For reference only, the same COPY into a
   copy of the table without indexes or foreign key shows what the indexes cost (the
   figure DESIGN.md section 7 quotes was measured that way). A CHECKPOINT precedes every timed write
   phase so one phase does not pay for the WAL of the previous one.

3. **GeoJSON items** (the read path). The real app (``app.main:create_app``) is served
   by uvicorn in a subprocess on a free loopback port; with an analyst API key, an httpx
   client follows ``next`` links over ``--pages`` pages of ``GET /incidents?limit=1000``
   at concurrency 1, unfiltered and filtered (``unit=BZ-CY&category=theft``). The floor
   is the page statement the route runs (the incidents layer's ``select_items`` in id
   order, ``app.ogc.items``, compiled with literal binds) executed with psycopg for the
   same pages; also shown is the page statement plus the layer's ``count_items`` (the
   route counts on the first page and keeps the count for the others).
   Before this phase the imported table gets ``VACUUM ANALYZE`` (as autovacuum would).

The phases run in the order import → GeoJSON → floors, so that the pages are read from
the table exactly as the import left it. Results are printed as a table and written to
``bench/out/ingest.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import signal
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import geopandas as gpd
import httpx
import orjson
import psycopg
import shapely
from rich.table import Table
from starlette.datastructures import QueryParams

from app.core.db import create_engine
from app.core.migrate import upgrade
from app.core.settings import DATA_DIR, DatabaseSettings, Settings
from app.demo.incidents import generate_incidents
from app.ogc.crs import parse_crs
from app.ogc.filters import layer_conditions
from app.security import Principal
from app.services.boundaries import import_boundaries
from app.services.categories import load_categories
from app.services.imports import ImportReport, import_incidents
from app.services.incident_rows import ReadOptions
from app.services.incidents import LAYER
from app.sql import features as features_sql
from app.sql.units import assign_incident_units
from bench._common import (
    console,
    create_analyst_key,
    literal_sql,
    machine_info,
    ratio,
    serve_app,
    session_url,
    step,
    throwaway_cluster,
)

OUT = Path(__file__).resolve().parent / "out" / "ingest.json"
BOUNDARIES = DATA_DIR / "belize" / "boundaries"
COUNTRY = BOUNDARIES / "belize_adm0_naturalearth_10m.geojson"
DISTRICTS = BOUNDARIES / "belize_adm1_districts.geojson"
STAGES = ("write",)
PAGE_SIZE = 1_000
FILTERED_QUERY = {"unit": "BZ-CY", "category": "theft"}
# The columns of the raw COPY floor, in file order; the rest take their defaults.
RAW_COLUMNS = (
    "source",
    "source_id",
    "category",
    "occurred_at",
    "reported_at",
    "geom",
    "location_precision",
    "victim_sex",
    "victim_age",
    "victims_count",
    "weapon",
    "perpetrator_relation",
)


# -- results -------------------------------------------------------------------------------


@dataclass
class ImportResult:
    rows: int
    seconds: float
    rows_per_s: float
    stages: dict[str, float]
    report: dict[str, int | str]
    vacuum_analyze_s: float


@dataclass
class FloorResult:
    rows: int
    bare_copy_s: float
    bare_copy_rows_per_s: float
    copy_s: float
    copy_rows_per_s: float
    units_contain_s: float
    units_nearest_s: float
    units_nearest_rows: int
    copy_units_s: float
    copy_units_rows_per_s: float


@dataclass
class PagesResult:
    variant: str
    query: str
    pages: int
    features: int
    mean_page_kib: float
    http_s: float
    http_pages_per_s: float
    http_features_per_s: float
    sql_page_s: float
    sql_page_pages_per_s: float
    sql_page_count_s: float
    sql_page_count_pages_per_s: float
    http_vs_sql_page: float = field(init=False)
    http_vs_sql_page_count: float = field(init=False)

    def __post_init__(self) -> None:
        # Throughput ratio: 1.0 would mean HTTP costs nothing on top of the SQL.
        self.http_vs_sql_page = self.sql_page_s / self.http_s
        self.http_vs_sql_page_count = self.sql_page_count_s / self.http_s


# -- helpers -------------------------------------------------------------------------------


async def load_base_data(settings: Settings) -> None:
    """Categories, the country outline (level 0) and the six districts (level 1)."""
    engine = create_engine(settings)
    try:
        await load_categories(engine, settings.territory.categories_file)
        tolerance = settings.territory.tolerance_m
        await import_boundaries(
            engine, COUNTRY, level=0, code_field="ISO_A2", name_field="ADMIN",
            actor="bench", tolerance_m=tolerance,
        )  # fmt: skip
        await import_boundaries(
            engine, DISTRICTS, level=1, code_field="iso_3166_2", name_field="district",
            actor="bench", tolerance_m=tolerance,
        )  # fmt: skip
    finally:
        await engine.dispose()


def make_files(rows: int, seed: int, directory: Path) -> tuple[Path, Path]:
    """Generate the incidents; write the import CSV and the raw COPY file (untimed)."""
    districts = gpd.read_file(DISTRICTS).rename(columns={"iso_3166_2": "code", "district": "name"})
    frame = generate_incidents(districts, n=rows, seed=seed)
    import_csv = directory / "incidents.csv"
    frame.to_csv(import_csv, index=False)

    points = shapely.set_srid(shapely.points(frame["longitude"], frame["latitude"]), 4326)
    raw = frame.assign(geom=shapely.to_wkb(points, hex=True, include_srid=True))
    copy_csv = directory / "incidents.copy.csv"
    raw[list(RAW_COLUMNS)].to_csv(copy_csv, header=False, index=False, na_rep="")
    return import_csv, copy_csv


# -- 1. import ----------------------------------------------------------------------------


class StageClock:
    """Progress callback that remembers when each stage last reported."""

    def __init__(self) -> None:
        self.start = time.perf_counter()
        self.last: dict[str, float] = {}

    def __call__(self, stage: str, done: int, total: int) -> None:
        self.last[stage] = time.perf_counter()

    def stages(self, end: float) -> dict[str, float]:
        out: dict[str, float] = {}
        previous = self.start
        for stage in STAGES:
            if stage in self.last:
                out[stage] = self.last[stage] - previous
                previous = self.last[stage]
        out["finish"] = end - previous
        return out


def checkpoint(url: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CHECKPOINT")


async def run_import(settings: Settings, csv_path: Path, rows: int) -> ImportResult:
    engine = create_engine(settings)
    try:
        clock = StageClock()
        report: ImportReport = await import_incidents(
            engine, settings, csv_path, ReadOptions(), actor="bench", progress=clock
        )
        end = time.perf_counter()
    finally:
        await engine.dispose()
    seconds = end - clock.start
    with psycopg.connect(settings.libpq_url, autocommit=True) as conn:
        t = time.perf_counter()
        conn.execute("VACUUM ANALYZE incident")
        vacuum_s = time.perf_counter() - t
    return ImportResult(
        rows=rows,
        seconds=seconds,
        rows_per_s=rows / seconds,
        stages=clock.stages(end),
        report=asdict(report),
        vacuum_analyze_s=vacuum_s,
    )


# -- 2. floors -----------------------------------------------------------------------------


def copy_file(conn: psycopg.Connection, table: str, path: Path) -> float:
    """COPY the pre-formatted file into ``table``; return the seconds the COPY took."""
    copy_sql = f"COPY {table} ({', '.join(RAW_COLUMNS)}) FROM STDIN WITH (FORMAT csv)"
    with conn.cursor() as cur, path.open("rb") as fh:
        t = time.perf_counter()
        with cur.copy(copy_sql) as copy:
            while chunk := fh.read(1 << 20):
                copy.write(chunk)
        return time.perf_counter() - t


def run_floors(settings: Settings, copy_csv: Path, rows: int) -> FloorResult:
    url = session_url(settings)
    with psycopg.connect(url, autocommit=True) as conn:
        # Reference only: the same rows into a bare copy of the table (no index, no FK).
        conn.execute("CREATE TABLE incident_bare (LIKE incident INCLUDING DEFAULTS)")
        conn.execute("CHECKPOINT")
        bare_copy_s = copy_file(conn, "incident_bare", copy_csv)
        conn.execute("DROP TABLE incident_bare")

        # CASCADE: risk_zone and incident_h3 refer to incident (empty here).
        conn.execute("TRUNCATE incident RESTART IDENTITY CASCADE")
        conn.execute("CHECKPOINT")
        copy_s = copy_file(conn, "incident", copy_csv)
        copied = conn.execute("SELECT count(*) FROM incident").fetchone()[0]
        assert copied == rows, f"raw COPY loaded {copied} rows, expected {rows}"

        conn.execute("CHECKPOINT")
        contain, nearest = (
            literal_sql(s, tolerance_m=settings.territory.tolerance_m)
            for s in assign_incident_units()
        )
        t = time.perf_counter()
        conn.execute(contain)
        contain_s = time.perf_counter() - t
        t = time.perf_counter()
        nearest_rows = conn.execute(nearest).rowcount
        nearest_s = time.perf_counter() - t
    total = copy_s + contain_s + nearest_s
    return FloorResult(
        rows=rows,
        bare_copy_s=bare_copy_s,
        bare_copy_rows_per_s=rows / bare_copy_s,
        copy_s=copy_s,
        copy_rows_per_s=rows / copy_s,
        units_contain_s=contain_s,
        units_nearest_s=nearest_s,
        units_nearest_rows=nearest_rows,
        copy_units_s=total,
        copy_units_rows_per_s=rows / total,
    )


# -- 3. GeoJSON pages ---------------------------------------------------------------------


def crawl(client: httpx.Client, first: str, pages: int) -> tuple[float, int, int, int]:
    """Follow ``next`` links from ``first``: (seconds, pages, features, bytes)."""
    url: str | None = first
    done = features = size = 0
    t = time.perf_counter()
    while url is not None and done < pages:
        response = client.get(url)
        response.raise_for_status()
        body = orjson.loads(response.content)
        features += len(body["features"])
        size += len(response.content)
        url = next((link["href"] for link in body["links"] if link["rel"] == "next"), None)
        done += 1
    return time.perf_counter() - t, done, features, size


def page_statements(
    conn: psycopg.Connection, settings: Settings, query: dict[str, str], pages: int
) -> tuple[list[str], str]:
    """The page statements ``GET /incidents`` would run for the first ``pages`` pages of
    ``query`` (this walk also warms the cache, as the HTTP warm-up request does), and
    its count statement."""
    analyst = Principal(role="analyst", name="bench")
    conditions = layer_conditions(QueryParams(query), LAYER, settings, analyst)
    visible = [f.name for f in LAYER.fields]
    out = parse_crs(None, settings.territory.projected_crs)
    statements: list[str] = []
    after: int | None = None
    while len(statements) < pages:
        page = features_sql.select_items(
            LAYER, conditions, out, visible, after=after, limit=PAGE_SIZE
        )
        sql = literal_sql(page)
        statements.append(sql)
        rows = conn.execute(sql).fetchall()
        if len(rows) <= PAGE_SIZE:
            break
        after = rows[PAGE_SIZE - 1][0]
    return statements, literal_sql(features_sql.count_items(LAYER, conditions))


def time_sql(conn: psycopg.Connection, statements: list[str], count_sql: str | None) -> float:
    t = time.perf_counter()
    for sql in statements:
        rows = conn.execute(sql).fetchall()
        assert rows and rows[0][1].startswith('{"type":"Feature"')
        if count_sql is not None:
            conn.execute(count_sql).fetchone()
    return time.perf_counter() - t


def run_pages(settings: Settings, pages: int, log_path: Path) -> list[PagesResult]:
    url = session_url(settings)
    key = create_analyst_key(url)
    variants: dict[str, dict[str, str]] = {"all": {}, "filtered": FILTERED_QUERY}
    results: list[PagesResult] = []
    with (
        serve_app(settings, log_path) as base,
        httpx.Client(
            base_url=base, headers={"Authorization": f"Bearer {key}"}, timeout=120
        ) as client,
        psycopg.connect(url, autocommit=True) as conn,
    ):
        for variant, query in variants.items():
            first = str(httpx.URL("/incidents", params={**query, "limit": PAGE_SIZE}))
            client.get(first).raise_for_status()  # warm-up: pool connections, caches
            http_s, done, features, size = crawl(client, first, pages)

            statements, count_sql = page_statements(conn, settings, query, done)
            conn.execute(count_sql).fetchone()
            sql_page_s = time_sql(conn, statements, None)
            sql_page_count_s = time_sql(conn, statements, count_sql)
            results.append(
                PagesResult(
                    variant=variant,
                    query=first,
                    pages=done,
                    features=features,
                    mean_page_kib=size / done / 1024,
                    http_s=http_s,
                    http_pages_per_s=done / http_s,
                    http_features_per_s=features / http_s,
                    sql_page_s=sql_page_s,
                    sql_page_pages_per_s=len(statements) / sql_page_s,
                    sql_page_count_s=sql_page_count_s,
                    sql_page_count_pages_per_s=len(statements) / sql_page_count_s,
                )
            )
    return results


# -- machine and report --------------------------------------------------------------------


def print_summary(result: dict[str, Any]) -> None:
    m, imp, floor = result["machine"], result["import"], result["floors"]
    console.rule("[bold]bench.ingest")
    console.print(
        f"{m['cores']} cores ({m['cpu']}), {m['memory_gib']} GiB · PostgreSQL {m['postgresql']}"
        f" · PostGIS {m['postgis']} (GEOS {m['geos']}) · Python {m['python']}\n"
        f"incident indexes: {', '.join(m['incident_indexes'])}"
    )

    ingest = Table(title=f"Ingest of {imp['rows']:,} incidents", title_justify="left")
    for name in ("path", "seconds", "rows/s", "vs raw COPY"):
        ingest.add_column(name, justify="left" if name == "path" else "right")
    ingest.add_row(
        "import_incidents (CSV → incident)",
        f"{imp['seconds']:.1f}",
        f"{imp['rows_per_s']:,.0f}",
        ratio(imp["rows_per_s"] / floor["copy_rows_per_s"]),
    )
    for stage, seconds in imp["stages"].items():
        ingest.add_row(f"  └ {stage}", f"{seconds:.1f}", "", f"{seconds / imp['seconds']:.0%}")
    ingest.add_row(
        "floor: raw COPY (EWKB hex)",
        f"{floor['copy_s']:.1f}",
        f"{floor['copy_rows_per_s']:,.0f}",
        ratio(1.0),
    )
    ingest.add_row(
        "floor: raw COPY + unit UPDATEs",
        f"{floor['copy_units_s']:.1f}",
        f"{floor['copy_units_rows_per_s']:,.0f}",
        ratio(floor["copy_units_rows_per_s"] / floor["copy_rows_per_s"]),
    )
    ingest.add_row("  └ point-in-polygon UPDATE", f"{floor['units_contain_s']:.1f}", "", "")
    ingest.add_row(
        f"  └ nearest-unit UPDATE ({floor['units_nearest_rows']:,} rows)",
        f"{floor['units_nearest_s']:.1f}",
        "",
        "",
    )
    ingest.add_row(
        "reference: raw COPY, table without indexes/FK",
        f"{floor['bare_copy_s']:.1f}",
        f"{floor['bare_copy_rows_per_s']:,.0f}",
        ratio(floor["bare_copy_rows_per_s"] / floor["copy_rows_per_s"]),
    )
    console.print(ingest)
    report = imp["report"]
    console.print(
        f"import report: received {report['received']:,}, inserted {report['inserted']:,}, "
        f"rejected {report['rejected']:,} · import ÷ raw COPY = "
        f"{imp['rows_per_s'] / floor['copy_rows_per_s']:.2f}x (goal ≥ 0.5x) · "
        f"import ÷ (COPY + unit UPDATEs) = "
        f"{imp['rows_per_s'] / floor['copy_units_rows_per_s']:.2f}x · "
        f"post-import VACUUM ANALYZE {imp['vacuum_analyze_s']:.1f} s (not in the import time)"
    )

    pages = Table(
        title=f"GeoJSON items, {PAGE_SIZE:,} features a page, concurrency 1 "
        "(ratios are HTTP throughput / raw SQL throughput)",
        title_justify="left",
    )
    for name in (
        "variant",
        "pages",
        "KiB/page",
        "HTTP pages/s",
        "HTTP features/s",
        "SQL page pages/s",
        "HTTP/SQL page",
        "SQL page+count pages/s",
        "HTTP/SQL page+count",
    ):
        pages.add_column(name, justify="left" if name == "variant" else "right")
    for p in result["pages"]:
        pages.add_row(
            p["variant"],
            str(p["pages"]),
            f"{p['mean_page_kib']:.0f}",
            f"{p['http_pages_per_s']:.1f}",
            f"{p['http_features_per_s']:,.0f}",
            f"{p['sql_page_pages_per_s']:.1f}",
            ratio(p["http_vs_sql_page"]),
            f"{p['sql_page_count_pages_per_s']:.1f}",
            ratio(p["http_vs_sql_page_count"]),
        )
    console.print(pages)
    for p in result["pages"]:
        console.print(f"{p['variant']}: GET {p['query']}")
    console.print(f"written to {result['output']}")


# -- main ----------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.ingest", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--rows", type=int, default=1_000_000, help="incidents to generate")
    parser.add_argument("--pages", type=int, default=30, help="GeoJSON pages per variant")
    parser.add_argument("--seed", type=int, default=42, help="seed of the incident generator")
    parser.add_argument(
        "--statement-timeout-ms",
        type=int,
        default=DatabaseSettings().statement_timeout_ms,
        help="the service's statement_timeout (default: the service default)",
    )
    parser.add_argument("--output", type=Path, default=OUT, help="JSON results file")
    args = parser.parse_args(argv)

    # SIGTERM unwinds like Ctrl-C, so the cluster and the server are cleaned up.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    started = datetime.now(UTC)
    base = Path(tempfile.mkdtemp(prefix="observatory-bench-"))
    try:
        step(f"generating {args.rows:,} incidents (seed {args.seed}) and writing the CSV files")
        t = time.perf_counter()
        import_csv, copy_csv = make_files(args.rows, args.seed, base)
        generate_s = time.perf_counter() - t

        step("starting a throw-away PostgreSQL + PostGIS cluster")
        with throwaway_cluster(base, args.statement_timeout_ms) as settings:
            upgrade(settings.sqlalchemy_url)
            asyncio.run(load_base_data(settings))
            machine = machine_info(settings.libpq_url)

            step("1/3 import_incidents on the CSV file")
            checkpoint(settings.libpq_url)
            imported = asyncio.run(run_import(settings, import_csv, args.rows))

            step(f"2/3 GeoJSON pages over HTTP and in raw SQL ({args.pages} per variant)")
            pages = run_pages(settings, args.pages, base / "uvicorn.log")

            step("3/3 floors: raw COPY, then the unit assignment UPDATEs")
            floors = run_floors(settings, copy_csv, args.rows)
    finally:
        shutil.rmtree(base, ignore_errors=True)

    result: dict[str, Any] = {
        "benchmark": "bench.ingest",
        "started_at": started.isoformat(timespec="seconds"),
        "config": {
            "rows": args.rows,
            "pages": args.pages,
            "page_size": PAGE_SIZE,
            "seed": args.seed,
            "statement_timeout_ms": args.statement_timeout_ms,
            "generate_and_write_csv_s": round(generate_s, 2),
        },
        "machine": machine,
        "import": asdict(imported),
        "floors": asdict(floors),
        "pages": [asdict(p) for p in pages],
        "ratios": {
            "import_vs_raw_copy": imported.rows_per_s / floors.copy_rows_per_s,
            "import_vs_copy_plus_units": imported.rows_per_s / floors.copy_units_rows_per_s,
        },
        "output": str(args.output),
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    print_summary(result)


if __name__ == "__main__":
    main()
