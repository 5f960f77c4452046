"""Monitoring's pure functions: PSI, the status thresholds and the checks on frames."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from riskstrat.modelling.spec import MonitoringConfig, default_spec_dir, load_spec
from riskstrat.monitoring.checks import (
    CONFOUNDING_NOTE,
    drift_checks,
    performance_checks,
    reject_checks,
    summarise,
)
from riskstrat.monitoring.psi import psi, psi_against, reference_bins, reference_distributions
from riskstrat.monitoring.status import auroc_status, range_status, threshold_status, worst

CONFIG = MonitoringConfig(bootstrap_samples=50)


def test_psi_of_the_same_distribution_is_zero():
    rng = np.random.default_rng(1)
    x = rng.normal(size=20_000)
    ref = reference_bins(x)
    assert len(ref["edges"]) == 9 and sum(ref["shares"]) == pytest.approx(1)
    assert psi_against(ref, x)["psi"] == pytest.approx(0, abs=1e-12)
    # another sample of the same distribution: sampling noise only
    assert psi_against(ref, rng.normal(size=20_000))["psi"] < 0.01


def test_psi_of_a_shifted_distribution_is_above_the_red_threshold():
    rng = np.random.default_rng(2)
    ref = reference_bins(rng.normal(size=20_000))
    moderate = psi_against(ref, rng.normal(0.4, 1, size=20_000))["psi"]
    large = psi_against(ref, rng.normal(1.0, 1, size=20_000))["psi"]
    assert 0.1 <= moderate <= 0.25
    assert large > 0.25
    assert threshold_status(moderate, CONFIG.psi_amber, CONFIG.psi_red) == "amber"
    assert threshold_status(large, CONFIG.psi_amber, CONFIG.psi_red) == "red"


def test_psi_matches_the_formula_and_counts_missing_as_a_bin():
    assert psi([0.5, 0.5], [0.25, 0.75]) == pytest.approx(
        0.25 * math.log(0.25 / 0.5) * -1 + 0.25 * math.log(0.75 / 0.5)
    )
    ref = reference_bins(np.r_[np.zeros(500), np.ones(500)])
    assert ref["edges"] == [0.0, 1.0]  # a binary feature: few bins
    assert ref["shares"] == [0.5, 0.5, 0.0]
    found = psi_against(ref, np.r_[np.zeros(250), np.ones(250), np.full(500, np.nan)])
    assert found["missing_share"] == 0.5 and found["reference_missing_share"] == 0.0
    assert found["psi"] > 0.25


def test_threshold_and_range_statuses():
    assert threshold_status(0.05, 0.1, 0.25) == "green"
    assert threshold_status(0.1, 0.1, 0.25) == "amber"
    assert threshold_status(0.25, 0.1, 0.25) == "amber"
    assert threshold_status(0.26, 0.1, 0.25) == "red"
    assert threshold_status(float("nan"), 0.1, 0.25) == "unknown"
    band = (0.9, 1.1)
    assert range_status({"value": 1.0, "lo": 0.95, "hi": 1.05}, band) == "green"
    assert range_status({"value": 0.85, "lo": 0.8, "hi": 0.95}, band) == "amber"  # CI overlaps
    assert range_status({"value": 0.8, "lo": 0.75, "hi": 0.85}, band) == "red"
    assert range_status({"value": 1.3, "lo": 1.2, "hi": 1.4}, band) == "red"
    assert range_status({"value": None, "lo": None, "hi": None}, band) == "unknown"
    assert auroc_status({"value": 0.80, "lo": 0.78, "hi": 0.82}, 0.80, 0.005) == "green"
    assert auroc_status({"value": 0.79, "lo": 0.77, "hi": 0.81}, 0.80, 0.005) == "amber"
    assert auroc_status({"value": 0.75, "lo": 0.73, "hi": 0.77}, 0.80, 0.005) == "red"
    assert auroc_status({"value": 0.75, "lo": 0.73, "hi": 0.77}, None, 0.005) == "unknown"
    assert worst(["green", "amber", "unknown"]) == "amber"
    assert worst([]) == "unknown"


def test_the_shipped_spec_thresholds_default_to_the_gates():
    spec = load_spec(default_spec_dir())
    m = spec.monitoring
    assert (m.psi_amber, m.psi_red) == (0.1, 0.25)
    assert m.oe_range == spec.gates.calibration.oe_range
    assert m.slope_range == spec.gates.calibration.slope_range
    assert m.max_auroc_drop == spec.promotion.max_auroc_drop
    assert MonitoringConfig().oe_range == spec.gates.calibration.oe_range


def _matured(n: int = 6000, *, scale: float = 1.0, seed: int = 3) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    risk = np.clip(rng.beta(1.2, 12, size=n), 0.001, 0.95)
    label = (rng.random(n) < risk * scale).astype(int)
    return pd.DataFrame(
        {
            "risk": risk,
            "label": label,
            "pcn_code": np.where(np.arange(n) % 2 == 0, "U11111", "U22222"),
            "sex": np.where(np.arange(n) % 3 == 0, "F", "M"),
            "actioned": np.arange(n) % 10 == 0,
        }
    )


def test_performance_of_calibrated_risks_is_green_and_of_overpredicting_ones_red():
    good = performance_checks(
        _matured(), CONFIG, reference_auroc=None, fairness_attributes=("sex",)
    )
    overall = good["overall"]
    assert overall["estimable"] and overall["rows"] == 6000
    assert 0.9 < overall["oe"]["value"] < 1.1
    assert overall["status"]["oe"] == "green" and overall["status"]["slope"] == "green"
    assert overall["status"]["auroc"] == "unknown"  # no reference AUROC given
    assert 0 < overall["ppv_top"]["value"] < 1
    assert [p["pcn_code"] for p in good["by_pcn"]] == ["U11111", "U22222"]
    assert {(g["attribute"], g["group"]) for g in good["by_group"]} == {("sex", "F"), ("sex", "M")}
    assert [a["group"] for a in good["actioned"]] == ["actioned", "not_actioned"]
    assert sum(a["rows"] for a in good["actioned"]) == 6000
    assert good["confounding_note"] == CONFOUNDING_NOTE and "biased downward" in CONFOUNDING_NOTE
    bad = performance_checks(_matured(scale=0.6), CONFIG, reference_auroc=0.99)
    assert bad["overall"]["status"]["oe"] == "red"
    assert bad["overall"]["status"]["auroc"] == "red"


def test_a_small_group_is_reported_not_estimated():
    small = performance_checks(_matured(n=80), CONFIG, reference_auroc=0.7)
    assert small["overall"]["estimable"] is False and "too small" in small["overall"]["reason"]
    assert small["overall"]["status"] == {"auroc": "unknown", "oe": "unknown", "slope": "unknown"}


def test_drift_checks_find_the_shifted_feature_and_the_score():
    rng = np.random.default_rng(5)
    train = pd.DataFrame({"age": rng.normal(60, 10, 5000), "efi": rng.random(5000)})
    reference = reference_distributions(train, ["age", "efi"], score=rng.random(5000))
    latest = pd.DataFrame({"age": rng.normal(70, 10, 5000), "efi": rng.random(5000)})
    latest.loc[:999, "efi"] = np.nan
    rows = {
        r["name"]: r
        for r in drift_checks(
            reference, latest, ["age", "efi"], CONFIG, score=pd.Series(rng.random(5000))
        )
    }
    assert rows["age"]["status"]["psi"] == "red"
    assert rows["(score)"]["status"]["psi"] == "green" and rows["(score)"]["kind"] == "score"
    assert rows["efi"]["missing_increase"] == pytest.approx(0.2)
    assert rows["efi"]["status"]["missingness"] == "amber"


def test_reject_checks_compare_with_the_training_extract():
    trained = {"rows_read": {"patients": 1000, "activity": 1000}, "rows_rejected": {"patients": 1}}
    latest = {"rows_read": {"patients": 1000, "activity": 1000},
              "rows_rejected": {"patients": 2, "activity": 40}}  # fmt: skip
    rows = {r["table"]: r for r in reject_checks(trained, latest, CONFIG)}
    assert rows["patients"]["status"] == "green"
    assert rows["activity"]["increase"] == pytest.approx(0.04)
    assert rows["activity"]["status"] == "red"
    assert reject_checks(None, latest, CONFIG)[0]["status"] == "unknown"


def test_summarise_takes_the_worst_per_check_and_overall():
    perf = performance_checks(_matured(scale=0.6), CONFIG, reference_auroc=None)
    months = [{"performance": perf}]
    drift = [{"kind": "feature", "status": {"psi": "amber", "missingness": "green"}},
             {"kind": "score", "status": {"psi": "green", "missingness": "green"}}]  # fmt: skip
    status = summarise(months, drift, [{"status": "green"}])
    assert status["oe"] == "red" and status["feature_psi"] == "amber"
    assert status["score_psi"] == "green" and status["overall"] == "red"
    assert summarise([], drift, [])["oe"] == "unknown"
