"""early warning: versioned monitor definitions and the alerts their evaluation raises

Revision ID: 0012
Revises: 0011

Issue 19. ``monitor_definition`` mirrors ``index_definition`` (one row per code and
version). ``alert`` keeps one row per alarmed place while the alarm lasts: a unit, or a
group of contiguous H3 cells with its outline; the row's ``series`` is the chart of its
last two years. ``sensitive`` is copied from the monitor so every read filters on it.
Alerts are published layers, so their changes notify the caches (as in 0007).
"""

from collections.abc import Sequence

import geoalchemy2
import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "monitor_definition",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("code", sa.Text(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("definition", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("created_by", sa.Text(), nullable=False),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_monitor_definition")),
        sa.UniqueConstraint("code", "version", name=op.f("uq_monitor_definition_code_version")),
    )  # fmt: skip
    op.create_table(
        "alert",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("monitor", sa.Text(), nullable=False),
        sa.Column("monitor_version", sa.Integer(), nullable=False),
        sa.Column("sensitive", sa.Boolean(), nullable=False),
        sa.Column("place_kind", sa.Text(), nullable=False),
        sa.Column("unit_code", sa.Text(), nullable=True),
        sa.Column(
            "cells", postgresql.ARRAY(sa.Text()), server_default=sa.text("'{}'"), nullable=False
        ),
        sa.Column(
            "geom",
            geoalchemy2.types.Geometry(
                geometry_type="MULTIPOLYGON", srid=4326, spatial_index=False
            ),
            nullable=True,
        ),
        sa.Column("first_period", sa.Text(), nullable=False),
        sa.Column("period", sa.Text(), nullable=False),
        sa.Column("period_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("observed", sa.Float(), nullable=True),
        sa.Column("expected", sa.Float(), nullable=True),
        sa.Column("threshold", sa.Float(), nullable=True),
        sa.Column("lasted", sa.Integer(), nullable=False),
        sa.Column("detail", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("series", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("state", sa.Text(), server_default="new", nullable=False),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("state_changed_by", sa.Text(), nullable=True),
        sa.Column("state_changed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint(
            "state IN ('new', 'acknowledged', 'closed')", name=op.f("ck_alert_state_known")
        ),
        sa.CheckConstraint("place_kind IN ('unit', 'h3')", name=op.f("ck_alert_place_kind_known")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_alert")),
    )  # fmt: skip
    op.create_index("ix_alert_monitor_state", "alert", ["monitor", "state"])
    op.create_index("ix_alert_geom", "alert", ["geom"], postgresql_using="gist")
    # Alerts are published layers (app.ogc.layers): their changes drop the cached tiles
    # and counts, as for the tables of migration 0007.
    op.execute(
        "CREATE TRIGGER alert_notify AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE "
        "ON alert FOR EACH STATEMENT EXECUTE FUNCTION notify_data_change()"
    )


def downgrade() -> None:
    op.execute("DROP TRIGGER IF EXISTS alert_notify ON alert")
    op.drop_index("ix_alert_geom", table_name="alert")
    op.drop_index("ix_alert_monitor_state", table_name="alert")
    op.drop_table("alert")
    op.drop_table("monitor_definition")
