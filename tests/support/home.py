"""A riskstrat home as ``riskstrat init`` makes it, for tests of commands that need one.

The first call makes a template with the real ``init`` (MLflow's tables take a second or
two); later calls copy it."""

from __future__ import annotations

import shutil
import tempfile
from functools import lru_cache
from pathlib import Path

from riskstrat.cli.home import init_home
from riskstrat.config import Settings


@lru_cache(maxsize=1)
def _template() -> Path:
    home = Path(tempfile.mkdtemp(prefix="riskstrat-home-")) / "home"
    made = init_home(Settings(home=home))
    assert made.created
    return home


def initialised_home(home: Path) -> Path:
    """Make ``home`` an initialised riskstrat home (SQLite store, local MLflow registry)."""
    template = _template()
    shutil.copytree(template, home)
    return home
