"""Absolute links, as a client outside a reverse proxy sees them.

OGC clients (QGIS, GDAL) follow links literally, so every link is absolute: OGC links,
TileJSON tile URLs, styles and the QGIS project all start with :func:`base_url`.

Whose word it takes, first match wins:

1. ``api.public_url``, when set: the configured address, whatever the request says.
2. With ``api.trusted_proxy_hops`` = N > 0, ``X-Forwarded-Proto``, ``X-Forwarded-Host``
   and ``X-Forwarded-Prefix`` as the outermost of the N trusted proxies wrote them: the
   entry N from the right, as for ``X-Forwarded-For`` (``app.core.ratelimit``), so that
   a value the client sent ahead of the proxies' is never the one read.
3. Otherwise the request itself: its ``Host`` and the connection's scheme and root path.

Forwarded headers from anyone else are ignored: with them, one request such as
``X-Forwarded-Host: evil.example`` made TileJSON point every map at another host, and a
shared cache or CDN in front would have handed that answer to everyone (web cache
poisoning). A cache keys on the URL, Host included, so case 3 needs no ``Vary``; in
case 2 the answers depend on the forwarded headers, and :class:`VaryForwarded` says so.
"""

from __future__ import annotations

import re
from urllib.parse import urlencode

from starlette.datastructures import Headers, MutableHeaders
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.core.settings import ApiSettings

__all__ = ["FORWARDED_HEADERS", "VaryForwarded", "absolute", "base_url", "same_query"]

#: The headers that move links, read only from trusted proxies.
FORWARDED_HEADERS = ("X-Forwarded-Proto", "X-Forwarded-Host", "X-Forwarded-Prefix")

# What a proxy may write into a link: a host[:port] (or [IPv6]:port) and a path prefix;
# anything else in a header is ignored rather than echoed into every link.
_HOST = re.compile(r"[A-Za-z0-9.-]+(:\d{1,5})?|\[[0-9A-Fa-f:.]+\](:\d{1,5})?")
_PREFIX = re.compile(r"(/[A-Za-z0-9._~!$&'()*+,;=:@%-]+)*/?")


def forwarded(headers: Headers, name: str, hops: int) -> str | None:
    """The value of a forwarded header as the outermost of ``hops`` trusted proxies wrote
    it: the entry ``hops`` from the right across every line of the header (with fewer
    entries, the left-most); None without the header or with ``hops`` 0."""
    if hops <= 0:
        return None
    entries = [e.strip() for line in headers.getlist(name) for e in line.split(",")]
    entries = [e for e in entries if e]
    return entries[-min(hops, len(entries))] if entries else None


def _origin(request: Request, api: ApiSettings) -> str:
    if api.public_url is not None:
        return api.public_url
    headers = request.headers
    scheme = request.url.scheme
    host = headers.get("host") or request.url.netloc
    prefix = request.scope.get("root_path", "")
    hops = api.trusted_proxy_hops
    if (value := forwarded(headers, "x-forwarded-proto", hops)) in ("http", "https"):
        scheme = value
    if (value := forwarded(headers, "x-forwarded-host", hops)) and _HOST.fullmatch(value):
        host = value
    if (value := forwarded(headers, "x-forwarded-prefix", hops)) and _PREFIX.fullmatch(value):
        prefix = value
    return f"{scheme}://{host}{prefix.rstrip('/')}"


def base_url(request: Request) -> str:
    """``scheme://host[/prefix]`` of the service, without a trailing slash: the configured
    ``api.public_url``, or the request's, forwarded headers read from trusted proxies
    only (see the module's docstring)."""
    return _origin(request, request.app.state.settings.api)


def absolute(request: Request, path: str, params: dict | None = None) -> str:
    """The absolute URL of a service path, with query parameters (None values dropped)."""
    query = urlencode({k: v for k, v in (params or {}).items() if v is not None}, doseq=True)
    return f"{base_url(request)}{path}" + (f"?{query}" if query else "")


def same_query(request: Request, **changes: object) -> dict:
    """The request's query parameters with some changed (None removes one)."""
    params: dict = {}
    for key, value in request.query_params.multi_items():
        params.setdefault(key, []).append(value)
    for key, value in changes.items():
        params[key] = None if value is None else [str(value)]
    return {k: v for k, v in params.items() if v is not None}


class VaryForwarded:
    """ASGI middleware: ``Vary: X-Forwarded-Proto, X-Forwarded-Host, X-Forwarded-Prefix``
    on every routed answer, for a service that reads them (trusted proxies, no
    ``api.public_url``): a cache between the proxies and the service then keeps apart
    answers whose links differ. Installed only then (``app.main``)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass the request on; add the forwarded headers to the answer's ``Vary``."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_varying(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                present = {v.strip().lower() for v in headers.get("vary", "").split(",")}
                for name in FORWARDED_HEADERS:
                    if name.lower() not in present and "*" not in present:
                        headers.add_vary_header(name)
            await send(message)

        await self.app(scope, receive, send_varying)
