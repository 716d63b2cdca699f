"""Optional per-key rate limiting: a token bucket per API key (per client address for
anonymous callers), answered with 429 problem+json and ``Retry-After``.

Off unless ``api.rate_limit_per_minute`` is set. Each caller's bucket holds
``api.rate_limit_burst`` tokens (default: one minute's worth) and refills at
``rate_limit_per_minute / 60`` tokens a second; a request takes one token, and a request
that finds none is refused. Every response while the limiter is on carries
``RateLimit-Limit``, ``RateLimit-Remaining`` and ``RateLimit-Reset`` (the IETF
httpapi draft's header fields, as most clients and gateways read them).

Where it sits: a pure ASGI middleware *outside* :class:`app.ogc.tilecache.CachedTiles`, so
cached tiles count like any other request (a client flooding cached tiles still takes a
worker's time; :class:`app.ogc.tilecache.TileHits`, which answers cached tiles in front of
every middleware, is not installed while a limit is set), and inside CORS, so a browser
can read the 429. It runs before routing,
so it cannot wait for a key to be checked against the database: a key counts as a key
once this worker has validated it (``app.state.key_cache``, filled by
:func:`app.deps.get_principal`); until then, and for unknown keys, the request counts
against the caller's address. Random keys therefore buy no fresh buckets.

Per worker process: the buckets are in memory, so with ``--workers N`` (or N replicas
behind a load balancer) a caller may get up to N times the limit. That is the accepted
trade-off (DESIGN.md: no shared in-memory state); a shared limit would need Redis or
PostgreSQL on every request, including cached tiles.

Why not a library: ``limits`` (and slowapi over it) offers fixed and moving windows, not
a token bucket, keeps the same per-process memory store, and would be a new dependency
for about thirty lines. Cost, measured in process on a cached tile (~40 µs without the
limiter): the bucket itself ~0.5 µs, the whole middleware with its headers ~5 µs. While
off (the default) it is not installed at all.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Hashable, Iterable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app import security
from app.core.errors import problem
from app.core.settings import ApiSettings

__all__ = ["EXEMPT_PATHS", "RATE_LIMIT_HEADERS", "RateLimit", "TokenBuckets", "client_address"]

#: The headers every response carries while the limiter is on (CORS exposes them).
RATE_LIMIT_HEADERS = ("RateLimit-Limit", "RateLimit-Remaining", "RateLimit-Reset")

#: Probes and scrapes come from one address, often and on purpose: never limited.
EXEMPT_PATHS = ("/health", "/ready", "/metrics")
#: Buckets kept per worker (see :class:`TokenBuckets` for what is forgotten beyond it).
MAX_BUCKETS = 100_000


class TokenBuckets:
    """Token buckets by caller: ``take(who)`` says whether a request may pass.

    Parameters
    ----------
    per_minute : int
        Refill rate, tokens per minute.
    burst : int
        Bucket size: requests a caller may make at once after a quiet spell.
    clock : callable, optional
        Seconds as a float, monotonic (tests pass their own clock).
    max_buckets : int, optional
        Callers remembered at most. Beyond it, buckets that are full again are forgotten
        (a missing bucket is a full one), and if too few are, the oldest tenth: a caller
        forgotten early gets a full bucket back, which errs only on its side.

    Notes
    -----
    A bucket is ``(tokens, updated)``: the tokens after the last request and its time;
    the refill since then is added when the caller comes back, so nothing runs between
    requests. A plain dict of tuples keeps a request's cost near a microsecond.
    """

    def __init__(
        self,
        per_minute: int,
        burst: int,
        *,
        clock: Callable[[], float] = time.monotonic,
        max_buckets: int = MAX_BUCKETS,
    ) -> None:
        self.rate = per_minute / 60.0
        self.burst = float(burst)
        self.clock = clock
        self.max_buckets = max_buckets
        self._buckets: dict[Hashable, tuple[float, float]] = {}

    def __len__(self) -> int:
        return len(self._buckets)

    def take(self, who: Hashable) -> tuple[bool, int, int]:
        """Take a token for ``who``: (allowed, tokens remaining, seconds until a token —
        for a refused request — or until the bucket is full again — for a passed one).

        Seconds are whole, rounded up, as ``Retry-After`` and ``RateLimit-Reset`` need."""
        now = self.clock()
        bucket = self._buckets.get(who)
        if bucket is None:
            if len(self._buckets) >= self.max_buckets:
                self._forget(now)
            tokens = self.burst
        else:
            tokens = bucket[0] + (now - bucket[1]) * self.rate
            if tokens > self.burst:
                tokens = self.burst
        if tokens >= 1.0:
            tokens -= 1.0
            self._buckets[who] = (tokens, now)
            return True, int(tokens), math.ceil((self.burst - tokens) / self.rate)
        self._buckets[who] = (tokens, now)
        return False, 0, max(1, math.ceil((1.0 - tokens) / self.rate))

    def _forget(self, now: float) -> None:
        full = [
            who
            for who, (tokens, updated) in self._buckets.items()
            if tokens + (now - updated) * self.rate >= self.burst
        ]
        if len(full) < self.max_buckets // 10:
            full.extend(list(self._buckets)[: max(1, self.max_buckets // 10)])
        for who in full:
            self._buckets.pop(who, None)


def client_address(scope: Scope, trusted_proxy_hops: int) -> str:
    """The caller's address: the peer of the connection, or with ``trusted_proxy_hops``
    proxies in front of the service, the address the outermost of them saw.

    Each proxy appends the address it received the request from to ``X-Forwarded-For``,
    so the entry ``trusted_proxy_hops`` from the right was written by the outermost trusted
    proxy; anything left of it came from the client and may be forged. With fewer entries
    than that (a request that bypassed the proxies) the left-most is used.
    """
    if trusted_proxy_hops > 0:
        forwarded: list[str] = []
        for name, value in scope["headers"]:
            if name == b"x-forwarded-for":
                forwarded.extend(value.decode("latin-1").split(","))
        entries = [e.strip() for e in forwarded if e.strip()]
        if entries:
            return entries[-min(trusted_proxy_hops, len(entries))]
    client = scope.get("client")
    return client[0] if client else "unknown"


class RateLimit:
    """ASGI middleware: refuse requests beyond a caller's bucket with 429 problem+json."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        api: ApiSettings,
        key_cache,
        exempt_paths: Iterable[str] = EXEMPT_PATHS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.app = app
        self.per_minute = api.rate_limit_per_minute
        self.enabled = self.per_minute is not None
        burst = api.rate_limit_burst or self.per_minute or 1
        self.burst = burst
        self.buckets = TokenBuckets(self.per_minute or 1, burst, clock=clock)
        self.limit_header = str(burst).encode()
        self.hops = api.trusted_proxy_hops
        self.key_cache = key_cache
        self.exempt = frozenset(exempt_paths)

    def caller(self, scope: Scope) -> tuple[Hashable, str]:
        """The bucket's key and how the caller is described in a 429."""
        for name, value in scope["headers"]:
            if name == b"authorization":
                key = security.key_from_header(value.decode("latin-1"))
                if key:
                    principal = self.key_cache.get(security.hash_key(key))
                    if principal is not None and principal.key_id is not None:
                        return principal.key_id, "this API key"  # an int: never an address
                break
        return client_address(scope, self.hops), "this client address"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass the request on with ``RateLimit-*`` headers, or answer 429 when its caller's
        bucket is empty. Exempt paths and non-HTTP scopes pass untouched."""
        if not self.enabled or scope["type"] != "http" or scope["path"] in self.exempt:
            await self.app(scope, receive, send)
            return
        who, described = self.caller(scope)
        allowed, remaining, seconds = self.buckets.take(who)
        if not allowed:
            response = problem(
                429,
                "Too many requests",
                f"Too many requests from {described}: at most {self.per_minute} a minute, "
                f"{self.burst} at once; retry in {seconds} s.",
                instance=scope["path"],
                retry_after_s=seconds,
            )
            response.headers["Retry-After"] = str(seconds)
            response.headers["RateLimit-Limit"] = self.limit_header.decode()
            response.headers["RateLimit-Remaining"] = "0"
            response.headers["RateLimit-Reset"] = str(seconds)
            await response(scope, receive, send)
            return
        extra = [
            (b"ratelimit-limit", self.limit_header),
            (b"ratelimit-remaining", str(remaining).encode()),
            (b"ratelimit-reset", str(seconds).encode()),
        ]

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), *extra]
            await send(message)

        await self.app(scope, receive, send_with_headers)
