"""Intervention cohorts: selection, lists as practices read them, and outcomes."""
