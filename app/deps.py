"""FastAPI dependencies: settings, the layer catalog, a connection in a transaction, the
caller and its role."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Path, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from app import security
from app.core.errors import Forbidden, Unauthorized
from app.core.settings import Settings
from app.services.catalog import Catalog
from app.sql import keys as keys_sql


# Coroutines, though they do not await: FastAPI runs a plain ``def`` dependency in its
# thread pool, and each such hop cost more than a sparse tile (``bench/serving.py``).
async def get_settings(request: Request) -> Settings:
    return request.app.state.settings


async def get_engine(request: Request) -> AsyncEngine:
    return request.app.state.engine


async def get_reader(request: Request) -> AsyncEngine:
    """The same pool in autocommit, for the many small reads of tiles and pages: no
    BEGIN and ROLLBACK round trips around each query."""
    return request.app.state.reader


async def get_catalog(request: Request) -> Catalog:
    return request.app.state.catalog


SettingsDep = Annotated[Settings, Depends(get_settings)]
EngineDep = Annotated[AsyncEngine, Depends(get_engine)]
ReaderDep = Annotated[AsyncEngine, Depends(get_reader)]
CatalogDep = Annotated[Catalog, Depends(get_catalog)]
# A layer id in a path (collections, tiles, styles): letters, digits, '_' and '-'.
CollectionId = Annotated[str, Path(pattern=r"^[A-Za-z0-9_-]+$", description="e.g. units-1")]

_bearer = HTTPBearer(auto_error=False, description="API key: `Authorization: Bearer obs_…`")


async def get_principal(
    request: Request,
    engine: EngineDep,
    # Declares the scheme in OpenAPI; the header itself is read below (Basic too).
    _: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> security.Principal:
    authorization = request.headers.get("authorization")
    if authorization is None:
        return security.PUBLIC
    key = security.key_from_header(authorization)
    if key is None:
        raise Unauthorized(
            "Send the API key as `Authorization: Bearer <key>` (or as the password of "
            "HTTP Basic authentication)."
        )
    prefix = security.split_key(key)
    if prefix is None:
        raise Unauthorized("Malformed API key.")
    # Valid keys are remembered for a minute (tiles and pages come by the hundred);
    # a revocation anywhere clears this cache through NOTIFY (app.core.versions).
    cache = request.app.state.key_cache
    cache_key = security.hash_key(key)
    if (principal := cache.get(cache_key)) is not None:
        return principal
    async with engine.begin() as conn:
        row = (await conn.execute(keys_sql.select_active_key(prefix))).first()
        if row is None or not security.key_matches(key, row.hash):
            raise Unauthorized("Unknown or revoked API key.")
        await conn.execute(keys_sql.touch_key(row.id))
    principal = security.Principal(role=row.role, key_id=row.id, name=row.name)
    cache.set(cache_key, principal)
    return principal


PrincipalDep = Annotated[security.Principal, Depends(get_principal)]


async def get_conn(
    engine: Annotated[AsyncEngine, Depends(get_engine)],
    _: PrincipalDep,
) -> AsyncIterator[AsyncConnection]:
    """One transaction per request: committed when the handler returns, rolled back on error.

    The caller is known first: looking a key up takes a pooled connection of its own, and
    requests holding theirs while waiting for another would exhaust the pool together."""
    async with engine.begin() as conn:
        yield conn


# scope="function": the transaction commits when the handler returns, before the
# response leaves, so a 2xx is only ever sent for a committed write (the default,
# "request", would commit after the response is sent: a failed commit or a worker killed
# in between would lose an acknowledged write).
ConnDep = Annotated[AsyncConnection, Depends(get_conn, scope="function")]


def require(role: str):
    """Dependency factory: the caller must hold ``role`` or a higher one."""

    async def _check(principal: PrincipalDep) -> security.Principal:
        if principal.role is None:
            raise Unauthorized(f"This endpoint needs an API key with the {role} role or higher.")
        if not principal.has(role):
            raise Forbidden(f"Your key has the {principal.role} role; this needs {role} or higher.")
        return principal

    return Depends(_check)


Analyst = Annotated[security.Principal, require("analyst")]
Editor = Annotated[security.Principal, require("editor")]
Admin = Annotated[security.Principal, require("admin")]
