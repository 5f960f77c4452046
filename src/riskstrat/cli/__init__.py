"""The ``riskstrat`` command line (the console script runs ``riskstrat.cli:app``).

One module per command group: :mod:`~riskstrat.cli.data` (generate, validate, profile,
import omop), :mod:`~riskstrat.cli.models` (train, promote, models, card, ui, predict),
:mod:`~riskstrat.cli.monthly` (score, outcomes, export), :mod:`~riskstrat.cli.service` (serve,
users, audit) and :mod:`~riskstrat.cli.bench`; :mod:`~riskstrat.cli.main` puts them in one
app, whose failures :mod:`~riskstrat.cli.handler` reports.
"""

from riskstrat.cli.main import app

__all__ = ["app"]
