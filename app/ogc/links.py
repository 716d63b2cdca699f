"""Absolute links, as a client outside a reverse proxy sees them.

OGC clients (QGIS, GDAL) follow links literally, so every link is absolute and honours
``X-Forwarded-Proto``, ``X-Forwarded-Host`` and ``X-Forwarded-Prefix`` from the proxy
in front of the service.
"""

from __future__ import annotations

from urllib.parse import urlencode

from starlette.requests import Request


def base_url(request: Request) -> str:
    """``scheme://host[/prefix]`` of the service, without a trailing slash."""
    headers = request.headers
    scheme = headers.get("x-forwarded-proto", request.url.scheme).split(",")[0].strip()
    host = headers.get("x-forwarded-host", headers.get("host", request.url.netloc))
    prefix = headers.get("x-forwarded-prefix", request.scope.get("root_path", ""))
    return f"{scheme}://{host.split(',')[0].strip()}{prefix.rstrip('/')}"


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
