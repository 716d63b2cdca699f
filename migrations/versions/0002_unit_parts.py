"""admin_unit_part: units subdivided for fast point-in-polygon assignment

Revision ID: 0002
Revises: 0001
"""

from collections.abc import Sequence

import geoalchemy2
import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "admin_unit_part",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("unit_id", sa.Integer(), nullable=False),
        sa.Column("level", sa.SmallInteger(), nullable=False),
        sa.Column(
            "geom",
            geoalchemy2.types.Geometry(
                geometry_type="POLYGON", srid=4326, spatial_index=False, nullable=False
            ),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["unit_id"],
            ["admin_unit.id"],
            name=op.f("fk_admin_unit_part_unit_id_admin_unit"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_admin_unit_part")),
    )
    op.create_index("ix_admin_unit_part_geom", "admin_unit_part", ["geom"], postgresql_using="gist")
    op.create_index("ix_admin_unit_part_unit_id", "admin_unit_part", ["unit_id"])
    # Units loaded before this revision get their pieces now.
    op.execute(
        "INSERT INTO admin_unit_part (unit_id, level, geom) "
        "SELECT id, level, ST_Subdivide(geom, 64) FROM admin_unit"
    )


def downgrade() -> None:
    op.drop_table("admin_unit_part")
