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

from collections.abc import Mapping
from typing import TYPE_CHECKING

from app import security
from app.core.errors import Forbidden, Unauthorized
from app.ogc.layers import Field, Layer, Parameter
from app.security import Principal
from app.sql import keys as keys_sql

if TYPE_CHECKING:  # the catalog is only passed through; importing it here is a cycle risk
    from sqlalchemy.ext.asyncio import AsyncEngine

    from app.core.cache import TTLCache
    from app.services.catalog import Catalog


# The least role that sees exact figures: every cell of /stats, every indicator of a
# ranking, any Monte Carlo setting. Below it every answer is the published view.
EXACT_FIGURES_ROLE = "analyst"


# The least role that reads the deceased's identifiers (name parts, person keys, agency
# record ids) of the death records (issue 21): linker keys and admins, nobody else. No
# layer, tile, statistic, export or analyst answer ever holds them.
IDENTIFIERS_ROLE = "linker"


def check_role(who: Principal, role: str) -> None:
    """401 for a caller without a key, 403 for a key below ``role``."""
    side = role in security.SIDE_ROLES
    if who.role is None:
        needs = f"the {role} role (or admin)" if side else f"the {role} role or higher"
        raise Unauthorized(f"This endpoint needs an API key with {needs}.")
    if not who.has(role):
        needs = f"the {role} role (or admin)" if side else f"{role} or higher"
        raise Forbidden(f"Your key has the {who.role} role; this needs {needs}.")


def sees_identifiers(who: Principal) -> bool:
    """Whether ``who`` reads the death records' identifiers (:data:`IDENTIFIERS_ROLE`)."""
    return who.has(IDENTIFIERS_ROLE)


def sees_published_view(who: Principal) -> bool:
    """Whether ``who`` gets the published view of tables and rankings: the fixed lattice,
    perturbed counts with small cells withheld, fixed Monte Carlo settings (below
    :data:`EXACT_FIGURES_ROLE`)."""
    return not who.has(EXACT_FIGURES_ROLE)


def may_embed_key(who: Principal) -> bool:
    """Whether a handed-out QGIS project may carry ``who``'s key: only keys that read
    more than the public does, so a public project never holds one."""
    return who.has(EXACT_FIGURES_ROLE)


def may_read(layer: Layer, who: Principal) -> bool:
    """Whether ``who`` may read ``layer`` at all (its features, tiles and style)."""
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
    """401 or 403 unless ``who`` may read ``layer``."""
    if may_read(layer, who):
        return
    if who.role is None:
        raise Unauthorized(
            f"The {layer.id} collection needs an API key with the {layer.role} role."
        )
    raise Forbidden(f"Your key has the {who.role} role; {layer.id} needs {layer.role} or higher.")


async def readable_layers(catalog: Catalog, who: Principal) -> list[Layer]:
    """The catalog's layers ``who`` may read."""
    return [layer for layer in (await catalog.layers()).values() if may_read(layer, who)]


async def readable_layer(catalog: Catalog, layer_id: str, who: Principal) -> Layer:
    """The layer ``layer_id`` (404 when unknown), 401/403 unless ``who`` may read it."""
    layer = await catalog.layer(layer_id)
    check_access(layer, who)
    return layer


def known_principal(key_cache: TTLCache, authorization: str | None) -> Principal | None:
    """The caller, from the ``Authorization`` header alone: the public without one, a
    key this worker has already checked (:func:`principal_of` fills the cache),
    else None, and the caller must go the normal way, which checks the key or says why
    not. For paths that answer before FastAPI's dependencies run."""
    if authorization is None:
        return security.PUBLIC
    key = security.key_from_header(authorization)
    return None if key is None else key_cache.get(security.hash_key(key))


async def principal_of(
    engine: AsyncEngine, key_cache: TTLCache, headers: Mapping[str, str]
) -> Principal:
    """The caller: the public without an ``Authorization`` header, else the principal of
    its key (401 when the key is malformed, unknown or revoked). Valid keys are
    remembered for a minute (tiles and pages come by the hundred); a revocation anywhere
    clears the cache through NOTIFY (``app.core.versions``)."""
    authorization = headers.get("authorization")
    if authorization is None:
        return security.PUBLIC
    key = security.key_from_header(authorization)
    if key is None:
        raise Unauthorized(
            "Send the API key as `Authorization: Bearer <key>` (or as the password of "
            "HTTP Basic authentication)."
        )
    prefix = security.split_key(key)
    if prefix is None:
        raise Unauthorized("Malformed API key.")
    cache_key = security.hash_key(key)
    if (principal := key_cache.get(cache_key)) is not None:
        return principal
    async with engine.begin() as conn:
        row = (await conn.execute(keys_sql.select_active_key(prefix))).first()
        if row is None or not security.key_matches(key, row.hash):
            raise Unauthorized("Unknown or revoked API key.")
        await conn.execute(keys_sql.touch_key(row.id))
    principal = Principal(role=row.role, key_id=row.id, name=row.name)
    key_cache.set(cache_key, principal)
    return principal
