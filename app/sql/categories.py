"""SQL for the category vocabulary."""

from __future__ import annotations

from sqlalchemy import Select, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.sql.dml import Insert

from app.models import category


def upsert_categories(rows: list[dict]) -> Insert:
    stmt = insert(category).values(rows)
    return stmt.on_conflict_do_update(
        index_elements=[category.c.code],
        set_={c: stmt.excluded[c] for c in ("name", "category_group", "sensitive", "description")},
    )


def select_categories() -> Select:
    return select(category).order_by(category.c.category_group, category.c.code)
