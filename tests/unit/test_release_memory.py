"""Freed memory is handed back to the system where the C library can, and nothing breaks
where it cannot."""

from __future__ import annotations

import sys

import numpy as np

from riskstrat.pipelines import common


def test_releasing_freed_memory_is_safe_to_call_at_any_time():
    frames = [np.ones(500_000 // 8) for _ in range(20)]  # a heap's worth of small arrays
    del frames
    common.release_freed_memory()
    common.release_freed_memory()


def test_without_glibc_it_does_nothing(monkeypatch):
    common._malloc_trim.cache_clear()
    monkeypatch.setattr(sys, "platform", "darwin")
    try:
        assert common._malloc_trim() is None
        common.release_freed_memory()
    finally:
        common._malloc_trim.cache_clear()
