"""The ``riskstrat`` console script (and ``python -m riskstrat.cli``): what the process must
settle before numpy is imported, then the command line.

numpy asks Linux for transparent huge pages on every large array (``madvise``). Where the
kernel's THP ``defrag`` setting is ``madvise`` (a common default) and memory is fragmented
(DuckDB's files in the page cache), each first touch of such memory can stall on
compaction: on the 2-core machines of docs/benchmarks.md, touching fresh memory took up to
five times longer, and ``train`` and ``score`` ran 6-10% slower, with no huge page granted.
So the command turns numpy's request off, unless the operator has set
``NUMPY_MADVISE_HUGEPAGE`` (``1`` turns it back on, where huge pages are to be had).
"""

from __future__ import annotations

import os

#: numpy's switch (read when numpy is first imported) for asking for huge pages.
HUGEPAGE_SWITCH = "NUMPY_MADVISE_HUGEPAGE"


def main() -> None:
    """Run the ``riskstrat`` command line, with numpy's huge-page requests off by default."""
    os.environ.setdefault(HUGEPAGE_SWITCH, "0")
    from riskstrat.cli.main import app

    app(prog_name="riskstrat")
