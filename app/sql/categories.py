"""SQL for the category vocabulary and its versions (kept in the audit log)."""

from __future__ import annotations

from sqlalchemy import Delete, Select, TextClause, delete, func, select, text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.sql.dml import Insert

from app.models import audit_log, category, incident

#: The audit log's entity for a saved vocabulary; its entity_id is the version number.
VOCABULARY_ENTITY = "category_vocabulary"
COLUMNS = ("code", "name", "category_group", "sensitive", "description")


def lock_categories() -> TextClause:
    """Serialise vocabulary writes (two saves would number the same version) while
    imports, whose foreign-key checks only share-lock category rows, go on."""
    return text("LOCK TABLE category IN SHARE ROW EXCLUSIVE MODE")


def upsert_categories(rows: list[dict]) -> Insert:
    """Insert ``rows`` (every column of :data:`COLUMNS`), updating those whose code exists."""
    stmt = insert(category).values(rows)
    return stmt.on_conflict_do_update(
        index_elements=[category.c.code],
        set_={c: stmt.excluded[c] for c in COLUMNS if c != "code"},
    )


def delete_categories(codes: list[str]) -> Delete:
    """Delete the categories ``codes`` (the incident foreign key refuses used ones)."""
    return delete(category).where(category.c.code.in_(codes))


def select_categories() -> Select:
    """Every category, by group then code."""
    return select(*(category.c[c] for c in COLUMNS)).order_by(
        category.c.category_group, category.c.code
    )


def count_incidents_by_category(codes: list[str]) -> Select:
    """``category, incidents`` for those of ``codes`` that any incident uses, soft-deleted
    incidents included (they may be restored, and the foreign key counts them)."""
    return (
        select(incident.c.category, func.count().label("incidents"))
        .where(incident.c.category.in_(codes))
        .group_by(incident.c.category)
        .order_by(incident.c.category)
    )


def select_vocabulary_version() -> Select:
    """The number of vocabularies saved so far (the current version; 0 for none)."""
    return (
        select(func.count()).select_from(audit_log).where(audit_log.c.entity == VOCABULARY_ENTITY)
    )
