"""Benchmarks of every stage and the API load generator."""
