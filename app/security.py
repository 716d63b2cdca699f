"""API keys: generation, hashing and the role ladder viewer < analyst < editor < admin
(and ``linker`` beside it: an analyst who also reads the deaths' identifiers).

Keys are 192-bit random secrets, so a plain SHA-256 is enough to store them (a slow
password hash protects low-entropy secrets, which these are not).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
from dataclasses import dataclass

from app.models import ROLES

KEY_PREFIX = "obs"
# Roles off the ladder, and the ladder role each ranks as (app.models.KEY_ROLES).
SIDE_ROLES = {"linker": "analyst"}


@dataclass(frozen=True)
class Principal:
    """Who is calling: an API key's id, name and role, or the anonymous public."""

    role: str | None
    key_id: int | None = None
    name: str = "public"

    @property
    def actor(self) -> str:
        """The caller as the audit log names it: ``key:<id>:<name>``, or ``public``."""
        return f"key:{self.key_id}:{self.name}" if self.key_id else self.name

    def has(self, role: str) -> bool:
        """Whether the caller's role is ``role`` or above it (``ROLES`` is in rising order).

        ``linker`` is off the ladder (issue 21): only linker and admin keys have it, and
        a linker key ranks as an analyst on the ladder (it reads what analysts read, and
        the death records' identifiers besides; it is not an editor)."""
        if self.role is None:
            return False
        if role in SIDE_ROLES:
            return self.role in (role, "admin")
        mine = SIDE_ROLES.get(self.role, self.role)
        return ROLES.index(mine) >= ROLES.index(role)


PUBLIC = Principal(role=None)


def new_key() -> tuple[str, str, str]:
    """Return (key, prefix, hash); only the prefix and the hash are stored."""
    prefix = secrets.token_hex(4)
    key = f"{KEY_PREFIX}_{prefix}_{secrets.token_urlsafe(24)}"
    return key, prefix, hash_key(key)


def hash_key(key: str) -> str:
    """The SHA-256 hex digest under which a key is stored and looked up."""
    return hashlib.sha256(key.encode()).hexdigest()


def key_from_header(authorization: str) -> str | None:
    """The API key of an ``Authorization`` header: ``Bearer <key>``, or ``Basic`` with the
    key as the password (any user name). Basic is for clients that can send no other
    header, QGIS 3.22 and 3.23 among them (their "Basic" authentication method). None
    for any other scheme."""
    scheme, _, credentials = authorization.strip().partition(" ")
    credentials = credentials.strip()
    if scheme.lower() == "bearer":
        return credentials
    if scheme.lower() == "basic":
        try:
            decoded = base64.b64decode(credentials, validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            return None
        return decoded.partition(":")[2]
    return None


def split_key(key: str) -> str | None:
    """The prefix of a well-formed key, else None."""
    parts = key.split("_", 2)
    if len(parts) != 3 or parts[0] != KEY_PREFIX or len(parts[1]) != 8:
        return None
    return parts[1]


def key_matches(key: str, stored_hash: str) -> bool:
    """Whether ``key`` hashes to ``stored_hash``, compared in constant time."""
    return hmac.compare_digest(hash_key(key), stored_hash)
