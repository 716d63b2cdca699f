"""the job queue: procrastinate's tables and functions in their own schema; runs can be cancelled

Revision ID: 0010
Revises: 0009

Long work (analyses, schedules) runs in ``observatory worker`` processes that take jobs
from a PostgreSQL queue (procrastinate, app.worker). Its schema is procrastinate's own
``schema.sql`` of the installed version (pinned in pyproject.toml: a new procrastinate
version brings a new migration applying its ``sql/migrations`` files), created in the
schema ``procrastinate`` so that ``public`` keeps only the service's tables: the
queue's connections put it on their ``search_path`` (app.worker.queue). An analysis
run gains the status ``cancelled``; an index finds the job of a run.
"""

from collections.abc import Sequence

from alembic import op
from procrastinate.schema import SchemaManager

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SCHEMA = "procrastinate"


def upgrade() -> None:
    op.execute(f"CREATE SCHEMA {SCHEMA}")
    # procrastinate's SQL names no schema: it is created wherever search_path points.
    # Run through the driver's cursor without parameters, so its '%' stay as they are.
    cursor = op.get_bind().connection.dbapi_connection.cursor()
    previous = cursor.execute("SELECT current_setting('search_path')").fetchone()[0]
    cursor.execute(f"SET LOCAL search_path = {SCHEMA}, public")
    cursor.execute(SchemaManager.get_schema())
    cursor.execute("SELECT set_config('search_path', %s, true)", [previous])
    op.execute(
        f"CREATE INDEX ix_procrastinate_jobs_run_id ON {SCHEMA}.procrastinate_jobs "
        "(((args->>'run_id')::bigint)) WHERE task_name = 'analysis'"
    )
    op.execute(
        """
        ALTER TABLE analysis_run DROP CONSTRAINT ck_analysis_run_status_known;
        ALTER TABLE analysis_run ADD CONSTRAINT ck_analysis_run_status_known
            CHECK (status IN ('running', 'completed', 'failed', 'cancelled'));
        """
    )


def downgrade() -> None:
    op.execute(
        f"""
        UPDATE analysis_run SET status = 'failed' WHERE status = 'cancelled';
        ALTER TABLE analysis_run DROP CONSTRAINT ck_analysis_run_status_known;
        ALTER TABLE analysis_run ADD CONSTRAINT ck_analysis_run_status_known
            CHECK (status IN ('running', 'completed', 'failed'));
        DROP SCHEMA {SCHEMA} CASCADE;
        """
    )
