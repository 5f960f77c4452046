"""Wiring: library steps made into the train, score, promote, outcomes and export runs."""
