"""The riskstrat home: ``riskstrat init`` makes it, and the commands that need its serving
store or model registry refuse, naming the path, when it is not there.

A command never makes a home by accident. Only the commands whose job is to create things
may: ``init``, ``train`` (its registry), ``generate`` and ``import omop``. The others look for
what they need first and stop with an error that says where they looked (for example a
``.riskstrat`` folder in the current directory, when ``RISKSTRAT_HOME`` is not set) and what
to do. A store or registry on a server (``RISKSTRAT_DATABASE_URL`` or
``RISKSTRAT_MLFLOW_TRACKING_URI`` that is not SQLite) is not looked for: its tables are made
on first use, as before.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from riskstrat.config import Settings, get_settings
from riskstrat.errors import NotFoundError

#: What to do when the home is missing.
HOME_HINT = (
    "run `riskstrat init` (or `make demo`), or set RISKSTRAT_HOME to an existing riskstrat home"
)


def sqlite_file(url: str) -> Path | None:
    """The database file of a SQLite URL (``sqlite:///path``); None for any other database
    or for an in-memory one."""
    if not url.startswith("sqlite:///"):
        return None
    name = url[len("sqlite:///") :].split("?", 1)[0]
    if not name or name == ":memory:":
        return None
    return Path(name)


def shown(url: str) -> str:
    """A database URL fit to print: SQLite as its file, any other without its password."""
    file = sqlite_file(url)
    return str(file) if file is not None else re.sub(r"//[^/@]*@", "//***@", url)


def _missing(settings: Settings, what: str, path: Path) -> NotFoundError:
    home = settings.home
    if path.is_relative_to(home) and not home.is_dir():
        message = f"no riskstrat home at {home} (looked for its {what}, {path})"
    elif path.is_relative_to(home):
        message = f"no {what} at {path}: {home} is not an initialised riskstrat home"
    else:
        message = f"no {what} at {path}"
    return NotFoundError(message, hint=HOME_HINT)


def require_store(settings: Settings | None = None) -> None:
    """Refuse, naming the path, when the serving store is a SQLite file that does not exist."""
    settings = settings or get_settings()
    file = sqlite_file(settings.serving_database_url)
    if file is not None and not file.is_file():
        raise _missing(settings, "serving store", file)


def require_registry(settings: Settings | None = None) -> None:
    """Refuse, naming the path, when the model registry is a SQLite file that does not
    exist."""
    settings = settings or get_settings()
    file = sqlite_file(settings.tracking_uri)
    if file is not None and not file.is_file():
        raise _missing(settings, "model registry", file)


def home_exists(settings: Settings) -> bool:
    """True when the serving store and the model registry are both there."""
    try:
        require_store(settings)
        require_registry(settings)
    except NotFoundError:
        return False
    return settings.artifact_root.is_dir()


@dataclass(frozen=True)
class Initialised:
    """What ``riskstrat init`` found or made."""

    home: Path
    store: str
    registry: str
    artefacts: Path
    created: bool


def init_home(settings: Settings) -> Initialised:
    """Make the home: its folder, the serving store's tables, the MLflow registry and its
    artefact folder. Nothing is touched when all of them are there already."""
    made = not home_exists(settings)
    if made:
        from riskstrat.modelling.registry import registry_for
        from riskstrat.store import Store

        settings.home.mkdir(parents=True, exist_ok=True)
        store = Store(settings.serving_database_url)
        try:
            store.create_schema()
        finally:
            store.dispose()
        settings.artifact_root.mkdir(parents=True, exist_ok=True)
        registry_for(settings).versions(settings.model_name)  # makes MLflow's tables
    return Initialised(
        home=settings.home,
        store=shown(settings.serving_database_url),
        registry=shown(settings.tracking_uri),
        artefacts=settings.artifact_root,
        created=made,
    )


def init() -> None:
    """Make the riskstrat home (serving store, model registry) and say where it is."""
    from riskstrat.cli.common import library_errors, out, setup

    setup()
    with library_errors():
        done = init_home(get_settings())
    if done.created:
        out.print(f"initialised the riskstrat home at {done.home}", highlight=False)
    else:
        out.print(
            f"the riskstrat home at {done.home} exists already: nothing to do", highlight=False
        )
    out.print(
        f"  serving store:  {done.store}\n  model registry: {done.registry}\n"
        f"  artefacts:      {done.artefacts}",
        highlight=False,
    )
    if not os.environ.get("RISKSTRAT_HOME"):
        out.print(
            f"from another folder, set RISKSTRAT_HOME={done.home} to use this home",
            highlight=False,
        )
