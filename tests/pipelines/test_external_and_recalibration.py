"""External validation (``riskstrat evaluate``) and local recalibration (``riskstrat
recalibrate``) of a version trained on one population and used on a shifted one.

The generator has no parameter for another age structure or admission rate, and its
defaults may not change, so the shifted population is a generated extract post-processed
here, openly:

- **age structure**: 60% of the people under 50 at the extract date are removed (every row of
  theirs, in every table), so the population is older than the generator's;
- **admission rate**: 40% of the emergency admission rows, chosen at random, are removed, as
  in a population (or a hospital feed) with fewer emergency admissions for the same
  records. The trees were fitted where admissions were more frequent for the same history,
  so their risks are too high here; the ranking largely survives.

The manifest's row counts are rewritten to match, and its source says what was done. The
shifted population is larger than the training one (30,000 people), so its held-out month
holds enough admissions for O/E to be measured to a few per cent.
"""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from riskstrat.cli import app
from riskstrat.config import get_settings
from riskstrat.modelling.registry import (
    CHALLENGER,
    DATA_DIGEST_TAG,
    EXTERNAL_EXPERIMENT,
    EXTERNAL_SUMMARY_PREFIX,
    PARENT_VERSION_TAG,
    RECALIBRATED_ON_TAG,
    VALIDATES_VERSION_TAG,
    registry_for,
)
from riskstrat.modelling.spec import default_spec_dir, load_spec
from riskstrat.pipelines.external import data_digest
from riskstrat.synth import generate_extract

pytestmark = pytest.mark.slow
EXTRACT_DATE = date(2026, 11, 1)
TABLES = ("patients", "activity", "conditions", "medications", "observations")


def shift_population(source: Path, out: Path, *, seed: int = 3) -> dict[str, float]:
    """Write ``source`` (a Parquet extract) to ``out`` with an older age structure and fewer
    emergency admissions (see the module). Returns what was removed."""
    rng = np.random.default_rng(seed)
    # Read and written with pyarrow, so every column keeps the generator's own types.
    tables = {name: pq.read_table(source / f"{name}.parquet") for name in TABLES}
    patients = tables["patients"].to_pandas()
    born = pd.to_datetime(patients["date_of_birth"])
    age = (pd.Timestamp(EXTRACT_DATE) - born).dt.days / 365.25
    young = (age < 50).to_numpy()
    dropped = young & (rng.random(len(patients)) < 0.6)
    gone = set(patients.loc[dropped, "nhs_number"])
    activity = tables["activity"].to_pandas()
    emergency = (activity["admission_method"] == "emergency").to_numpy()
    removed = emergency & (rng.random(len(activity)) < 0.4)
    tables["activity"] = tables["activity"].filter(pa.array(~removed))
    out.mkdir(parents=True)
    manifest = json.loads((source / "manifest.json").read_text())
    for name, table in tables.items():
        keep = ~table.column("nhs_number").to_pandas().isin(gone).to_numpy()
        kept = table.filter(pa.array(keep))
        pq.write_table(kept, out / f"{name}.parquet")
        manifest["row_counts"][name] = kept.num_rows
    manifest["source"] = (
        f"{manifest['source']}, shifted for a test: 60% of under-50s and 40% of emergency "
        "admissions removed"
    )
    (out / "manifest.json").write_text(json.dumps(manifest))
    return {"people_removed": float(dropped.sum()), "admissions_removed": float(removed.sum())}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("external")
    mp = pytest.MonkeyPatch()
    mp.setenv("RISKSTRAT_HOME", str(root / "home"))
    get_settings.cache_clear()
    runner = CliRunner()
    trained_on = root / "train"
    generate_extract(
        trained_on, n_patients=3000, seed=7, months=36, extract_date=EXTRACT_DATE, fmt="parquet"
    )
    generated = root / "generated"
    generate_extract(
        generated, n_patients=30000, seed=11, months=36, extract_date=EXTRACT_DATE, fmt="parquet"
    )
    shifted = root / "shifted"
    removed = shift_population(generated, shifted)
    results = {
        "train": runner.invoke(app, ["train", "--data", str(trained_on)]),
        "evaluate": runner.invoke(app, ["evaluate", "1", "--data", str(shifted)]),
        "recalibrate": runner.invoke(app, ["recalibrate", "1", "--data", str(shifted)]),
    }
    results["evaluate recalibrated"] = runner.invoke(app, ["evaluate", "2", "--data", str(shifted)])
    results["card"] = runner.invoke(app, ["card", "1", "--out", str(root / "card1")])
    results["card2"] = runner.invoke(app, ["card", "2", "--out", str(root / "card2")])
    yield {
        "root": root,
        "shifted": shifted,
        "removed": removed,
        "results": results,
        "registry": registry_for(get_settings()),
        "spec": load_spec(default_spec_dir()),
    }
    mp.undo()
    get_settings.cache_clear()


def _ok(result):
    assert result.exit_code == 0, result.output + repr(result.exception)


def _summaries(world, version: str) -> list[dict]:
    return world["registry"].external_validations(world["spec"].name, version)


def test_the_shift_is_real(world):
    assert world["removed"]["people_removed"] > 3000
    assert world["removed"]["admissions_removed"] > 300


def test_evaluate_logs_a_run_linked_to_the_version_and_finds_the_miscalibration(world):
    for step in ("train", "evaluate"):
        _ok(world["results"][step])
    (summary,) = _summaries(world, "1")
    oe = summary["oe"]["value"]
    # The original version over-predicts on the population with fewer admissions.
    assert not 0.95 <= oe <= 1.05, oe
    assert summary["data_digest"] == data_digest(world["shifted"])
    assert summary["rows"] > 5000
    output = world["results"]["evaluate"].output
    assert "observed / expected" in output and "fairness gates" in output
    assert f"MLflow run {summary['run_id']}" in output

    import mlflow  # the test reads MLflow directly, to check what the registry wrote

    mlflow.set_tracking_uri(world["registry"].tracking_uri)
    run = mlflow.MlflowClient().get_run(summary["run_id"])
    assert run.data.tags[VALIDATES_VERSION_TAG] == "1"
    assert run.data.tags[DATA_DIGEST_TAG] == summary["data_digest"]
    assert mlflow.get_experiment(run.info.experiment_id).name == EXTERNAL_EXPERIMENT
    assert run.data.metrics["validation_oe"] == pytest.approx(oe)
    info = world["registry"].describe(world["spec"].name, "1")
    assert EXTERNAL_SUMMARY_PREFIX + summary["run_id"] in info.tags


def test_the_card_shows_the_external_validation(world):
    _ok(world["results"]["card"])
    markdown = (world["root"] / "card1" / "card.md").read_text()
    assert "### External validation" in markdown
    assert "shifted for a test" in markdown
    assert "### Model-quality targets" in markdown


def test_recalibrate_registers_a_version_with_lineage(world):
    _ok(world["results"]["recalibrate"])
    registry, name = world["registry"], world["spec"].name
    info = registry.describe(name, "2")
    assert CHALLENGER in info.aliases
    assert info.tags[PARENT_VERSION_TAG] == "1"
    assert data_digest(world["shifted"]) in info.tags[RECALIBRATED_ON_TAG]
    # The trees are the parent's; only the calibrator changed, and MLflow's pyfunc loads it.
    parent, child = registry.load(name, "1"), registry.load(name, "2")
    assert parent.booster.model_to_string() == child.booster.model_to_string()
    assert child.calibrator != parent.calibrator
    assert child.calibrator.a == pytest.approx(info.metrics["calibration_a"])
    assert child.calibrator.b == pytest.approx(info.metrics["calibration_b"])
    markdown_card = world["results"]["card2"]
    _ok(markdown_card)
    card = (world["root"] / "card2" / "card.md").read_text()
    assert "**Local recalibration.** This version is version 1's trees" in card


def test_recalibration_recovers_calibration_on_the_shifted_population(world):
    info = world["registry"].describe(world["spec"].name, "2")
    before = _summaries(world, "1")[0]["oe"]["value"]
    after = info.metrics["validation_oe"]
    assert 0.95 <= after <= 1.05, (before, after)
    # Measured again by `riskstrat evaluate` on the same held-out month: the same answer.
    _ok(world["results"]["evaluate recalibrated"])
    (again,) = _summaries(world, "2")
    assert again["month"] == _summaries(world, "1")[0]["month"]
    assert again["oe"]["value"] == pytest.approx(after)


def test_a_recalibrated_version_is_promoted_as_any_version(world):
    # Recalibrated on the population it is judged on, it passes every gate there (the
    # logistic-regression baseline is fitted on the same local calibration months).
    info = world["registry"].describe(world["spec"].name, "2")
    assert info.tags["riskstrat.gates_passed"] == "true", info.tags["riskstrat.gate_failures"]
    _ok(CliRunner().invoke(app, ["promote", "2"]))
    assert "champion" in world["registry"].describe(world["spec"].name, "2").aliases
