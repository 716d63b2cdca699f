"""API keys over HTTP (admin): create, list, rotate, revoke."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from app.deps import Admin, ConnDep, EngineDep
from app.schemas.keys import KeyCreate, KeyCreated, KeyPublic
from app.services import keys as service
from app.sql import keys as sql

router = APIRouter(prefix="/keys", tags=["keys"])


@router.post("", status_code=201, response_model=KeyCreated, summary="Create a key")
async def create_key(body: KeyCreate, engine: EngineDep, conn: ConnDep, who: Admin) -> KeyCreated:
    """Create an API key with a role. The answer holds the secret, shown this once and
    stored only hashed. Admin keys only."""
    key = await service.create_key(engine, role=body.role, name=body.name, actor=who.actor)
    prefix = key.split("_")[1]
    row = next(
        r for r in (await conn.execute(sql.select_keys())).mappings() if r["prefix"] == prefix
    )
    return KeyCreated(**row, key=key)


@router.get("", response_model=list[KeyPublic], summary="List keys (never their secrets)")
async def list_keys(conn: ConnDep, _: Admin) -> list[KeyPublic]:
    """Every API key, revoked ones too: name, role, prefix and when it was made, last used
    and revoked; never a secret. Admin keys only."""
    return [KeyPublic(**r) for r in (await conn.execute(sql.select_keys())).mappings()]


@router.delete("/{key_id}", status_code=204, summary="Revoke a key")
async def revoke_key(request: Request, key_id: int, engine: EngineDep, who: Admin) -> Response:
    """Revoke a key: it stops working at once in this worker, and in the others when the
    database's notification arrives. Admin keys only; 404 for no active key with this id."""
    await service.revoke_key(engine, key_id, actor=who.actor)
    # At once in this worker; the others drop it when the database's NOTIFY arrives.
    request.app.state.key_cache.clear()
    return Response(status_code=204)


@router.post(
    "/{key_id}/rotate",
    status_code=201,
    response_model=KeyCreated,
    summary="Replace a key by a new one with the same name and role (the old one is revoked)",
)
async def rotate_key(
    request: Request, key_id: int, engine: EngineDep, conn: ConnDep, who: Admin
) -> KeyCreated:
    """Replace a key by a new one with the same name and role, in one step: the old one is
    revoked as the new one is made. The answer holds the new secret, shown this once.
    Admin keys only; 404 for no active key with this id."""
    new_id, key = await service.rotate_key(engine, key_id, actor=who.actor)
    request.app.state.key_cache.clear()  # as for a revocation: at once in this worker
    row = (await conn.execute(sql.select_key(new_id))).mappings().one()
    return KeyCreated(**row, key=key)
