"""Unknown query parameters are refused: 400 ``application/problem+json`` naming the
parameter and the nearest known one (``did you mean `occurred_from`?``).

A filter that is silently dropped answers with everything (``/incidents?ocurred_from=``
with one ``c`` was every incident), so every route refuses names it does not declare, as
OGC API Features Part 1 requires for its own routes (``/req/core/query-param-unknown``).

One mechanism, from one source: the query parameters each operation declares in the
app's OpenAPI document (FastAPI's, built once per app on the first request that carries
a query string). :func:`refuse_unknown_parameters` is an app-wide dependency, so every
``APIRoute`` runs it before its own dependencies. Not checked:

- routes outside the OpenAPI document (``include_in_schema=False``): the web pages,
  whose query string is read by their own script (``/map?period=``), and FastAPI's
  ``/docs``, ``/redoc`` and ``/openapi.json``, which are no ``APIRoute``;
- mounts (``/static``), which run no dependency;
- operations that declare a free-form parameter (:data:`FREE_FORM`): OpenAPI's way of
  saying "and any other name". The OGC items, tiles and TileJSON routes take equality
  filters on the caller's queryables that way, and check every name themselves against
  what that caller may filter on (``app.ogc.filters.check_parameters``), so that a
  field withheld from the caller and a field that does not exist get the same answer.

No name is allowed everywhere: a cache-busting ``_=…`` or an ``f=json`` on a route that
does not declare it is refused like any other (no client of the service sends one:
MapLibre, QGIS and GDAL send only what the links and templates hold).
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Iterator
from typing import Any
from weakref import WeakKeyDictionary

from fastapi import Request, routing
from fastapi.routing import APIRoute

from app.core.errors import ProblemError

__all__ = [
    "FREE_FORM",
    "UnknownParameter",
    "declared_parameters",
    "refuse_unknown_parameters",
    "suggestion",
]

#: Marks an OpenAPI query parameter as free-form (any name, checked by the route itself):
#: an object exploded into ``name=value`` pairs (OpenAPI 3, ``style: form``).
FREE_FORM = {"style": "form", "explode": True, "schema": {"type": "object"}}

# Per app, the known names of each route by its id (routes compare by value, so they
# are no keys), or None for a route that checks names itself (a free-form parameter) or
# is not in the OpenAPI document. Weak: tests build many apps.
_KNOWN: WeakKeyDictionary[Any, dict[int, frozenset[str] | None]] = WeakKeyDictionary()


class UnknownParameter(ProblemError):
    """A query parameter the route does not declare: 400, as OGC API Features requires."""

    status, title = 400, "Unknown query parameter"


def suggestion(name: str, known: Iterable[str]) -> str | None:
    """The known name closest to a misspelt one, if any is close enough (difflib's
    ratio of at least 0.6: ``ocurred_from`` → ``occurred_from``, ``nosuchfield`` → none)."""
    close = difflib.get_close_matches(name, sorted(known), n=1)
    return close[0] if close else None


def _free_form(parameter: dict[str, Any]) -> bool:
    schema = parameter.get("schema", {})
    return (
        parameter.get("style", "form") == "form"
        and parameter.get("explode", True) is True
        and schema.get("type") == "object"
    )


def declared_parameters(
    document: dict[str, Any], path: str, methods: Iterable[str]
) -> frozenset[str] | None:
    """The query parameter names that the operations at ``path`` (with a route's
    ``methods``) declare in the OpenAPI ``document``; None if none of them is in the
    document or one takes free-form parameters."""
    operations = document.get("paths", {}).get(path, {})
    names: set[str] = set()
    found = False
    for method in methods:
        operation = operations.get(method.lower())
        if operation is None:
            continue
        found = True
        for parameter in operation.get("parameters", ()):
            if parameter.get("in") != "query":
                continue
            if _free_form(parameter):
                return None
            names.add(parameter["name"])
    return frozenset(names) if found else None


def _placed_routes(app: Any) -> Iterator[tuple[APIRoute, str, set[str], bool]]:
    """Each API route with the path, methods and schema flag it is served under: FastAPI
    0.16x keeps included routers nested (``iter_route_contexts`` walks them, with their
    prefixes); older ones list every route in ``app.routes``."""
    walk = getattr(routing, "iter_route_contexts", None)
    for each in walk(app.routes) if walk else app.routes:
        route = each.original_route if walk else each
        if isinstance(route, APIRoute):
            yield route, each.path_format, set(each.methods or ()), each.include_in_schema


def _known(request: Request, route: APIRoute) -> frozenset[str] | None:
    app = request.app
    if (routes := _KNOWN.get(app)) is None:
        # The first request of this app: every route at once, from one document.
        document = app.openapi()
        routes = {}
        for each, path, methods, in_schema in _placed_routes(app):
            names = declared_parameters(document, path, methods) if in_schema else None
            if id(each) in routes:  # one route included twice: what either place takes
                other = routes[id(each)]
                names = None if names is None or other is None else names | other
            routes[id(each)] = names
        _KNOWN[app] = routes
    return routes.get(id(route))


def _unknown_detail(route_label: str, unknown: list[str], known: frozenset[str]) -> str:
    parts = []
    for name in unknown:
        close = suggestion(name, known)
        parts.append(f"`{name}`" + (f" (did you mean `{close}`?)" if close else ""))
    plural = "s" if len(unknown) > 1 else ""
    takes = f"it takes: {', '.join(sorted(known))}" if known else "it takes none"
    return f"{route_label} has no query parameter{plural} {', '.join(parts)}; {takes}."


class NulCharacter(ProblemError):
    """A parameter holding NUL: PostgreSQL text cannot store it, so no row matches."""

    status, title = 400, "Invalid query parameter"


def _refuse_nul(request: Request) -> None:
    """400 for a NUL anywhere in the query or the path, on every route
    (``/audit?actor=%00`` and ``/units/%00`` reached PostgreSQL, which refuses NUL in
    text, as a 500)."""
    for name, value in request.path_params.items():
        if "\x00" in str(value):
            raise NulCharacter(f"the path parameter {name!r} must not contain NUL characters")
    for name, value in request.query_params.multi_items():
        if "\x00" in name or "\x00" in value:
            raise NulCharacter(f"the query parameter {name!r} must not contain NUL characters")


async def refuse_unknown_parameters(request: Request) -> None:
    """App-wide dependency: a 400 for a query parameter the route does not declare, or
    for a NUL in any parameter."""
    _refuse_nul(request)
    if not request.scope.get("query_string"):
        return
    route = request.scope.get("route")
    if not isinstance(route, APIRoute):
        return
    known = _known(request, route)
    if known is None:
        return
    if unknown := sorted(request.query_params.keys() - known):
        label = f"{request.method} {route.path_format}"
        raise UnknownParameter(_unknown_detail(label, unknown, known))
