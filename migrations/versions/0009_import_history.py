"""an incident's import history, and the warnings of an import batch

Revision ID: 0009
Revises: 0008

``incident.import_batch_ids``: every batch that inserted or changed the incident, oldest
first (``import_batch_id`` stays the last one); the audit log holds what each of them
changed, before and after. ``import_batch.warnings``: what an import noticed without
rejecting a row (headers renamed to keep every column), shown in its report.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute(
        """
        ALTER TABLE incident ADD COLUMN import_batch_ids integer[] NOT NULL DEFAULT '{}';
        UPDATE incident SET import_batch_ids = ARRAY[import_batch_id]
        WHERE import_batch_id IS NOT NULL;
        ALTER TABLE import_batch ADD COLUMN warnings jsonb NOT NULL DEFAULT '[]'::jsonb;
        """
    )


def downgrade() -> None:
    op.execute(
        """
        ALTER TABLE import_batch DROP COLUMN warnings;
        ALTER TABLE incident DROP COLUMN import_batch_ids;
        """
    )
