"""Subgroup metrics and the fairness gate."""
