"""The ``riskstrat`` command line (the console script runs ``riskstrat.cli.entry:main``).

One module per command group: :mod:`~riskstrat.cli.data` (generate, validate, profile,
import omop), :mod:`~riskstrat.cli.models` (train, promote, models, card, ui, predict),
:mod:`~riskstrat.cli.monthly` (score, outcomes, export), :mod:`~riskstrat.cli.service` (serve,
users, audit) and :mod:`~riskstrat.cli.bench`; :mod:`~riskstrat.cli.main` puts them in one
app, whose failures :mod:`~riskstrat.cli.handler` reports. :mod:`~riskstrat.cli.entry` runs
it, after settling what must come before numpy is imported; so ``app`` is imported from
``main`` only when asked for, and importing this package imports nothing else.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from riskstrat.cli.main import app

__all__ = ["app"]


def __getattr__(name: str) -> Any:
    if name == "app":
        from riskstrat.cli.main import app

        return app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
