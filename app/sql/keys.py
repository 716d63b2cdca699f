"""SQL for API keys."""

from __future__ import annotations

from sqlalchemy import Select, Update, func, insert, or_, select, text, update
from sqlalchemy.sql.dml import Insert

from app.models import api_key


def insert_key(name: str, prefix: str, key_hash: str, role: str) -> Insert:
    """INSERT a key (its hash, never the secret); returns its id."""
    return (
        insert(api_key)
        .values(name=name, prefix=prefix, hash=key_hash, role=role)
        .returning(api_key.c.id)
    )


def select_active_key(prefix: str) -> Select:
    """SELECT the unrevoked key with ``prefix``: id, name, hash and role."""
    return select(api_key.c.id, api_key.c.name, api_key.c.hash, api_key.c.role).where(
        api_key.c.prefix == prefix, api_key.c.revoked_at.is_(None)
    )


def touch_key(key_id: int) -> Update:
    """Record use, at most once a minute per key: a write on every request would cost more
    than many of the requests themselves."""
    recent = api_key.c.last_used_at > func.now() - text("interval '1 minute'")
    return (
        update(api_key)
        .where(api_key.c.id == key_id, or_(api_key.c.last_used_at.is_(None), ~recent))
        .values(last_used_at=func.now())
    )


def select_keys() -> Select:
    """SELECT every key, revoked ones too, without hashes."""
    return select(
        api_key.c.id,
        api_key.c.name,
        api_key.c.prefix,
        api_key.c.role,
        api_key.c.created_at,
        api_key.c.last_used_at,
        api_key.c.revoked_at,
    ).order_by(api_key.c.id)


def revoke_key(key_id: int) -> Update:
    """Revoke an active key; returns its id (no row: absent or revoked already)."""
    return (
        update(api_key)
        .where(api_key.c.id == key_id, api_key.c.revoked_at.is_(None))
        .values(revoked_at=func.now())
        .returning(api_key.c.id)
    )


def select_key_for_rotation(key_id: int) -> Select:
    """An active key, locked: two rotations of one key cannot both succeed."""
    return (
        select(api_key.c.id, api_key.c.name, api_key.c.prefix, api_key.c.role)
        .where(api_key.c.id == key_id, api_key.c.revoked_at.is_(None))
        .with_for_update()
    )


def select_key(key_id: int) -> Select:
    """SELECT one key as listed."""
    return select_keys().where(api_key.c.id == key_id)
