"""The house rules that keep the code base easy to change, checked from the source."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CODE = [p for d in ("src/riskstrat", "pipelines", "service") for p in (ROOT / d).rglob("*.py")]


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def _modules_importing(prefix: str) -> set[str]:
    return {
        str(p.relative_to(ROOT))
        for p in CODE
        if any(n == prefix or n.startswith(prefix + ".") for n in _imports(p))
    }


def test_only_the_registry_talks_to_mlflow():
    # _mlflow_pyfunc.py is the model definition MLflow runs when it loads a model (models
    # from code); nothing in riskstrat imports it.
    assert _modules_importing("mlflow") == {
        "src/riskstrat/registry.py",
        "src/riskstrat/_mlflow_pyfunc.py",
    }
    importers = [
        str(p.relative_to(ROOT)) for p in CODE if any("_mlflow_pyfunc" in n for n in _imports(p))
    ]
    assert importers == []


def test_only_the_store_talks_to_the_serving_database():
    # Migrations describe the store's tables; they run only through Store.create_schema.
    importers = {
        m for m in _modules_importing("sqlalchemy") if not m.startswith("src/riskstrat/migrations/")
    }
    assert importers == {"src/riskstrat/store.py"}
    migrations = {m for m in _modules_importing("alembic") if "/migrations/" in m}
    assert _modules_importing("alembic") - migrations == {"src/riskstrat/store.py"}


def test_only_the_data_layer_reads_source_files():
    # extract.py reads extracts; the OMOP adapter reads a CDM (source.py) and the site map and
    # IMD lookup beside it, and counts the rows it wrote (importer.py).
    readers = {
        str(p.relative_to(ROOT))
        for p in CODE
        if any(
            s in p.read_text(encoding="utf-8") for s in ("read_csv(", "read_parquet(", "pd.read_")
        )
    }
    assert readers == {
        "src/riskstrat/extract.py",
        "src/riskstrat/data/omop/source.py",
        "src/riskstrat/data/omop/importer.py",
    }


@pytest.mark.parametrize(
    "forbidden",
    [
        "riskstrat.extract",
        "riskstrat.data",
        "riskstrat.features",
        "riskstrat.modelling",
        "riskstrat.synth",
        "pipelines",
    ],
)
def test_the_service_never_trains_or_reads_extracts(forbidden):
    service = {str(p.relative_to(ROOT)) for p in (ROOT / "service").rglob("*.py")}
    assert not (_modules_importing(forbidden) & service)


def test_importing_everything_does_no_work(tmp_path):
    modules = sorted(
        ".".join(p.relative_to(base).with_suffix("").parts)
        for base, folder in ((ROOT / "src", "riskstrat"), (ROOT, "pipelines"), (ROOT, "service"))
        for p in (base / folder).rglob("*.py")
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
