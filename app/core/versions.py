"""The data version: a counter that every change to published data bumps.

Caches of tiles, counts and the layer catalog key on it, so they never serve data older
than the last write. Changes arrive two ways: ``NOTIFY observatory_data`` from the
database triggers (migration 0007: any worker, the CLI or plain SQL), and, for this
worker's own writes, :class:`BumpOnWrite` as soon as the response leaves, before the
notification is delivered. No request ever queries the database for it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import psycopg
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger("observatory")

DATA_CHANNEL = "observatory_data"
# API keys revoked or changed: cached keys are dropped.
KEYS_CHANNEL = "observatory_keys"
_READS = frozenset({"GET", "HEAD", "OPTIONS"})


class DataVersion:
    """This worker's data version: caches key on it, and every change bumps it."""

    def __init__(self) -> None:
        self.value = 0

    def bump(self) -> None:
        """Mark the published data as changed."""
        self.value += 1


async def listen(url: str, handlers: dict[str, Callable[[], None]], retry_s: float = 1.0) -> None:
    """Call ``handlers[channel]()`` for every notification on its channel, until cancelled.
    Every handler is also called on (re)connecting: anything may have changed while
    nobody was listening, e.g. while the database was down."""
    while True:
        try:
            async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
                for channel in handlers:
                    await conn.execute(f"LISTEN {channel}")
                for handler in handlers.values():
                    handler()
                async for note in conn.notifies():
                    handlers[note.channel]()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the database is down: keep the caches, retry shortly
            log.warning("change listener: %s; retrying", exc.__class__.__name__)
            await asyncio.sleep(retry_s)


class BumpOnWrite:
    """ASGI middleware: a write through this worker bumps the version as soon as it is
    done (its transaction committed), since its own NOTIFY may arrive a moment after the
    client already asks for the new tile. Refused writes (4xx: unauthenticated, invalid,
    rate-limited) changed nothing and do not bump, so nobody can empty the tile caches by
    sending bad requests; errors and cut responses bump (cheap, and never stale)."""

    def __init__(self, app: ASGIApp, version: DataVersion) -> None:
        self.app, self.version = app, version

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass the request on; after a write that was not refused (4xx), bump the version."""
        if scope["type"] != "http" or scope["method"] in _READS:
            await self.app(scope, receive, send)
            return
        status: int | None = None

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            if status is None or not 400 <= status < 500:
                self.version.bump()
