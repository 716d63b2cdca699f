"""Liveness and readiness."""

from __future__ import annotations

import asyncio
import contextlib

from fastapi import APIRouter, Request
from sqlalchemy import text

from app.core.errors import ServiceUnavailable
from app.deps import EngineDep
from app.sql import jobs as job_sql

router = APIRouter(tags=["health"])

# How long /ready waits for a worker's warm-up before it says "not yet": a probe right
# after start-up gets its answer when the warm-up is about to end, not a 503 and a retry.
READY_WAIT_S = 3.0


@router.get("/health", summary="The process is alive")
async def health() -> dict[str, str]:
    """200 while the process answers (a liveness probe; it reads nothing)."""
    return {"status": "ok"}


@router.get(
    "/ready",
    summary="The database is reachable and migrated; the worker is warm; workers seen",
)
async def ready(request: Request, engine: EngineDep) -> dict[str, object]:
    """200 once the database is reachable and migrated and this worker is warm (its layer
    catalog built, with the index values of the unit layers, and the analysis kernels
    compiled when ``analysis.warm_up``: a request it then takes is answered without
    waiting for either), with the migration, the PostGIS version and how many workers were
    seen in the last minute; 503 saying which is missing otherwise (a readiness probe).
    With several service workers behind one port, each answers for itself."""
    try:
        async with engine.connect() as conn:
            version = (await conn.execute(text("SELECT version_num FROM alembic_version"))).scalar()
            postgis = (await conn.execute(text("SELECT postgis_lib_version()"))).scalar()
    except Exception as exc:  # any failure means "not ready", and says which
        raise ServiceUnavailable(f"database not ready: {exc.__class__.__name__}") from exc
    warm = request.app.state.warm
    if not warm.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(warm.wait(), READY_WAIT_S)
    if not warm.is_set():
        raise ServiceUnavailable(
            "the service is warming up (the layer catalog and its index values, the "
            "analysis kernels); ready in about a minute on the first start, seconds "
            "afterwards"
        )
    return {
        "status": "ready",
        "database": "ok",
        "migration": version,
        "postgis": postgis,
        "analysis": "warm",
        "workers": await _workers(engine),
    }


async def _workers(engine) -> dict[str, object]:
    """Whether a worker (``observatory worker``) was seen in the last minute: analyses
    queue up until one is. Said, not required: the API serves everything else."""
    try:
        async with engine.connect() as conn:
            rows = (await conn.execute(job_sql.select_workers(60))).mappings().all()
    except Exception as exc:  # e.g. the queue's migration not applied yet
        return {"seen_last_minute": None, "error": exc.__class__.__name__}
    # A count, no heartbeat times: public answers change only when the world does
    # (GET /jobs, admin, has the times).
    return {"seen_last_minute": len(rows)}
