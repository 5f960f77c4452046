"""Runnable pipelines: wiring of riskstrat library steps, nothing else."""
