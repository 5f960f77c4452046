"""serving store schema

Revision ID: 0001
Revises:
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "access_log",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor", sa.String(length=200), nullable=False),
        sa.Column("role", sa.String(length=40), nullable=True),
        sa.Column("organisations", sa.JSON(), nullable=True),
        sa.Column("route", sa.String(length=200), nullable=False),
        sa.Column("request_id", sa.String(length=64), nullable=True),
        sa.Column("purpose", sa.String(length=200), nullable=True),
        sa.Column("n_patients", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("access_log", schema=None) as batch_op:
        batch_op.create_index("ix_access_log_actor_at", ["actor", "at"], unique=False)

    op.create_table(
        "api_users",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("role", sa.String(length=40), nullable=False),
        sa.Column("pcns", sa.JSON(), nullable=False),
        sa.Column("key_prefix", sa.String(length=16), nullable=False),
        sa.Column("key_hash", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(length=200), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("key_prefix"),
        sa.UniqueConstraint("name"),
    )
    op.create_table(
        "score_runs",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("month", sa.Date(), nullable=False),
        sa.Column("extract_date", sa.Date(), nullable=True),
        sa.Column("model_name", sa.String(length=200), nullable=False),
        sa.Column("model_version", sa.String(length=50), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("n_scored", sa.Integer(), nullable=False),
        sa.Column("n_type1_opt_outs_excluded", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("published_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("duration_seconds", sa.Float(), nullable=True),
        sa.Column("host", sa.String(length=200), nullable=True),
        sa.Column("pid", sa.Integer(), nullable=True),
        sa.Column("details", sa.JSON(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("score_runs", schema=None) as batch_op:
        batch_op.create_index("ix_score_runs_status_month", ["status", "month"], unique=False)

    op.create_table(
        "web_sessions",
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("role", sa.String(length=40), nullable=False),
        sa.Column("pcns", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("token_hash"),
    )
    op.create_table(
        "access_patients",
        sa.Column("patient", sa.String(length=32), nullable=False),
        sa.Column("access_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["access_id"], ["access_log.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("patient", "access_id"),
        sqlite_with_rowid=False,
    )
    op.create_table(
        "cohort_members",
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("intervention", sa.String(length=50), nullable=False),
        sa.Column("nhs_number", sa.String(length=10), nullable=False),
        sa.Column("practice_code", sa.String(length=6), nullable=False),
        sa.Column("pcn_code", sa.String(length=6), nullable=False),
        sa.Column("risk", sa.Float(), nullable=False),
        sa.Column("expected_benefit", sa.Float(), nullable=True),
        sa.Column("rank", sa.Integer(), nullable=False),
        sa.Column("criteria", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(["run_id"], ["score_runs.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("run_id", "intervention", "nhs_number"),
    )
    with op.batch_alter_table("cohort_members", schema=None) as batch_op:
        batch_op.create_index(
            "ix_cohort_members_run_int_pcn_rank",
            ["run_id", "intervention", "pcn_code", "rank"],
            unique=False,
        )
        batch_op.create_index(
            "ix_cohort_members_run_int_practice_rank",
            ["run_id", "intervention", "practice_code", "rank"],
            unique=False,
        )
        batch_op.create_index(
            "ix_cohort_members_run_int_rank", ["run_id", "intervention", "rank"], unique=False
        )
        batch_op.create_index("ix_cohort_members_run_nhs", ["run_id", "nhs_number"], unique=False)

    op.create_table(
        "cohort_outcomes",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("intervention", sa.String(length=50), nullable=False),
        sa.Column("practice_code", sa.String(length=6), nullable=False),
        sa.Column("pcn_code", sa.String(length=6), nullable=False),
        sa.Column("delivered", sa.Boolean(), nullable=False),
        sa.Column("people", sa.Integer(), nullable=False),
        sa.Column("expected", sa.Float(), nullable=False),
        sa.Column("observed", sa.Integer(), nullable=False),
        sa.Column("outcome_extract_date", sa.Date(), nullable=False),
        sa.Column("computed_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["run_id"], ["score_runs.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("cohort_outcomes", schema=None) as batch_op:
        batch_op.create_index("ix_cohort_outcomes_run", ["run_id"], unique=False)

    op.create_table(
        "patient_scores",
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("nhs_number", sa.String(length=10), nullable=False),
        sa.Column("practice_code", sa.String(length=6), nullable=False),
        sa.Column("pcn_code", sa.String(length=6), nullable=False),
        sa.Column("risk", sa.Float(), nullable=False),
        sa.Column("percentile", sa.Float(), nullable=False),
        sa.Column("rank", sa.Integer(), nullable=False),
        sa.Column("reasons", sa.JSON(), nullable=False),
        sa.Column("contributions", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(["run_id"], ["score_runs.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("run_id", "nhs_number"),
    )
    with op.batch_alter_table("patient_scores", schema=None) as batch_op:
        batch_op.create_index(
            "ix_patient_scores_run_pcn_rank", ["run_id", "pcn_code", "rank"], unique=False
        )
        batch_op.create_index(
            "ix_patient_scores_run_practice_rank", ["run_id", "practice_code", "rank"], unique=False
        )
        batch_op.create_index("ix_patient_scores_run_rank", ["run_id", "rank"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("patient_scores", schema=None) as batch_op:
        batch_op.drop_index("ix_patient_scores_run_rank")
        batch_op.drop_index("ix_patient_scores_run_practice_rank")
        batch_op.drop_index("ix_patient_scores_run_pcn_rank")

    op.drop_table("patient_scores")
    with op.batch_alter_table("cohort_outcomes", schema=None) as batch_op:
        batch_op.drop_index("ix_cohort_outcomes_run")

    op.drop_table("cohort_outcomes")
    with op.batch_alter_table("cohort_members", schema=None) as batch_op:
        batch_op.drop_index("ix_cohort_members_run_nhs")
        batch_op.drop_index("ix_cohort_members_run_int_rank")
        batch_op.drop_index("ix_cohort_members_run_int_practice_rank")
        batch_op.drop_index("ix_cohort_members_run_int_pcn_rank")

    op.drop_table("cohort_members")
    op.drop_table("access_patients")
    op.drop_table("web_sessions")
    with op.batch_alter_table("score_runs", schema=None) as batch_op:
        batch_op.drop_index("ix_score_runs_status_month")

    op.drop_table("score_runs")
    op.drop_table("api_users")
    with op.batch_alter_table("access_log", schema=None) as batch_op:
        batch_op.drop_index("ix_access_log_actor_at")

    op.drop_table("access_log")
