"""The application factory: ``create_app(settings)`` builds a fresh app (tests pass their own)."""

from __future__ import annotations

import logging
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.routing import APIRoute

from app.cache import TTLCache
from app.errors import install_error_handlers
from app.routers import boundaries, health, imports, incidents, keys, units
from app.settings import Settings, get_settings


def _operation_id(route: APIRoute) -> str:
    """Stable OpenAPI operation ids: ``<tag>-<function name>``."""
    tag = route.tags[0] if route.tags else "default"
    return f"{tag}-{route.name}"


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        from app.db import create_engine

        app.state.engine = create_engine(settings)
        try:
            yield
        finally:
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
    for module in (health, units, boundaries, incidents, imports, keys):
        app.include_router(module.router)
    logging.basicConfig(level=logging.INFO)
    return app
