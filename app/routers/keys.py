"""API keys over HTTP (admin): create, list, revoke."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from app.deps import Admin, ConnDep, EngineDep
from app.schemas.keys import KeyCreate, KeyCreated, KeyPublic
from app.services import keys as service
from app.sql import keys as sql

router = APIRouter(prefix="/keys", tags=["keys"])


@router.post("", status_code=201, response_model=KeyCreated, summary="Create a key")
async def create_key(body: KeyCreate, engine: EngineDep, conn: ConnDep, who: Admin) -> KeyCreated:
    key = await service.create_key(engine, role=body.role, name=body.name, actor=who.actor)
    prefix = key.split("_")[1]
    row = next(
        r for r in (await conn.execute(sql.select_keys())).mappings() if r["prefix"] == prefix
    )
    return KeyCreated(**row, key=key)


@router.get("", response_model=list[KeyPublic], summary="List keys (never their secrets)")
async def list_keys(conn: ConnDep, _: Admin) -> list[KeyPublic]:
    return [KeyPublic(**r) for r in (await conn.execute(sql.select_keys())).mappings()]


@router.delete("/{key_id}", status_code=204, summary="Revoke a key")
async def revoke_key(request: Request, key_id: int, engine: EngineDep, who: Admin) -> Response:
    await service.revoke_key(engine, key_id, actor=who.actor)
    # At once in this worker; the others drop it when the database's NOTIFY arrives.
    request.app.state.key_cache.clear()
    return Response(status_code=204)
