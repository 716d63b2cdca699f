"""SQL for the statistical tables: population denominators and external indicators."""

from __future__ import annotations

from sqlalchemy import Select, Table, literal_column, or_, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.sql.dml import Insert

from app.models import admin_unit, indicator_value, population

# Largest number of rows per INSERT: 8 parameters a row stays far below PostgreSQL's 65,535.
CHUNK_ROWS = 5_000


def select_unit_codes() -> Select:
    """``code, id`` of every admin unit."""
    return select(admin_unit.c.code, admin_unit.c.id)


def _upsert(table: Table, rows: list[dict], key: tuple[str, ...]) -> Insert:
    """Insert ``rows``, updating ``value`` and ``source`` on a key conflict.

    A conflicting row whose value and source are unchanged is left alone and not
    returned, so the ``inserted`` column of the returned rows (``xmax = 0``: a new tuple)
    tells inserts from real updates, and the rows not returned are unchanged.
    """
    stmt = insert(table).values(rows)
    stmt = stmt.on_conflict_do_update(
        index_elements=[table.c[k] for k in key],
        set_={"value": stmt.excluded.value, "source": stmt.excluded.source},
        where=or_(
            table.c.value.is_distinct_from(stmt.excluded.value),
            table.c.source.is_distinct_from(stmt.excluded.source),
        ),
    )
    return stmt.returning(literal_column("xmax = 0").label("inserted"))


def upsert_population(rows: list[dict]) -> Insert:
    """Rows: ``unit_id, year, sex, age_group, value, source``."""
    return _upsert(population, rows, ("unit_id", "year", "sex", "age_group"))


def upsert_indicators(rows: list[dict]) -> Insert:
    """Rows: ``unit_id, period, indicator, sex, age_group, value, source``."""
    return _upsert(indicator_value, rows, ("unit_id", "period", "indicator", "sex", "age_group"))
