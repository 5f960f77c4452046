"""The serving store: one engine, one repository per aggregate."""

from __future__ import annotations

from sqlalchemy import Engine

from riskstrat.store.audit import AuditRepository
from riskstrat.store.cohorts import CohortRepository
from riskstrat.store.engine import create_schema, make_engine, ping
from riskstrat.store.marks import MarkRepository
from riskstrat.store.monitoring import MonitoringRepository
from riskstrat.store.outcomes import OutcomeRepository
from riskstrat.store.runs import RunRepository
from riskstrat.store.scores import ScoreRepository
from riskstrat.store.users import UserRepository


class Store:
    """The serving database behind the API: owns the engine, and reaches each aggregate
    through its repository.

    ====================  ==========================================================
    ``store.runs``        monthly runs: begin, stage, publish, fail, prune; find them
    ``store.scores``      a run's people: the ranked list, one person, across runs
    ``store.cohorts``     a run's intervention cohorts: pages, risks, sizes, members
    ``store.outcomes``    a run's outcome summary (aggregates)
    ``store.audit``       the access log: record, queue, index and read it
    ``store.marks``       what teams did about listed people: record, latest, history
    ``store.monitoring``  the champion's monitoring results per run and check date
    ``store.users``       API users and their keys, and browser sessions
    ====================  ==========================================================
    """

    def __init__(self, url: str, *, engine: Engine | None = None) -> None:
        self.url = url
        self.engine = engine or make_engine(url)
        self.runs = RunRepository(self.engine)
        self.scores = ScoreRepository(self.engine)
        self.cohorts = CohortRepository(self.engine)
        self.outcomes = OutcomeRepository(self.engine)
        self.audit = AuditRepository(self.engine)
        self.users = UserRepository(self.engine)
        self.marks = MarkRepository(self.engine)
        self.monitoring = MonitoringRepository(self.engine)

    def create_schema(self) -> None:
        """Create the tables, or upgrade them, with the migrations (Alembic).

        Raises:
            StoreSchemaError: the database holds riskstrat tables made before migrations.
        """
        create_schema(self.engine)

    def ping(self) -> bool:
        """True if the database answers (raises if it does not)."""
        return ping(self.engine)

    def dispose(self) -> None:
        """Commit any queued access records, then close every connection."""
        self.audit.close()
        self.engine.dispose()
