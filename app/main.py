"""The application factory: ``create_app(settings)`` builds a fresh app (tests pass their own)."""

from __future__ import annotations

import asyncio
import logging
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.routing import APIRoute

from app.cache import TTLCache
from app.errors import install_error_handlers
from app.routers import (
    analyses,
    boundaries,
    health,
    imports,
    incidents,
    indexes,
    keys,
    rankings,
    stats,
    surfaces,
    units,
)
from app.settings import Settings, get_settings


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
        app.state.jobs = set()
        app.state.warm = asyncio.Event()
        if settings.analysis.warm_up:
            warming = asyncio.create_task(_warm_up(app.state.warm))
        else:
            app.state.warm.set()
        try:
            yield
        finally:
            for task in (*app.state.jobs, *([warming] if settings.analysis.warm_up else [])):
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
    app.add_middleware(
        CORSMiddleware,
        allow_origins=settings.api.cors_origins,
        allow_methods=["GET", "POST", "PATCH", "DELETE", "OPTIONS"],
        allow_headers=["Authorization", "Content-Type"],
        expose_headers=["ETag", "Location"],
    )
    install_error_handlers(app)
    for module in (
        health,
        units,
        boundaries,
        incidents,
        imports,
        keys,
        surfaces,
        analyses,
        stats,
        indexes,
        rankings,
    ):
        app.include_router(module.router)
    logging.basicConfig(level=logging.INFO)
    return app
