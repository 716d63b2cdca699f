"""FastAPI dependencies: settings, the layer catalog, a connection in a transaction, the
caller and its role."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Path, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from app import security
from app.access import check_role, principal_of
from app.core.settings import Settings
from app.services.catalog import Catalog


# Coroutines, though they do not await: FastAPI runs a plain ``def`` dependency in its
# thread pool, and each such hop cost more than a sparse tile (``bench/serving.py``).
async def get_settings(request: Request) -> Settings:
    """The application's settings."""
    return request.app.state.settings


async def get_engine(request: Request) -> AsyncEngine:
    """The database pool (``get_reader`` gives it in autocommit, for reads)."""
    return request.app.state.engine


async def get_reader(request: Request) -> AsyncEngine:
    """The same pool in autocommit, for the many small reads of tiles and pages: no
    BEGIN and ROLLBACK round trips around each query."""
    return request.app.state.reader


async def get_catalog(request: Request) -> Catalog:
    """The layer catalog."""
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
    # Declares the scheme in OpenAPI; app.access reads the header itself (Basic too).
    _: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> security.Principal:
    """The caller: the public without an ``Authorization`` header, else the holder of a
    valid key; 401 for a malformed, unknown or revoked key."""
    return await principal_of(engine, request.app.state.key_cache, request.headers)


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
        check_role(principal, role)
        return principal

    return Depends(_check)


Analyst = Annotated[security.Principal, require("analyst")]
Editor = Annotated[security.Principal, require("editor")]
Admin = Annotated[security.Principal, require("admin")]
