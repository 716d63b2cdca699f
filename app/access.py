"""Who may read which layer, which of its fields a caller sees, and which fields a caller
may filter on: the one place every door asks (features, tiles, styles, the QGIS project
and the tile fast path in ``app.ogc.tilecache``).

A caller filters only on what it sees. A filter on a field whose values are withheld
would still select rows by those values, and the rows' presence gives the values away
(walking ``count=1..k`` over a public hot spot layer rebuilt every cell's count). So the
fields a caller may filter on are the queryable fields it sees, and nothing else: the
rule is :func:`queryable_fields`, and ``app.ogc.filters`` refuses any other name.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from app import security
from app.core.errors import Forbidden, Unauthorized
from app.ogc.layers import Field, Layer, Parameter
from app.security import Principal

if TYPE_CHECKING:  # the catalog is only passed through; importing it here is a cycle risk
    from app.core.cache import TTLCache
    from app.services.catalog import Catalog


def may_read(layer: Layer, who: Principal) -> bool:
    return layer.role is None or who.has(layer.role)


def may_see(field: Field, who: Principal) -> bool:
    """Below a field's role its key is there with a null value."""
    return field.role is None or who.has(field.role)


def visible_fields(layer: Layer, who: Principal) -> list[str]:
    """The names of the fields whose values ``who`` gets, in declaration order."""
    return [f.name for f in layer.fields if may_see(f, who)]


def queryable_fields(layer: Layer, who: Principal) -> tuple[Field, ...]:
    """The fields ``who`` may filter (and would sort) on: queryable and visible. The
    queryables document, ``name=value`` filters and CQL2 all use this and nothing else."""
    return tuple(f for f in layer.queryables if may_see(f, who))


def filter_parameters(layer: Layer, who: Principal) -> tuple[Parameter, ...]:
    """The layer's named parameters (``occurred_from``, ``unit``, …) ``who`` may use:
    those that read a field ``who`` sees, by the rule of :func:`queryable_fields`."""
    seen = {f.name for f in layer.fields if may_see(f, who)}
    return tuple(p for p in layer.parameters if p.field in seen)


def check_access(layer: Layer, who: Principal) -> None:
    if may_read(layer, who):
        return
    if who.role is None:
        raise Unauthorized(
            f"The {layer.id} collection needs an API key with the {layer.role} role."
        )
    raise Forbidden(f"Your key has the {who.role} role; {layer.id} needs {layer.role} or higher.")


async def readable_layers(catalog: Catalog, who: Principal) -> list[Layer]:
    return [layer for layer in (await catalog.layers()).values() if may_read(layer, who)]


async def readable_layer(catalog: Catalog, layer_id: str, who: Principal) -> Layer:
    layer = await catalog.layer(layer_id)
    check_access(layer, who)
    return layer


def known_principal(key_cache: TTLCache, authorization: str | None) -> Principal | None:
    """The caller, from the ``Authorization`` header alone: the public without one, a
    key this worker has already checked (``app.deps.get_principal`` fills the cache),
    else None, and the caller must go the normal way, which checks the key or says why
    not. For paths that answer before FastAPI's dependencies run."""
    if authorization is None:
        return security.PUBLIC
    key = security.key_from_header(authorization)
    return None if key is None else key_cache.get(security.hash_key(key))
