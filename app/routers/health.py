"""Liveness and readiness."""

from __future__ import annotations

from fastapi import APIRouter
from sqlalchemy import text

from app.deps import EngineDep
from app.errors import ServiceUnavailable

router = APIRouter(tags=["health"])


@router.get("/health", summary="The process is alive")
async def health() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/ready", summary="The database is reachable and migrated")
async def ready(engine: EngineDep) -> dict[str, object]:
    try:
        async with engine.connect() as conn:
            version = (await conn.execute(text("SELECT version_num FROM alembic_version"))).scalar()
            postgis = (await conn.execute(text("SELECT postgis_lib_version()"))).scalar()
    except Exception as exc:  # any failure means "not ready", and says which
        raise ServiceUnavailable(f"database not ready: {exc.__class__.__name__}") from exc
    return {"status": "ready", "database": "ok", "migration": version, "postgis": postgis}
