"""The ``riskstrat`` command: one typer app, its commands registered from one module per
command group, and one error handler (:mod:`riskstrat.cli.handler`) for all of them.

Thin: each command parses its options, calls a pipeline and prints the outcome.
"""

from __future__ import annotations

from typing import Annotated

import typer

from riskstrat.cli import bench, data, home, models, monitor, monthly, service
from riskstrat.cli.handler import RiskstratGroup

app = typer.Typer(
    cls=RiskstratGroup,
    help="riskstrat: 90-day emergency admission risk, cohorts and explanations for PCNs.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _options(
    debug: Annotated[
        bool,
        typer.Option("--debug", help="On a failure, also print the traceback (for a bug report)."),
    ] = False,
) -> None:
    # --debug is read by the error handler from the root context's parameters.
    del debug


# In this order in `riskstrat --help`; the groups (import, users) follow the commands.
for command in (
    home.init,
    data.generate,
    data.validate,
    data.profile,
    models.sample,
    models.train,
    models.evaluate,
    models.recalibrate,
    models.promote,
    models.models,
    models.card,
    models.ui,
    models.predict,
    monthly.score,
    monthly.outcomes,
    monthly.export,
    monitor.monitor,
    bench.bench,
    bench.bench_report,
    service.serve,
):
    app.command()(command)
app.command("audit")(service.audit_report)
app.add_typer(data.import_app, name="import")
app.add_typer(service.users_app, name="users")
