"""Alembic environment for the serving store. ``riskstrat.store.engine`` runs it with its own
connection (``config.attributes["connection"]``); nothing here opens a database."""

from __future__ import annotations

from alembic import context

from riskstrat.store.schema import metadata

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=metadata,
    render_as_batch=connection.dialect.name == "sqlite",  # SQLite alters tables by copy
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
