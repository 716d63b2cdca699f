"""Schemas for API keys (the secret is returned once, at creation)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

Role = Literal["viewer", "analyst", "editor", "admin", "linker"]


class KeyCreate(BaseModel):
    """A key to create: its role and who or what uses it."""

    role: Role
    name: str = Field(min_length=1, max_length=200, description="who or what uses the key")


class KeyPublic(BaseModel):
    """An API key as listed: never the secret, only its prefix."""

    id: int
    name: str
    prefix: str
    role: Role
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


class KeyCreated(KeyPublic):
    """A key just created, with its secret (returned this once)."""

    key: str = Field(description="The secret; shown only now, stored hashed")
