"""The ``riskstrat`` command line."""
