"""The service's own web pages: the map (``/map``) and the planners' ranking page
(``/rankings`` when a browser asks for HTML).

The pages are static files (``app/static``) that read only the public interfaces (style,
TileJSON, tiles, OGC API, REST), so they double as a reference client. MapLibre GL JS comes
from npm and is served from ``/static/vendor`` (``scripts/setup.sh`` copies it there): no
CDN, no basemap and no web fonts, so the pages work on an intranet without internet.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import HTMLResponse
from fastapi.routing import APIRoute
from starlette.datastructures import Headers
from starlette.routing import Match
from starlette.types import Scope

__all__ = ["STATIC", "prefers_html", "router"]

STATIC = Path(__file__).parents[1] / "static"
# Only this origin: a page that tried to reach a CDN, a basemap or a font server would fail
# visibly. MapLibre runs its workers from blob: URLs and draws through data:/blob: images.
_POLICY = (
    "default-src 'self'; script-src 'self'; worker-src 'self' blob:; child-src blob:; "
    "img-src 'self' data: blob:; style-src 'self' 'unsafe-inline'; connect-src 'self'; "
    "object-src 'none'; base-uri 'self'; frame-ancestors 'self'"
)
_HTML_TYPES = ("text/html", "application/xhtml+xml")
_DATA_TYPES = ("application/json", "text/csv", "application/problem+json")


def prefers_html(scope: Scope) -> bool:
    """Whether the client ranks HTML above JSON/CSV in ``Accept`` and names no ``format``.

    Browsers send ``text/html,…,*/*;q=0.8``; curl, httpx, GDAL and scripts send ``*/*`` or
    a data type, and keep getting the API. The wildcard counts for neither side.
    """
    query = scope.get("query_string", b"").decode("latin-1")
    if any(part.split("=", 1)[0] == "format" for part in query.split("&")):
        return False
    html = data = 0.0
    for item in Headers(scope=scope).get("accept", "").split(","):
        media, *params = (p.strip() for p in item.split(";"))
        q = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        if media.lower() in _HTML_TYPES:
            html = max(html, q)
        elif media.lower() in _DATA_TYPES:
            data = max(data, q)
    return html > 0 and html >= data


class HtmlRoute(APIRoute):
    """A route that matches only browsers asking for HTML, so that the API route on the
    same path (included after it) keeps answering everyone else unchanged."""

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        match, child = super().matches(scope)
        if match is Match.FULL and prefers_html(scope):
            return match, child
        return Match.NONE, {}


@cache
def _page(name: str) -> str:
    return (STATIC / name).read_text(encoding="utf-8")


def _html(name: str) -> HTMLResponse:
    return HTMLResponse(
        _page(name),
        headers={
            "Content-Security-Policy": _POLICY,
            "Vary": "Accept",
            "Cache-Control": "no-cache",
            "X-Content-Type-Options": "nosniff",
        },
    )


router = APIRouter(tags=["pages"], include_in_schema=False)
negotiated = APIRouter(tags=["pages"], include_in_schema=False, route_class=HtmlRoute)


@router.get("/map", response_class=HTMLResponse)
async def map_page() -> HTMLResponse:
    """The web map: districts by index, hot spots, filters, a district panel."""
    return _html("map.html")


@negotiated.get("/rankings", response_class=HTMLResponse)
async def rankings_page() -> HTMLResponse:
    """The planners' page (the API on the same path answers JSON, CSV and XLSX)."""
    return _html("rankings.html")


router.include_router(negotiated)
