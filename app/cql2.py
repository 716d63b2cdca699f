"""CQL2 filters (OGC API Features Part 3) → SQLAlchemy conditions, through pygeofilter.

pygeofilter parses CQL2 text and JSON and its SQLAlchemy backend writes bound parameters
(never SQL text from the request). Two gaps of pygeofilter 0.4 are closed here: a
``BBOX(…)`` literal inside a spatial function (``S_INTERSECTS(geom, BBOX(…))``) is not
translated, and the CQL2 JSON parser reads ``{"bbox": […]}`` with its axes swapped; both
become ordinary polygons before translation.
"""

from __future__ import annotations

from typing import Any

import orjson
from pygeofilter import ast, values
from pygeofilter.backends.sqlalchemy import to_filter
from pygeofilter.parsers.cql2_json import parse as parse_json
from pygeofilter.parsers.cql2_text import parse as parse_text
from sqlalchemy import ColumnElement

from app.errors import ProblemError

LANGUAGES = ("cql2-text", "cql2-json")


class InvalidFilter(ProblemError):
    status, title = 400, "Invalid filter"


def _bbox_polygon(minx: float, miny: float, maxx: float, maxy: float) -> dict[str, Any]:
    ring = [[minx, miny], [maxx, miny], [maxx, maxy], [minx, maxy], [minx, miny]]
    return {"type": "Polygon", "coordinates": [ring]}


def _bbox_literals(node: Any) -> Any:
    """Replace ``BBOX(…)`` function literals with polygons, depth first."""
    if isinstance(node, ast.Function) and node.name.lower() == "bbox":
        args = [float(a) for a in node.arguments]
        if len(args) == 6:  # 3D: minx, miny, minz, maxx, maxy, maxz
            args = [args[0], args[1], args[3], args[4]]
        if len(args) != 4:
            raise InvalidFilter("BBOX takes four numbers (or six for 3D)")
        return values.Geometry(_bbox_polygon(*args))
    if isinstance(node, ast.Node):
        for name, value in vars(node).items():
            if isinstance(value, list):
                setattr(node, name, [_bbox_literals(v) for v in value])
            elif isinstance(value, ast.Node):
                setattr(node, name, _bbox_literals(value))
    return node


def _json_bboxes(value: Any) -> Any:
    if isinstance(value, dict):
        if set(value) == {"bbox"}:
            box = value["bbox"]
            box = [box[0], box[1], box[3], box[4]] if len(box) == 6 else box
            return _bbox_polygon(*box)
        return {k: _json_bboxes(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_bboxes(v) for v in value]
    return value


def parse(text: str, lang: str | None) -> ast.Node:
    lang = lang or ("cql2-json" if text.lstrip().startswith("{") else "cql2-text")
    if lang not in LANGUAGES:
        raise InvalidFilter(f"filter-lang must be one of {', '.join(LANGUAGES)}")
    try:
        if lang == "cql2-json":
            return parse_json(_json_bboxes(orjson.loads(text)))
        return _bbox_literals(parse_text(text))
    except InvalidFilter:
        raise
    except Exception as exc:
        message = str(exc).splitlines()[0] if str(exc) else exc.__class__.__name__
        raise InvalidFilter(f"cannot parse the {lang} filter: {message}") from None


def to_condition(node: ast.Node, fields: dict[str, ColumnElement[Any]]) -> ColumnElement[bool]:
    """The filter as a SQL condition on ``fields`` (property name → column expression)."""
    if unknown := sorted(_attributes(node) - fields.keys()):
        raise InvalidFilter(
            f"unknown property {', '.join(unknown)}; the collection's queryables list the "
            f"properties a filter may use: {', '.join(sorted(fields))}"
        )
    try:
        return to_filter(node, fields)
    except Exception as exc:
        raise InvalidFilter(f"unsupported filter: {exc}") from None


def _attributes(node: Any) -> set[str]:
    """Names of every property the filter refers to."""
    if isinstance(node, ast.Attribute):
        return {node.name}
    found: set[str] = set()
    if isinstance(node, ast.Node):
        for value in vars(node).values():
            for item in value if isinstance(value, list) else [value]:
                found |= _attributes(item)
    return found
