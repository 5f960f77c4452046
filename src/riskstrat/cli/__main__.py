"""``python -m riskstrat.cli``: the ``riskstrat`` command."""

from riskstrat.cli.entry import main

if __name__ == "__main__":
    main()
