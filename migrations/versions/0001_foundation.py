"""foundation: units, population, indicators, categories, incidents, imports, keys, audit

Revision ID: 0001
Revises:
Create Date: 2026-11-25 15:19:55.285270
"""

from collections.abc import Sequence

import geoalchemy2
import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute("CREATE EXTENSION IF NOT EXISTS postgis")
    op.create_table(
        "admin_unit",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("boundary_set", sa.Text(), server_default="default", nullable=False),
        sa.Column("level", sa.SmallInteger(), nullable=False),
        sa.Column("code", sa.Text(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("parent_id", sa.Integer(), nullable=True),
        sa.Column(
            "geom",
            geoalchemy2.types.Geometry(
                geometry_type="MULTIPOLYGON",
                srid=4326,
                dimension=2,
                spatial_index=False,
                from_text="ST_GeomFromEWKT",
                name="geometry",
                nullable=False,
            ),
            nullable=False,
        ),
        sa.Column("area_km2", sa.Float(), nullable=False),
        sa.Column(
            "attributes",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'{}'::jsonb"),
            nullable=False,
        ),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint("ST_IsValid(geom)", name=op.f("ck_admin_unit_geom_valid")),
        sa.CheckConstraint("level >= 0", name=op.f("ck_admin_unit_level_non_negative")),
        sa.ForeignKeyConstraint(
            ["parent_id"],
            ["admin_unit.id"],
            name=op.f("fk_admin_unit_parent_id_admin_unit"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_admin_unit")),
        sa.UniqueConstraint("code", name=op.f("uq_admin_unit_code")),
    )
    op.create_index(
        "ix_admin_unit_geom", "admin_unit", ["geom"], unique=False, postgresql_using="gist"
    )
    op.create_index("ix_admin_unit_level", "admin_unit", ["level"], unique=False)
    op.create_table(
        "api_key",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("prefix", sa.Text(), nullable=False),
        sa.Column("hash", sa.Text(), nullable=False),
        sa.Column("role", sa.Text(), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "role IN ('viewer', 'analyst', 'editor', 'admin')", name=op.f("ck_api_key_role_known")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_key")),
        sa.UniqueConstraint("prefix", name=op.f("uq_api_key_prefix")),
    )
    op.create_table(
        "audit_log",
        sa.Column("id", sa.BigInteger(), nullable=False),
        sa.Column(
            "at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
        ),
        sa.Column("actor", sa.Text(), nullable=False),
        sa.Column("action", sa.Text(), nullable=False),
        sa.Column("entity", sa.Text(), nullable=False),
        sa.Column("entity_id", sa.Text(), nullable=True),
        sa.Column("before", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("after", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_log")),
    )
    op.create_index("ix_audit_log_at", "audit_log", ["at"], unique=False)
    op.create_index("ix_audit_log_entity", "audit_log", ["entity", "entity_id"], unique=False)
    op.create_table(
        "category",
        sa.Column("code", sa.Text(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("category_group", sa.Text(), nullable=False),
        sa.Column("sensitive", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("description", sa.Text(), server_default="", nullable=False),
        sa.PrimaryKeyConstraint("code", name=op.f("pk_category")),
    )
    op.create_table(
        "import_batch",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.Text(), server_default="incidents", nullable=False),
        sa.Column("filename", sa.Text(), nullable=False),
        sa.Column("format", sa.Text(), nullable=False),
        sa.Column(
            "options",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'{}'::jsonb"),
            nullable=False,
        ),
        sa.Column("created_by", sa.Text(), nullable=False),
        sa.Column("status", sa.Text(), server_default="running", nullable=False),
        sa.Column("received", sa.Integer(), server_default="0", nullable=False),
        sa.Column("inserted", sa.Integer(), server_default="0", nullable=False),
        sa.Column("updated", sa.Integer(), server_default="0", nullable=False),
        sa.Column("unchanged", sa.Integer(), server_default="0", nullable=False),
        sa.Column("rejected", sa.Integer(), server_default="0", nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column(
            "started_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "status IN ('running', 'completed', 'failed')",
            name=op.f("ck_import_batch_status_known"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_import_batch")),
    )
    op.create_table(
        "import_rejection",
        sa.Column("batch_id", sa.Integer(), nullable=False),
        sa.Column("row_number", sa.Integer(), nullable=False),
        sa.Column("source_id", sa.Text(), nullable=True),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("raw", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.ForeignKeyConstraint(
            ["batch_id"],
            ["import_batch.id"],
            name=op.f("fk_import_rejection_batch_id_import_batch"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("batch_id", "row_number", name=op.f("pk_import_rejection")),
    )
    op.create_table(
        "incident",
        sa.Column("id", sa.BigInteger(), nullable=False),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("source_id", sa.Text(), nullable=False),
        sa.Column("category", sa.Text(), nullable=False),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("reported_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "geom",
            geoalchemy2.types.Geometry(
                geometry_type="POINT",
                srid=4326,
                dimension=2,
                spatial_index=False,
                from_text="ST_GeomFromEWKT",
                name="geometry",
                nullable=False,
            ),
            nullable=False,
        ),
        sa.Column("location_precision", sa.Text(), nullable=True),
        sa.Column("victim_sex", sa.Text(), nullable=True),
        sa.Column("victim_age", sa.SmallInteger(), nullable=True),
        sa.Column("victims_count", sa.SmallInteger(), server_default="1", nullable=False),
        sa.Column("weapon", sa.Text(), nullable=True),
        sa.Column("perpetrator_relation", sa.Text(), nullable=True),
        sa.Column(
            "attributes",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'{}'::jsonb"),
            nullable=False,
        ),
        sa.Column(
            "unit_ids",
            postgresql.ARRAY(sa.Integer()),
            server_default=sa.text("'{}'"),
            nullable=False,
        ),
        sa.Column("import_batch_id", sa.Integer(), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "victim_sex IN ('female', 'male', 'unknown')", name=op.f("ck_incident_victim_sex_known")
        ),
        sa.CheckConstraint(
            "victim_age BETWEEN 0 AND 120", name=op.f("ck_incident_victim_age_range")
        ),
        sa.CheckConstraint("victims_count >= 1", name=op.f("ck_incident_victims_count_positive")),
        sa.ForeignKeyConstraint(
            ["category"],
            ["category.code"],
            name=op.f("fk_incident_category_category"),
            onupdate="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["import_batch_id"],
            ["import_batch.id"],
            name=op.f("fk_incident_import_batch_id_import_batch"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_incident")),
        sa.UniqueConstraint("source", "source_id", name=op.f("uq_incident_source_source_id")),
    )
    op.create_index("ix_incident_category", "incident", ["category"], unique=False)
    op.create_index("ix_incident_geom", "incident", ["geom"], unique=False, postgresql_using="gist")
    op.create_index("ix_incident_occurred_at", "incident", ["occurred_at"], unique=False)
    op.create_index(
        "ix_incident_unit_ids", "incident", ["unit_ids"], unique=False, postgresql_using="gin"
    )
    op.create_table(
        "indicator_value",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("unit_id", sa.Integer(), nullable=False),
        sa.Column("period", sa.Text(), nullable=False),
        sa.Column("indicator", sa.Text(), nullable=False),
        sa.Column("sex", sa.Text(), server_default="total", nullable=False),
        sa.Column("age_group", sa.Text(), server_default="total", nullable=False),
        sa.Column("value", sa.Float(), nullable=False),
        sa.Column("source", sa.Text(), server_default="", nullable=False),
        sa.ForeignKeyConstraint(
            ["unit_id"],
            ["admin_unit.id"],
            name=op.f("fk_indicator_value_unit_id_admin_unit"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_indicator_value")),
        sa.UniqueConstraint(
            "unit_id",
            "period",
            "indicator",
            "sex",
            "age_group",
            name=op.f("uq_indicator_value_unit_id_period_indicator_sex_age_group"),
        ),
    )
    op.create_table(
        "population",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("unit_id", sa.Integer(), nullable=False),
        sa.Column("year", sa.SmallInteger(), nullable=False),
        sa.Column("sex", sa.Text(), server_default="total", nullable=False),
        sa.Column("age_group", sa.Text(), server_default="total", nullable=False),
        sa.Column("value", sa.Float(), nullable=False),
        sa.Column("source", sa.Text(), server_default="", nullable=False),
        sa.CheckConstraint(
            "sex IN ('total', 'female', 'male')", name=op.f("ck_population_sex_known")
        ),
        sa.CheckConstraint("value >= 0", name=op.f("ck_population_value_non_negative")),
        sa.ForeignKeyConstraint(
            ["unit_id"],
            ["admin_unit.id"],
            name=op.f("fk_population_unit_id_admin_unit"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_population")),
        sa.UniqueConstraint(
            "unit_id",
            "year",
            "sex",
            "age_group",
            name=op.f("uq_population_unit_id_year_sex_age_group"),
        ),
    )


def downgrade() -> None:
    op.drop_table("population")
    op.drop_table("indicator_value")
    op.drop_index("ix_incident_unit_ids", table_name="incident", postgresql_using="gin")
    op.drop_index("ix_incident_occurred_at", table_name="incident")
    op.drop_index("ix_incident_geom", table_name="incident", postgresql_using="gist")
    op.drop_index("ix_incident_category", table_name="incident")
    op.drop_table("incident")
    op.drop_table("import_rejection")
    op.drop_table("import_batch")
    op.drop_table("category")
    op.drop_index("ix_audit_log_entity", table_name="audit_log")
    op.drop_index("ix_audit_log_at", table_name="audit_log")
    op.drop_table("audit_log")
    op.drop_table("api_key")
    op.drop_index("ix_admin_unit_level", table_name="admin_unit")
    op.drop_index("ix_admin_unit_geom", table_name="admin_unit", postgresql_using="gist")
    op.drop_table("admin_unit")
