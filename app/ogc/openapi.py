"""The OpenAPI 3.0 document of the landing page's ``service-desc`` link.

FastAPI writes OpenAPI 3.1; OGC API Features Part 1 (and QGIS, which reads the default
and maximum page size from ``components.parameters.limit``; without them it pages by
100) expect 3.0. This rewrites the few 3.1 constructs FastAPI uses into their 3.0 form.
"""

from __future__ import annotations

import copy
from typing import Any

from fastapi import FastAPI

from app.core.settings import Settings

_ITEMS_PATH = "/collections/{collection_id}/items"
_NULL = {"nullable": True}


def _downgrade(node: Any) -> Any:
    """The 3.0 form of a 3.1 schema node (``anyOf [X, null]`` is ``X`` with ``nullable``)."""
    if isinstance(node, list):
        return [_downgrade(v) for v in node]
    if not isinstance(node, dict):
        return node
    node = _nullable({k: _downgrade(v) for k, v in node.items()})
    _one_example(node)
    _exclusive_bounds(node)
    if "const" in node:
        node["enum"] = [node.pop("const")]
    node.pop("contentMediaType", None)
    return node


def _nullable(node: dict[str, Any]) -> dict[str, Any]:
    """``anyOf``/``oneOf`` with a null option, and ``type: null``, as ``nullable``."""
    for key in ("anyOf", "oneOf"):
        options = node.get(key)
        # The options are downgraded already: a ``{"type": "null"}`` is ``_NULL`` by now.
        if isinstance(options, list) and _NULL in options:
            rest = [o for o in options if o != _NULL]
            node.pop(key)
            node.update(rest[0] if len(rest) == 1 else {key: rest})
            node["nullable"] = True
    if node.get("type") == "null":
        return dict(_NULL)
    return node


def _one_example(node: dict[str, Any]) -> None:
    """A schema's ``examples`` list as 3.0's single ``example``; a parameter's own
    ``examples`` (beside its ``in``) are left as they are."""
    if isinstance(node.get("examples"), list) and "in" not in node:
        examples = node.pop("examples")
        if examples:
            node["example"] = examples[0]


def _exclusive_bounds(node: dict[str, Any]) -> None:
    """3.1's numeric ``exclusiveMinimum: n`` as 3.0's ``minimum: n, exclusiveMinimum: true``."""
    for bound in ("exclusiveMinimum", "exclusiveMaximum"):
        if isinstance(node.get(bound), int | float) and not isinstance(node[bound], bool):
            node[bound.replace("exclusiveM", "m")] = node[bound]
            node[bound] = True


def openapi_30(app: FastAPI, settings: Settings) -> dict[str, Any]:
    """The application's OpenAPI document in version 3.0, with the items' ``limit`` as a
    shared parameter that gives QGIS the default and maximum page size."""
    document = _downgrade(copy.deepcopy(app.openapi()))
    document["openapi"] = "3.0.3"
    limit = {
        "name": "limit",
        "in": "query",
        "required": False,
        "description": "Features per page. Values above the maximum are clamped to it.",
        "style": "form",
        "explode": False,
        "schema": {
            "type": "integer",
            "minimum": 1,
            "maximum": settings.api.max_limit,
            "default": settings.api.default_limit,
        },
    }
    document.setdefault("components", {})["parameters"] = {"limit": limit}
    operation = document["paths"][_ITEMS_PATH]["get"]
    operation["parameters"] = [
        {"$ref": "#/components/parameters/limit"} if p.get("name") == "limit" else p
        for p in operation["parameters"]
    ]
    return document
