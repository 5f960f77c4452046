"""The one error handler of the ``riskstrat`` command.

Every failure a user can cause reaches it as a :class:`~riskstrat.errors.RiskstratError`: it
prints ``error: <message>`` and ``hint: <what to do next>`` on stderr and exits with the
error's exit code (1: the operation failed; 2: the command was called wrongly). Anything else
is a bug: ``error: unexpected failure: ...``, a hint to rerun with ``--debug`` and report it,
exit 1. Never a class name or a traceback, unless ``riskstrat --debug`` asks for the
traceback. click's own usage errors (exit 2) are left to click.
"""

from __future__ import annotations

import traceback
from typing import TYPE_CHECKING, Any

import typer
from typer.core import TyperGroup
from typer.exceptions import TyperException

from riskstrat.errors import RiskstratError, failure_message

if TYPE_CHECKING:
    from typer._click import Context  # typer's own click: TyperGroup.invoke takes this

#: The hint of a failure riskstrat did not expect.
UNEXPECTED_HINT = (
    "this is a bug: rerun with `riskstrat --debug ...` to see where it failed, and report it "
    "with that output"
)


def report_error(exc: BaseException, *, debug: bool) -> int:
    """Print ``exc`` for a user on stderr; return the exit code it calls for."""
    if debug:
        typer.echo("".join(traceback.format_exception(exc)).rstrip(), err=True)
    if isinstance(exc, RiskstratError):
        message, hint, code = exc.message, exc.hint, exc.exit_code
    else:
        text = failure_message(exc)
        message = f"unexpected failure: {text}" if text else "unexpected failure"
        hint, code = UNEXPECTED_HINT, 1
    typer.echo(f"{typer.style('error:', fg='red', bold=True)} {message}", err=True)
    if hint:
        typer.echo(f"{typer.style('hint:', fg='yellow', bold=True)} {hint}", err=True)
    return code


class RiskstratGroup(TyperGroup):
    """The root command group: runs a command and reports its failure (see the module)."""

    def invoke(self, ctx: Context) -> Any:
        try:
            return super().invoke(ctx)
        except (TyperException, typer.Exit, typer.Abort):
            raise  # usage errors (exit 2), deliberate exits and Ctrl-C: click's own
        except Exception as exc:  # the one place every failure is reported
            ctx.exit(report_error(exc, debug=bool(ctx.params.get("debug"))))
