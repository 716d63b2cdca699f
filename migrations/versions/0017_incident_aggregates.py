"""change notifications that say what changed, and only when something did (issue 22)

Revision ID: 0017
Revises: 0016

Migration 0007's notifications named a table, and every worker dropped every cached
tile on each one. Now ``NOTIFY observatory_data`` says what changed
(``app.core.versions``): ``<table>:<operation>`` for every table behind a published layer,
and for incidents the positions written, old and new, so a worker drops only the
incident tiles that hold one: ``incident:{"op": "insert", "p": [[lon, lat], ...]}`` for
up to ``MAX_POINTS`` distinct positions, ``{"op": ..., "b": [west, south, east, north]}``
beyond (a notification holds at most 8,000 bytes), with ``"t"``, the span of the written
rows' ``occurred_at`` (epoch seconds: the units layers keep their index values when no
written incident lies in the periods they read).

A statement that changed no row sends nothing: 0007's statement triggers fired for every
UPDATE, and the worker's watchman runs one on ``analysis_run`` (orphaned runs, usually
none) every heartbeat, which moved every worker's data version every 10 s. Statement
triggers now read their transition tables (one trigger per event: transition tables
cannot serve a trigger of several events), and ``analysis_run`` notifies per row whose
status really changed (transition tables cannot serve a trigger on a column list).
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0017"
down_revision: str | None = "0016"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# ~45 bytes a position in JSON: 100 stay well under the 8,000 bytes of a notification.
MAX_POINTS = 100

NOTIFY_TABLE = """
CREATE OR REPLACE FUNCTION notify_data_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('observatory_data', TG_TABLE_NAME || ':' || lower(TG_OP));
    RETURN NULL;
END $$
"""

NOTIFY_TABLE_0007 = """
CREATE OR REPLACE FUNCTION notify_data_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('observatory_data', TG_TABLE_NAME);
    RETURN NULL;
END $$
"""

# The payload's JSON: the written positions (each distinct one, or their extent) and the
# span of the written rows' times (epoch seconds).
PLACES = f"""
CREATE FUNCTION incident_change_places(
    operation text, points geometry[], first timestamptz, last timestamptz
) RETURNS text LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE
        WHEN cardinality(points) <= {MAX_POINTS} THEN json_build_object(
            'op', operation,
            'p', (SELECT coalesce(json_agg(json_build_array(ST_X(g), ST_Y(g))), '[]')
                  FROM unnest(points) AS g),
            't', json_build_array(extract(epoch FROM first), extract(epoch FROM last))
        )::text
        ELSE (SELECT json_build_object(
                  'op', operation,
                  'b', json_build_array(ST_XMin(e), ST_YMin(e), ST_XMax(e), ST_YMax(e)),
                  't', json_build_array(extract(epoch FROM first), extract(epoch FROM last))
              )::text
              FROM (SELECT ST_Extent(g) AS e FROM unnest(points) AS g) AS extent)
    END
$$
"""

# plpgsql plans a statement when it first runs it: each branch names only the
# transition tables its trigger has.
NOTIFY_INCIDENT = """
CREATE FUNCTION notify_incident_change() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    points geometry[];
    first timestamptz;
    last timestamptz;
BEGIN
    IF TG_OP = 'INSERT' THEN
        IF NOT EXISTS (SELECT FROM new_rows) THEN RETURN NULL; END IF;
        points := ARRAY(SELECT DISTINCT geom FROM new_rows);
        SELECT min(occurred_at), max(occurred_at) INTO first, last FROM new_rows;
    ELSIF TG_OP = 'UPDATE' THEN
        IF NOT EXISTS (SELECT FROM new_rows) THEN RETURN NULL; END IF;
        points := ARRAY(SELECT geom FROM new_rows UNION SELECT geom FROM old_rows);
        SELECT min(t), max(t) INTO first, last FROM (
            SELECT occurred_at FROM new_rows UNION ALL SELECT occurred_at FROM old_rows
        ) AS rows (t);
    ELSE
        IF NOT EXISTS (SELECT FROM old_rows) THEN RETURN NULL; END IF;
        points := ARRAY(SELECT DISTINCT geom FROM old_rows);
        SELECT min(occurred_at), max(occurred_at) INTO first, last FROM old_rows;
    END IF;
    PERFORM pg_notify(
        'observatory_data',
        'incident:' || incident_change_places(lower(TG_OP), points, first, last)
    );
    RETURN NULL;
END $$
"""

# A statement's change, sent only if it changed rows.
NOTIFY_ROWS = """
CREATE FUNCTION notify_rows_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        IF NOT EXISTS (SELECT FROM old_rows) THEN RETURN NULL; END IF;
    ELSIF NOT EXISTS (SELECT FROM new_rows) THEN
        RETURN NULL;
    END IF;
    PERFORM pg_notify('observatory_data', TG_TABLE_NAME || ':' || lower(TG_OP));
    RETURN NULL;
END $$
"""

EVENTS = {
    "insert": "AFTER INSERT ON {table} REFERENCING NEW TABLE AS new_rows",
    "update": "AFTER UPDATE ON {table} REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows",
    "delete": "AFTER DELETE ON {table} REFERENCING OLD TABLE AS old_rows",
}
# The tables of 0007 and 0012 whose statements notify (analysis_run apart, below).
TABLES = (
    "admin_unit",
    "index_definition",
    "indicator_value",
    "population",
    "category",
    "alert",
)
# analysis_run: inserts and deletes as the others; an update only where a status changed.
RUN_STATUS = (
    "CREATE TRIGGER analysis_run_notify_update AFTER UPDATE OF status ON analysis_run "
    "FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status) "
    "EXECUTE FUNCTION notify_data_change()"
)


def _statement_triggers(table: str, function: str, events) -> None:
    for event in events:
        op.execute(
            f"CREATE TRIGGER {table}_notify_{event} {EVENTS[event].format(table=table)} "
            f"FOR EACH STATEMENT EXECUTE FUNCTION {function}()"
        )
    op.execute(
        f"CREATE TRIGGER {table}_notify_truncate AFTER TRUNCATE ON {table} "
        "FOR EACH STATEMENT EXECUTE FUNCTION notify_data_change()"
    )


def upgrade() -> None:
    op.execute(NOTIFY_TABLE)
    op.execute(NOTIFY_ROWS)
    op.execute(PLACES)
    op.execute(NOTIFY_INCIDENT)
    op.execute("DROP TRIGGER incident_notify ON incident")
    _statement_triggers("incident", "notify_incident_change", EVENTS)
    for table in TABLES:
        op.execute(f"DROP TRIGGER {table}_notify ON {table}")
        _statement_triggers(table, "notify_rows_change", EVENTS)
    op.execute("DROP TRIGGER analysis_run_notify ON analysis_run")
    _statement_triggers("analysis_run", "notify_rows_change", ("insert", "delete"))
    op.execute(RUN_STATUS)


def downgrade() -> None:
    for table in ("incident", *TABLES, "analysis_run"):
        for event in (*EVENTS, "truncate"):
            op.execute(f"DROP TRIGGER IF EXISTS {table}_notify_{event} ON {table}")
        changes = "UPDATE OF status" if table == "analysis_run" else "UPDATE"
        op.execute(
            f"CREATE TRIGGER {table}_notify AFTER INSERT OR {changes} OR DELETE OR TRUNCATE "
            f"ON {table} FOR EACH STATEMENT EXECUTE FUNCTION notify_data_change()"
        )
    op.execute("DROP FUNCTION notify_incident_change()")
    op.execute("DROP FUNCTION incident_change_places(text, geometry[], timestamptz, timestamptz)")
    op.execute("DROP FUNCTION notify_rows_change()")
    op.execute(NOTIFY_TABLE_0007)
