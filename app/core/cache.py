"""A small in-process TTL cache. Only for values any worker can recompute (never shared state)."""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable
from typing import Any


class TTLCache:
    """A least-recently-used map whose entries expire ``ttl_s`` seconds after they were set."""

    def __init__(self, maxsize: int = 1024, ttl_s: float = 300) -> None:
        self.maxsize, self.ttl_s = maxsize, ttl_s
        self._items: OrderedDict[Hashable, tuple[float, Any]] = OrderedDict()

    def get(self, key: Hashable) -> Any | None:
        """The value under ``key``, or None when it is absent or expired."""
        item = self._items.get(key)
        if item is None or item[0] < time.monotonic():
            self._items.pop(key, None)
            return None
        self._items.move_to_end(key)
        return item[1]

    def set(self, key: Hashable, value: Any) -> None:
        """Store ``value`` under ``key``; the least recently used entries past ``maxsize`` go."""
        self._items[key] = (time.monotonic() + self.ttl_s, value)
        self._items.move_to_end(key)
        while len(self._items) > self.maxsize:
            self._items.popitem(last=False)

    def clear(self) -> None:
        """Drop every entry."""
        self._items.clear()

    def discard(self, drop: Callable[[Hashable], bool]) -> None:
        """Drop the entries whose key ``drop`` says to (e.g. those of one layer)."""
        for key in [k for k in self._items if drop(k)]:
            del self._items[key]


def app_cache(state: Any, name: str, maxsize: int = 256, ttl_s: float = 600) -> TTLCache:
    """The app's cache called ``name`` (made on first use), for results a router keeps per
    worker and data version (``app.core.versions``: ``value`` for answers that read much
    of the data, ``of(tables)`` for those that read a few tables)."""
    if (cache := getattr(state, name, None)) is None:
        cache = TTLCache(maxsize=maxsize, ttl_s=ttl_s)
        setattr(state, name, cache)
    return cache


_FAILED = object()


async def once(state: Any, name: str, key: Hashable, compute: Callable[[], Awaitable[Any]]) -> Any:
    """``compute()`` run once for the callers that ask for ``key`` at the same time (in
    the app's flights called ``name``): the others wait for its result instead of
    computing the same answer again. After a data change every worker's caches are
    empty at once, and each concurrent request of one ranking computed it again, each
    holding a pooled connection: 3-4 s and the pool dry under bench.load (issue 22). A
    failure is the first caller's only: the others then compute on their own."""
    flights = getattr(state, f"{name}_flights", None)
    if flights is None:
        flights = {}
        setattr(state, f"{name}_flights", flights)
    if (flight := flights.get(key)) is not None:
        value = await asyncio.shield(flight)
        return await compute() if value is _FAILED else value
    flight = flights[key] = asyncio.get_running_loop().create_future()
    value: Any = _FAILED
    try:
        value = await compute()
        return value
    finally:
        del flights[key]
        flight.set_result(value)
