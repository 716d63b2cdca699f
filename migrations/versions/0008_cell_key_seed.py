"""a secret seed for the cell keys of public statistics

Revision ID: 0008
Revises: 0007

Public statistics perturb their counts with the cell key method (app.services.disclosure):
each incident's record key is a hash of its id seeded with this installation's secret, so
nobody outside the database can compute a cell's noise. One row, made once; backups carry
it, so a restored service publishes the same numbers.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE cell_key_seed (
            seed bigint NOT NULL,
            only_row boolean PRIMARY KEY DEFAULT true CHECK (only_row)
        );
        INSERT INTO cell_key_seed (seed)
        SELECT ('x' || substr(replace(gen_random_uuid()::text, '-', ''), 1, 16))::bit(64)::bigint;
        """
    )


def downgrade() -> None:
    op.execute("DROP TABLE cell_key_seed")
