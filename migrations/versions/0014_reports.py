"""periodic reports: versioned report definitions and the stored reports

Revision ID: 0014
Revises: 0013

Issue 20. ``report_definition`` mirrors ``index_definition`` and ``monitor_definition``
(one row per code and version). ``report`` keeps one built report per definition
version, period and data version: its HTML, PDF and CSV/XLSX bundle, the summary of its
headline figures, and the analysis run (``kind = 'report'``) that built it.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "report_definition",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("code", sa.Text(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("definition", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("created_by", sa.Text(), nullable=False),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_report_definition")),
        sa.UniqueConstraint("code", "version", name=op.f("uq_report_definition_code_version")),
    )  # fmt: skip
    op.create_table(
        "report",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("definition", sa.Text(), nullable=False),
        sa.Column("definition_version", sa.Integer(), nullable=False),
        sa.Column("period", sa.Text(), nullable=False),
        sa.Column("language", sa.Text(), nullable=False),
        sa.Column("audience", sa.Text(), nullable=False),
        sa.Column("data_version", sa.BigInteger(), nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=True),
        sa.Column("html", sa.Text(), nullable=True),
        sa.Column("pdf", sa.LargeBinary(), nullable=True),
        sa.Column("bundle", sa.LargeBinary(), nullable=True),
        sa.Column(
            "summary", postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'{}'::jsonb"), nullable=False,
        ),
        sa.Column("created_by", sa.Text(), nullable=False),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint(
            "audience IN ('public', 'analyst')", name=op.f("ck_report_audience_known")
        ),
        sa.ForeignKeyConstraint(
            ["run_id"], ["analysis_run.id"], name=op.f("fk_report_run_id_analysis_run"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_report")),
        sa.UniqueConstraint(
            "definition", "definition_version", "period", "data_version",
            name=op.f("uq_report_definition_definition_version_period_data_version"),
        ),
    )  # fmt: skip
    # PDFs and zips are compressed already.
    op.execute("ALTER TABLE report ALTER COLUMN pdf SET STORAGE EXTERNAL")
    op.execute("ALTER TABLE report ALTER COLUMN bundle SET STORAGE EXTERNAL")


def downgrade() -> None:
    op.drop_table("report")
    op.drop_table("report_definition")
