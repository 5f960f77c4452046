"""Alembic commands on a test store: the serving store's own migrations, run on its engine."""

from __future__ import annotations

from riskstrat.store import Store
from riskstrat.store.engine import MIGRATIONS


def migrate(store: Store, action: str, revision: str) -> None:
    """``alembic <action> <revision>`` (``upgrade`` or ``downgrade``) on ``store``."""
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with store.engine.begin() as conn:
        config.attributes["connection"] = conn
        getattr(command, action)(config, revision)
