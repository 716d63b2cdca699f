"""Schemas for API keys (the secret is returned once, at creation)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

Role = Literal["viewer", "analyst", "editor", "admin"]


class KeyCreate(BaseModel):
    role: Role
    name: str = Field(min_length=1, max_length=200, description="who or what uses the key")


class KeyPublic(BaseModel):
    id: int
    name: str
    prefix: str
    role: Role
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


class KeyCreated(KeyPublic):
    key: str = Field(description="The secret; shown only now, stored hashed")
