"""imports as jobs: a queued batch, its progress, and its upload stored for a worker

Revision ID: 0013
Revises: 0012

Issue 18. A large import (or one asked for with ``?async=true``) is a job: the batch is
stored ``queued`` with its file's bytes in ``import_upload`` (in the database, since a
worker may run on another machine than the API that received the file), a worker
imports it and deletes the upload in the batch's own transaction. ``progress`` (0..1)
is how far a running batch has got.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute(
        """
        ALTER TABLE import_batch DROP CONSTRAINT ck_import_batch_status_known;
        ALTER TABLE import_batch ADD CONSTRAINT ck_import_batch_status_known
            CHECK (status IN ('queued', 'running', 'completed', 'failed'));
        ALTER TABLE import_batch ADD COLUMN progress real;
        CREATE TABLE import_upload (
            batch_id integer NOT NULL
                CONSTRAINT pk_import_upload PRIMARY KEY
                CONSTRAINT fk_import_upload_batch_id_import_batch
                REFERENCES import_batch (id) ON DELETE CASCADE,
            data bytea NOT NULL,
            created_at timestamptz NOT NULL DEFAULT now()
        );
        -- The bytes are compressed data already (or compress poorly): store them as is.
        ALTER TABLE import_upload ALTER COLUMN data SET STORAGE EXTERNAL;
        """
    )


def downgrade() -> None:
    op.execute(
        """
        DROP TABLE import_upload;
        ALTER TABLE import_batch DROP COLUMN progress;
        UPDATE import_batch SET status = 'failed', finished_at = now(),
            error = 'still queued when the service was downgraded; import the file again'
        WHERE status = 'queued';
        ALTER TABLE import_batch DROP CONSTRAINT ck_import_batch_status_known;
        ALTER TABLE import_batch ADD CONSTRAINT ck_import_batch_status_known
            CHECK (status IN ('running', 'completed', 'failed'));
        """
    )
