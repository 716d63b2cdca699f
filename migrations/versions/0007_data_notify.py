"""notify listeners when published data changes (tile and catalog caches)

Revision ID: 0007
Revises: 0006

Every statement that changes a table behind a published layer sends one
``NOTIFY observatory_data``. Each service worker listens and drops its cached tiles,
counts and layer catalog, so a write through any worker, the CLI or plain SQL is seen
by all of them without a per-request query. Revoked or changed API keys send ``observatory_keys``,
which drops the workers' cached keys.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLES = (
    "incident",
    "admin_unit",
    "analysis_run",
    "index_definition",
    "indicator_value",
    "population",
    "category",
)


def upgrade() -> None:
    op.execute(
        """
        CREATE FUNCTION notify_data_change() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            PERFORM pg_notify('observatory_data', TG_TABLE_NAME);
            RETURN NULL;
        END $$
        """
    )
    for table in TABLES:
        # A running analysis updates its progress often: only its status matters here
        # (a completed run becomes a layer).
        changes = "UPDATE OF status" if table == "analysis_run" else "UPDATE"
        op.execute(
            f"CREATE TRIGGER {table}_notify AFTER INSERT OR {changes} OR DELETE OR TRUNCATE "
            f"ON {table} FOR EACH STATEMENT EXECUTE FUNCTION notify_data_change()"
        )
    # Keys: only revocation, role changes and deletion (not the last-used touch).
    op.execute(
        """
        CREATE FUNCTION notify_key_change() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            PERFORM pg_notify('observatory_keys', '');
            RETURN NULL;
        END $$
        """
    )
    op.execute(
        "CREATE TRIGGER api_key_notify AFTER UPDATE OF revoked_at, role, hash OR DELETE "
        "ON api_key FOR EACH STATEMENT EXECUTE FUNCTION notify_key_change()"
    )


def downgrade() -> None:
    for table in TABLES:
        op.execute(f"DROP TRIGGER IF EXISTS {table}_notify ON {table}")
    op.execute("DROP TRIGGER IF EXISTS api_key_notify ON api_key")
    op.execute("DROP FUNCTION IF EXISTS notify_data_change()")
    op.execute("DROP FUNCTION IF EXISTS notify_key_change()")
