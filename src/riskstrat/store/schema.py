"""The serving store's tables (SQLAlchemy Core), as the migrations leave them.

A monthly run is one row in ``score_runs`` plus its people in ``patient_scores`` and its
cohorts in ``cohort_members`` (on PostgreSQL, partitions of their own: ``partitions``);
``cohort_outcomes`` holds a run's outcome summary; ``access_log`` (and its per-patient index
``access_patients``) records every patient-level read; ``patient_marks`` what teams did about
listed people; ``api_users`` and ``web_sessions`` are the API's callers. The ``nhs_number``
columns hold an NHS number or, in a pseudonymous run, a pseudonym (``RunInfo.identifier_kind``).
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    Date,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    false,
    text,
)

metadata = MetaData()

score_runs = Table(
    "score_runs",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("month", Date, nullable=False),
    Column("extract_date", Date),  # unknown for a run that failed before reading the extract
    Column("model_name", String(200), nullable=False),
    Column("model_version", String(50), nullable=False),
    # staging -> published -> superseded (a rerun of the month replaced it); or -> failed
    Column("status", String(20), nullable=False),
    Column("n_scored", Integer, nullable=False),
    Column("n_type1_opt_outs_excluded", Integer, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("published_at", DateTime(timezone=True)),
    Column("duration_seconds", Float),
    Column("host", String(200)),  # with pid: lets a later run tell an abandoned staging run
    Column("pid", Integer),
    Column("details", JSON),  # counts only: rejects per table, cohort sizes, model metrics
    Index("ix_score_runs_status_month", "status", "month"),
)

patient_scores = Table(
    "patient_scores",
    metadata,
    Column("run_id", Integer, ForeignKey("score_runs.id", ondelete="CASCADE"), primary_key=True),
    # An NHS number, or a pseudonym of up to 64 characters in a pseudonymous run (0004).
    Column("nhs_number", String(64), primary_key=True),
    Column("practice_code", String(6), nullable=False),
    Column("pcn_code", String(6), nullable=False),
    Column("risk", Float, nullable=False),
    Column("percentile", Float, nullable=False),
    Column("rank", Integer, nullable=False),
    # JSON kept as text (migration 0008, ``info["json"]``): riskstrat writes it and reads it
    # whole, never inside it in SQL, so PostgreSQL need not parse every value as it arrives
    # (a quarter of a month's bulk copy). ``holds_json`` tells such columns apart.
    Column("reasons", Text, nullable=False, info={"json": True}),
    # every reason group's size in percentage points: what "what changed" compares
    Column("contributions", Text, nullable=False, info={"json": True}),
    Index("ix_patient_scores_run_rank", "run_id", "rank"),
    Index("ix_patient_scores_run_pcn_rank", "run_id", "pcn_code", "rank"),
    Index("ix_patient_scores_run_practice_rank", "run_id", "practice_code", "rank"),
    # On PostgreSQL a table per run (migration 0009, ``riskstrat.store.partitions``).
    postgresql_partition_by="LIST (run_id)",
)


def holds_json(table: Table, column: str) -> bool:
    """True if ``table.column`` holds JSON: a JSON column, or JSON kept as text."""
    c = table.c[column]
    return isinstance(c.type, JSON) or bool(c.info.get("json"))


cohort_members = Table(
    "cohort_members",
    metadata,
    Column("run_id", Integer, ForeignKey("score_runs.id", ondelete="CASCADE"), primary_key=True),
    Column("intervention", String(50), primary_key=True),
    Column("nhs_number", String(64), primary_key=True),  # or a pseudonym, as in patient_scores
    Column("practice_code", String(6), nullable=False),
    Column("pcn_code", String(6), nullable=False),
    Column("risk", Float, nullable=False),
    Column("expected_benefit", Float),  # expected admissions avoided; null with no effect
    Column("rank", Integer, nullable=False),
    Column("criteria", JSON, nullable=False),
    # The member's API item as JSON text, written at publication (migration 0002); null in
    # runs published before it, which the API then builds at request time.
    Column("item_json", Text),
    # For a list ranked by another model (cohort file ``rank_by``, migration 0007): that
    # model's name, version, label, risk, reasons and expected bed days; null otherwise.
    Column("ranking", JSON),
    Index("ix_cohort_members_run_int_rank", "run_id", "intervention", "rank"),
    Index("ix_cohort_members_run_int_pcn_rank", "run_id", "intervention", "pcn_code", "rank"),
    Index(
        "ix_cohort_members_run_int_practice_rank", "run_id", "intervention", "practice_code", "rank"
    ),
    Index("ix_cohort_members_run_nhs", "run_id", "nhs_number"),
    postgresql_partition_by="LIST (run_id)",  # as patient_scores
)

cohort_outcomes = Table(
    "cohort_outcomes",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("run_id", Integer, ForeignKey("score_runs.id", ondelete="CASCADE"), nullable=False),
    Column("intervention", String(50), nullable=False),
    Column("practice_code", String(6), nullable=False),
    Column("pcn_code", String(6), nullable=False),
    Column("delivered", Boolean, nullable=False),
    Column("people", Integer, nullable=False),
    Column("expected", Float, nullable=False),
    Column("observed", Integer, nullable=False),
    Column("outcome_extract_date", Date, nullable=False),
    Column("computed_at", DateTime(timezone=True), nullable=False),
    Index("ix_cohort_outcomes_run", "run_id"),
)

access_log = Table(
    "access_log",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("actor", String(200), nullable=False),
    Column("role", String(40)),
    Column("organisations", JSON),  # the caller's PCN codes (or ["*"])
    Column("route", String(200), nullable=False),
    Column("request_id", String(64)),
    Column("purpose", String(200)),
    Column("n_patients", Integer, nullable=False),
    # The read's patients, space-separated: keyed-hash pseudonyms by default, NHS numbers only
    # if the deployment chooses. Written with the record, in the same commit, so the record is
    # whole from the start. (Null for records made before revision 0003: theirs are only in
    # access_patients.)
    Column("patients", Text),
    # True until the patients are also in access_patients (see ``AuditRepository.index``).
    Column("patients_pending", Boolean, nullable=False, server_default=false()),
    # What the patients were read by: "nhs_number" or "pseudonym" (revision 0004; earlier
    # records, all of NHS numbers, read as "nhs_number").
    Column("identifier_kind", String(20), nullable=False, server_default="nhs_number"),
    Index("ix_access_log_actor_at", "actor", "at"),
    Index(
        "ix_access_log_pending",
        "id",
        sqlite_where=text("patients_pending"),
        postgresql_where=text("patients_pending"),
    ),
)

#: The patients of each access, one row each, keyed by patient first, so "who has looked at my
#: record?" is one index range. An index of ``access_log.patients``, filled in bulk after the
#: fact: a cohort page's hundred patients land at a hundred random places in this b-tree, and
#: writing them with every read cost a busy service more than the rest of the request.
access_patients = Table(
    "access_patients",
    metadata,
    # A keyed hash (32 characters), or the identifier itself where the deployment records
    # them: up to 64 characters for a pseudonym (0004).
    Column("patient", String(64), primary_key=True),
    Column("access_id", Integer, ForeignKey("access_log.id", ondelete="CASCADE"),
           primary_key=True),
    sqlite_with_rowid=False,
)  # fmt: skip

#: What a team did about a listed person, per intervention (see ``riskstrat.store.marks``):
#: appended, never updated, and kept across runs (no foreign key to a run, so pruning runs
#: leaves them). ``person`` is stored as the runs store it: an NHS number, or a pseudonym of up
#: to 64 characters (as ``patient_scores.nhs_number`` after 0004), with its kind beside it.
patient_marks = Table(
    "patient_marks",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("person", String(64), nullable=False),
    Column("identifier_kind", String(20), nullable=False),
    Column("intervention", String(50), nullable=False),
    Column("status", String(20), nullable=False),  # contacted, reviewed, declined, ...
    Column("pcn_code", String(6), nullable=False),  # the person's PCN when marked
    Column("marked_by", String(200), nullable=False),
    Column("marked_at", DateTime(timezone=True), nullable=False),
    Column("note", String(500)),  # free text: never logged
    Index("ix_patient_marks_person", "person", "intervention", "marked_at", "id"),
)

#: Browser sessions of the web pages: the cookie holds a random token, this table its hash.
web_sessions = Table(
    "web_sessions",
    metadata,
    Column("token_hash", String(64), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("role", String(40), nullable=False),
    Column("pcns", JSON, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False),
)

api_users = Table(
    "api_users",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(200), nullable=False, unique=True),
    Column("role", String(40), nullable=False),
    Column("pcns", JSON, nullable=False),  # PCN codes in scope, or ["*"] for all
    Column("key_prefix", String(16), nullable=False, unique=True),
    Column("key_hash", String(64), nullable=False),  # SHA-256 of the whole key
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("created_by", String(200), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False),
    Column("revoked_at", DateTime(timezone=True)),
)

#: Monitoring results (migration 0006): one JSON payload of aggregates per monitored run and
#: check date (the date of the extract the outcomes matured in). No foreign key to the run:
#: the record of how the model did outlives the pruning of the run's people.
model_monitoring = Table(
    "model_monitoring",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("run_id", Integer, nullable=False),
    Column("month", Date, nullable=False),
    Column("check_date", Date, nullable=False),
    Column("model_name", String(200), nullable=False),
    Column("model_version", String(50), nullable=False),
    Column("status", String(10), nullable=False),
    Column("payload", JSON, nullable=False),  # aggregates only: no identifiers
    Column("computed_at", DateTime(timezone=True), nullable=False),
    Index("ix_model_monitoring_run", "run_id", "check_date"),
)
