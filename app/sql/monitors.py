"""SQL for early warning: monitor definitions (versioned), the count series a monitor
reads, and alerts."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Insert,
    Select,
    Update,
    any_,
    func,
    insert,
    literal_column,
    or_,
    select,
    text,
    update,
)

from app.models import (
    admin_unit,
    alert,
    category,
    incident,
    incident_h3,
    monitor_definition,
)
from app.schemas.monitors import IncidentSelection
from app.sql.incidents import IncidentFilter, conditions

_COLUMNS = (
    monitor_definition.c.code,
    monitor_definition.c.version,
    monitor_definition.c.definition,
    monitor_definition.c.created_by,
    monitor_definition.c.created_at,
)

# --- definitions ------------------------------------------------------------------------


def next_version(code: str) -> Select:
    """The next version number of ``code`` (1 when it does not exist)."""
    return select(func.coalesce(func.max(monitor_definition.c.version), 0) + 1).where(
        monitor_definition.c.code == code
    )


def lock_code(code: str) -> Select:
    """A transaction-scoped advisory lock so two posts of one code do not race."""
    return select(func.pg_advisory_xact_lock(func.hashtext("monitor_definition:" + code)))


def insert_definition(code: str, version: int, definition: dict[str, Any], actor: str) -> Insert:
    """INSERT one version of a monitor definition; returns the stored row."""
    return (
        insert(monitor_definition)
        .values(code=code, version=version, definition=definition, created_by=actor)
        .returning(*_COLUMNS)
    )


def select_definition(code: str, version: int | None = None) -> Select:
    """One version of ``code`` (the latest when ``version`` is None)."""
    stmt = select(*_COLUMNS).where(monitor_definition.c.code == code)
    if version is not None:
        return stmt.where(monitor_definition.c.version == version)
    return stmt.order_by(monitor_definition.c.version.desc()).limit(1)


def any_monitor() -> Select:
    """One stored monitor's id, if any (NULL when none is stored)."""
    return select(func.min(monitor_definition.c.id))


def select_latest() -> Select:
    """The latest version of every code, by code."""
    m = monitor_definition.c
    latest = (
        select(m.code, func.max(m.version).label("version")).group_by(m.code).subquery("latest")
    )
    return (
        select(*_COLUMNS)
        .join_from(
            monitor_definition,
            latest,
            (latest.c.code == m.code) & (latest.c.version == m.version),
        )
        .order_by(m.code)
    )


# --- series -----------------------------------------------------------------------------


def selection_conditions(s: IncidentSelection) -> list[ColumnElement[bool]]:
    """The live incidents a monitor counts, as SQL conditions."""
    where = conditions(
        IncidentFilter(
            victim_sex=(s.victim_sex,) if s.victim_sex else (),
            age_min=s.age_min,
            age_max=s.age_max,
            sources=(s.source,) if s.source else (),
        )
    )
    kinds: list[ColumnElement[bool]] = []
    if s.categories:
        kinds.append(incident.c.category.in_(s.categories))
    if s.category_groups:
        grouped = select(category.c.code).where(category.c.category_group.in_(s.category_groups))
        # = ANY(ARRAY(subquery)), not IN (subquery): the codes become one array computed
        # first, so the planner can use the category index (a semi-join read every
        # incident: twice the time for the demo's violence against women).
        kinds.append(incident.c.category == any_(func.array(grouped.scalar_subquery())))
    if kinds:
        where.append(or_(*kinds))
    return where


def _local_period(step: str, timezone: str) -> ColumnElement:
    """The local start of the incident's week (ISO: Monday) or month, naive local time."""
    local = func.timezone(timezone, incident.c.occurred_at)
    return func.date_trunc(step, local)


def counts_by_unit(s: IncidentSelection, level: int, step: str, timezone: str) -> Select:
    """(unit code, local period start, count) of the selection: one GROUP BY over the
    units of ``level`` each incident lies in, their codes joined to the groups after.
    The units of the level as one array computed first, not a join per incident: with
    no statistics yet (a fresh import) the join became a nested loop reading the unit
    index once per incident (97 ms for the demo's violence against women, 7 ms now)."""
    units = func.unnest(incident.c.unit_ids).table_valued("uid").render_derived(name="units")
    of_level = select(admin_unit.c.id).where(admin_unit.c.level == level)
    period = _local_period(step, timezone).label("period")
    counts = (
        select(units.c.uid, period, func.count().label("n"))
        .select_from(incident)
        .join(units, literal_column("true"))
        .where(
            *selection_conditions(s),
            units.c.uid == any_(func.array(of_level.scalar_subquery())),
        )
        .group_by(units.c.uid, period)
        .subquery("counts")
    )
    return select(admin_unit.c.code, counts.c.period, counts.c.n).join_from(
        counts, admin_unit, admin_unit.c.id == counts.c.uid
    )


def cells_by_period(s: IncidentSelection, resolution: int, step: str, timezone: str) -> Select:
    """One row of the selection's incidents as packed arrays (H3 monitors): ``cells``, the
    stored H3 cell of each at ``resolution`` (``incident_h3``; -1 where none is stored
    yet, 0 for a point without a cell), and ``periods``, the local start of its period
    (epoch seconds of the naive local time), both as big-endian 8-byte values (``int8send``,
    ``float8send``) that numpy reads without a Python object per incident. The incidents
    without a stored cell come again in ``missing`` (id), ``lon`` and ``lat``, in the
    order of their -1s in ``cells`` (one aggregation feeds each array the same rows in
    the same order).

    Neither a row per incident (tens of thousands of Python objects) nor a GROUP BY on
    (cell, period): the demo's property crime has ~24,000 distinct cell-weeks for 38,050
    incidents, and grouping cost the database more than numpy's bincount does."""
    stored = incident_h3.c.cell
    missing = stored.is_(None)
    seconds = func.date_part("epoch", _local_period(step, timezone))
    joined = incident.outerjoin(
        incident_h3,
        (incident_h3.c.incident_id == incident.c.id) & (incident_h3.c.resolution == resolution),
    )
    empty = literal_column("''::bytea")
    return (
        select(
            func.string_agg(func.int8send(func.coalesce(stored, -1)), empty).label("cells"),
            func.string_agg(func.float8send(seconds), empty).label("periods"),
            func.array_agg(incident.c.id).filter(missing).label("missing"),
            func.array_agg(func.ST_X(incident.c.geom)).filter(missing).label("lon"),
            func.array_agg(func.ST_Y(incident.c.geom)).filter(missing).label("lat"),
        )
        .select_from(joined)
        .where(*selection_conditions(s))
    )


# The H3 series joins every incident of its selection to its stored cell, a hash join.
# With no statistics yet (after an import, before autovacuum's ANALYZE) the planner
# guessed a handful of incidents and probed the cell index once per incident instead:
# 55 ms of database time for the demo's property crime instead of 35-40. Nested loops
# are turned off for the transaction's series statement, and given back before cells
# are stored (a few new ones are best found by the index).
NESTED_LOOPS_OFF = text(
    "SELECT current_setting('enable_nestloop') AS previous, "
    "set_config('enable_nestloop', 'off', true)"
)
NESTED_LOOPS_BACK = text("SELECT set_config('enable_nestloop', :previous, true)")


# The cells of incidents computed in Python (h3: there is no H3 extension here), stored
# for the next evaluation. Only where the incident still lies where it was read, and is
# not being written: a point moved since is left for the next evaluation, as the trigger
# of migration 0018 would have dropped its cell, and so is a row an open transaction (an
# import) has locked, which may be moving it (SKIP LOCKED: never waiting on a writer,
# never deadlocking with one; the share lock keeps it from moving the point until the
# cells are committed, when its trigger sees them). A cell stored meanwhile by a
# concurrent evaluation stays.
STORE_CELLS = text("""
INSERT INTO incident_h3 (incident_id, resolution, cell)
SELECT i.id, CAST(:resolution AS smallint), u.cell
FROM unnest(CAST(:ids AS bigint[]), CAST(:lon AS float8[]), CAST(:lat AS float8[]),
            CAST(:cells AS bigint[])) AS u (id, lon, lat, cell)
JOIN incident AS i ON i.id = u.id AND ST_X(i.geom) = u.lon AND ST_Y(i.geom) = u.lat
FOR SHARE OF i SKIP LOCKED
ON CONFLICT (incident_id, resolution) DO NOTHING
""")


def latest_incident() -> Select:
    """When the latest live incident occurred (the end of every series)."""
    return select(func.max(incident.c.occurred_at)).where(incident.c.deleted_at.is_(None))


def units_of_level(level: int) -> Select:
    """(code, name) of every unit of ``level``."""
    return select(admin_unit.c.code, admin_unit.c.name).where(admin_unit.c.level == level)


# --- alerts -----------------------------------------------------------------------------

ALERT_COLUMNS = (
    alert.c.id,
    alert.c.monitor,
    alert.c.monitor_version,
    alert.c.sensitive,
    alert.c.place_kind,
    alert.c.unit_code,
    alert.c.cells,
    alert.c.first_period,
    alert.c.period,
    alert.c.period_start,
    alert.c.observed,
    alert.c.expected,
    alert.c.threshold,
    alert.c.lasted,
    alert.c.state,
    alert.c.note,
    alert.c.state_changed_by,
    alert.c.state_changed_at,
    alert.c.created_at,
    alert.c.updated_at,
)


def open_alert_of(monitor: str, unit_code: str | None, cells: Sequence[str]) -> Select:
    """The open (not closed) alert of ``monitor`` on this unit, or on cells overlapping
    ``cells``, most recent first: an alarm that goes on updates it."""
    place = (
        alert.c.unit_code == unit_code
        if unit_code is not None
        else alert.c.cells.overlap(list(cells))
    )
    return (
        select(alert.c.id, alert.c.first_period, alert.c.period, alert.c.period_start)
        .where(alert.c.monitor == monitor, alert.c.state != "closed", place)
        .order_by(alert.c.period_start.desc(), alert.c.id.desc())
        .limit(1)
        .with_for_update()
    )


def insert_alert(values: dict[str, Any]) -> Insert:
    """INSERT a new alert; returns its id."""
    return insert(alert).values(**values).returning(alert.c.id)


def update_alert(alert_id: int, values: dict[str, Any]) -> Update:
    """Bring an open alert up to the latest evaluation."""
    return (
        update(alert)
        .where(alert.c.id == alert_id)
        .values(**values, updated_at=func.now())
        .returning(alert.c.id)
    )


def select_alerts(
    *,
    include_sensitive: bool,
    monitor: str | None = None,
    states: Sequence[str] = (),
    period: str | None = None,
    unit: str | None = None,
    limit: int = 1000,
) -> Select:
    """Alerts, newest period first, with their monitor's title and unit's name."""
    title = monitor_definition.c.definition["title"].astext
    latest = (
        select(monitor_definition.c.code, func.max(monitor_definition.c.version).label("v"))
        .group_by(monitor_definition.c.code)
        .subquery("latest")
    )
    stmt = (
        select(*ALERT_COLUMNS, title.label("title"), admin_unit.c.name.label("unit_name"))
        .select_from(alert)
        .outerjoin(latest, latest.c.code == alert.c.monitor)
        .outerjoin(
            monitor_definition,
            (monitor_definition.c.code == latest.c.code)
            & (monitor_definition.c.version == latest.c.v),
        )
        .outerjoin(admin_unit, admin_unit.c.code == alert.c.unit_code)
    )
    if not include_sensitive:
        stmt = stmt.where(alert.c.sensitive.is_(False))
    if monitor is not None:
        stmt = stmt.where(alert.c.monitor == monitor)
    if states:
        stmt = stmt.where(alert.c.state.in_(states))
    if period is not None:
        stmt = stmt.where(alert.c.period == period)
    if unit is not None:
        stmt = stmt.where(alert.c.unit_code == unit)
    return stmt.order_by(alert.c.period_start.desc(), alert.c.id).limit(limit)


def select_alert_detail(alert_id: int, *, include_sensitive: bool) -> Select:
    """One alert with its series and outline (GeoJSON)."""
    stmt = select_alerts(include_sensitive=include_sensitive).where(alert.c.id == alert_id)
    return stmt.add_columns(
        alert.c.series, alert.c.detail, func.ST_AsGeoJSON(alert.c.geom, 6).label("outline")
    )


def lock_alert(alert_id: int) -> Select:
    """An alert's state, locked for a change by an analyst."""
    return (
        select(alert.c.id, alert.c.state, alert.c.note, alert.c.sensitive)
        .where(alert.c.id == alert_id)
        .with_for_update()
    )


def set_state(alert_id: int, state: str, note: str | None, actor: str) -> Update:
    """An analyst's change of state (with the note)."""
    return (
        update(alert)
        .where(alert.c.id == alert_id)
        .values(
            state=state,
            note=note,
            state_changed_by=actor,
            state_changed_at=func.now(),
            updated_at=func.now(),
        )
    )
