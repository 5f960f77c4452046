"""``python -m riskstrat.cli``: the ``riskstrat`` command."""

from riskstrat.cli.main import app

if __name__ == "__main__":
    app(prog_name="riskstrat")
