"""The shared state of one application: everything its routes, middlewares and background
tasks share, declared in one typed place instead of attributes set by name.

``create_app`` builds it before the app starts (caches, the data version) and the
lifespan fills the database side (engine, reader, catalog) and the background tasks.
Starlette reads nothing from ``app.state`` itself, so the object replaces its untyped
``State`` and routes keep reading ``request.app.state.<name>``."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from fastapi import FastAPI

from app.core.cache import TTLCache
from app.core.settings import Settings
from app.core.versions import DataVersion
from app.ogc.tilecache import TileCache

if TYPE_CHECKING:
    from procrastinate import App
    from sqlalchemy.ext.asyncio import AsyncEngine

    from app.core.metrics import Metrics
    from app.services.catalog import Catalog


@dataclass(eq=False)
class AppState:
    """What one application's routes, middlewares and background tasks share."""

    settings: Settings
    # Bumped by every change to published data; tile and count caches key on it.
    data_version: DataVersion = field(default_factory=DataVersion)
    # Validated API keys of this worker (a revocation clears it through NOTIFY).
    key_cache: TTLCache = field(default_factory=lambda: TTLCache(maxsize=1024, ttl_s=60))
    tile_cache: TileCache = field(init=False)
    metrics: Metrics | None = None  # set by the RequestMetrics middleware
    openapi_30: bytes | None = None  # the /api document, built on first request
    # Set by the lifespan once the app starts:
    engine: AsyncEngine = field(init=False)
    reader: AsyncEngine = field(init=False)  # autocommit: reads hold no transaction
    catalog: Catalog = field(init=False)
    # The job queue (app.worker): analyses are deferred to it, worker processes run them.
    queue: App = field(init=False)
    # Its depth, oldest queued job and live workers, read at each /metrics scrape.
    queue_stats: dict | None = None
    # Set once the numba kernels are compiled (/ready waits for it).
    warm: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        self.tile_cache = TileCache(self.settings.tiles.cache_mb * 2**20)


class ObservatoryApp(FastAPI):
    """A FastAPI app whose ``state`` is the typed :class:`AppState`."""

    state: AppState  # type: ignore[assignment]
