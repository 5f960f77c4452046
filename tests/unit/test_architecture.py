"""The house rules that keep the code base easy to change, checked from the source.

The map: subpackages by concern, in layers. A package may import only the packages listed for
it (and the core modules at the top of ``riskstrat``); nothing lower imports anything higher.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "src" / "riskstrat"
CODE = sorted(p for p in PACKAGE.rglob("*.py") if "models" not in p.relative_to(PACKAGE).parts)

#: Modules at the top of the package that every layer may use; they import no subpackage.
CORE = {"errors", "config", "calendar", "logs", "nhs_number", "resources"}

#: Each subpackage and the subpackages it may import: the layering, lowest first.
LAYERS: dict[str, set[str]] = {
    # Session start-up and the DuckDB-to-Spark SQL bridge: below everything that runs SQL.
    "engines": set(),
    "data": {"engines"},
    "synth": {"data"},
    "features": {"data", "engines"},
    "modelling": {"data", "features"},
    "explain": {"data", "modelling"},
    "fairness": {"modelling"},
    "reports": {"data", "features", "modelling", "explain", "fairness"},
    "store": {"data"},
    "cohorts": {"data", "store"},
    "monitoring": {"modelling", "fairness"},
    "pipelines": {
        "engines",
        "data",
        "synth",
        "features",
        "modelling",
        "explain",
        "fairness",
        "reports",
        "store",
        "cohorts",
        "monitoring",
    },
    # The service knows the store, the registry and the words of the contract; it never
    # trains, scores or reads an extract (see test_the_service_never_trains_or_reads_extracts).
    "service": {"data", "modelling", "explain", "store", "cohorts"},
    "bench": {
        "engines",
        "data",
        "synth",
        "features",
        "modelling",
        "explain",
        "store",
        "pipelines",
        "service",
    },
    "cli": {
        "engines",
        "data",
        "synth",
        "features",
        "modelling",
        "explain",
        "store",
        "cohorts",
        "pipelines",
        "service",
        "bench",
    },
}


@cache  # the source does not change during a run; parsed once, not once per test
def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def _rel(path: Path) -> str:
    return str(path.relative_to(PACKAGE))


def _modules_importing(prefix: str) -> set[str]:
    return {
        _rel(p) for p in CODE if any(n == prefix or n.startswith(prefix + ".") for n in _imports(p))
    }


def _owner(path: Path) -> str:
    parts = path.relative_to(PACKAGE).parts
    return parts[0] if len(parts) > 1 else "core"


def test_every_module_belongs_to_a_layer_of_the_map():
    owners = {_owner(p) for p in CODE}
    assert owners == set(LAYERS) | {"core"}
    core = {p.stem for p in CODE if _owner(p) == "core"} - {"__init__"}
    assert core == CORE


def test_layers_import_only_what_the_map_allows():
    broken = []
    for path in CODE:
        owner = _owner(path)
        allowed = LAYERS.get(owner, set()) | {owner}
        for name in _imports(path):
            parts = name.split(".")
            if parts[0] != "riskstrat" or len(parts) < 2 or parts[1] in CORE:
                continue
            if owner == "core" or parts[1] not in allowed:
                broken.append(f"{_rel(path)} imports {name}")
    assert broken == []


def test_no_package_reaches_into_another_s_private_names():
    # bench times training step by step through pipelines.train's public steps, never its
    # internals; the same holds between every pair of packages.
    reaching = []
    for path in CODE:
        owner = _owner(path)
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("riskstrat."):
                target = node.module.split(".")[1]  # type: ignore[union-attr]
                if target != owner and target not in CORE:
                    reaching += [
                        f"{_rel(path)}: {node.module}.{a.name}"
                        for a in node.names
                        if a.name.startswith("_")
                    ]
    assert reaching == []


def test_bench_uses_only_the_public_steps_of_training():
    from riskstrat.pipelines import train

    used = {
        a.name
        for p in (PACKAGE / "bench").rglob("*.py")
        for node in ast.walk(ast.parse(p.read_text(encoding="utf-8")))
        if isinstance(node, ast.ImportFrom) and node.module == "riskstrat.pipelines.train"
        for a in node.names
    }
    assert used and used <= set(train.__all__)


def test_the_map_has_no_circle():
    seen: dict[str, int] = {}

    def depth(pkg: str, trail: tuple[str, ...] = ()) -> int:
        assert pkg not in trail, " -> ".join((*trail, pkg))
        if pkg not in seen:
            seen[pkg] = 1 + max((depth(d, (*trail, pkg)) for d in LAYERS[pkg]), default=0)
        return seen[pkg]

    for pkg in LAYERS:
        depth(pkg)


def _module_edges(path: Path, modules: set[str]) -> set[str]:
    """The modules ``path`` imports; ``from pkg import sub`` counts as importing ``pkg.sub``."""
    edges: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            edges.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            subs = {f"{node.module}.{a.name}" for a in node.names} & modules
            edges.update(subs or {node.module})
    return edges


def _module_graph(package: str) -> dict[str, set[str]]:
    files = {
        "riskstrat."
        + ".".join(p.relative_to(PACKAGE).with_suffix("").parts).removesuffix(".__init__"): p
        for p in (PACKAGE / package).rglob("*.py")
    }
    return {
        name: {n for n in _module_edges(p, set(files)) if n in files and n != name}
        for name, p in files.items()
    }


@pytest.mark.parametrize("package", sorted(LAYERS))
def test_no_import_circle_between_modules(package):
    graph = _module_graph(package)
    state: dict[str, int] = {}

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                raise AssertionError("circle: " + " -> ".join([*trail, node, nxt]))
            if nxt in graph and not state.get(nxt):
                visit(nxt, [*trail, node])
        state[node] = 2

    for node in sorted(graph):
        if not state.get(node):
            visit(node, [])


def test_modules_stay_small_or_say_why():
    # A module over ~600 lines says at its top why it is one piece (a "Why one module" line).
    long = [
        f"{_rel(p)} ({n} lines)"
        for p in CODE
        if "migrations" not in p.parts
        and (n := len(p.read_text(encoding="utf-8").splitlines())) > 650
        and "Why one module" not in "\n".join(p.read_text(encoding="utf-8").splitlines()[:40])
    ]
    assert long == []


def test_only_the_registry_talks_to_mlflow():
    # _mlflow_pyfunc.py is the model definition MLflow runs when it loads a model (models
    # from code); nothing in riskstrat imports it.
    assert _modules_importing("mlflow") == {
        "modelling/registry.py",
        "modelling/_mlflow_pyfunc.py",
    }
    importers = [_rel(p) for p in CODE if any("_mlflow_pyfunc" in n for n in _imports(p))]
    assert importers == []


def test_only_the_store_talks_to_the_serving_database():
    assert {m.split("/")[0] for m in _modules_importing("sqlalchemy")} == {"store"}
    assert {m.split("/")[0] for m in _modules_importing("alembic")} == {"store"}


def test_only_the_data_layer_reads_source_files():
    # extract.py and reading.py read extracts (spark_extract.py on Spark; structure.py a
    # Parquet file's schema, for either); the OMOP adapter reads a CDM
    # (source.py, spark_source.py on Spark) and the site map and IMD lookup beside it, and
    # counts the rows it wrote (importer.py); sample.py and combine.py count the rows of the
    # extracts they write.
    readers = {
        _rel(p)
        for p in CODE
        if any(
            s in p.read_text(encoding="utf-8")
            for s in ("read_csv(", "read_parquet(", "pd.read_", ".read.parquet(", ".read.format(")
        )
    }
    assert readers == {
        "data/extract.py",
        "data/reading.py",
        "data/spark_extract.py",
        "data/structure.py",
        "data/omop/source.py",
        "data/omop/spark_source.py",
        "data/omop/importer.py",
        "data/sample.py",
        "data/combine.py",
    }


@pytest.mark.parametrize(
    "forbidden",
    [
        "riskstrat.data.extract",
        "riskstrat.data.structure",
        "riskstrat.data.files",
        "riskstrat.data.omop",
        "riskstrat.features",
        "riskstrat.modelling.model",
        "riskstrat.synth",
        "riskstrat.pipelines",
    ],
)
def test_the_service_never_trains_or_reads_extracts(forbidden):
    assert not {m for m in _modules_importing(forbidden) if m.startswith("service/")}


def test_the_wheel_has_one_top_level_name():
    tops = {p.name for p in (ROOT / "src").iterdir() if not p.name.endswith(".egg-info")}
    assert tops == {"riskstrat"}
    # pipelines/ and service/ at the top hold entry points and deployment files, not packages.
    for folder in ("pipelines", "service"):
        assert not list((ROOT / folder).rglob("__init__.py"))


def test_importing_everything_does_no_work(tmp_path):
    modules = sorted(
        "riskstrat." + ".".join(p.relative_to(PACKAGE).with_suffix("").parts)
        for p in CODE
        # MLflow's model file and Alembic's scripts are run by those tools, not imported.
        if p.name != "_mlflow_pyfunc.py" and "migrations" not in p.parts
    )
    code = (
        "import importlib, sys\n"
        f"for m in {modules!r}:\n"
        "    importlib.import_module(m.removesuffix('.__init__'))\n"
        "print('mlflow' in sys.modules)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
        env={"PATH": "/usr/bin:/bin", "RISKSTRAT_HOME": str(tmp_path / "home")},
    )
    assert out.stdout.strip() == "False"  # mlflow is imported only when a registry is used
    assert list(tmp_path.iterdir()) == []  # no folders, stores or files created
