"""Serving benchmark: vector tiles and GeoJSON items, the service against tipg and raw SQL.

Run ``.venv/bin/python -m bench.serving [--rows 1000000] [--tiles 200]`` (``--quick`` for a
small run).

Everything happens on a throw-away PostgreSQL 15 + PostGIS cluster (temporary data
directory, free port on 127.0.0.1) that is destroyed at the end, also on error, Ctrl-C or
SIGTERM, together with the two servers. The cluster is migrated and loaded with the
categories and the real Belize boundaries, exactly as ``bench.ingest`` does. Nothing is
downloaded except tipg itself (from PyPI, into its own virtualenv ``.venv-tipg``, created
on first use, so its pins never touch the project's venv). No figure is asserted.

Data
----
``--rows`` seeded synthetic incidents (``generate_incidents``: clustered around the towns)
are COPYed into ``incident`` as in ``bench.ingest``'s raw floor, ``unit_ids`` set with the
service's own point-in-polygon UPDATEs (``assign_incident_units``), then the table is
``CLUSTER``ed on its GiST index and ``VACUUM ANALYZE``d. Every server reads that one table.

Requests
--------
* **Tiles**: ``--tiles`` tiles at z14 among the z14 tiles that contain incidents, drawn
  seeded without replacement with a probability proportional to their incidents (where
  the incidents are, not the many rural tiles with one or two), and as many at z10 (all
  of them when fewer contain incidents: Belize spans only a few dozen z10 tiles).
* **Items**: the first page of 1,000 features for ``--bboxes`` bounding boxes, the bounds
  of z12 tiles holding at least 1,000 incidents (drawn seeded), each requested
  ``--item-repeats`` times.

Servers, each a single uvicorn process on 127.0.0.1
----------------------------------------------------
* **ours**: ``app.main:create_app`` (analyst API key; the analysis warm-up is switched off
  so that no numba compilation competes for the cores). Tiles
  ``/tiles/incidents/{z}/{x}/{y}.mvt``, items
  ``/collections/incidents/items?limit=1000&bbox=…`` (``--ours-items rest``:
  ``/incidents?limit=1000&bbox=…`` instead). The tile cache is in process: "uncached" is
  the first fetch of each tile after a fresh start, "cached" the following passes over
  the same tiles (``--cached-passes``).
* **tipg** (latest 1.x from PyPI): ``tipg.main:app`` restricted to ``public.incident``
  (``TIPG_DB_TABLES``), tiles ``/collections/public.incident/tiles/WebMercatorQuad/
  {z}/{x}/{y}``, items ``/collections/public.incident/items``. So that its tiles and pages
  carry the same features as ours: ``properties=`` lists our tile / item properties, and
  ``TIPG_MAX_FEATURES_PER_TILE`` is our feature cap. Its connections get the floor's
  session settings (``SESSION``: parallel query off as ours, DESIGN.md section 7, and JIT
  off); ``--tipg-pg-defaults`` leaves PostgreSQL's defaults. tipg has no tile cache: only
  uncached figures.
* **floor**: raw PostGIS through one psycopg connection (parallel query and JIT off, no
  server-side prepared statements, ``plan_cache_mode=force_custom_plan``): per tile
  ``ST_TileEnvelope`` (with our buffer as margin) transformed to 4326 for the index,
  ``ST_AsMVTGeom(ST_Transform(geom, 3857), …)`` with our extent and buffer, our tile
  properties, our feature cap, ``ST_AsMVT``; per bbox the page as one JSON text built in
  SQL (``json_agg`` of ``json_build_object`` features with our item properties, 1,000
  rows) read as the service reads the first page of a bbox of points: nearest the box's
  centre first, then by id (the 1,001st nearest along the spatial index, then the rows
  within it; ``app.sql.features.select_nearest_items``), with ``ST_Intersects`` as the
  exact box test. tipg returns the box's first 1,000 features by id instead: the same
  number of features of the same box, not the same features. Ours places tile points on
  the tile grid by formula, where the floor calls ``ST_AsMVTGeom`` (the standard way).
  The floor's tiles are points at every zoom; ours aggregates incidents below z12 (the
  tables show the bytes, so the difference is visible). The floor is measured twice,
  right before tipg and right before ours, and each server's ratio is taken against the
  floor of its moment: on a shared machine the load drifts within a run (a floor
  measured minutes earlier once came out at 30 z14 tiles/s, against 79 in another run).

Load: an asyncio HTTP/1.1 keep-alive client (a few dozen lines below, much lighter than
httpx, so that the client does not take the cores the server needs) with ``c`` workers
pulling from one list of URLs, ``Accept-Encoding: identity`` (tipg would otherwise gzip).
Each phase is bounded by its list and by ``--phase-seconds``. A non-200 answer or a broken
connection counts as an error. Before any timed phase, one untimed pass of the floor over
every tile and bbox warms PostgreSQL's buffers, so every server meets the same warm cache.

Printed as tables (requests/s, p50/p99 ms, errors, KiB per answer, features/s for items,
ratios ours/tipg and ours/floor, the issue's targets) and written to
``bench/out/serving.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import geopandas as gpd
import httpx
import numpy as np
import orjson
import psycopg
import shapely
from rich.table import Table

from app.core.migrate import upgrade
from app.core.settings import DatabaseSettings, Settings
from app.demo.incidents import generate_incidents
from app.sql.units import assign_incident_units
from bench import writes as bench_writes
from bench._common import (
    ROOT,
    console,
    create_analyst_key,
    free_port,
    launch_app,
    literal_sql,
    machine_info,
    ratio,
    session_url,
    step,
    throwaway_cluster,
)
from bench.ingest import DISTRICTS, RAW_COLUMNS, copy_file, load_base_data

OUT = Path(__file__).resolve().parent / "out" / "serving.json"
TIPG_VENV = ROOT / ".venv-tipg"
TIPG_REQUIREMENT = "tipg>=1,<2"
TIPG_COLLECTION = "public.incident"
# The floor pass measured right before tipg ("floor" is the one right before ours).
TIPG_FLOOR = "floor (before tipg)"
PAGE_SIZE = 1_000
ZOOMS = (10, 14)
BBOX_ZOOM = 12

# What our incidents layer publishes (app/ogc/layers.py): read from it when it is there, so
# the floor and tipg build the same tiles and pages as the service; these are fallbacks.
TILE_PROPERTIES = (
    "source", "source_id", "category", "occurred_at", "reported_at", "location_precision",
    "victim_sex", "weapon", "perpetrator_relation", "victim_age", "victims_count",
)  # fmt: skip
ITEM_PROPERTIES = (*TILE_PROPERTIES, "attributes", "created_at", "updated_at")
TILE_CAP, TILE_EXTENT, TILE_BUFFER, CLUSTER_BELOW = 20_000, 4096, 64, 12

# Session settings of the floor, and of tipg's connections unless --tipg-pg-defaults.
# JIT: a dense capped tile's plan costs more than jit_above_cost, and compiling it took
# 150-200 ms of a 250-400 ms tile on these machines; the floor is the best raw SQL.
SESSION = {"max_parallel_workers_per_gather": "0", "jit": "off"}

TARGETS = {  # issue 22's
    "uncached z14 tiles vs tipg (c=1)": 1.5,
    "uncached z14 tiles vs floor (c=1)": 1.1,
    "uncached z10 tiles vs tipg (c=16)": 1.5,
    "cached tiles, slowest phase, tiles/s": 5_000,
    "items features/s vs tipg": 5.0,
}


def cached_paths(paths: list[str], by_zoom: dict[int, list[str]], passes: int) -> list[str]:
    """``passes`` passes over the largest zoom's tiles, as many requests at every zoom: Belize
    has ~33 occupied z10 tiles, and 5 passes over them (~0.05 s) measured a hiccup."""
    largest = max(len(p) for p in by_zoom.values())
    return (paths * -(-passes * largest // len(paths)))[: passes * largest]


def our_layer() -> dict[str, Any]:
    """The incidents layer's tile options and properties, from app.ogc.layers if present."""
    try:
        from sqlalchemy.dialects import postgresql

        from app.models import incident
        from app.ogc.layers import incidents_layer

        layer = incidents_layer()
        dialect = postgresql.psycopg.dialect()
        return {
            "source": "app.ogc.layers",
            "tile_properties": [f.name for f in layer.fields if f.in_tiles],
            "item_properties": [f.name for f in layer.fields],
            # Each property as the floor's SQL builds it: a column, or the layer's own
            # expression (the units' codes), on the floor's alias ``i``.
            "item_sql": {
                f.name: str(f.expr.compile(dialect=dialect)).replace("incident.", "i.")
                for f in layer.fields
            },
            # What tipg can give: the table's own columns.
            "tipg_item_properties": [f.name for f in layer.fields if f.expr.table is incident],
            "max_features": layer.tiles.max_features,
            "extent": layer.tiles.extent,
            "buffer": layer.tiles.buffer,
            "cluster_below": layer.tiles.cluster_below,
        }
    except (ImportError, AttributeError):
        return {
            "source": "bench.serving defaults",
            "tile_properties": list(TILE_PROPERTIES),
            "item_properties": list(ITEM_PROPERTIES),
            "item_sql": {p: f"i.{p}" for p in ITEM_PROPERTIES},
            "tipg_item_properties": list(ITEM_PROPERTIES),
            "max_features": TILE_CAP,
            "extent": TILE_EXTENT,
            "buffer": TILE_BUFFER,
            "cluster_below": CLUSTER_BELOW,
        }


# -- results -------------------------------------------------------------------------------


@dataclass
class LoadResult:
    server: str  # ours | tipg | floor
    kind: str  # tiles | items
    variant: str  # z10 / z14 uncached / cached; items
    concurrency: int
    requests: int
    ok: int
    errors: int
    seconds: float
    per_s: float
    p50_ms: float
    p99_ms: float
    mean_kib: float
    features: int = 0
    features_per_s: float = 0.0
    statuses: dict[str, int] = field(default_factory=dict)
    truncated: bool = False  # the phase hit --phase-seconds before its list ended


def summarise(
    server: str,
    kind: str,
    variant: str,
    concurrency: int,
    latencies: list[float],
    sizes: list[int],
    features: list[int],
    statuses: Counter,
    seconds: float,
    requests: int,
    truncated: bool,
) -> LoadResult:
    ok = len(latencies)
    ordered = sorted(latencies)

    def quantile(q: float) -> float:
        if not ordered:
            return math.nan
        return ordered[min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1)] * 1e3

    total_features = sum(features)
    return LoadResult(
        server=server,
        kind=kind,
        variant=variant,
        concurrency=concurrency,
        requests=requests,
        ok=ok,
        errors=requests - ok,
        seconds=seconds,
        per_s=ok / seconds if seconds > 0 else math.nan,
        p50_ms=quantile(0.5),
        p99_ms=quantile(0.99),
        mean_kib=statistics.fmean(sizes) / 1024 if sizes else 0.0,
        features=total_features,
        features_per_s=total_features / seconds if seconds > 0 else 0.0,
        statuses={str(k): v for k, v in sorted(statuses.items())},
        truncated=truncated,
    )


# -- data ----------------------------------------------------------------------------------


def load_incidents(settings: Settings, rows: int, seed: int, directory: Path) -> dict[str, float]:
    """Generate, COPY, assign units, CLUSTER on the GiST index, VACUUM ANALYZE (timed)."""
    times: dict[str, float] = {}
    t = time.perf_counter()
    districts = gpd.read_file(DISTRICTS).rename(columns={"iso_3166_2": "code", "district": "name"})
    frame = generate_incidents(districts, n=rows, seed=seed)
    points = shapely.set_srid(shapely.points(frame["longitude"], frame["latitude"]), 4326)
    raw = frame.assign(geom=shapely.to_wkb(points, hex=True, include_srid=True))
    copy_csv = directory / "incidents.copy.csv"
    raw[list(RAW_COLUMNS)].to_csv(copy_csv, header=False, index=False, na_rep="")
    del frame, raw, points
    times["generate_s"] = time.perf_counter() - t

    with psycopg.connect(session_url(settings), autocommit=True) as conn:
        conn.execute("SET statement_timeout = 0")
        times["copy_s"] = copy_file(conn, "incident", copy_csv)
        t = time.perf_counter()
        for stmt in assign_incident_units():
            conn.execute(literal_sql(stmt, tolerance_m=settings.territory.tolerance_m))
        times["assign_units_s"] = time.perf_counter() - t
        t = time.perf_counter()
        conn.execute("CLUSTER incident USING ix_incident_geom")
        times["cluster_s"] = time.perf_counter() - t
        t = time.perf_counter()
        conn.execute("VACUUM ANALYZE incident")
        times["vacuum_analyze_s"] = time.perf_counter() - t
    copy_csv.unlink()
    return times


def pick_tiles(url: str, zoom: int, count: int, seed: int) -> tuple[list[tuple], dict]:
    """``count`` tiles at ``zoom`` among those holding incidents, drawn (seeded, without
    replacement) with a probability proportional to their incidents: the tiles a map
    shows where the incidents are, not the many rural tiles holding one or two."""
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            """
            WITH p AS (SELECT ST_Transform(geom, 3857) AS g FROM incident
                       WHERE deleted_at IS NULL),
                 t AS (SELECT floor((ST_X(g) + 20037508.342789244) / (40075016.68557849 / 2^%(z)s))
                              AS x,
                              floor((20037508.342789244 - ST_Y(g)) / (40075016.68557849 / 2^%(z)s))
                              AS y
                       FROM p)
            SELECT x::int, y::int, count(*) FROM t GROUP BY 1, 2 ORDER BY 1, 2
            """,
            {"z": zoom},
        ).fetchall()
    weights = np.array([r[2] for r in rows], dtype=float)
    rng = np.random.default_rng(seed + zoom)
    size = min(count, len(rows))
    chosen = sorted(rng.choice(len(rows), size=size, replace=False, p=weights / weights.sum()))
    picked = [(zoom, rows[i][0], rows[i][1]) for i in chosen]
    counts = [rows[i][2] for i in chosen]
    info = {
        "zoom": zoom,
        "occupied_tiles": len(rows),
        "picked": len(picked),
        "points_min": int(min(counts)),
        "points_median": float(np.median(counts)),
        "points_max": int(max(counts)),
    }
    return picked, info


def tile_bounds(z: int, x: int, y: int) -> tuple[float, float, float, float]:
    n = 2**z
    west, east = x / n * 360 - 180, (x + 1) / n * 360 - 180
    north = math.degrees(math.atan(math.sinh(math.pi * (1 - 2 * y / n))))
    south = math.degrees(math.atan(math.sinh(math.pi * (1 - 2 * (y + 1) / n))))
    return west, south, east, north


def pick_bboxes(url: str, count: int, seed: int) -> list[tuple[float, float, float, float]]:
    """Bounds of ``count`` z12 tiles (seeded) holding at least a page of incidents."""
    tiles, _ = pick_tiles(url, BBOX_ZOOM, 100_000, seed)
    with psycopg.connect(url) as conn:
        full = [
            t
            for t in tiles
            if conn.execute(
                "SELECT count(*) >= %s FROM (SELECT 1 FROM incident WHERE deleted_at IS NULL "
                "AND geom && ST_MakeEnvelope(%s, %s, %s, %s, 4326) LIMIT %s) s",
                [PAGE_SIZE, *tile_bounds(*t), PAGE_SIZE],
            ).fetchone()[0]
        ]
    rng = np.random.default_rng(seed)
    chosen = sorted(rng.choice(len(full), size=min(count, len(full)), replace=False).tolist())
    return [tuple(round(v, 6) for v in tile_bounds(*full[i])) for i in chosen]


# -- the floor ------------------------------------------------------------------------------


def floor_tile_sql(layer: dict[str, Any]) -> str:
    props = ", ".join(f"i.{p}" for p in layer["tile_properties"])
    margin = layer["buffer"] / layer["extent"]
    return f"""
        SELECT ST_AsMVT(t.*, 'incidents', {layer["extent"]}, 'geom', 'id') FROM (
            SELECT i.id, {props},
                   ST_AsMVTGeom(ST_Transform(i.geom, 3857), ST_TileEnvelope(%(z)s, %(x)s, %(y)s),
                                {layer["extent"]}, {layer["buffer"]}, true) AS geom
            FROM incident i
            WHERE i.geom && ST_Transform(
                      ST_TileEnvelope(%(z)s, %(x)s, %(y)s, margin => {margin}), 4326)
              AND i.deleted_at IS NULL
            LIMIT {int(layer["max_features"])}
        ) t"""


def floor_page_sql(layer: dict[str, Any]) -> str:
    """The page as one JSON text, read as the service reads the first page of a bbox of
    points (``app.sql.features.select_nearest_items``): nearest the box's centre first
    (squared distance from the coordinates, then id), the 1,001st nearest found along the
    spatial index, then the rows within it."""
    props = ", ".join(f"'{p}', {layer['item_sql'][p]}" for p in layer["item_properties"])
    box = "ST_Intersects(i.geom, ST_MakeEnvelope(%(w)s, %(s)s, %(e)s, %(n)s, 4326))"
    cx, cy = "(%(w)s + %(e)s) / 2", "(%(s)s + %(n)s) / 2"
    centre = f"ST_SetSRID(ST_MakePoint({cx}, {cy}), 4326)"
    dx, dy = f"(ST_X(i.geom) - {cx})", f"(ST_Y(i.geom) - {cy})"
    d2 = f"{dx} * {dx} + {dy} * {dy}"
    return f"""
        WITH edge AS (
            SELECT max(k.d) AS d FROM (
                SELECT {d2} AS d FROM incident i
                WHERE {box} AND i.deleted_at IS NULL
                ORDER BY i.geom <-> {centre} LIMIT {PAGE_SIZE + 1}) k)
        SELECT json_build_object(
            'type', 'FeatureCollection',
            'numberReturned', count(*),
            'features', coalesce(json_agg(p.feature ORDER BY p.d, p.id), '[]'::json))::text
        FROM (
            SELECT i.id, {d2} AS d, json_build_object(
                'type', 'Feature', 'id', i.id,
                'geometry', ST_AsGeoJSON(i.geom, 7)::json,
                'properties', json_build_object({props})) AS feature
            FROM incident i, edge
            WHERE {box} AND i.deleted_at IS NULL
              AND i.geom && ST_Expand({centre}, sqrt(edge.d) * (1 + 1e-9)) AND {d2} <= edge.d
            ORDER BY 2, 1 LIMIT {PAGE_SIZE}
        ) p"""


def floor_connect(settings: Settings) -> psycopg.Connection:
    conn = psycopg.connect(session_url(settings), autocommit=True, prepare_threshold=None)
    conn.execute("SET plan_cache_mode = force_custom_plan")
    for name, value in SESSION.items():
        conn.execute(f"SET {name} = {value}")
    return conn


def run_floor(
    settings: Settings,
    layer: dict[str, Any],
    tiles: dict[int, list[tuple]],
    bboxes: list[tuple],
    repeats: int,
    *,
    warm_only: bool = False,
    server: str = "floor",
) -> list[LoadResult]:
    """Every tile, then every bbox x ``repeats``, one after the other on one connection;
    the results are labelled ``server``."""
    results: list[LoadResult] = []
    tile_sql, page_sql = floor_tile_sql(layer), floor_page_sql(layer)
    with floor_connect(settings) as conn:
        for zoom, zoom_tiles in tiles.items():
            latencies, sizes = [], []
            t0 = time.perf_counter()
            for z, x, y in zoom_tiles:
                t = time.perf_counter()
                mvt = conn.execute(tile_sql, {"z": z, "x": x, "y": y}).fetchone()[0]
                latencies.append(time.perf_counter() - t)
                sizes.append(len(mvt))
            seconds = time.perf_counter() - t0
            results.append(
                summarise(
                    server,
                    "tiles",
                    f"z{zoom}",
                    1,
                    latencies,
                    sizes,
                    [],
                    Counter({200: len(latencies)}),
                    seconds,
                    len(zoom_tiles),
                    False,
                )
            )
        latencies, sizes, features = [], [], []
        t0 = time.perf_counter()
        for w, s, e, n in [b for b in bboxes for _ in range(1 if warm_only else repeats)]:
            t = time.perf_counter()
            page = conn.execute(page_sql, {"w": w, "s": s, "e": e, "n": n}).fetchone()[0]
            latencies.append(time.perf_counter() - t)
            sizes.append(len(page))
            features.append(orjson.loads(page)["numberReturned"])
        seconds = time.perf_counter() - t0
        results.append(
            summarise(
                server,
                "items",
                "bbox",
                1,
                latencies,
                sizes,
                features,
                Counter({200: len(latencies)}),
                seconds,
                len(latencies),
                False,
            )
        )
    return results


# -- the load client -----------------------------------------------------------------------


class HttpConnection:
    """One HTTP/1.1 keep-alive connection: GET, Content-Length or chunked bodies."""

    def __init__(self, port: int, headers: dict[str, str]) -> None:
        self.port = port
        extra = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        self.head = f"Host: 127.0.0.1:{port}\r\n{extra}Accept-Encoding: identity\r\n\r\n"
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            with contextlib.suppress(OSError):
                await self.writer.wait_closed()
        self.reader = self.writer = None

    async def get(self, path: str) -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(
                "127.0.0.1", self.port, limit=1 << 20
            )
        assert self.reader is not None
        self.writer.write(f"GET {path} HTTP/1.1\r\n{self.head}".encode())
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        headers = {}
        for line in lines[1:]:
            if ":" in line:
                k, v = line.split(":", 1)
                headers[k.strip().lower()] = v.strip()
        if "content-length" in headers:
            body = await self.reader.readexactly(int(headers["content-length"]))
        elif headers.get("transfer-encoding", "").lower() == "chunked":
            parts = []
            while True:
                size = int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16)
                if size == 0:
                    while await self.reader.readuntil(b"\r\n") != b"\r\n":
                        pass  # trailers
                    break
                parts.append((await self.reader.readexactly(size + 2))[:-2])
            body = b"".join(parts)
        else:
            body = await self.reader.read()
            await self.close()
        if headers.get("connection", "").lower() == "close":
            await self.close()
        return status, body


async def load(
    port: int,
    headers: dict[str, str],
    paths: Sequence[str],
    concurrency: int,
    time_limit_s: float,
    features_of: dict[str, int] | None = None,
) -> tuple[list[float], list[int], list[int], Counter, float, int, bool]:
    """``concurrency`` workers GET ``paths`` (each once, in order) until done or out of time."""
    queue = iter(paths)
    latencies: list[float] = []
    sizes: list[int] = []
    features: list[int] = []
    statuses: Counter = Counter()
    sent = 0
    deadline = time.perf_counter() + time_limit_s
    truncated = False

    async def worker() -> None:
        nonlocal sent, truncated
        conn = HttpConnection(port, headers)
        try:
            for path in queue:
                if time.perf_counter() > deadline:
                    truncated = True
                    break
                sent += 1
                t = time.perf_counter()
                try:
                    status, body = await conn.get(path)
                except (OSError, ValueError, IndexError, asyncio.IncompleteReadError):
                    statuses["broken"] += 1
                    await conn.close()
                    continue
                elapsed = time.perf_counter() - t
                statuses[status] += 1
                if status == 200:
                    latencies.append(elapsed)
                    sizes.append(len(body))
                    if features_of is not None:
                        features.append(features_of.get(path, 0))
        finally:
            await conn.close()

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    seconds = time.perf_counter() - t0
    return latencies, sizes, features, statuses, seconds, sent, truncated


def run_load(
    server: str,
    kind: str,
    variant: str,
    base: str,
    headers: dict[str, str],
    paths: Sequence[str],
    concurrency: int,
    time_limit_s: float,
    features_of: dict[str, int] | None = None,
) -> LoadResult:
    port = httpx.URL(base).port
    lat, sizes, feats, statuses, seconds, sent, truncated = asyncio.run(
        load(port, headers, paths, concurrency, time_limit_s, features_of)
    )
    result = summarise(
        server, kind, variant, concurrency, lat, sizes, feats, statuses, seconds, sent, truncated
    )
    console.log(
        f"  {server:5} {kind:5} {variant:13} c={concurrency:<2} {result.per_s:8.1f}/s "
        f"p50 {result.p50_ms:7.1f} ms p99 {result.p99_ms:7.1f} ms errors {result.errors}"
        + (f" {result.statuses}" if result.errors else "")
    )
    return result


def page_features(base: str, headers: dict[str, str], paths: Sequence[str]) -> dict[str, int]:
    """Fetch each items page once (untimed, also a warm-up): features per page; checks it."""
    out: dict[str, int] = {}
    with httpx.Client(base_url=base, headers=headers, timeout=120) as client:
        for path in dict.fromkeys(paths):
            response = client.get(path)
            if response.status_code != 200:
                console.log(f"  [red]{response.status_code} for {path}: {response.text[:300]}")
                out[path] = 0
                continue
            out[path] = len(orjson.loads(response.content)["features"])
    return out


# -- the servers ---------------------------------------------------------------------------


def ensure_tipg(venv: Path) -> str:
    """Create ``venv`` with tipg (latest 1.x) and uvicorn unless it is there; its version."""
    python = venv / "bin" / "python"
    if not python.exists():
        step(f"installing {TIPG_REQUIREMENT} into {venv} (first use only)")
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        pip = subprocess.run(
            [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
             TIPG_REQUIREMENT, "uvicorn"],
            capture_output=True, text=True,
        )  # fmt: skip
        if pip.returncode != 0:
            shutil.rmtree(venv, ignore_errors=True)
            raise RuntimeError(f"pip install {TIPG_REQUIREMENT} failed:\n{pip.stderr[-3000:]}")
    return subprocess.run(
        [str(python), "-c", "import tipg; print(tipg.__version__)"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()


@contextlib.contextmanager
def launch_tipg(
    settings: Settings, venv: Path, workdir: Path, layer: dict[str, Any], *, pg_defaults: bool
) -> Iterator[str]:
    """tipg under uvicorn on a free loopback port, on the incident table only."""
    port = free_port()
    url = settings.libpq_url
    if not pg_defaults:  # asyncpg turns unknown DSN query parameters into server settings
        url += "?" + "&".join(f"{k}={v}" for k, v in SESSION.items())
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("TIPG_", "OBSERVATORY_"))},
        "DATABASE_URL": url,
        "TIPG_DB_SCHEMAS": '["public"]',
        "TIPG_DB_TABLES": json.dumps([TIPG_COLLECTION]),
        "TIPG_DB_FUNCTIONS": "[]",
        "TIPG_MAX_FEATURES_PER_TILE": str(layer["max_features"]),
        "TIPG_DEFAULT_FEATURES_LIMIT": "10",
    }
    command = [
        str(venv / "bin" / "python"), "-m", "uvicorn", "tipg.main:app",
        "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning", "--no-access-log",
    ]  # fmt: skip
    log_path = workdir / "tipg.log"
    base = f"http://127.0.0.1:{port}"
    with log_path.open("wb") as log:
        # cwd: tipg's settings read a .env file from the working directory
        server = subprocess.Popen(command, cwd=workdir, env=env, stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + 120
        while True:
            if server.poll() is not None:
                raise RuntimeError(f"tipg exited:\n{log_path.read_text()[-3000:]}")
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{base}/healthz", timeout=5).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(f"tipg not up in 120 s:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.2)
        response = httpx.get(f"{base}/collections/{TIPG_COLLECTION}", timeout=60)
        if response.status_code != 200:
            raise RuntimeError(f"tipg does not publish {TIPG_COLLECTION}: {response.text[:500]}")
        yield base
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


@dataclass
class Server:
    name: str
    tile_paths: dict[int, list[str]]
    item_paths: list[str]
    headers: dict[str, str]


def tile_path(server: str, z: int, x: int, y: int, layer: dict[str, Any]) -> str:
    if server == "ours":
        return f"/tiles/incidents/{z}/{x}/{y}.mvt"
    props = ",".join(layer["tile_properties"])
    return f"/collections/{TIPG_COLLECTION}/tiles/WebMercatorQuad/{z}/{x}/{y}?properties={props}"


def item_path(server: str, bbox: tuple, layer: dict[str, Any], ours_items: str) -> str:
    b = ",".join(f"{v:.6f}" for v in bbox)
    if server == "ours":
        prefix = "/collections/incidents/items" if ours_items == "ogc" else "/incidents"
        return f"{prefix}?limit={PAGE_SIZE}&bbox={b}"
    props = ",".join(layer["tipg_item_properties"])
    return f"/collections/{TIPG_COLLECTION}/items?limit={PAGE_SIZE}&bbox={b}&properties={props}"


def measure_server(
    server: Server,
    base: str,
    concurrencies: Sequence[int],
    args: argparse.Namespace,
    *,
    passes: str,
    restart=None,
) -> list[LoadResult]:
    """Tiles (uncached, and cached when ``passes == 'both'``) per concurrency, then items.

    ``restart`` (ours): a callable returning a fresh base URL, so that every concurrency
    starts with an empty tile cache."""
    results: list[LoadResult] = []
    headers = {**server.headers, "Accept": "application/vnd.mapbox-vector-tile,*/*"}
    for c in concurrencies:
        if restart is not None:
            base = restart()
        for zoom, paths in server.tile_paths.items():
            results.append(
                run_load(
                    server.name,
                    "tiles",
                    f"z{zoom} uncached",
                    base,
                    headers,
                    paths,
                    c,
                    args.phase_seconds,
                )
            )
            if passes == "both":
                results.append(
                    run_load(
                        server.name,
                        "tiles",
                        f"z{zoom} cached",
                        base,
                        headers,
                        cached_paths(paths, server.tile_paths, args.cached_passes),
                        c,
                        args.phase_seconds,
                    )
                )
    if server.item_paths:
        headers = {**server.headers, "Accept": "application/geo+json"}
        features_of = page_features(base, headers, server.item_paths)
        paths = server.item_paths * args.item_repeats
        for c in concurrencies:
            results.append(
                run_load(
                    server.name,
                    "items",
                    "bbox",
                    base,
                    headers,
                    paths,
                    c,
                    args.phase_seconds,
                    features_of,
                )
            )
    return results


def probe(base: str, headers: dict[str, str], path: str) -> tuple[int, str]:
    with contextlib.suppress(httpx.TransportError):
        r = httpx.get(base + path, headers=headers, timeout=60)
        return r.status_code, r.headers.get("content-type", "")
    return 0, ""


# -- report --------------------------------------------------------------------------------


def find(results: list[dict], server: str, kind: str, variant: str, c: int) -> dict | None:
    return next(
        (
            r
            for r in results
            if (r["server"], r["kind"], r["variant"], r["concurrency"])
            == (server, kind, variant, c)
        ),
        None,
    )


def ratios(results: list[dict], concurrencies: Sequence[int]) -> dict[str, float]:
    out: dict[str, float] = {}

    def put(name: str, a: dict | None, b: dict | None, key: str = "per_s") -> None:
        if a and b and a["ok"] and b["ok"] and b[key] > 0:
            out[name] = a[key] / b[key]

    for zoom in ZOOMS:
        floor = find(results, "floor", "tiles", f"z{zoom}", 1)
        tipg_floor = find(results, TIPG_FLOOR, "tiles", f"z{zoom}", 1)
        for c in concurrencies:
            ours = find(results, "ours", "tiles", f"z{zoom} uncached", c)
            tipg = find(results, "tipg", "tiles", f"z{zoom} uncached", c)
            put(f"tiles z{zoom} uncached c={c}: ours/tipg", ours, tipg)
            put(f"tiles z{zoom} uncached c={c}: ours/floor(c=1)", ours, floor)
            put(f"tiles z{zoom} uncached c={c}: tipg/floor(c=1, before tipg)", tipg, tipg_floor)
    floor = find(results, "floor", "items", "bbox", 1)
    tipg_floor = find(results, TIPG_FLOOR, "items", "bbox", 1)
    for c in concurrencies:
        put(
            f"items c={c}: tipg/floor(c=1, before tipg) features/s",
            find(results, "tipg", "items", "bbox", c),
            tipg_floor,
            "features_per_s",
        )
        ours = find(results, "ours", "items", "bbox", c)
        put(
            f"items c={c}: ours/tipg features/s",
            ours,
            find(results, "tipg", "items", "bbox", c),
            "features_per_s",
        )
        put(f"items c={c}: ours/floor(c=1) features/s", ours, floor, "features_per_s")
    return out


def print_summary(result: dict[str, Any]) -> None:
    m, cfg = result["machine"], result["config"]
    console.rule("[bold]bench.serving")
    console.print(
        f"{m['cores']} cores ({m['cpu']}), {m['memory_gib']} GiB · PostgreSQL {m['postgresql']}"
        f" · PostGIS {m['postgis']} (GEOS {m['geos']}) · Python {m['python']} · "
        f"tipg {result['tipg_version']}\n"
        f"{cfg['rows']:,} incidents (seed {cfg['seed']}) · tiles: "
        + "; ".join(
            f"z{t['zoom']} {t['picked']} of {t['occupied_tiles']} occupied "
            f"({t['points_min']:,}-{t['points_max']:,} incidents, median {t['points_median']:,.0f})"
            for t in result["tile_sets"]
        )
        + f" · {len(result['bboxes'])} bboxes x {cfg['item_repeats']} · layer from "
        f"{result['layer']['source']} (cap {result['layer']['max_features']:,}, "
        f"clusters below z{result['layer']['cluster_below']})"
    )
    table = Table(title="Requests (loopback, one uvicorn process each)", title_justify="left")
    for name in (
        "server", "what", "c", "ok", "errors", "req/s", "p50 ms", "p99 ms", "KiB", "features/s"
    ):  # fmt: skip
        table.add_column(name, justify="left" if name in ("server", "what") else "right")
    for r in result["results"]:
        table.add_row(
            r["server"],
            f"{r['kind']} {r['variant']}" + (" (time limit)" if r["truncated"] else ""),
            str(r["concurrency"]),
            str(r["ok"]),
            str(r["errors"]) if not r["errors"] else f"[red]{r['errors']}",
            f"{r['per_s']:,.1f}",
            f"{r['p50_ms']:.1f}",
            f"{r['p99_ms']:.1f}",
            f"{r['mean_kib']:,.1f}",
            f"{r['features_per_s']:,.0f}" if r["kind"] == "items" else "",
        )
    console.print(table)
    ratio_table = Table(title="Ratios (throughput / throughput)", title_justify="left")
    ratio_table.add_column("comparison", justify="left")
    ratio_table.add_column("ratio", justify="right")
    for name, value in result["ratios"].items():
        ratio_table.add_row(name, ratio(value))
    console.print(ratio_table)
    targets = Table(title="The issue's targets (not asserted)", title_justify="left")
    for name in ("target", "wanted", "measured"):
        targets.add_column(name, justify="left" if name == "target" else "right")
    for name, (wanted, got) in result["targets"].items():
        rate = name.endswith("tiles/s")
        shown = "n/a" if got is None else (f"{got:,.0f}/s" if rate else ratio(got))
        want = f"≥ {wanted:,.0f}/s" if rate else f"≥ {ratio(wanted)}"
        mark = "" if got is None else (" ✓" if got >= wanted else " ✗")
        targets.add_row(name, want, shown + mark)
    console.print(targets)
    console.print(f"written to {result['output']}")


def target_figures(results: list[dict], rat: dict[str, float]) -> dict[str, Any]:
    z14 = "tiles z14 uncached c=1"
    cached = [
        r["per_s"] for r in results if r["server"] == "ours" and r["variant"].endswith(" cached")
    ]
    return {
        name: (wanted, got)
        for (name, wanted), got in zip(
            TARGETS.items(),
            (
                rat.get(f"{z14}: ours/tipg"),
                rat.get(f"{z14}: ours/floor(c=1)"),
                rat.get("tiles z10 uncached c=16: ours/tipg"),
                min(cached) if cached else None,
                rat.get("items c=1: ours/tipg features/s"),
            ),
            strict=True,
        )
    }


# -- main ----------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.serving", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--rows", type=int, default=1_000_000, help="incidents to load")
    parser.add_argument("--tiles", type=int, default=200, help="tiles per zoom (z10, z14)")
    parser.add_argument("--bboxes", type=int, default=8, help="items bounding boxes")
    parser.add_argument("--item-repeats", type=int, default=5, help="requests per bbox")
    parser.add_argument("--cached-passes", type=int, default=5, help="passes over cached tiles")
    parser.add_argument("--seed", type=int, default=42, help="seed of data, tiles and bboxes")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16])
    parser.add_argument(
        "--phase-seconds", type=float, default=30.0, help="time limit of one load phase"
    )
    parser.add_argument(
        "--ours-items",
        choices=("ogc", "rest"),
        default="ogc",
        help="our items endpoint: /collections/incidents/items or /incidents",
    )
    parser.add_argument(
        "--tipg-pg-defaults",
        action="store_true",
        help="leave tipg's sessions with PostgreSQL's parallel-query defaults",
    )
    parser.add_argument("--tipg-venv", type=Path, default=TIPG_VENV)
    parser.add_argument(
        "--skip",
        nargs="*",
        default=[],
        choices=("ours", "tipg", "floor", "writes"),
        help="servers (or the phase under writes) to skip",
    )
    parser.add_argument(
        "--writes-seconds",
        type=float,
        default=20.0,
        help='seconds of each half of the phase "under writes" (bench.writes: still, writing)',
    )
    parser.add_argument(
        "--quick", action="store_true", help="100,000 rows, 50 tiles, 4 bboxes, 10 s phases"
    )
    parser.add_argument("--output", type=Path, default=OUT, help="JSON results file")
    args = parser.parse_args(argv)
    if args.quick:
        args.rows, args.tiles, args.bboxes, args.item_repeats = 100_000, 50, 4, 3
        args.phase_seconds = min(args.phase_seconds, 10.0)
        args.writes_seconds = min(args.writes_seconds, 10.0)
    concurrencies = sorted(set(args.concurrency))

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    started = datetime.now(UTC)
    layer = our_layer()
    tipg_version = "skipped"
    if "tipg" not in args.skip:
        tipg_version = ensure_tipg(args.tipg_venv)
    base_dir = Path(tempfile.mkdtemp(prefix="observatory-bench-"))
    results: list[LoadResult] = []
    try:
        step("starting a throw-away PostgreSQL + PostGIS cluster")
        with throwaway_cluster(base_dir, DatabaseSettings().statement_timeout_ms) as settings:
            upgrade(settings.sqlalchemy_url)
            asyncio.run(load_base_data(settings))
            step(f"loading {args.rows:,} incidents (seed {args.seed}): COPY, units, CLUSTER")
            load_times = load_incidents(settings, args.rows, args.seed, base_dir)
            console.log(f"  {', '.join(f'{k} {v:.1f}' for k, v in load_times.items())}")
            machine = machine_info(settings.libpq_url)

            step("picking tiles and bboxes")
            tiles: dict[int, list[tuple]] = {}
            tile_sets = []
            for zoom in ZOOMS:
                tiles[zoom], info = pick_tiles(settings.libpq_url, zoom, args.tiles, args.seed)
                tile_sets.append(info)
            bboxes = pick_bboxes(settings.libpq_url, args.bboxes, args.seed)

            step("warming PostgreSQL's buffers: one untimed floor pass")
            run_floor(settings, layer, tiles, bboxes, 1, warm_only=True)

            def floor_pass(label: str) -> None:
                # Measured right before each server: on a shared machine the load drifts
                # within a run, and a ratio is only fair against a floor of its moment.
                if "floor" in args.skip:
                    return
                step(f"{label}: raw PostGIS tiles and pages on one connection")
                passed = run_floor(settings, layer, tiles, bboxes, args.item_repeats, server=label)
                for r in passed:
                    console.log(
                        f"  {label} {r.kind:5} {r.variant:13} c=1  {r.per_s:8.1f}/s "
                        f"p50 {r.p50_ms:7.1f} ms p99 {r.p99_ms:7.1f} ms"
                    )
                results.extend(passed)

            if "tipg" not in args.skip:
                floor_pass(TIPG_FLOOR)
                step(f"tipg {tipg_version}")
                tipg = Server(
                    "tipg",
                    {z: [tile_path("tipg", *t, layer) for t in ts] for z, ts in tiles.items()},
                    [item_path("tipg", b, layer, args.ours_items) for b in bboxes],
                    {},
                )
                with launch_tipg(
                    settings, args.tipg_venv, base_dir, layer, pg_defaults=args.tipg_pg_defaults
                ) as base:
                    probe(base, {}, tile_path("tipg", 3, 0, 0, layer))  # warm-up, not measured
                    results += measure_server(tipg, base, concurrencies, args, passes="uncached")

            if "ours" not in args.skip:
                floor_pass("floor")
                step("ours: app.main:create_app")
                key = create_analyst_key(settings.libpq_url)
                auth = {"Authorization": f"Bearer {key}"}
                ours = Server(
                    "ours",
                    {z: [tile_path("ours", *t, layer) for t in ts] for z, ts in tiles.items()},
                    [item_path("ours", b, layer, args.ours_items) for b in bboxes],
                    auth,
                )
                env = {"OBSERVATORY_ANALYSIS__WARM_UP": "false"}
                with contextlib.ExitStack() as apps:

                    def restart() -> str:
                        apps.close()
                        app = apps.enter_context(
                            launch_app(settings, base_dir / "uvicorn.log", env=env)
                        )
                        probe(app.base, auth, tile_path("ours", 3, 0, 0, layer))  # warm-up
                        return app.base

                    base = restart()
                    status, ctype = probe(base, auth, ours.tile_paths[ZOOMS[-1]][0])
                    if status == 404:
                        console.log("  [yellow]no tile endpoint yet (404): tiles skipped")
                        ours.tile_paths = {}
                    elif status != 200 or not ("protobuf" in ctype or "mvt" in ctype):
                        console.log(f"  [yellow]first tile answered {status} {ctype!r}")
                    base = restart()  # that probe cached one tile
                    results += measure_server(
                        ours, base, concurrencies, args, passes="both", restart=restart
                    )
    finally:
        shutil.rmtree(base_dir, ignore_errors=True)

    under_writes = None
    if "writes" not in args.skip:
        # Issue 22: map tiles while an editor posts an incident a second, on the demo
        # (districts with index values, a hot spot run), in a cluster of its own.
        step("under writes: bench.writes on the demo")
        options = ["--duration", str(args.writes_seconds), "--seed", str(args.seed)]
        under_writes = bench_writes.measure(bench_writes.parser().parse_args(options))
    rows = [asdict(r) for r in results]
    rat = ratios(rows, concurrencies)
    result: dict[str, Any] = {
        "benchmark": "bench.serving",
        "started_at": started.isoformat(timespec="seconds"),
        "config": {
            "rows": args.rows,
            "tiles": args.tiles,
            "bboxes": args.bboxes,
            "item_repeats": args.item_repeats,
            "cached_passes": args.cached_passes,
            "seed": args.seed,
            "concurrency": concurrencies,
            "phase_seconds": args.phase_seconds,
            "ours_items": args.ours_items,
            "tipg_pg_defaults": args.tipg_pg_defaults,
            "page_size": PAGE_SIZE,
            "load_times_s": {k: round(v, 2) for k, v in load_times.items()},
        },
        "machine": machine,
        "tipg_version": tipg_version,
        "layer": layer,
        "tile_sets": tile_sets,
        "bboxes": bboxes,
        "results": rows,
        "ratios": rat,
        "targets": target_figures(rows, rat),
        "under_writes": under_writes
        and {k: under_writes[k] for k in ("still", "under_writes", "writes", "tiles")},
        "output": str(args.output),
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    print_summary(result)
    if under_writes is not None:
        bench_writes.print_summary(under_writes)


if __name__ == "__main__":
    main()
