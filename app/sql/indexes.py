"""SQL for index definitions (versioned) and the external indicator values they read."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Insert, Select, func, insert, select

from app.models import admin_unit, index_definition, indicator_value

_COLUMNS = (
    index_definition.c.code,
    index_definition.c.version,
    index_definition.c.definition,
    index_definition.c.created_by,
    index_definition.c.created_at,
)


def next_version(code: str) -> Select:
    """The next version number of ``code`` (1 when it does not exist)."""
    return select(func.coalesce(func.max(index_definition.c.version), 0) + 1).where(
        index_definition.c.code == code
    )


def lock_code(code: str) -> Select:
    """A transaction-scoped advisory lock so two posts of one code do not race."""
    return select(func.pg_advisory_xact_lock(func.hashtext("index_definition:" + code)))


def insert_definition(code: str, version: int, definition: dict[str, Any], actor: str) -> Insert:
    """INSERT one version of a composite index definition; returns the stored row."""
    return (
        insert(index_definition)
        .values(code=code, version=version, definition=definition, created_by=actor)
        .returning(*_COLUMNS)
    )


def select_definition(code: str, version: int | None = None) -> Select:
    """One version of ``code`` (the latest when ``version`` is None)."""
    stmt = select(*_COLUMNS).where(index_definition.c.code == code)
    if version is not None:
        return stmt.where(index_definition.c.version == version)
    return stmt.order_by(index_definition.c.version.desc()).limit(1)


def select_latest() -> Select:
    """The latest version of every code, by code."""
    latest = (
        select(index_definition.c.code, func.max(index_definition.c.version).label("version"))
        .group_by(index_definition.c.code)
        .subquery("latest")
    )
    return (
        select(*_COLUMNS)
        .join_from(
            index_definition,
            latest,
            (latest.c.code == index_definition.c.code)
            & (latest.c.version == index_definition.c.version),
        )
        .order_by(index_definition.c.code)
    )


def select_indicator_values(
    indicators: Sequence[str], unit_ids: Sequence[int], period: str
) -> Select:
    """External values (sex and age group ``total``) of these indicators, units and period."""
    c = indicator_value.c
    return select(c.unit_id, c.indicator, c.value).where(
        c.indicator.in_(indicators),
        c.unit_id.in_(unit_ids),
        c.period == period,
        c.sex == "total",
        c.age_group == "total",
    )


def select_unit_geometries(codes: Sequence[str]) -> Select:
    """The code and the GeoJSON geometry text of each of these units."""
    return select(admin_unit.c.code, func.ST_AsGeoJSON(admin_unit.c.geom).label("geometry")).where(
        admin_unit.c.code.in_(codes)
    )
