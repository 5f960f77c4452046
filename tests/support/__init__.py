"""Builders shared by many test modules (extracts, CDMs, keys, published runs, cards).

Fixtures built on them live in ``tests/conftest.py``; test modules never import from one
another.
"""
