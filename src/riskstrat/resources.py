"""Files riskstrat ships inside its package: model specs, card templates, cohort definitions.

They are read with :mod:`importlib.resources`, so an installed riskstrat finds them from any
directory; every command that reads one also takes a path that overrides it.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

DEFAULT_MODEL = "emergency_admission_90d"


def model_dir(name: str = DEFAULT_MODEL) -> Path:
    """The shipped folder of model ``name``: ``spec.yaml``, ``card.md.j2``, ``cohorts.yaml``.

    Args:
        name: the model's folder name under ``models/``.

    Returns:
        A filesystem path (riskstrat is installed as files, never imported from a zip).
    """
    folder = files("riskstrat").joinpath("models", name)
    if not isinstance(folder, Path):  # pragma: no cover - a zipped install, which we never build
        raise RuntimeError("riskstrat must be installed as files to read its model specs")
    return folder
