"""SQL for disaggregated statistics: incident counts by unit and breakdown, the units,
their populations and the category vocabulary."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import Select, case, func, literal, select, true

from app.models import admin_unit, category, cell_key_seed, incident, population
from app.sql.incidents import IncidentFilter, conditions

# Breakdowns besides the unit, in the order of the columns of a statistics row.
BREAKDOWNS = ("category", "category_group", "period", "victim_sex", "age_group")
PERIODS = ("month", "quarter", "year")
UNKNOWN = "unknown"
# Label of a known age outside every requested age group.
OTHER_AGE = "other"
# Record keys are the low 32 bits of a seeded hash of the incident id.
RECORD_KEY_MASK = 0xFFFF_FFFF


def select_units(*, level: int | None = None, codes: Sequence[str] = ()) -> Select:
    """Units of one level, or the units with these codes, with their geometry as WKB."""
    stmt = select(
        admin_unit.c.id,
        admin_unit.c.code,
        admin_unit.c.name,
        admin_unit.c.level,
        func.ST_AsBinary(admin_unit.c.geom).label("wkb"),
    )
    stmt = (
        stmt.where(admin_unit.c.code.in_(codes))
        if codes
        else stmt.where(admin_unit.c.level == level)
    )
    return stmt.order_by(admin_unit.c.code)


def select_categories() -> Select:
    """SELECT every category's code and group."""
    return select(category.c.code, category.c.category_group).order_by(category.c.code)


def select_sensitive_categories() -> Select:
    """Codes of the categories flagged sensitive (public tables never show them)."""
    return select(category.c.code).where(category.c.sensitive).order_by(category.c.code)


def select_cell_key_seed() -> Select:
    """SELECT the secret seed of the cell-key perturbation (``app.services.disclosure``)."""
    return select(cell_key_seed.c.seed)


def select_population(unit_ids: Sequence[int]) -> Select:
    """Every population row of these units (all years, sexes and age groups)."""
    c = population.c
    return select(c.unit_id, c.year, c.sex, c.age_group, c.value, c.source).where(
        c.unit_id.in_(unit_ids)
    )


def count_incidents(
    f: IncidentFilter,
    unit_ids: Sequence[int],
    *,
    by: Sequence[str],
    period: str,
    timezone: str,
    age_groups: Sequence[tuple[str, int, int | None]],
    key_seed: int | None = None,
) -> Select:
    """Incidents per unit and breakdown, with the first and last local time of each group.

    ``by`` names breakdowns from :data:`BREAKDOWNS`. The unit comes from the units set on
    every incident (a lateral unnest of ``unit_ids``), the period is the local start of
    the month, quarter or year (``date_trunc`` in ``timezone``), a missing victim sex is
    ``unknown``, and ages fall into ``age_groups`` ((label, first age, last age or None)),
    ``unknown`` when missing and ``other`` outside every group. Columns: ``unit_id``, the
    breakdowns, ``count``, ``first_at`` and ``last_at`` (local timestamps); with a
    ``key_seed``, also ``key_sum``: the sum of the group's record keys (each incident's id
    hashed with the seed, 32 bits), from which the cell key of the perturbation follows.
    """
    units = func.unnest(incident.c.unit_ids).table_valued("uid").render_derived(name="units")
    local = func.timezone(timezone, incident.c.occurred_at)
    age = incident.c.victim_age
    columns = {
        "category": incident.c.category,
        "category_group": category.c.category_group,
        "period": func.date_trunc(period, local),
        "victim_sex": func.coalesce(incident.c.victim_sex, UNKNOWN),
        "age_group": case(
            (age.is_(None), literal(UNKNOWN)),
            *(
                (age >= lo if hi is None else age.between(lo, hi), literal(label))
                for label, lo, hi in age_groups
            ),
            else_=literal(OTHER_AGE),
        ),
    }
    source = incident.join(units, true())
    if "category_group" in by:
        source = source.join(category, category.c.code == incident.c.category)
    # Grouping happens outside: an expression with bound parameters (the time zone, the
    # age limits) is not recognised as the same expression in GROUP BY.
    rows = (
        select(
            units.c.uid.label("unit_id"),
            local.label("local_at"),
            *(columns[name].label(name) for name in by),
            *(
                [
                    func.hashint8extended(incident.c.id, key_seed)
                    .op("&")(RECORD_KEY_MASK)
                    .label("record_key")
                ]
                if key_seed is not None
                else []
            ),
        )
        .select_from(source)
        .where(*conditions(f), units.c.uid.in_(unit_ids))
        .subquery("rows")
    )
    keys = [rows.c.unit_id, *(rows.c[name] for name in by)]
    return select(
        *keys,
        func.count().label("count"),
        func.min(rows.c.local_at).label("first_at"),
        func.max(rows.c.local_at).label("last_at"),
        *([func.sum(rows.c.record_key).label("key_sum")] if key_seed is not None else []),
    ).group_by(*keys)


def select_last_incident() -> Select:
    """When the latest live incident happened (the index layers show its last full period)."""
    return select(func.max(incident.c.occurred_at)).where(incident.c.deleted_at.is_(None))


def select_first_incident() -> Select:
    """When the earliest live incident happened (the first period an index can cover)."""
    return select(func.min(incident.c.occurred_at)).where(incident.c.deleted_at.is_(None))
