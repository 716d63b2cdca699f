"""incident counts per cell of the tile clustering grids, kept by the incident writes

Revision ID: 0019
Revises: 0018

Issue 22. Below the incidents layer's ``cluster_below`` zoom (12), a tile is one point
per occupied cell of a 64 x 64 grid over the tile, at the mean longitude and latitude
of the cell's incidents, with their count (``app.sql.tiles.tile_clusters``). Counting
that live reads every point of the tile (450,000 in the densest z10 tile of a million
incidents). These tables hold the same sums per cell, for every clustered zoom, so a
tile reads a few hundred to a few thousand rows (``app.sql.tiles.tile_cells``):

* ``incident_tile_cell``: per zoom ``z`` (0-11), cell (``cx``, ``cy``: the column and
  row of the zoom's grid of ``2**z * 64`` cells a side, from the north-west corner),
  ``category``: ``n`` incidents, the sums of their longitudes and latitudes.
* ``incident_tile_month``: the same per month too (``month``: the first day of the
  month in the territory's time zone, the one in ``incident_tile_zone``), for tiles
  filtered on a period of whole months.

A cell is computed exactly as the live query computes it (the same Web Mercator float
operations on the longitude and latitude), so a precomputed tile equals the live one.
Every zoom is stored, not only the finest grid with coarser cells grouped from it: with
categories and months a z11 cell holds about one incident in sparse areas, and a z10
tile grouped from the z11 rows read nearly as many rows as it has points.

Kept current by statement triggers on ``incident`` with transition tables (as 0017's
notifications): a COPY of a million rows is one aggregation, not a million rows. An
UPDATE counts only the rows whose point, category, time or deletion changed (an import's
upsert rewrites every row it matches). The tables are append-only between compactions:
a trigger only INSERTs its signed deltas (a moved or deleted incident adds a row of -1
and minus its coordinates), with no unique key, so a writer never updates, deletes or
locks a shared row. Upserted counters were locked until the writing transaction ended:
an import holding cells and a PATCH holding its incident's row, its trigger then waiting
for one of those cells, deadlocked. A tile sums a key's rows (``app.sql.tiles``), and a
cell whose count sums to zero is no feature. ``incident_tiles_compact()`` folds each
key's rows into one and drops the empty keys (after an import batch, and nightly in the
worker's housekeeping).
``incident_tiles_refill(zone)`` rebuilds both tables (with the months in ``zone``): the
migration runs it with ``territory.timezone`` of the settings it runs with; a service
whose territory time zone differs serves period-filtered tiles live until it is run
again (``app.services.tiles``).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0019"
down_revision: str | None = "0018"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The clustered zooms (below the incidents layer's cluster_below) and the cells of the
# clustering grid per tile side: app.sql.tiles.AGGREGATE_ZOOMS and CLUSTER_CELLS.
ZOOMS = range(12)
CLUSTER_CELLS = 64
# The zooms whose cells are also stored per month: a tile filtered on a period reads the
# nearest at or above its zoom, grouping 4**(shift) cells into one. Every zoom per month
# tripled the rows an import writes (a sparse z11 cell holds about one incident a
# month), for tiles read at most 64 times fewer rows.
MONTH_ZOOMS = (2, 5, 8, 11)
# Cells a side of the finest grid (z11): 2**11 * 64.
FINE = 2 ** max(ZOOMS) * CLUSTER_CELLS

# The change of a statement as rows (geom, category, occurred_at, sign): +1 for a row
# that now counts, -1 for one that no longer does. plpgsql plans a statement when it first
# runs it, so each trigger's branch names only the transition tables its event has.
INSERTED = "SELECT geom, category, occurred_at, 1 FROM new_rows WHERE deleted_at IS NULL"
DELETED = "SELECT geom, category, occurred_at, -1 FROM old_rows WHERE deleted_at IS NULL"
UPDATED = """
    WITH changed AS (
        SELECT o.geom AS old_geom, o.category AS old_category, o.occurred_at AS old_at,
               o.deleted_at IS NULL AS old_live,
               n.geom AS new_geom, n.category AS new_category, n.occurred_at AS new_at,
               n.deleted_at IS NULL AS new_live
        FROM old_rows AS o JOIN new_rows AS n USING (id)
        WHERE ST_X(o.geom) IS DISTINCT FROM ST_X(n.geom)
           OR ST_Y(o.geom) IS DISTINCT FROM ST_Y(n.geom)
           OR o.category IS DISTINCT FROM n.category
           OR o.occurred_at IS DISTINCT FROM n.occurred_at
           OR (o.deleted_at IS NULL) <> (n.deleted_at IS NULL)
    )
    SELECT d.geom, d.category, d.occurred_at, d.sign
    FROM changed CROSS JOIN LATERAL (VALUES
        (old_geom, old_category, old_at, -1, old_live),
        (new_geom, new_category, new_at, 1, new_live)
    ) AS d (geom, category, occurred_at, sign, live)
    WHERE d.live
"""
EVERY_ROW = "SELECT geom, category, occurred_at, 1 FROM incident WHERE deleted_at IS NULL"

# Appends a change (``delta``) to both tables as signed rows: a writer only inserts,
# never updates or deletes a shared row, so it takes no row lock another writer could
# wait for (with upserts, an import holding cells until its commit and a PATCH holding
# its incident's row then needing one of those cells deadlocked). A key's rows add up to
# its count and sums; ``incident_tiles_compact`` folds them into one. The cell formulas
# are app.sql.tiles._world_position's, term for term: a cell is the same float.
# Run with EXECUTE (``$1``: the time zone of the months), so it is planned for each
# statement's rows: a cached plan keeps the row count of the first call's transition
# tables, and an UPDATE's join planned for one row (a PATCH) ran as a nested loop over
# the next import's thousands.
APPLY = f"""
    EXECUTE $apply$
    WITH delta (geom, category, occurred_at, sign) AS ({{delta}}),
    fine AS (
        SELECT floor((ST_X(geom) + 180) / 360 * {FINE})::int AS cx,
               floor((1 - ln(tan(pi() / 4 + radians(ST_Y(geom)) / 2)) / pi()) / 2 * {FINE})::int
                   AS cy,
               category,
               date_trunc('month', occurred_at AT TIME ZONE $1)::date AS month,
               sum(sign)::int AS n, sum(sign * ST_X(geom)) AS sum_lon,
               sum(sign * ST_Y(geom)) AS sum_lat
        FROM delta
        GROUP BY 1, 2, 3, 4
    ),
    fine_cells AS (
        SELECT cx, cy, category, sum(n)::int AS n, sum(sum_lon) AS sum_lon,
               sum(sum_lat) AS sum_lat
        FROM fine
        GROUP BY 1, 2, 3
    ),
    month_levels AS (
        SELECT l AS z, cx >> ({max(ZOOMS)} - l) AS cx, cy >> ({max(ZOOMS)} - l) AS cy,
               category, month, sum(n) AS n, sum(sum_lon) AS sum_lon, sum(sum_lat) AS sum_lat
        FROM fine CROSS JOIN unnest(ARRAY{list(MONTH_ZOOMS)}) AS l
        GROUP BY 1, 2, 3, 4, 5
        HAVING sum(n) <> 0 OR sum(sum_lon) <> 0 OR sum(sum_lat) <> 0
    ),
    cell_levels AS (
        SELECT l AS z, cx >> ({max(ZOOMS)} - l) AS cx, cy >> ({max(ZOOMS)} - l) AS cy,
               category, sum(n) AS n, sum(sum_lon) AS sum_lon, sum(sum_lat) AS sum_lat
        FROM fine_cells CROSS JOIN generate_series({min(ZOOMS)}, {max(ZOOMS)}) AS l
        GROUP BY 1, 2, 3, 4
        HAVING sum(n) <> 0 OR sum(sum_lon) <> 0 OR sum(sum_lat) <> 0
    ),
    months AS (
        INSERT INTO incident_tile_month (z, cx, cy, category, month, n, sum_lon, sum_lat)
        SELECT z, cx, cy, category, month, n, sum_lon, sum_lat FROM month_levels
        ORDER BY z, cx, cy, category COLLATE "C", month
    )
    INSERT INTO incident_tile_cell (z, cx, cy, category, n, sum_lon, sum_lat)
    SELECT z, cx, cy, category, n, sum_lon, sum_lat FROM cell_levels
    ORDER BY z, cx, cy, category COLLATE "C"
    $apply$ USING zone;
"""


def _apply(delta: str) -> str:
    return APPLY.format(delta=delta)


DECLARE = """
    zone text := (SELECT timezone FROM incident_tile_zone);
"""

TRIGGER_FUNCTION = f"""
CREATE FUNCTION incident_tiles_change() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE {DECLARE}
BEGIN
    IF TG_OP = 'INSERT' THEN
        IF NOT EXISTS (SELECT FROM new_rows) THEN RETURN NULL; END IF;
        {_apply(INSERTED)}
    ELSIF TG_OP = 'UPDATE' THEN
        IF NOT EXISTS (SELECT FROM new_rows) THEN RETURN NULL; END IF;
        {_apply(UPDATED)}
    ELSE
        IF NOT EXISTS (SELECT FROM old_rows) THEN RETURN NULL; END IF;
        {_apply(DELETED)}
    END IF;
    RETURN NULL;
END $$
"""

REFILL_FUNCTION = f"""
CREATE FUNCTION incident_tiles_refill(new_zone text) RETURNS void LANGUAGE plpgsql AS $$
DECLARE {DECLARE}
BEGIN
    PERFORM now() AT TIME ZONE new_zone;  -- an unknown zone fails here, before any change
    TRUNCATE incident_tile_cell, incident_tile_month;
    DELETE FROM incident_tile_zone;
    INSERT INTO incident_tile_zone (timezone) VALUES (new_zone);
    zone := new_zone;
    -- Every row counted at once: one row a key, compacted already.
    {_apply(EVERY_ROW)}
END $$
"""

# Folds each key's rows into one (and drops the keys whose count is zero). DELETE ...
# RETURNING re-inserts exactly the rows this statement deleted: a writer's rows committed
# meanwhile are left for the next time, and a row another compaction deleted first is
# skipped (READ COMMITTED re-checks it), so nothing is counted twice or lost. The
# transaction-scoped advisory lock keeps two compactions from deleting the same keys' rows
# in different orders (a deadlock between them); the second skips. Returns the rows
# removed, or NULL when another compaction was running.
COMPACT_FUNCTION = """
CREATE FUNCTION incident_tiles_compact() RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    removed_cells bigint;
    removed_months bigint;
BEGIN
    IF NOT pg_try_advisory_xact_lock(hashtext('incident_tiles_compact')) THEN
        RETURN NULL;
    END IF;
    WITH folded AS (
        SELECT z, cx, cy, category FROM incident_tile_cell
        GROUP BY 1, 2, 3, 4 HAVING count(*) > 1 OR sum(n) = 0
    ),
    gone AS (
        DELETE FROM incident_tile_cell AS t USING folded AS f
        WHERE (t.z, t.cx, t.cy, t.category) = (f.z, f.cx, f.cy, f.category)
        RETURNING t.*
    ),
    kept AS (
        INSERT INTO incident_tile_cell (z, cx, cy, category, n, sum_lon, sum_lat)
        SELECT z, cx, cy, category, sum(n), sum(sum_lon), sum(sum_lat) FROM gone
        GROUP BY 1, 2, 3, 4 HAVING sum(n) <> 0
        RETURNING 1
    )
    SELECT (SELECT count(*) FROM gone) - (SELECT count(*) FROM kept) INTO removed_cells;
    WITH folded AS (
        SELECT z, cx, cy, category, month FROM incident_tile_month
        GROUP BY 1, 2, 3, 4, 5 HAVING count(*) > 1 OR sum(n) = 0
    ),
    gone AS (
        DELETE FROM incident_tile_month AS t USING folded AS f
        WHERE (t.z, t.cx, t.cy, t.category, t.month) = (f.z, f.cx, f.cy, f.category, f.month)
        RETURNING t.*
    ),
    kept AS (
        INSERT INTO incident_tile_month (z, cx, cy, category, month, n, sum_lon, sum_lat)
        SELECT z, cx, cy, category, month, sum(n), sum(sum_lon), sum(sum_lat) FROM gone
        GROUP BY 1, 2, 3, 4, 5 HAVING sum(n) <> 0
        RETURNING 1
    )
    SELECT (SELECT count(*) FROM gone) - (SELECT count(*) FROM kept) INTO removed_months;
    RETURN removed_cells + removed_months;
END $$
"""

TRUNCATE_FUNCTION = """
CREATE FUNCTION incident_tiles_truncate() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    TRUNCATE incident_tile_cell, incident_tile_month;
    RETURN NULL;
END $$
"""

EVENTS = {
    "insert": "AFTER INSERT ON incident REFERENCING NEW TABLE AS new_rows",
    "update": "AFTER UPDATE ON incident REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows",
    "delete": "AFTER DELETE ON incident REFERENCING OLD TABLE AS old_rows",
}


def _cells(name: str, *month: sa.Column) -> None:
    keys = ["z", "cx", "cy", "category", *(c.name for c in month)]
    op.create_table(
        name,
        sa.Column("z", sa.SmallInteger(), nullable=False),
        sa.Column("cx", sa.Integer(), nullable=False),
        sa.Column("cy", sa.Integer(), nullable=False),
        sa.Column("category", sa.Text(), nullable=False),
        *month,
        sa.Column("n", sa.Integer(), nullable=False),
        sa.Column("sum_lon", sa.Float(), nullable=False),
        sa.Column("sum_lat", sa.Float(), nullable=False),
    )
    # No unique key: a key has as many rows as changes since the last compaction. The
    # tile read looks up a zoom's range of columns and rows.
    op.create_index(op.f(f"ix_{name}_key"), name, keys)


def _zone() -> str:
    # The settings the migration runs with (env.py reads them for the URL too); a service
    # with another zone serves period-filtered tiles live until the tables are refilled.
    from app.core.settings import get_settings

    return get_settings().territory.timezone


def upgrade() -> None:
    _cells("incident_tile_cell")
    _cells("incident_tile_month", sa.Column("month", sa.Date(), nullable=False))
    op.create_table(
        "incident_tile_zone",
        sa.Column("one", sa.Boolean(), server_default=sa.true(), nullable=False),
        sa.Column("timezone", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("one", name=op.f("pk_incident_tile_zone")),
        sa.CheckConstraint("one", name=op.f("ck_incident_tile_zone_one_row")),
    )
    op.execute(TRIGGER_FUNCTION)
    op.execute(REFILL_FUNCTION)
    op.execute(TRUNCATE_FUNCTION)
    op.execute(COMPACT_FUNCTION)
    for event, clause in EVENTS.items():
        op.execute(
            f"CREATE TRIGGER incident_tiles_{event} {clause} "
            "FOR EACH STATEMENT EXECUTE FUNCTION incident_tiles_change()"
        )
    op.execute(
        "CREATE TRIGGER incident_tiles_truncate AFTER TRUNCATE ON incident "
        "FOR EACH STATEMENT EXECUTE FUNCTION incident_tiles_truncate()"
    )
    op.execute(sa.text("SELECT incident_tiles_refill(:zone)").bindparams(zone=_zone()))


def downgrade() -> None:
    for event in (*EVENTS, "truncate"):
        op.execute(f"DROP TRIGGER IF EXISTS incident_tiles_{event} ON incident")
    op.execute("DROP FUNCTION IF EXISTS incident_tiles_change()")
    op.execute("DROP FUNCTION IF EXISTS incident_tiles_refill(text)")
    op.execute("DROP FUNCTION IF EXISTS incident_tiles_truncate()")
    op.execute("DROP FUNCTION IF EXISTS incident_tiles_compact()")
    op.drop_table("incident_tile_zone")
    op.drop_table("incident_tile_month")
    op.drop_table("incident_tile_cell")
