"""The filters every layer request accepts, features and tiles alike: ``bbox`` (with
``bbox-crs``), ``datetime``, equality on a queryable property, the layer's named
parameters (``occurred_from``, ``unit``, … of the incidents: ``app.ogc.layers.Parameter``)
and CQL2 ``filter`` (with ``filter-lang`` and ``filter-crs``), parsed into bound SQL
conditions. ``GET /incidents`` is a view of the incidents layer and reads its filters
here too: one parser, one meaning, one answer to a malformed one (400).

A date or time without a zone, wherever a filter takes one (``datetime``, a date-time
property, a named parameter, a CQL2 ``TIMESTAMP`` or ``DATE``), is local time of the
territory (``app.params.local_time``).

Properties are those the caller may filter on (``app.access.queryable_fields``): a
filter on any other name, a field withheld from this caller or no field at all, is the
same 400 (:func:`not_queryable`), so the answer does not tell whether the field exists."""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from datetime import date, datetime
from typing import Any

from pygeofilter import ast, values
from sqlalchemy import ColumnElement
from sqlalchemy.ext.asyncio import AsyncConnection

from app.access import filter_parameters, queryable_fields, visible_fields
from app.core.errors import InvalidParameter, NotFound
from app.core.query import FREE_FORM, suggestion
from app.core.settings import Settings
from app.ogc import cql2
from app.ogc.crs import parse_crs
from app.ogc.layers import Field, Layer, Parameter
from app.params import local_time, parse_time
from app.security import Principal
from app.sql import features as sql

# Parameters of the requests themselves; any other one must name a property the caller
# may filter on, and is an equality filter on it (OGC API Features Part 1, "parameters
# for filtering"); an unknown one is a 400 (/req/core/query-param-unknown).
RESERVED = frozenset(
    {"limit", "bbox", "bbox-crs", "datetime", "crs", "filter", "filter-lang", "filter-crs"}
    | {"after", "f"}
)

#: ``openapi_extra`` of the routes that take these filters (items, tiles, TileJSON): the
#: property filters as OpenAPI's free-form parameter, so the API definition says that
#: other names are accepted, and ``app.core.query`` leaves the names to
#: :func:`check_parameters`, which knows the caller's queryables.
PROPERTY_FILTERS = {
    "parameters": [
        {
            "name": "queryables",
            "in": "query",
            "required": False,
            "description": "Equality filters on the collection's queryable properties, "
            "`name=value` (a comma-separated list: any of the values), beside `bbox`, "
            "`bbox-crs`, `datetime`, `filter`, `filter-lang` and `filter-crs`; the "
            "names are those of `/collections/{collection_id}/queryables` for the "
            "caller, and any other name is a 400.",
            **FREE_FORM,
            "schema": {**FREE_FORM["schema"], "additionalProperties": {"type": "string"}},
        }
    ]
}


class InvalidQuery(InvalidParameter):
    """A malformed filter or paging parameter: 400, as OGC API Features Part 1 requires."""

    status, title = 400, "Invalid query parameter"


def parse_bbox(text: str | None) -> tuple[float, float, float, float] | None:
    """Four numbers, or six (3D: the heights are ignored). The one bbox parser of every
    door (items, tiles, ``/incidents``); a malformed box is a 400."""
    if text is None:
        return None
    try:
        numbers = [float(v) for v in text.split(",")]
    except ValueError:
        raise InvalidQuery("bbox must be 4 or 6 comma-separated numbers") from None
    # float() reads "nan" and "inf"; PostGIS would take them and match nothing.
    if not all(math.isfinite(n) for n in numbers):
        raise InvalidQuery("bbox must be 4 or 6 finite numbers")
    if len(numbers) == 6:
        numbers = [numbers[0], numbers[1], numbers[3], numbers[4]]
    if len(numbers) != 4:
        raise InvalidQuery("bbox must be 4 or 6 comma-separated numbers")
    return numbers[0], numbers[1], numbers[2], numbers[3]


def parse_datetime(
    text: str | None, timezone: str
) -> tuple[datetime | None, datetime | None] | None:
    """An RFC 3339 instant, or an interval ``start/end`` with ``..`` (or nothing) for an
    open end. A date or time without a zone is local time of the territory."""
    if text is None:
        return None

    def one(value: str) -> datetime | None:
        if value in ("", ".."):
            return None
        # QGIS writes half-open ranges with a dummy start of year 0 (RFC 3339 allows it,
        # Python's datetime does not): nothing the service holds is older, so it is open.
        if re.fullmatch(r"0000-01-01(T00:00:00(\.0+)?)?(Z|[+-]00:00)?", value):
            return None
        try:
            return parse_time(value, timezone)
        except ValueError:
            raise InvalidQuery(
                f"datetime {value!r} is not RFC 3339 (e.g. 2024-01-01T00:00:00Z, or "
                "2024-01-01 in local time)"
            ) from None

    if "/" not in text:
        instant = one(text)
        if instant is None:
            raise InvalidQuery("datetime needs an instant or an interval start/end")
        return instant, instant
    start, end = (one(v) for v in text.split("/", 1))
    if start is not None and end is not None and start > end:
        raise InvalidQuery("datetime interval: the start is after the end")
    return start, end


def typed(name: str, type_: str, value: str, timezone: str) -> Any:
    """A parameter's text as a value of its type (a date-time without a zone is local
    time of the territory); a 400 that names the parameter otherwise."""
    try:
        if type_ == "integer":
            return int(value)
        if type_ == "number":
            return float(value)
        if type_ == "boolean":
            return {"true": True, "false": False}[value.lower()]
        if type_ == "date-time":
            return parse_time(value, timezone)
    except (ValueError, KeyError):
        article = "an" if type_[0] in "aeiou" else "a"
        raise InvalidQuery(f"{name} must be {article} {type_} (got {value!r})") from None
    return value


def _property_values(q: Mapping[str, str], f: Field, timezone: str) -> list[Any]:
    """The values of a ``name=value`` filter: repeated (``category=a&category=b``) or
    comma-separated (``category=a,b``), any of them matches."""
    texts = q.getlist(f.name) if hasattr(q, "getlist") else [q[f.name]]
    found = [v.strip() for text in texts for v in text.split(",")]
    if f.lowercase:
        found = [v.lower() for v in found]
    if f.values and (bad := [v for v in found if v not in f.values]):
        allowed = f"{', '.join(f.values[:-1])} or {f.values[-1]}"
        raise InvalidQuery(f"{f.name} must be {allowed} (got {', '.join(bad)})")
    return [typed(f.name, f.type, v, timezone) for v in found]


def _parameter_values(
    q: Mapping[str, str], parameters: Iterable[Parameter], timezone: str
) -> dict[str, Any]:
    """The named parameters given, typed and in range."""
    given: dict[str, Any] = {}
    for p in parameters:
        if (text := q.get(p.name)) is None:
            continue
        value = typed(p.name, p.type, text.strip(), timezone)
        low, high = p.minimum, p.maximum
        if (low is not None and value < low) or (high is not None and value > high):
            raise InvalidQuery(f"{p.name} must be between {low} and {high} (got {value})")
        given[p.name] = value
    for p in parameters:
        other = p.not_above
        if p.name in given and other in given and given[p.name] > given[other]:
            raise InvalidQuery(f"{p.name} must not exceed {other}")
    return given


async def check_lookups(
    conn: AsyncConnection, q: Mapping[str, str], layer: Layer, who: Principal
) -> None:
    """A named parameter that must name a row (``unit``: a unit code) and names none is
    a 400, where the conditions alone would match nothing without saying why. Items and
    ``/incidents`` ask; a tile of an unknown unit is just empty."""
    for p in filter_parameters(layer, who):
        if p.lookup is None or (value := q.get(p.name)) is None:
            continue
        if (await conn.execute(p.lookup(value.strip()))).first() is None:
            raise InvalidQuery(f"unknown {p.name} code {value.strip()!r}")


def _local_literals(node: Any, timezone: str) -> Any:
    """CQL2 ``TIMESTAMP`` and ``DATE`` literals without a zone as local time of the
    territory (a date: its local midnight), depth first."""
    if isinstance(node, datetime | date):
        return local_time(node, timezone)
    if isinstance(node, list):
        return [_local_literals(v, timezone) for v in node]
    if isinstance(node, ast.Node | values.Interval):
        for name, value in vars(node).items():
            if isinstance(value, datetime | date | list | ast.Node | values.Interval):
                setattr(node, name, _local_literals(value, timezone))
    return node


def feature_id(layer: Layer, value: str, *, cursor: bool = False) -> Any:
    """A feature id of the layer's type. A malformed id in a path names no feature (404);
    as the ``after`` cursor it is a malformed parameter."""
    if layer.id_type == "integer" and not re.fullmatch(r"-?\d{1,18}", value):
        if cursor:
            raise InvalidQuery(f"after must be a feature id of {layer.id} (an integer)")
        raise NotFound(f"No feature {value!r} in {layer.id}.")
    if "\x00" in value:  # PostgreSQL text cannot hold NUL: no feature has such an id
        if cursor:
            raise InvalidQuery("after must not contain NUL characters")
        raise NotFound(f"No feature {value!r} in {layer.id}.")
    return int(value) if layer.id_type == "integer" else value


def nearest_cursor(layer: Layer, value: str) -> tuple[tuple[float, Any], Any]:
    """The ``after`` cursor of a bbox page of points, as a next link wrote it
    (``app.routers.features``): the first page's last row, ``distance:id``, and from the
    third page on the last id read since, ``distance:id:id``."""
    distance, *ids = value.split(":")
    try:
        position = float(distance)
    except ValueError:
        position = math.nan
    if len(ids) not in (1, 2) or not math.isfinite(position) or position < 0:
        raise InvalidQuery(
            "after must be the cursor of a next link: with a bbox, the first page of "
            f"{layer.id} holds the features nearest the box's centre, and after is "
            "distance:id or distance:id:id"
        )
    edge = (position, feature_id(layer, ids[0], cursor=True))
    return edge, feature_id(layer, ids[1], cursor=True) if len(ids) == 2 else None


def check_text(q: Mapping[str, str]) -> None:
    """Refuse NUL characters anywhere in the query: PostgreSQL text cannot hold them, so
    the database would fail the statement (a 500) instead of matching nothing."""
    for name, value in q.items():
        if "\x00" in value or "\x00" in name:
            raise InvalidQuery(f"{name} must not contain NUL characters")


def request_bbox(
    q: Mapping[str, str], settings: Settings
) -> tuple[tuple[float, float, float, float], int] | None:
    """The ``bbox`` parameter in x/y order, with the SRID of its ``bbox-crs``."""
    if (bbox := parse_bbox(q.get("bbox"))) is None:
        return None
    bbox_crs = parse_crs(q.get("bbox-crs"), settings.territory.projected_crs, "bbox-crs")
    if bbox_crs.lat_first:  # EPSG:4326 boxes are south, west, north, east
        bbox = (bbox[1], bbox[0], bbox[3], bbox[2])
    west, south, east, north = bbox
    if south > north:
        raise InvalidQuery("bbox: its south (lower) edge must not be above its north edge")
    if west > east:
        raise InvalidQuery("bbox: a box crossing the antimeridian (west > east) is not supported")
    return bbox, bbox_crs.srid


def not_queryable(
    layer: Layer,
    name: str,
    allowed: tuple[Field, ...],
    *,
    parameters: bool = False,
    named: tuple[Parameter, ...] = (),
) -> InvalidQuery:
    """The one answer to a filter on a name the caller may not use. It depends on the
    caller's queryables only, never on whether ``name`` is a field of the layer: the
    suggestion too is picked from the names this caller may use (``parameters``: and
    the reserved ones, for a query parameter; ``named``: the layer's named parameters
    this caller may use), so a withheld field gets what any other name spelt alike gets."""
    usable = [f.name for f in allowed] + [p.name for p in named]
    names = ", ".join(usable) or "no property"
    close = suggestion(name, set(usable) | (RESERVED if parameters else set()))
    hint = f" (did you mean `{close}`?)" if close else ""
    return InvalidQuery(
        f"`{name}` is not a queryable property of {layer.id}{hint}; you may filter on: {names}"
    )


def check_parameters(
    q: Mapping[str, str],
    layer: Layer,
    allowed: tuple[Field, ...],
    named: tuple[Parameter, ...] = (),
) -> None:
    """Every parameter is a reserved one, names a property the caller may filter on, or
    is one of the layer's named parameters the caller may use."""
    names = {f.name for f in allowed} | {p.name for p in named}
    for name in sorted(q.keys() - RESERVED):  # sorted: the same request, the same answer
        if name not in names:
            raise not_queryable(layer, name, allowed, parameters=True, named=named)


def layer_conditions(
    q: Mapping[str, str],
    layer: Layer,
    settings: Settings,
    who: Principal,
    *,
    nearest_first: bool = False,
) -> list[ColumnElement[bool]]:
    """The filters of a request's query parameters, as conditions on the layer, on the
    properties ``who`` may filter on. ``nearest_first``: for a page read nearest the
    bbox's centre first (``app.sql.features.bbox_condition``)."""
    check_text(q)
    allowed = queryable_fields(layer, who)
    parameters = filter_parameters(layer, who)
    check_parameters(q, layer, allowed, parameters)
    projected = settings.territory.projected_crs
    timezone = settings.territory.timezone
    conditions = []
    if (box := request_bbox(q, settings)) is not None:
        conditions.append(sql.bbox_condition(layer, *box, nearest_first=nearest_first))
    if (interval := parse_datetime(q.get("datetime"), timezone)) is not None:
        # A time the caller does not see is no time to filter on either.
        if layer.datetime_field not in visible_fields(layer, who):
            raise InvalidQuery(f"{layer.id} has no time; datetime does not apply to it")
        conditions.append(sql.datetime_condition(layer, *interval))
    for f in allowed:
        if q.get(f.name) is not None:
            found = _property_values(q, f, timezone)
            conditions.append(f.expr == found[0] if len(found) == 1 else f.expr.in_(found))
    given = _parameter_values(q, parameters, timezone)
    conditions += [p.condition(given[p.name]) for p in parameters if p.name in given]
    if (text := q.get("filter")) is not None:
        filter_crs = parse_crs(q.get("filter-crs"), projected, "filter-crs")
        node = _local_literals(cql2.parse(text, q.get("filter-lang")), timezone)
        # The stored geometry itself (not one transformed to filter-crs): the literals are
        # transformed instead, so the spatial index still serves the filter.
        fields = {"geometry": layer.geom, **{f.name: f.expr for f in allowed}}
        if unknown := sorted(cql2.properties(node) - fields.keys()):
            raise not_queryable(layer, unknown[0], allowed)
        conditions.append(cql2.to_condition(node, fields, filter_crs))
    return conditions
