"""Prometheus metrics of a worker: requests and latencies per route template, the tile
cache, the connection pool and the data version.

Requests are timed by :class:`RequestMetrics`, a pure ASGI middleware (Starlette's
``BaseHTTPMiddleware`` would buffer streamed bodies through a task group and cost more
than a cached tile). Requests are labelled by the route *template*
(``/incidents/{incident_id}``), never by the raw path: one series per route, not one per
incident or tile. The gauges are read from ``app.state`` when ``/metrics`` is scraped,
so serving requests pays nothing for them.

Several workers (``observatory serve --workers N``): by default each worker keeps its
own numbers and a scrape sees the worker that answered it. Set
``PROMETHEUS_MULTIPROC_DIR`` to an empty directory before the service starts and the
request counters and histograms of all workers are summed (prometheus_client's
multiprocess mode); the live gauges still describe the answering worker.
"""

from __future__ import annotations

import logging
import os
import time
from bisect import bisect_left
from collections.abc import Iterator
from itertools import accumulate
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram
from prometheus_client import multiprocess as prometheus_multiprocess
from prometheus_client.exposition import generate_latest
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.core.errors import database_unavailable, unavailable

__all__ = ["CONTENT_TYPE_LATEST", "Metrics", "RequestMetrics"]

log = logging.getLogger("observatory")

# prometheus_client's own switch; it must be set before the process starts, so it is an
# environment variable and not a Settings field.
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

# From a cached tile (~0.2 ms) to a long analysis or import (tens of seconds).
LATENCY_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60,
)  # fmt: skip

# Cached tiles are answered before routing (app.ogc.tilecache.CachedTiles), so they carry no
# route: they get the templates of the tile routes they stand for.
XYZ_TILE = "/tiles/{layer_id}/{z}/{x}/{y}.mvt"
OGC_TILE = "/collections/{collection_id}/tiles/WebMercatorQuad/{z}/{y}/{x}"
UNMATCHED = "unmatched"  # 404s for unknown paths: one series, whatever was asked


class Metrics:
    """The instruments of one application (tests build many apps in one process, so
    nothing lives in prometheus_client's global registry).

    A single process records requests in plain lists (:class:`RequestStats`): a cached
    tile takes ~60 µs in process, and prometheus_client's locked Counter and Histogram
    cost ~3 µs of it per request, against ~0.5 µs here. In multiprocess mode the values
    must live in prometheus_client's shared files, so its instruments are used there.
    """

    def __init__(self, state: Any) -> None:
        self.multiprocess = bool(os.environ.get(MULTIPROC_ENV))
        self.registry = CollectorRegistry(auto_describe=False)
        self.state_collector = StateCollector(state)
        self.registry.register(self.state_collector)
        if self.multiprocess:
            self.observe = SharedRequestStats(self.registry).observe
        else:
            stats = RequestStats()
            self.registry.register(stats)
            self.observe = stats.observe

    def exposition(self) -> bytes:
        """The text format of every metric (all workers' requests in multiprocess mode)."""
        if not self.multiprocess:
            return generate_latest(self.registry)
        registry = CollectorRegistry(auto_describe=False)
        prometheus_multiprocess.MultiProcessCollector(registry)
        registry.register(self.state_collector)
        return generate_latest(registry)


REQUESTS = (
    "observatory_http_requests",
    "HTTP requests answered, by method, route template and status",
)
LATENCY = (
    "observatory_http_request_duration_seconds",
    "Time from a request's arrival to the end of its response body",
)


class RequestStats(Collector):
    """Request counts and latency histograms of this process, exposed at scrape time.

    Each (method, route, status) series is one list: a count per latency bucket (the last
    one +Inf) and the sum of the latencies. Requests run on the event loop's thread, so
    no lock is needed.
    """

    def __init__(self) -> None:
        self.series: dict[tuple[str, str, int], list[float]] = {}

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        values = self.series.get((method, route, status))
        if values is None:
            values = self.series[(method, route, status)] = [0.0] * (len(LATENCY_BUCKETS) + 2)
        values[bisect_left(LATENCY_BUCKETS, seconds)] += 1
        values[-1] += seconds

    def collect(self) -> Iterator[Metric]:
        requests = CounterMetricFamily(*REQUESTS, labels=["method", "route", "status"])
        latency = HistogramMetricFamily(*LATENCY, labels=["method", "route"])
        by_route: dict[tuple[str, str], list[float]] = {}
        for (method, route, status), values in list(self.series.items()):
            requests.add_metric([method, route, str(status)], sum(values[:-1]))
            total = by_route.setdefault((method, route), [0.0] * len(values))
            for i, v in enumerate(values):
                total[i] += v
        bounds = [*(str(b) for b in LATENCY_BUCKETS), "+Inf"]
        for labels, values in by_route.items():
            cumulative = list(accumulate(values[:-1]))
            latency.add_metric(
                list(labels), list(zip(bounds, cumulative, strict=True)), sum_value=values[-1]
            )
        yield requests
        yield latency


class SharedRequestStats:
    """The same series with prometheus_client's instruments (multiprocess mode)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        labels = ["method", "route", "status"]
        self.requests = Counter(*REQUESTS, labels, registry=registry)
        self.latency = Histogram(
            *LATENCY, ["method", "route"], buckets=LATENCY_BUCKETS, registry=registry
        )

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        self.requests.labels(method, route, str(status)).inc()
        self.latency.labels(method, route).observe(seconds)


class StateCollector(Collector):
    """Live values read from the application's state at scrape time."""

    def __init__(self, state: Any) -> None:
        self.state = state

    def collect(self) -> Iterator[Metric]:
        state = self.state
        cache = getattr(state, "tile_cache", None)
        if cache is not None:
            yield CounterMetricFamily(
                "observatory_tile_cache_hits", "Tiles answered from this worker's cache",
                value=cache.hits,
            )  # fmt: skip
            yield CounterMetricFamily(
                "observatory_tile_cache_misses", "Tiles looked up and not found in the cache",
                value=cache.misses,
            )  # fmt: skip
            yield GaugeMetricFamily(
                "observatory_tile_cache_bytes", "Bytes the cached tiles may hold",
                value=cache.bytes,
            )  # fmt: skip
            yield GaugeMetricFamily(
                "observatory_tile_cache_max_bytes", "Size bound of the tile cache",
                value=cache.max_bytes,
            )  # fmt: skip
        engine = getattr(state, "engine", None)
        if engine is not None:
            pool = engine.sync_engine.pool
            yield GaugeMetricFamily(
                "observatory_db_pool_size", "Connections the pool keeps", value=pool.size()
            )
            yield GaugeMetricFamily(
                "observatory_db_pool_checked_out", "Connections in use by requests",
                value=pool.checkedout(),
            )  # fmt: skip
            yield GaugeMetricFamily(
                "observatory_db_pool_overflow", "Connections open beyond the pool size",
                value=max(pool.overflow(), 0),
            )  # fmt: skip
        version = getattr(state, "data_version", None)
        if version is not None:
            yield GaugeMetricFamily(
                "observatory_data_version",
                "Changes to published data seen by this worker (caches key on it)",
                value=version.value,
            )
        queue = getattr(state, "queue_stats", None)
        if queue is not None:  # read from the database by the /metrics route
            yield GaugeMetricFamily(
                "observatory_queue_depth", "Jobs queued and not started (all queues)",
                value=queue["queued"],
            )  # fmt: skip
            yield GaugeMetricFamily(
                "observatory_queue_running", "Jobs running in a worker", value=queue["running"]
            )
            yield GaugeMetricFamily(
                "observatory_queue_oldest_queued_seconds",
                "Age of the oldest queued job (0 when none waits)",
                value=float(queue["oldest_queued_s"]),
            )
            yield GaugeMetricFamily(
                "observatory_workers_live", "Workers seen in the last minute",
                value=queue["workers"],
            )  # fmt: skip


async def refresh_queue_stats(state: Any) -> None:
    """Read the job queue's depth, oldest queued job and live workers into ``state``
    (the gauges above); left out of the scrape when the database does not answer."""
    from sqlalchemy.exc import SQLAlchemyError

    from app.sql.jobs import QUEUE_STATS

    try:
        async with state.reader.connect() as conn:
            state.queue_stats = dict((await conn.execute(QUEUE_STATS)).mappings().one())
    except (SQLAlchemyError, OSError) as exc:
        log.warning("queue metrics unavailable: %s", exc.__class__.__name__)
        state.queue_stats = None


def route_template(scope: Scope) -> str:
    """The route a request matched, as its template; a fixed label for the rest."""
    route = scope.get("route")
    if route is not None:
        template = getattr(route, "path_format", None)
        if template is not None:
            return template
        return getattr(route, "path", UNMATCHED) + "/{path}"  # a mount (/static)
    # No route ran: a tile from the cache (app.ogc.tilecache.CachedTiles answers only known
    # layers and well-formed z/x/y), else an unknown path. String tests, not the regular
    # expressions: this runs on every cached tile.
    path = scope["path"]
    if path.startswith("/tiles/") and path.endswith(".mvt"):
        return XYZ_TILE
    if "/tiles/WebMercatorQuad/" in path and path.startswith("/collections/"):
        return OGC_TILE
    return UNMATCHED


class RequestMetrics:
    """ASGI middleware: count and time every HTTP request by route template and status,
    and hold back the start of a streamed response until its data flows.

    Counting: it is the outermost middleware, so cached tiles are counted too; the app's
    ``state`` receives the :class:`Metrics` that ``/metrics`` exposes.

    Holding: a streamed response (one without ``Content-Length``) goes out only with its
    second body chunk or its end. The items of ``/collections/{id}/items`` write their
    opening bytes before they read the database; had the status line left with them, an
    outage could only cut the body short. Held back, a stream that fails at its first
    read still answers a clean 503 problem (``app.core.errors``). Responses with a length,
    nearly all, pass straight through.

    Both duties share one wrapper of ``send``: a second middleware layer measured ~2 µs
    more per cached tile (``bench/metrics_overhead.py``).
    """

    def __init__(self, app: ASGIApp, state: Any) -> None:
        self.app = app
        self.metrics = state.metrics = Metrics(state)

    # One closure on the hot path of every cached tile: split into methods it would cost a
    # call per message, so its complexity (11) stays above ruff's 10 on purpose.
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:  # noqa: C901
        """Serve the request, time it, and hold a streamed answer's start (see above)."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # what the client gets when the app raises before answering
        passing = False
        held: list[Message] = []

        async def guarded_send(message: Message) -> None:
            nonlocal status, passing
            if passing:
                await send(message)
                return
            if message["type"] == "http.response.start":
                status = message["status"]
                for name, _ in message.get("headers", ()):  # a loop: any() costs 2x here
                    if name == b"content-length":
                        passing = True
                        await send(message)
                        return
                held.append(message)
                return
            held.append(message)
            # start + two chunks, or a body that ended: the stream has read its data.
            if len(held) >= 3 or not message.get("more_body", False):
                passing = True
                for queued in held:
                    await send(queued)
                held.clear()

        try:
            await self.app(scope, receive, guarded_send)
        except Exception as exc:
            if passing or not held or not database_unavailable(exc):
                raise
            log.warning("database unavailable during a stream: %s", exc.__class__.__name__)
            status = 503
            await unavailable(exc)(scope, receive, send)
        finally:
            self.metrics.observe(
                scope["method"], route_template(scope), status, time.perf_counter() - started
            )
