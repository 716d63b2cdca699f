"""cell geometry stored once per grid; analysis_cell becomes a view

Revision ID: 0006
Revises: 0005

A run used to copy the polygon of every cell into ``analysis_cell``: 213,000 H3 polygons
(resolution 9 over Belize) per run, the largest cost of a Gi* run. Now a grid's polygons
are stored once in ``analysis_grid_cell`` (one ``analysis_grid`` per grid specification
and study area), a run stores only its values in ``analysis_cell_value``, and the view
``analysis_cell`` joins them back with exactly the columns the table had (run_id,
cell_id, geom, count, z, p, p_sim, bin, i, quadrant, label, category, stats), so layers
and tiles read it as before; a spatial filter on its ``geom`` uses the GiST index of
``analysis_grid_cell``. Existing runs keep their geometry in a grid of their own.

``analysis_cell_value`` has no foreign key to ``analysis_run``: PostgreSQL checks one per
row, which cost a second per 213,000-cell run (half of storing it). A statement trigger
deletes a run's values with the run instead (what ON DELETE CASCADE did); the service
writes values only for a run it has just created.
"""

from collections.abc import Sequence

import geoalchemy2
import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

VALUE_COLUMNS = "count, z, p, p_sim, bin, i, quadrant, label, category, stats"

CASCADE_FUNCTION = """
CREATE FUNCTION delete_run_cell_values() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM analysis_cell_value WHERE run_id IN (SELECT id FROM deleted_runs);
    RETURN NULL;
END $$
"""
CASCADE_TRIGGER = (
    "CREATE TRIGGER analysis_run_delete_cell_values AFTER DELETE ON analysis_run "
    "REFERENCING OLD TABLE AS deleted_runs "
    "FOR EACH STATEMENT EXECUTE FUNCTION delete_run_cell_values()"
)

CREATE_VIEW = f"""
CREATE VIEW analysis_cell AS
SELECT v.run_id, v.cell_id, g.geom, {", ".join(f"v.{c}" for c in VALUE_COLUMNS.split(", "))}
FROM analysis_cell_value AS v
JOIN analysis_grid_cell AS g ON g.grid_id = v.grid_id AND g.cell_id = v.cell_id
"""


def upgrade() -> None:
    op.create_table(
        "analysis_grid",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("key", sa.Text(), nullable=False),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("parameters", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("cells", sa.Integer(), nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["run_id"],
            ["analysis_run.id"],
            name=op.f("fk_analysis_grid_run_id_analysis_run"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_analysis_grid")),
        sa.UniqueConstraint("key", name=op.f("uq_analysis_grid_key")),
    )
    op.create_table(
        "analysis_grid_cell",
        sa.Column("grid_id", sa.Integer(), nullable=False),
        sa.Column("cell_id", sa.Text(), nullable=False),
        sa.Column(
            "geom",
            geoalchemy2.types.Geometry(srid=4326, spatial_index=False, nullable=False),
            nullable=False,
        ),
        # The polygon as GeoJSON, written once with the grid: GET /analyses/{id} pastes it
        # into each feature instead of encoding 200,000 polygons on every download.
        sa.Column(
            "geojson",
            sa.Text(),
            sa.Computed("ST_AsGeoJSON(geom, 7)", persisted=True),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["grid_id"],
            ["analysis_grid.id"],
            name=op.f("fk_analysis_grid_cell_grid_id_analysis_grid"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("grid_id", "cell_id", name=op.f("pk_analysis_grid_cell")),
    )
    op.create_index(
        "ix_analysis_grid_cell_geom", "analysis_grid_cell", ["geom"], postgresql_using="gist"
    )
    # Every existing run's cells become a grid owned by that run.
    op.execute(
        "INSERT INTO analysis_grid (key, kind, parameters, cells, run_id) "
        "SELECT 'run:' || run_id, 'run', '{}'::jsonb, count(*), run_id "
        "FROM analysis_cell GROUP BY run_id"
    )
    op.execute(
        "INSERT INTO analysis_grid_cell (grid_id, cell_id, geom) "
        "SELECT g.id, c.cell_id, c.geom FROM analysis_cell AS c "
        "JOIN analysis_grid AS g ON g.run_id = c.run_id"
    )
    op.rename_table("analysis_cell", "analysis_cell_value")
    op.execute(
        "ALTER TABLE analysis_cell_value "
        "RENAME CONSTRAINT pk_analysis_cell TO pk_analysis_cell_value"
    )
    op.drop_constraint(
        "fk_analysis_cell_run_id_analysis_run", "analysis_cell_value", type_="foreignkey"
    )
    op.execute(CASCADE_FUNCTION)
    op.execute(CASCADE_TRIGGER)
    op.add_column("analysis_cell_value", sa.Column("grid_id", sa.Integer(), nullable=True))
    op.execute(
        "UPDATE analysis_cell_value AS v SET grid_id = g.id "
        "FROM analysis_grid AS g WHERE g.run_id = v.run_id"
    )
    op.alter_column("analysis_cell_value", "grid_id", nullable=False)
    op.drop_index("ix_analysis_cell_geom", table_name="analysis_cell_value")
    op.drop_column("analysis_cell_value", "geom")
    op.execute(CREATE_VIEW)


def downgrade() -> None:
    op.execute("DROP VIEW analysis_cell")
    op.add_column(
        "analysis_cell_value",
        sa.Column(
            "geom",
            # nullable until filled from the grids, just below
            geoalchemy2.types.Geometry(srid=4326, spatial_index=False, nullable=True),
            nullable=True,
        ),
    )
    op.execute(
        "UPDATE analysis_cell_value AS v SET geom = g.geom FROM analysis_grid_cell AS g "
        "WHERE g.grid_id = v.grid_id AND g.cell_id = v.cell_id"
    )
    op.execute("DELETE FROM analysis_cell_value WHERE geom IS NULL")
    op.alter_column("analysis_cell_value", "geom", nullable=False)
    op.drop_column("analysis_cell_value", "grid_id")
    op.execute(
        "ALTER TABLE analysis_cell_value "
        "RENAME CONSTRAINT pk_analysis_cell_value TO pk_analysis_cell"
    )
    op.execute("DROP TRIGGER analysis_run_delete_cell_values ON analysis_run")
    op.execute("DROP FUNCTION delete_run_cell_values()")
    op.rename_table("analysis_cell_value", "analysis_cell")
    op.create_foreign_key(
        "fk_analysis_cell_run_id_analysis_run",
        "analysis_cell",
        "analysis_run",
        ["run_id"],
        ["id"],
        ondelete="CASCADE",
    )
    op.create_index("ix_analysis_cell_geom", "analysis_cell", ["geom"], postgresql_using="gist")
    op.drop_index("ix_analysis_grid_cell_geom", table_name="analysis_grid_cell")
    op.drop_table("analysis_grid_cell")
    op.drop_table("analysis_grid")
