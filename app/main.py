"""The application factory: ``create_app(settings)`` builds a fresh app (tests pass their own)."""

from __future__ import annotations

import asyncio
import gc
import logging
from contextlib import asynccontextmanager

import orjson
from fastapi import Depends, FastAPI, Response
from fastapi.middleware.cors import CORSMiddleware
from fastapi.routing import APIRoute
from fastapi.staticfiles import StaticFiles

from app.core.errors import install_error_handlers
from app.core.limits import BodyLimit
from app.core.metrics import RequestMetrics
from app.core.query import refuse_unknown_parameters
from app.core.ratelimit import RATE_LIMIT_HEADERS, RateLimit
from app.core.settings import Settings, get_settings
from app.core.versions import DATA_CHANNEL, KEYS_CHANNEL, BumpOnWrite, listen
from app.core.watchdog import LoopWatchdog, SlowRequests
from app.ogc.links import VaryForwarded
from app.ogc.openapi import openapi_30
from app.ogc.tilecache import CachedTiles, TileHits
from app.routers import (
    alerts,
    analyses,
    audit,
    boundaries,
    categories,
    deaths,
    features,
    health,
    imports,
    incidents,
    indexes,
    jobs,
    keys,
    labels,
    linkage,
    metrics,
    monitors,
    pages,
    qgis,
    rankings,
    reports,
    schedules,
    stats,
    styles,
    surfaces,
    tables,
    tiles,
    units,
)
from app.services.catalog import Catalog
from app.state import AppState, ObservatoryApp


def _operation_id(route: APIRoute) -> str:
    """Stable OpenAPI operation ids: ``<tag>-<function name>``."""
    tag = route.tags[0] if route.tags else "default"
    return f"{tag}-{route.name}"


async def _warm_up(app: FastAPI, state: AppState, settings: Settings) -> None:
    """What a worker's first requests would otherwise wait for, done before ``/ready``
    says yes (issue 22: a worker that got none of a benchmark's warm-up requests paid for
    all of it under load, several seconds of every request it held): FastAPI's routes,
    which it builds router by router at their first request; the pool's connections (each
    a SCRAM handshake); the layer catalog's first build (the index values of the unit
    layers, and mapclassify, which compiles numba kernels at import: 17 s for the first
    district tile on a busy 2-core machine); and, if ``analysis.warm_up``, the statistics
    kernels. A failure only means the first request does it instead."""
    import spatial

    log = logging.getLogger("observatory")
    # What the imports built lives as long as the worker: out of the collector's way (a
    # full collection walked ~460,000 such objects, 0.3-3 s, until the catalog's freeze).
    gc.freeze()

    async def routes() -> None:
        app.openapi()  # builds every router's routes, as their first requests would (0.6 s)

    steps = {
        "routes": routes,
        "pool": lambda: _fill_pool(state.engine, settings.database.pool_size),
        "layer catalog": state.catalog.layers,
    }
    for name, step in steps.items():
        try:
            await step()
        except Exception:
            log.exception("warm-up of the %s failed", name)
    if settings.analysis.warm_up:
        try:
            seconds = await asyncio.to_thread(spatial.warm_up)
            log.info("analysis engine warm (numba kernels ready in %.1f s)", seconds)
        except Exception:
            log.exception("analysis warm-up failed")
    state.warm.set()


async def _fill_pool(engine, size: int) -> None:
    """Open the pool's ``size`` connections now rather than under the first requests."""

    async def one() -> None:
        async with engine.connect():
            await asyncio.sleep(0.05)  # held together, so each is a connection of its own

    await asyncio.gather(*(one() for _ in range(size)))


def create_app(settings: Settings | None = None) -> ObservatoryApp:
    """A new application for ``settings`` (the environment's by default): its middlewares,
    routers and state; the database engine and background tasks start with its lifespan."""
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        from app.core.db import create_engine
        from app.worker.queue import make_app as make_queue

        state.engine = create_engine(settings)
        state.reader = state.engine.execution_options(isolation_level="AUTOCOMMIT")
        state.catalog = Catalog(state.reader, settings, state.data_version)
        state.queue = make_queue(settings)
        await state.queue.open_async()  # connects on the first deferred job
        changes = asyncio.create_task(
            listen(
                settings.libpq_url,
                {
                    DATA_CHANNEL: state.data_version.notified,
                    KEYS_CHANNEL: lambda _: state.key_cache.clear(),
                },
            )
        )
        watchdog = LoopWatchdog(settings.api.loop_block_s)  # None: not watched
        watchdog.start()
        warming = asyncio.create_task(_warm_up(app, state, settings))
        try:
            yield
        finally:
            for task in (changes, warming):
                task.cancel()
            watchdog.stop()
            await state.queue.close_async()
            await state.engine.dispose()

    app = ObservatoryApp(
        title="Crime Observatory API",
        summary="Georeferenced incidents, hot spots and territorial violence indexes on PostGIS.",
        version="0.1.0",
        generate_unique_id_function=_operation_id,
        lifespan=lifespan,
        # Every route refuses a query parameter it does not declare (app.core.query).
        dependencies=[Depends(refuse_unknown_parameters)],
        # FastAPI's OpenTelemetry hooks look for configured providers on every request
        # (~3 µs, a fifth of a cached tile); the service exports its own metrics.
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    state = app.state = AppState(settings)
    if settings.api.trusted_proxy_hops and settings.api.public_url is None:
        # Links then follow the proxies' X-Forwarded-* headers (app.ogc.links); tiles,
        # answered by CachedTiles outside it, hold no link.
        app.add_middleware(VaryForwarded)
    # Innermost of the three: cached tiles still get CORS headers and bump nothing.
    app.add_middleware(CachedTiles)
    if settings.api.rate_limit_per_minute is not None:
        # Outside the tile fast path, so cached tiles count; inside CORS, so browsers
        # can read a 429. Not installed at all while off (the default).
        app.add_middleware(RateLimit, api=settings.api, key_cache=state.key_cache)
    app.add_middleware(
        CORSMiddleware,
        allow_origins=settings.api.cors_origins,
        allow_methods=["GET", "POST", "PATCH", "DELETE", "OPTIONS"],
        allow_headers=["Authorization", "Content-Type"],
        expose_headers=["ETag", "Location", "Content-Crs", "Retry-After", *RATE_LIMIT_HEADERS],
    )
    app.add_middleware(BumpOnWrite, version=state.data_version)
    app.add_middleware(BodyLimit, api=settings.api)  # 413 before any route reads a body
    app.add_middleware(RequestMetrics, state=state)  # outermost: counts cached tiles too
    if settings.api.slow_request_s is not None:
        app.add_middleware(SlowRequests, threshold_s=settings.api.slow_request_s)
    if settings.api.rate_limit_per_minute is None:
        # Outermost of all: a tile this worker holds leaves before the rest run (it does
        # their part itself: metrics, CORS's Vary). A rate limit counts cached tiles.
        app.add_middleware(TileHits)
    install_error_handlers(app)
    for module in (
        pages,  # first: its /rankings route takes only browsers asking for HTML
        features,
        health,
        units,
        boundaries,
        categories,
        incidents,
        imports,
        keys,
        audit,
        metrics,
        surfaces,
        analyses,
        stats,
        indexes,
        tables,
        rankings,
        tiles,
        styles,
        labels,
        qgis,
        jobs,
        schedules,
        monitors,
        alerts,
        reports,
        deaths,
        linkage,
    ):
        app.include_router(module.router)
    app.mount("/static", StaticFiles(directory=pages.STATIC), name="static")

    @app.get("/api", tags=["ogc"], summary="The API definition (OpenAPI 3.0)")
    async def api_definition() -> Response:
        if state.openapi_30 is None:
            state.openapi_30 = orjson.dumps(openapi_30(app, settings))
        return Response(state.openapi_30, media_type="application/vnd.oai.openapi+json;version=3.0")

    # Time and process in every line: a stall is matched across workers, the database's
    # log and a benchmark's timeline (app.core.watchdog).
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s [%(process)d] %(levelname)s:%(name)s:%(message)s"
    )
    return app
