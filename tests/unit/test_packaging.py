"""What an installed riskstrat needs: its resources found from any directory, and a wheel whose
only top-level name is riskstrat and which carries every file the code reads."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from riskstrat.resources import model_dir

ROOT = Path(__file__).resolve().parents[2]


def test_model_resources_are_found_from_any_directory(tmp_path):
    code = (
        "from riskstrat.cohorts.select import load_cohort_config\n"
        "from riskstrat.modelling.spec import default_spec_dir, load_spec\n"
        "print(load_spec(default_spec_dir()).name, sorted(load_cohort_config().interventions))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True
    )
    assert out.stdout.split()[0] == "riskstrat-emergency-admission-90d"
    assert "falls_review" in out.stdout
    assert list(tmp_path.iterdir()) == []


def test_the_shipped_model_folder_is_the_one_in_models():
    shipped = model_dir()
    source = ROOT / "models" / "emergency_admission_90d"
    assert shipped.resolve() == source.resolve()
    assert {p.name for p in shipped.iterdir()} >= {"spec.yaml", "card.md.j2", "cohorts.yaml"}


@pytest.mark.slow  # builds the wheel
def test_the_wheel_has_one_top_level_name_and_every_resource(tmp_path):
    uv = ROOT / ".venv" / "bin" / "uv"
    if not uv.exists():  # pragma: no cover - make install always provides it
        pytest.fail("uv is missing from .venv: run make install")
    subprocess.run(
        [str(uv), "build", "--quiet", "--wheel", "--out-dir", str(tmp_path), str(ROOT)],
        check=True,
        capture_output=True,
    )
    [wheel] = tmp_path.glob("riskstrat-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert tops == {"riskstrat"}
    for needed in (
        "riskstrat/models/emergency_admission_90d/spec.yaml",
        "riskstrat/models/emergency_admission_90d/card.md.j2",
        "riskstrat/models/emergency_admission_90d/cohorts.yaml",
        "riskstrat/models/emergency_admission_12m/spec.yaml",
        "riskstrat/models/death_12m/spec.yaml",
        "riskstrat/service/templates/base.html",
        "riskstrat/store/migrations/env.py",
        "riskstrat/modelling/_mlflow_pyfunc.py",
        "riskstrat/py.typed",
        "riskstrat/engines/log4j2.properties",
    ):
        assert needed in names, needed
    assert any(n.startswith("riskstrat/data/codelists/") for n in names)
    assert any(n.startswith("riskstrat/synth/omop_vocab/") for n in names)
    assert not any(n.startswith(("pipelines/", "service/", "tests/")) for n in names)
    entry = next(n for n in names if n.endswith("entry_points.txt"))
    assert "riskstrat = riskstrat.cli.entry:main" in zipfile.ZipFile(wheel).read(entry).decode()
