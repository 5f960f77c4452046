"""Evaluation plots: each writes a real PNG from small synthetic inputs, without pyplot."""

from __future__ import annotations

import ast
import copy
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from riskstrat.reports import explanation_plots, figures, plots, subgroup_plots
from tests.support.cards import ci, example_audit, example_context, example_evaluation

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
FEATURES = [
    "age_years",
    "sex_female",
    "imd_decile",
    "emergency_admissions_365d",
    "ltc_heart_failure",
    "efi",
    "falls_365d",
    "bmi_latest",
]


def assert_png(path: Path, min_bytes: int = 10_000) -> None:
    assert path.is_file()
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE
    assert len(data) >= min_bytes, f"{path.name} is only {len(data)} bytes"


@pytest.fixture(scope="module")
def outcomes() -> tuple[np.ndarray, dict[str, np.ndarray]]:
    rng = np.random.default_rng(3)
    n = 3000
    logit = rng.normal(-3.0, 1.2, n)
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
    model = 1 / (1 + np.exp(-(logit + rng.normal(0, 0.5, n))))
    baseline = 1 / (1 + np.exp(-(0.6 * logit + rng.normal(0, 1.0, n) - 1)))
    efi_like = np.round(baseline * 10) / 10  # many ties
    return y, {"This model": model, "Logistic regression": baseline, "eFI": efi_like}


@pytest.fixture(scope="module")
def shap_inputs() -> tuple[np.ndarray, pd.DataFrame]:
    rng = np.random.default_rng(4)
    n = 6000  # more than the 5,000 drawn
    X = pd.DataFrame(
        {
            "age_years": rng.integers(18, 100, n),
            "sex_female": rng.integers(0, 2, n),
            "imd_decile": pd.array(rng.integers(1, 11, n), dtype="Int64"),
            "emergency_admissions_365d": rng.poisson(0.3, n),
            "ltc_heart_failure": rng.integers(0, 2, n).astype(bool),
            "efi": rng.uniform(0, 0.5, n).round(2),
            "falls_365d": rng.poisson(0.1, n),
            "bmi_latest": np.where(rng.random(n) < 0.2, np.nan, rng.normal(27, 5, n)),
        }
    )
    X.loc[X.index[:50], "imd_decile"] = pd.NA
    contrib = rng.normal(0, 0.2, (n, len(FEATURES) + 1))
    contrib[:, 0] = (X["age_years"] - 60) / 25
    contrib[:, 3] = 0.8 * X["emergency_admissions_365d"]
    contrib[:, 6] = 0.0  # a feature the model never uses
    contrib[:, -1] = -3.0  # base value
    return contrib, X


def test_curves_match_scikit_learn(outcomes):
    y, risks = outcomes
    for risk in risks.values():
        fpr, tpr, auroc = plots.roc_curve(y, risk)
        assert auroc == pytest.approx(roc_auc_score(y, risk), abs=1e-12)
        assert fpr[0] == tpr[0] == 0 and fpr[-1] == tpr[-1] == 1
        recall, precision, ap = plots.precision_recall_curve(y, risk)
        assert ap == pytest.approx(average_precision_score(y, risk), abs=1e-12)
        assert recall[-1] == 1 and precision[-1] == pytest.approx(y.mean())


def test_roc_and_precision_recall(outcomes, tmp_path):
    y, risks = outcomes
    assert_png(plots.roc_png(y, risks, tmp_path / "roc.png"))
    assert_png(plots.precision_recall_png(y, risks, tmp_path / "nested" / "pr.png"))


def test_curves_reject_bad_input(outcomes, tmp_path):
    y, risks = outcomes
    with pytest.raises(ValueError, match="same length"):
        plots.roc_png(y, {"short": risks["eFI"][:-1]}, tmp_path / "x.png")
    with pytest.raises(ValueError, match="both outcomes"):
        plots.roc_png(np.zeros_like(y), risks, tmp_path / "x.png")
    with pytest.raises(ValueError):
        plots.roc_png(y, {}, tmp_path / "x.png")


def test_calibration_log_and_linear_axes(tmp_path):
    bins = example_evaluation()["calibration"]["bins"]  # 0.2% to 31%: log axes
    zero = copy.deepcopy(bins)
    zero[0].update(observed_rate=0.0, observed_lo=0.0)  # drawn on the floor
    path = plots.calibration_png({"This model": bins, "Baseline": zero}, tmp_path / "cal.png")
    assert_png(path)
    narrow = [
        {
            "bin": i + 1,
            "rows": 500,
            "mean_risk": r,
            "observed_rate": r * 1.1,
            "observed_lo": r * 0.8,
            "observed_hi": r * 1.4,
        }
        for i, r in enumerate((0.1, 0.15, 0.2, 0.3, 0.4))
    ]
    assert_png(plots.calibration_png({"This model": narrow}, tmp_path / "cal_linear.png"))


def test_shap_summary_and_reasons(shap_inputs, tmp_path):
    contrib, X = shap_inputs
    first = explanation_plots.shap_summary_png(contrib, X, tmp_path / "shap.png", max_features=6)
    assert_png(first)
    again = explanation_plots.shap_summary_png(
        contrib, X, tmp_path / "shap_again.png", max_features=6
    )
    assert first.read_bytes() == again.read_bytes()  # the subsample is deterministic
    assert_png(explanation_plots.reason_importance_png(contrib, FEATURES, tmp_path / "reasons.png"))
    with pytest.raises(ValueError, match="base value"):
        explanation_plots.shap_summary_png(contrib[:, :-1], X, tmp_path / "bad.png")
    with pytest.raises(ValueError, match="without a reason group"):
        explanation_plots.reason_importance_png(
            np.zeros((3, 2)), ["not_a_feature"], tmp_path / "bad_reasons.png"
        )


def test_feature_ranks_and_swarm_offsets():
    ranks = explanation_plots._feature_ranks(pd.Series([3.0, None, 1.0, 2.0, 2.0]))
    assert np.isnan(ranks[1])
    assert ranks[2] == 0.0 and ranks[0] == 1.0 and ranks[3] == ranks[4] == 0.5
    assert (explanation_plots._feature_ranks(pd.Series([1, 1, 1])) == 0.5).all()
    offsets = explanation_plots._swarm_offsets(np.zeros(5), np.random.default_rng(0))
    assert np.abs(offsets).max() == pytest.approx(0.4)
    assert len(set(offsets.round(6))) == 5  # stacked, not drawn on top of each other


def test_subgroups_with_a_group_too_small_to_estimate(tmp_path):
    audit = example_audit()
    small = [g for g in audit["groups"] if not g["estimable"]]
    assert small and small[0]["auroc"] is None
    assert_png(subgroup_plots.subgroup_png(audit, tmp_path / "subgroups.png"))
    # Other metrics; CIs and a point off the axis; missing values; a group too small to
    # estimate that still has an AUROC.
    audit["groups"] = [g for g in audit["groups"] if g["attribute"] in ("sex", "ethnic_group")]
    audit["groups"][0]["oe"] = ci(1.9, 0.4, 9.0)
    audit["groups"][1]["oe"] = ci(None, None, None)
    audit["groups"][1]["fnr"] = None  # a rate with no denominator
    audit["groups"][2]["oe"] = ci(0.0, None, None)  # no events
    audit["groups"][2].update(estimable=False, reason="fewer than 20 admissions")
    metrics = ("auroc", "oe", "fnr", "false_omission_rate")
    assert_png(subgroup_plots.subgroup_png(audit, tmp_path / "more.png", metrics=metrics))


def test_stability_and_net_benefit(tmp_path):
    context = example_context()
    assert_png(plots.stability_png(context["stability"], tmp_path / "stability.png"))
    months = [
        {"month": f"2024-{m:02d}", "auroc": ci(0.8, 0.79, 0.81), "oe": ci(1.0, None, None)}
        for m in range(1, 13)
    ]
    assert_png(plots.stability_png(months, tmp_path / "stability_12.png"))
    ev = context["evaluation"]
    baseline = [dict(p, model=p["model"] * 0.8) for p in ev["net_benefit"]]
    path = plots.net_benefit_png(
        {"This model": ev["net_benefit"], "Logistic": baseline}, tmp_path / "nb.png"
    )
    assert_png(path)


def test_plots_are_safe_in_threads(outcomes, tmp_path):
    y, risks = outcomes
    with ThreadPoolExecutor(max_workers=4) as pool:
        paths = list(
            pool.map(lambda i: plots.roc_png(y, risks, tmp_path / f"roc{i}.png"), range(4))
        )
    contents = {p.read_bytes() for p in paths}
    assert len(contents) == 1


@pytest.mark.parametrize("module", [plots, explanation_plots, subgroup_plots, figures])
def test_no_pyplot_and_matplotlib_only_inside_functions(module):
    tree = ast.parse(Path(module.__file__).read_text(encoding="utf-8"))
    imported: list[tuple[str, bool]] = []  # (module, at module level)
    top_level = set(map(id, tree.body))
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        imported += [(name, id(node) in top_level) for name in names]
    assert not [m for m, _ in imported if "pyplot" in m]
    assert not [m for m, top in imported if top and m.startswith("matplotlib")]
    assert "matplotlib.use(" not in Path(module.__file__).read_text(encoding="utf-8")
