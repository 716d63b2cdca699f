"""CQL2 filters (OGC API Features Part 3) → SQLAlchemy conditions, through pygeofilter.

pygeofilter parses CQL2 text and JSON and its SQLAlchemy backend writes bound parameters
(never SQL text from the request). pygeofilter 0.4 misreads some standard CQL2, which is
closed here:

- CQL2 text: a quote inside a string is written twice (``'O''Brien'``), and ``NOT``
  applies to any condition, parenthesised or not (QGIS writes ``(NOT ((a > 1)))``). The
  text grammar is pygeofilter's own, with those two rules corrected.
- ``BBOX(…)`` as a geometry literal (``S_INTERSECTS(geom, BBOX(…))``) is not translated,
  and the CQL2 JSON parser reads ``{"bbox": […]}`` with its axes swapped; both become
  ordinary polygons first.
- CQL2 JSON ``between`` takes three arguments (``[prop, low, high]``); pygeofilter
  expects the draft form ``[prop, [low, high]]``.
- Geometry literals are in ``filter-crs`` (CRS84 by default, EPSG:4326 latitude first):
  they are transformed to the storage CRS in SQL, so the column keeps its spatial index.
- A literal of the wrong type for its property (``victim_age = 'old'``) is a 400 here,
  not a database error.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import orjson
import shapely.geometry
from lark import Lark, v_args
from pygeofilter import ast, values
from pygeofilter.backends.evaluator import handle
from pygeofilter.backends.sqlalchemy.evaluate import SQLAlchemyFilterEvaluator
from pygeofilter.parsers import cql2_text
from pygeofilter.parsers.cql2_json import parse as parse_json
from pygeofilter.parsers.cql2_text.parser import CQLTransformer
from sqlalchemy import ColumnElement, Integer, bindparam, func

from app.core.errors import ProblemError
from app.ogc.crs import OutputCrs

LANGUAGES = ("cql2-text", "cql2-json")


class InvalidFilter(ProblemError):
    """A ``filter`` that cannot be parsed or does not fit the collection (400)."""

    status, title = 400, "Invalid filter"


# --- CQL2 text -------------------------------------------------------------------------------

_GRAMMAR_FIXES = {
    # A quote inside a string is doubled (CQL2 text, "character literal").
    'SINGLE_QUOTED: "\'" /.*?/ "\'"': "SINGLE_QUOTED: \"'\" /(?:[^']|'')*/ \"'\"",
    # NOT applies to any condition, including a parenthesised one.
    '            | "NOT"i predicate                                               -> not_\n'
    '            | "NOT"i "(" predicate ")"                                       -> not_\n': (
        '            | "NOT"i condition_1                                             -> not_\n'
    ),
    # A property name may be one letter: hot spot layers have z, p and i.
    "attribute: /[a-zA-Z][a-zA-Z_:0-9.]+/": "attribute: /[a-zA-Z][a-zA-Z_:0-9.]*/",
}


@v_args(meta=False, inline=True)
class _Transformer(CQLTransformer):
    def SINGLE_QUOTED(self, token: str) -> str:  # named after the grammar terminal
        return token[1:-1].replace("''", "'")


def _text_parser() -> Lark:
    package = Path(cql2_text.__file__).parent
    grammar = (package / "grammar.lark").read_text()
    for old, new in _GRAMMAR_FIXES.items():
        if old not in grammar:  # a pygeofilter upgrade changed the grammar: fail loudly
            raise RuntimeError(f"pygeofilter's CQL2 grammar changed; cannot patch {old!r}")
        grammar = grammar.replace(old, new)
    return Lark(
        grammar,
        parser="lalr",
        maybe_placeholders=False,
        transformer=_Transformer(),
        import_paths=[str(package.parent)],
    )


_TEXT = _text_parser()


# --- geometry literals and CQL2 JSON -----------------------------------------------------------


def _bbox_polygon(minx: float, miny: float, maxx: float, maxy: float) -> dict[str, Any]:
    ring = [[minx, miny], [maxx, miny], [maxx, maxy], [minx, maxy], [minx, miny]]
    return {"type": "Polygon", "coordinates": [ring]}


def _bbox_literals(node: Any) -> Any:
    """Replace ``BBOX(…)`` function literals with polygons, depth first."""
    if isinstance(node, ast.Function) and node.name.lower() == "bbox":
        try:
            args = [float(a) for a in node.arguments]
        except (TypeError, ValueError):
            raise InvalidFilter("BBOX takes four numbers (or six for 3D)") from None
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


def _normalise_json(value: Any) -> Any:
    """Standard CQL2 JSON → the form pygeofilter 0.4 reads."""
    if isinstance(value, dict):
        if set(value) == {"bbox"}:
            box = value["bbox"]
            if not isinstance(box, list) or len(box) not in (4, 6):
                raise InvalidFilter("bbox takes four numbers (or six for 3D)")
            box = [box[0], box[1], box[3], box[4]] if len(box) == 6 else box
            return _bbox_polygon(*box)
        value = {k: _normalise_json(v) for k, v in value.items()}
        args = value.get("args")
        if value.get("op") == "between" and isinstance(args, list) and len(args) == 3:
            value["args"] = [args[0], [args[1], args[2]]]
        return value
    if isinstance(value, list):
        return [_normalise_json(v) for v in value]
    return value


def parse(text: str, lang: str | None) -> ast.Node:
    """The filter's syntax tree, from CQL2 text or JSON (``lang``, else guessed from the
    first character); bbox literals become polygons."""
    lang = lang or ("cql2-json" if text.lstrip().startswith("{") else "cql2-text")
    if lang not in LANGUAGES:
        raise InvalidFilter(f"filter-lang must be one of {', '.join(LANGUAGES)}")
    try:
        if lang == "cql2-json":
            node = parse_json(_normalise_json(orjson.loads(text)))
        else:
            node = _TEXT.parse(text)
        return _bbox_literals(node)
    except InvalidFilter:
        raise
    except Exception as exc:
        message = str(exc).splitlines()[0] if str(exc) else exc.__class__.__name__
        raise InvalidFilter(f"cannot parse the {lang} filter: {message}") from None


# --- translation to SQL ------------------------------------------------------------------------


class _Evaluator(SQLAlchemyFilterEvaluator):
    """pygeofilter's SQLAlchemy evaluator, with geometry literals in ``filter-crs``."""

    def __init__(self, fields: dict[str, ColumnElement[Any]], crs: OutputCrs) -> None:
        super().__init__(fields, undefined_as_null=None)
        self.crs = crs

    def _to_storage(self, geometry: ColumnElement[Any]) -> ColumnElement[Any]:
        # Latitude-first literals (EPSG:4326) are flipped to x/y before anything else.
        if self.crs.lat_first:
            geometry = func.ST_FlipCoordinates(geometry)
        return geometry if self.crs.srid == 4326 else func.ST_Transform(geometry, 4326)

    def _envelope(self, minx: float, miny: float, maxx: float, maxy: float) -> ColumnElement:
        numbers = [bindparam(None, float(v)) for v in (minx, miny, maxx, maxy)]
        return self._to_storage(func.ST_MakeEnvelope(*numbers, bindparam(None, self.crs.srid)))

    @handle(values.Geometry)
    def geometry(self, node: values.Geometry) -> ColumnElement[Any]:
        try:
            wkt = shapely.geometry.shape(node.geometry).wkt
        except Exception as exc:
            raise InvalidFilter(f"invalid geometry literal: {exc}") from None
        srid = bindparam(None, self.crs.srid, type_=Integer)
        return self._to_storage(func.ST_GeomFromText(bindparam(None, wkt), srid))

    @handle(values.Envelope)
    def envelope(self, node: values.Envelope) -> ColumnElement[Any]:
        return self._envelope(node.x1, node.y1, node.x2, node.y2)

    @handle(ast.BBox)
    def bbox(self, node: ast.BBox, lhs: ColumnElement[Any]) -> ColumnElement[bool]:
        return func.ST_Intersects(lhs, self._envelope(node.minx, node.miny, node.maxx, node.maxy))


def to_condition(
    node: ast.Node, fields: dict[str, ColumnElement[Any]], crs: OutputCrs
) -> ColumnElement[bool]:
    """The filter as a SQL condition on ``fields`` (property name → column expression),
    its geometry literals read in ``crs``. ``fields`` are the properties this caller may
    filter on (``app.access.queryable_fields``), never more: the caller checks the names
    first (``app.ogc.filters``) so that its answer is the same for every refused name."""
    if unknown := sorted(properties(node) - fields.keys()):
        raise InvalidFilter(
            f"unknown property {', '.join(unknown)}; the collection's queryables list the "
            f"properties a filter may use: {', '.join(sorted(fields))}"
        )
    _check_types(node, fields)
    try:
        return _Evaluator(fields, crs).evaluate(node)
    except InvalidFilter:
        raise
    except Exception as exc:
        raise InvalidFilter(f"unsupported filter: {exc}") from None


def properties(node: Any) -> set[str]:
    """Names of every property the filter refers to."""
    if isinstance(node, ast.Attribute):
        return {node.name}
    found: set[str] = set()
    if isinstance(node, ast.Node):
        for value in vars(node).values():
            for item in value if isinstance(value, list) else [value]:
                found |= properties(item)
    return found


# Python types of literals each column type accepts; a literal of another type would
# reach PostgreSQL as a failing cast or a missing operator.
_ACCEPTS: dict[type, tuple[type, ...]] = {
    str: (str,),
    int: (int, float),
    float: (int, float),
    bool: (bool,),
    dt.datetime: (dt.datetime, dt.date),
    dt.date: (dt.datetime, dt.date),
}


def _python_type(expr: ColumnElement[Any]) -> type | None:
    try:
        return expr.type.python_type
    except NotImplementedError:  # geometry, JSON: no comparison literal applies
        return None


def _check_types(node: Any, fields: dict[str, ColumnElement[Any]]) -> None:
    """Every literal compared with a property has a type that property can take."""
    if isinstance(node, ast.Comparison | ast.Between | ast.In | ast.Like):
        lhs, others = _operands(node)
        if isinstance(lhs, ast.Attribute) and (wanted := _python_type(fields[lhs.name])):
            if isinstance(node, ast.Like) and wanted is not str:
                raise InvalidFilter(f"LIKE applies to text; {lhs.name} is not text")
            for value in others:
                _check_literal(lhs.name, wanted, value)
    if isinstance(node, ast.Node):
        for value in vars(node).values():
            for item in value if isinstance(value, list) else [value]:
                _check_types(item, fields)


def _operands(node: ast.Comparison | ast.Between | ast.In | ast.Like) -> tuple[Any, list[Any]]:
    """The property side of a predicate and the values it is compared with (a comparison
    may have its property on the right)."""
    if isinstance(node, ast.Comparison):
        if not isinstance(node.lhs, ast.Attribute):
            return node.rhs, [node.lhs]
        return node.lhs, [node.rhs]
    if isinstance(node, ast.Between):
        return node.lhs, [node.low, node.high]
    if isinstance(node, ast.In):
        return node.lhs, list(node.sub_nodes)
    return node.lhs, [node.pattern]


def _check_literal(name: str, wanted: type, value: Any) -> None:
    """A literal compared with property ``name`` (of Python type ``wanted``) fits it."""
    if isinstance(value, ast.Node | values.Geometry | values.Envelope):
        return  # an expression or a property: PostgreSQL decides
    accepted = _ACCEPTS.get(wanted, (wanted,))
    # bool is an int in Python, never a number in CQL2.
    if not isinstance(value, accepted) or (isinstance(value, bool) and wanted is not bool):
        hint = " (write TIMESTAMP('…'))" if wanted is dt.datetime else ""
        raise InvalidFilter(
            f"{name} is {_TYPE_NAMES.get(wanted, wanted.__name__)}; {value!r} is not{hint}"
        )


_TYPE_NAMES = {
    str: "text",
    int: "an integer",
    float: "a number",
    bool: "a boolean",
    dt.datetime: "a date-time",
}
