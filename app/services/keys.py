"""API keys: create, list, rotate, revoke, and the demo keys printed by ``observatory up``."""

from __future__ import annotations

import json

from sqlalchemy.ext.asyncio import AsyncEngine

from app import security
from app.core.errors import InvalidParameter, NotFound
from app.core.settings import Settings
from app.models import KEY_ROLES
from app.sql import audit as audit_sql
from app.sql import keys as sql


async def create_key(engine: AsyncEngine, *, role: str, name: str, actor: str) -> str:
    """Make a key with ``role`` and audit it; returns the secret, which is stored only hashed."""
    if role not in KEY_ROLES:
        raise InvalidParameter(f"role must be one of {', '.join(KEY_ROLES)} (got {role!r})")
    key, prefix, key_hash = security.new_key()
    async with engine.begin() as conn:
        key_id = (await conn.execute(sql.insert_key(name, prefix, key_hash, role))).scalar_one()
        after = {"name": name, "prefix": prefix, "role": role}
        await conn.execute(audit_sql.insert_audit(actor, "create", "api_key", key_id, after=after))
    return key


async def list_keys(engine: AsyncEngine) -> list:
    """Every key, revoked ones too, without hashes."""
    async with engine.connect() as conn:
        return list((await conn.execute(sql.select_keys())).all())


async def revoke_key(engine: AsyncEngine, key_id: int, *, actor: str) -> None:
    """Revoke an active key and audit it; 404 when there is none with ``key_id``."""
    async with engine.begin() as conn:
        if (await conn.execute(sql.revoke_key(key_id))).first() is None:
            raise NotFound(f"no active key {key_id}")
        await conn.execute(audit_sql.insert_audit(actor, "revoke", "api_key", key_id))


async def rotate_key(engine: AsyncEngine, key_id: int, *, actor: str) -> tuple[int, str]:
    """Replace an active key by a new one with the same name and role, in one transaction:
    the old key is revoked the moment the new one exists. Returns (new id, new secret)."""
    key, prefix, key_hash = security.new_key()
    async with engine.begin() as conn:
        old = (await conn.execute(sql.select_key_for_rotation(key_id))).first()
        if old is None:
            raise NotFound(f"no active key {key_id}")
        new_id = (
            await conn.execute(sql.insert_key(old.name, prefix, key_hash, old.role))
        ).scalar_one()
        await conn.execute(sql.revoke_key(key_id))
        await conn.execute(
            audit_sql.insert_audit(
                actor, "rotate", "api_key", key_id,
                before={"id": key_id, "prefix": old.prefix, "name": old.name, "role": old.role},
                after={"id": new_id, "prefix": prefix, "name": old.name, "role": old.role},
            )
        )  # fmt: skip
    return new_id, key


async def demo_keys(engine: AsyncEngine, settings: Settings) -> dict[str, str]:
    """One key per role for the demo, kept (mode 600) beside the data so reruns reuse them."""
    path = settings.database.data_dir.resolve().parent / "demo-keys.json"
    keys: dict[str, str] = json.loads(path.read_text()) if path.exists() else {}
    async with engine.connect() as conn:
        for role, key in list(keys.items()):
            prefix = security.split_key(key)
            row = (await conn.execute(sql.select_active_key(prefix or ""))).first()
            if row is None or not security.key_matches(key, row.hash):
                del keys[role]
    for role in KEY_ROLES:
        if role not in keys:
            keys[role] = await create_key(engine, role=role, name=f"demo-{role}", actor="demo")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(keys, indent=2))
    path.chmod(0o600)
    return keys
