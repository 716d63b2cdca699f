"""The application factory: ``create_app(settings)`` builds a fresh app (tests pass their own)."""

from __future__ import annotations

import asyncio
import logging
from contextlib import asynccontextmanager

import orjson
from fastapi import FastAPI, Response
from fastapi.middleware.cors import CORSMiddleware
from fastapi.routing import APIRoute
from fastapi.staticfiles import StaticFiles

from app.cache import TTLCache
from app.errors import install_error_handlers
from app.limits import BodyLimit
from app.metrics import RequestMetrics
from app.openapi import openapi_30
from app.ratelimit import RATE_LIMIT_HEADERS, RateLimit
from app.routers import (
    analyses,
    audit,
    boundaries,
    features,
    health,
    imports,
    incidents,
    indexes,
    keys,
    metrics,
    pages,
    qgis,
    rankings,
    stats,
    styles,
    surfaces,
    tiles,
    units,
)
from app.services.catalog import Catalog
from app.settings import Settings, get_settings
from app.tilecache import CachedTiles, TileCache
from app.versions import DATA_CHANNEL, KEYS_CHANNEL, BumpOnWrite, DataVersion, listen


def _operation_id(route: APIRoute) -> str:
    """Stable OpenAPI operation ids: ``<tag>-<function name>``."""
    tag = route.tags[0] if route.tags else "default"
    return f"{tag}-{route.name}"


async def _warm_up(done: asyncio.Event) -> None:
    """Compile the statistics kernels in a thread while the service already answers."""
    import spatial

    log = logging.getLogger("observatory")
    try:
        seconds = await asyncio.to_thread(spatial.warm_up)
        log.info("analysis engine warm (numba kernels ready in %.1f s)", seconds)
    except Exception:  # a failed warm-up only means the first analysis compiles instead
        log.exception("analysis warm-up failed")
    done.set()


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        from app.db import create_engine

        app.state.engine = create_engine(settings)
        app.state.reader = app.state.engine.execution_options(isolation_level="AUTOCOMMIT")
        app.state.catalog = Catalog(app.state.reader, settings, version)
        changes = asyncio.create_task(
            listen(
                settings.libpq_url,
                {DATA_CHANNEL: version.bump, KEYS_CHANNEL: app.state.key_cache.clear},
            )
        )
        app.state.jobs = set()
        app.state.warm = asyncio.Event()
        if settings.analysis.warm_up:
            warming = asyncio.create_task(_warm_up(app.state.warm))
        else:
            app.state.warm.set()
        try:
            yield
        finally:
            background = [changes, *app.state.jobs]
            for task in (*background, *([warming] if settings.analysis.warm_up else [])):
                task.cancel()
            await app.state.engine.dispose()

    app = FastAPI(
        title="Crime Observatory API",
        summary="Georeferenced incidents, hot spots and territorial violence indexes on PostGIS.",
        version="0.1.0",
        generate_unique_id_function=_operation_id,
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.count_cache = TTLCache(maxsize=1024, ttl_s=300)
    app.state.key_cache = TTLCache(maxsize=1024, ttl_s=60)
    app.state.tile_cache = TileCache(settings.tiles.cache_mb * 2**20)
    # Bumped by every change to published data; tile and count caches key on it.
    version = app.state.data_version = DataVersion()
    # Innermost of the three: cached tiles still get CORS headers and bump nothing.
    app.add_middleware(CachedTiles)
    if settings.api.rate_limit_per_minute is not None:
        # Outside the tile fast path, so cached tiles count; inside CORS, so browsers
        # can read a 429. Not installed at all while off (the default).
        app.add_middleware(RateLimit, api=settings.api, key_cache=app.state.key_cache)
    app.add_middleware(
        CORSMiddleware,
        allow_origins=settings.api.cors_origins,
        allow_methods=["GET", "POST", "PATCH", "DELETE", "OPTIONS"],
        allow_headers=["Authorization", "Content-Type"],
        expose_headers=["ETag", "Location", "Content-Crs", "Retry-After", *RATE_LIMIT_HEADERS],
    )
    app.add_middleware(BumpOnWrite, version=version)
    app.add_middleware(BodyLimit, api=settings.api)  # 413 before any route reads a body
    app.add_middleware(RequestMetrics, state=app.state)  # outermost: counts cached tiles too
    install_error_handlers(app)
    for module in (
        pages,  # first: its /rankings route takes only browsers asking for HTML
        features,
        health,
        units,
        boundaries,
        incidents,
        imports,
        keys,
        audit,
        metrics,
        surfaces,
        analyses,
        stats,
        indexes,
        rankings,
        tiles,
        styles,
        qgis,
    ):
        app.include_router(module.router)
    app.mount("/static", StaticFiles(directory=pages.STATIC), name="static")

    @app.get("/api", tags=["ogc"], summary="The API definition (OpenAPI 3.0)")
    async def api_definition() -> Response:
        if not hasattr(app.state, "openapi_30"):
            app.state.openapi_30 = orjson.dumps(openapi_30(app, settings))
        return Response(
            app.state.openapi_30, media_type="application/vnd.oai.openapi+json;version=3.0"
        )

    logging.basicConfig(level=logging.INFO)
    return app
