"""Data versions: what a change to published data invalidates, and no more.

Changes arrive as ``NOTIFY observatory_data`` from the database triggers (migrations 0007
and 0017: any worker, the CLI or plain SQL) whose payload says what changed: a table and
the operation (``alert:update``), and for incidents the positions written, old and new
(``incident:{"p": [[lon, lat], ...]}``, or ``{"b": [w, s, e, n]}`` for many) and the
span of their times (``"t"``: the layer catalog keeps the index values when it is
outside the periods they read). Each worker
keeps counters per table (:class:`DataVersion`): a cache keys on the counters of the
tables its answer reads (a hot spot run's tiles on none, a district's on the units), and
the tile cache drops only the incident tiles that hold a written point
(``app.ogc.tilecache``). A payload this does not understand (an older trigger, a restore's
empty one) or a reconnection (anything may have changed meanwhile) changes everything.

For this worker's own writes, :class:`BumpOnWrite` waits, once the response has left,
until its listener has applied every change committed before (one ``NOTIFY`` of its own,
delivered after the write's since notifications arrive in commit order): the client's
next request then sees its write. No request ever queries the database for a version.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
from collections import defaultdict, deque
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass
from typing import Any

import psycopg
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger("observatory")

DATA_CHANNEL = "observatory_data"
# API keys revoked or changed: cached keys are dropped.
KEYS_CHANNEL = "observatory_keys"
_READS = frozenset({"GET", "HEAD", "OPTIONS"})
# The payload of this worker's own marker notification (BumpOnWrite).
_SYNC = "sync:"
# How long a write waits for its marker before it changes everything instead.
SETTLE_TIMEOUT_S = 2.0
# Located changes kept for caches that catch up later (the tile cache, on its next tile);
# one further behind drops every tile of the located layers.
LOCATED_LOG = 512

Box = tuple[float, float, float, float]


@dataclass(frozen=True)
class Change:
    """One notification: the table (None: anything may have changed), the operation
    (insert, update, delete, truncate; None when the payload does not say) and, for a
    table whose rows have a position, the written positions as lon/lat boxes (a point is
    a box of no size; None: anywhere)."""

    table: str | None
    op: str | None = None
    boxes: tuple[Box, ...] | None = None
    # The earliest and latest time of the rows written (epoch seconds), where known.
    times: tuple[float, float] | None = None


EVERYTHING = Change(None)


def parse(payload: str | None) -> Change | None:
    """The change a notification's payload announces; None for a marker (``sync:``)."""
    if not payload:
        return EVERYTHING
    if payload.startswith(_SYNC):
        return None
    table, _, rest = payload.partition(":")
    if not rest.startswith("{"):
        return Change(table, rest or None)
    try:
        body = json.loads(rest)
        if "b" in body:
            w, s, e, n = (float(v) for v in body["b"])
            boxes: tuple[Box, ...] = ((w, s, e, n),)
        else:
            boxes = tuple((float(x), float(y), float(x), float(y)) for x, y in body["p"])
        times = None
        if body.get("t") and None not in body["t"]:
            first, last = body["t"]
            times = (float(first), float(last))
        return Change(table, body.get("op"), boxes, times)
    except (ValueError, KeyError, TypeError):
        log.warning("unreadable change notification on %s; taking it as a change anywhere", table)
        return Change(table)


class DataVersion:
    """This worker's data versions.

    ``value`` moves with every change (caches of answers that read much of the data key
    on it: statistics, rankings, the layer catalog's build). ``of(names)`` is the version
    of the named counters only, for caches that read a few tables: a table's name counts
    its changes, ``<table>:anywhere`` its changes of no known position (tiles of a located
    layer key on it, and lose only the tiles a located change touches),
    ``<table>:removed`` its deletions and truncations. Every version includes
    ``everything``, moved by changes of unknown scope."""

    def __init__(self) -> None:
        self.value = 0
        self.everything = 0
        self.tables: defaultdict[str, int] = defaultdict(int)
        # Located changes, numbered, for caches that catch up later (``located_since``).
        self.located = 0
        self._log: deque[tuple[int, Change]] = deque(maxlen=LOCATED_LOG)
        self._markers: dict[str, asyncio.Future[None]] = {}
        self.listening = False

    def of(self, names: Iterable[str]) -> Hashable:
        """The version of the counters ``names`` (and of changes of unknown scope)."""
        return (self.everything, *(self.tables[n] for n in names))

    def bump(self) -> None:
        """Mark everything as changed (a change of unknown scope)."""
        self.apply(EVERYTHING)

    def apply(self, change: Change) -> None:
        """Count one change."""
        self.value += 1
        if change.table is None:
            self.everything += 1
            return
        self.tables[change.table] += 1
        if change.op in ("delete", "truncate"):
            self.tables[f"{change.table}:removed"] += 1
        if change.boxes is None:
            self.tables[f"{change.table}:anywhere"] += 1
        elif change.boxes:
            self.located += 1
            self._log.append((self.located, change))

    def located_since(self, seen: int) -> list[Change] | None:
        """The located changes after number ``seen``; None when some are no longer kept."""
        if seen == self.located:
            return []
        if not self._log or self._log[0][0] > seen + 1:
            return None
        return [change for number, change in self._log if number > seen]

    def notified(self, payload: str | None) -> None:
        """Apply a notification's payload; None: the listener (re)connected, anything may
        have changed while nobody listened."""
        if payload is None:
            self.listening = True
        change = parse(payload)
        if change is not None:
            self.apply(change)
        elif (marker := self._markers.get(payload.removeprefix(_SYNC))) and not marker.done():
            marker.set_result(None)

    async def settle(self, engine: Any, timeout_s: float = SETTLE_TIMEOUT_S) -> None:
        """Return once the listener has applied every change committed before this call:
        a marker notification, sent now, arrives after them (commit order). Without a
        listener, or when the marker is late, everything is taken as changed."""
        self.value += 1  # a write moves the data version at once, whatever it wrote
        if not self.listening or engine is None:
            self.bump()
            return
        token = secrets.token_hex(8)
        marker = asyncio.get_running_loop().create_future()
        self._markers[token] = marker
        try:
            from sqlalchemy import text

            async with engine.connect() as conn:
                await conn.execute(
                    text("SELECT pg_notify(:channel, :payload)"),
                    {"channel": DATA_CHANNEL, "payload": _SYNC + token},
                )
            await asyncio.wait_for(marker, timeout_s)
        except Exception as exc:  # the database or the listener is away: never stale
            log.warning("change marker not seen (%s); taking everything as changed", exc)
            self.bump()
        finally:
            self._markers.pop(token, None)


async def listen(
    url: str, handlers: dict[str, Callable[[str | None], None]], retry_s: float = 1.0
) -> None:
    """Call ``handlers[channel](payload)`` for every notification on its channel, until
    cancelled. Every handler is also called with None on (re)connecting: anything may
    have changed while nobody was listening, e.g. while the database was down."""
    while True:
        try:
            async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
                for channel in handlers:
                    await conn.execute(f"LISTEN {channel}")
                for handler in handlers.values():
                    handler(None)
                async for note in conn.notifies():
                    handlers[note.channel](note.payload)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the database is down: keep the caches, retry shortly
            log.warning("change listener: %s; retrying", exc.__class__.__name__)
            await asyncio.sleep(retry_s)


class BumpOnWrite:
    """ASGI middleware: a write through this worker is seen by this worker's caches as
    soon as it is done (its transaction committed): its own NOTIFY may arrive a moment
    after the client already asks for the new tile, so the middleware waits for it
    (:meth:`DataVersion.settle`). Refused writes (4xx: unauthenticated, invalid,
    rate-limited) changed nothing and wait for nothing, so nobody can empty the caches by
    sending bad requests; errors and cut responses take everything as changed (never
    stale, and no waiting on a database that may be away)."""

    def __init__(self, app: ASGIApp, version: DataVersion) -> None:
        self.app, self.version = app, version

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass the request on; after a write that was not refused (4xx), settle before
        the answer leaves: a client that reads right after its write sees the write."""
        if scope["type"] != "http" or scope["method"] in _READS:
            await self.app(scope, receive, send)
            return
        start: Message | None = None
        settled = False
        reader = getattr(scope["app"].state, "reader", None)

        async def settle(status: int) -> None:
            nonlocal settled
            settled = True
            if status >= 500:
                self.version.bump()  # it may have changed anything; the database may be away
            elif not 400 <= status < 500:
                await self.version.settle(reader)

        async def send_after_settling(message: Message) -> None:
            nonlocal start
            if message["type"] == "http.response.start":
                start = message  # held until the body: the route's transaction is over then
                return
            if start is not None:
                await settle(start["status"])
                await send(start)
                start = None
            await send(message)

        try:
            await self.app(scope, receive, send_after_settling)
        finally:
            if not settled:
                self.version.bump()  # no answer went out: take everything as changed
