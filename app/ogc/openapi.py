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
    node = {k: _downgrade(v) for k, v in node.items()}
    for key in ("anyOf", "oneOf"):
        options = node.get(key)
        # The options are downgraded already: a ``{"type": "null"}`` is ``_NULL`` by now.
        if isinstance(options, list) and _NULL in options:
            rest = [o for o in options if o != _NULL]
            node.pop(key)
            node.update(rest[0] if len(rest) == 1 else {key: rest})
            node["nullable"] = True
    if node.get("type") == "null":
        node = dict(_NULL)
    if isinstance(node.get("examples"), list) and "in" not in node:
        examples = node.pop("examples")
        if examples:
            node["example"] = examples[0]
    for bound in ("exclusiveMinimum", "exclusiveMaximum"):
        if isinstance(node.get(bound), int | float) and not isinstance(node[bound], bool):
            node[bound.replace("exclusiveM", "m")] = node[bound]
            node[bound] = True
    if "const" in node:
        node["enum"] = [node.pop("const")]
    node.pop("contentMediaType", None)
    return node


def openapi_30(app: FastAPI, settings: Settings) -> dict[str, Any]:
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
