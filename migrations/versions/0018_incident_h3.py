"""each incident's H3 cell, stored once per resolution a monitor counts on

Revision ID: 0018
Revises: 0017

Issue 19. An H3 monitor read every selected incident's point and assigned it a cell in
Python each night (38,050 points for the demo's property crime: more time than its
detector). ``incident_h3`` keeps the cell of an incident at a resolution (``cell``: the
H3 index as a 64-bit integer; valid cells have the top bit 0 and fit a bigint), so the
series is one GROUP BY. There is no H3 extension for PostgreSQL 15 on Debian: cells are
computed by the ``h3`` Python package, filled lazily by the evaluation of the monitors
(``app.services.monitors``: an incident of its selection without a row is read with its
point, assigned in Python, counted and stored). ``cell`` 0 (no valid H3 index) marks a
point that has no cell (coordinates out of range), so it is not read again.

One row per resolution, not the resolution-15 cell with parents computed from it: H3's
hierarchy is not nested exactly, and the resolution-8 parent of a point's resolution-15
cell differs from the point's resolution-8 cell for ~6.5% of points.

A side table, not a column of ``incident``: filling it writes no incident row, so the
incident change notifications of 0017 (and the tiles they drop) stay untouched. A moved
incident (``geom`` changed) loses its rows (trigger below) and gets them again at the
next evaluation; a deleted one loses them by the foreign key.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0018"
down_revision: str | None = "0017"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

FORGET_CELLS = """
CREATE FUNCTION incident_h3_forget() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM incident_h3 WHERE incident_id = NEW.id;
    RETURN NULL;
END $$
"""

# Per row, only where the point really moved: an import's upsert sets geom on every row
# it updates. (0017's statement triggers use transition tables, which a trigger on a
# column list cannot have.) Compared as bytes: pg_restore recreates the trigger with an
# empty search_path, where geometry's `=` (IS DISTINCT FROM) is "not unique".
FORGET_TRIGGER = (
    "CREATE TRIGGER incident_h3_forget AFTER UPDATE OF geom ON incident "
    "FOR EACH ROW WHEN (OLD.geom::bytea IS DISTINCT FROM NEW.geom::bytea) "
    "EXECUTE FUNCTION incident_h3_forget()"
)


def upgrade() -> None:
    op.create_table(
        "incident_h3",
        sa.Column("incident_id", sa.BigInteger(), nullable=False),
        sa.Column("resolution", sa.SmallInteger(), nullable=False),
        sa.Column("cell", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["incident_id"], ["incident.id"], name=op.f("fk_incident_h3_incident_id_incident"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("incident_id", "resolution", name=op.f("pk_incident_h3")),
        sa.CheckConstraint(
            "resolution BETWEEN 0 AND 15", name=op.f("ck_incident_h3_resolution_range")
        ),
    )  # fmt: skip
    op.execute(FORGET_CELLS)
    op.execute(FORGET_TRIGGER)


def downgrade() -> None:
    op.execute("DROP TRIGGER IF EXISTS incident_h3_forget ON incident")
    op.execute("DROP FUNCTION IF EXISTS incident_h3_forget()")
    op.drop_table("incident_h3")
