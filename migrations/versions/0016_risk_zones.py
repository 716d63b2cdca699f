"""near-repeat risk zones: every incident of a significant near-repeat run, as a zone
that expires by itself

Revision ID: 0016
Revises: 0015

Issue 19. A near-repeat run asked for ``risk_zones`` and found significant (its closest
distance x time band) turns each incident of its filters into a zone: a disc of the
significant distance around the incident (``geom``), valid from the incident for the
significant number of days (``valid_from``/``valid_to``). ``public_geom`` is the zone
without its point (the grid square holding the incident, grown by the distance), the
only geometry a public layer shows. ``sensitive`` is copied from the run so every read
filters on it. Zones are published layers: their changes notify the caches (as in 0007).
"""

from collections.abc import Sequence

import geoalchemy2
import sqlalchemy as sa
from alembic import op

revision: str = "0016"
down_revision: str | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "risk_zone",
        sa.Column("id", sa.BigInteger(), nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("incident_id", sa.BigInteger(), nullable=False),
        sa.Column("sensitive", sa.Boolean(), nullable=False),
        sa.Column("distance_m", sa.Float(), nullable=False),
        sa.Column("days", sa.Float(), nullable=False),
        sa.Column("valid_from", sa.DateTime(timezone=True), nullable=False),
        sa.Column("valid_to", sa.DateTime(timezone=True), nullable=False),
        sa.Column(
            "geom",
            geoalchemy2.types.Geometry(geometry_type="POLYGON", srid=4326, spatial_index=False),
            nullable=False,
        ),
        sa.Column(
            "public_geom",
            geoalchemy2.types.Geometry(geometry_type="POLYGON", srid=4326, spatial_index=False),
            nullable=False,
        ),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["run_id"], ["analysis_run.id"], name=op.f("fk_risk_zone_run_id_analysis_run"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["incident_id"], ["incident.id"], name=op.f("fk_risk_zone_incident_id_incident"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_risk_zone")),
        sa.UniqueConstraint("run_id", "incident_id", name=op.f("uq_risk_zone_run_id_incident_id")),
    )  # fmt: skip
    op.create_index("ix_risk_zone_valid_to", "risk_zone", ["valid_to"])
    op.create_index("ix_risk_zone_geom", "risk_zone", ["geom"], postgresql_using="gist")
    op.create_index(
        "ix_risk_zone_public_geom", "risk_zone", ["public_geom"], postgresql_using="gist"
    )
    op.execute(
        "CREATE TRIGGER risk_zone_notify AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE "
        "ON risk_zone FOR EACH STATEMENT EXECUTE FUNCTION notify_data_change()"
    )


def downgrade() -> None:
    op.execute("DROP TRIGGER IF EXISTS risk_zone_notify ON risk_zone")
    op.drop_index("ix_risk_zone_public_geom", table_name="risk_zone")
    op.drop_index("ix_risk_zone_geom", table_name="risk_zone")
    op.drop_index("ix_risk_zone_valid_to", table_name="risk_zone")
    op.drop_table("risk_zone")
