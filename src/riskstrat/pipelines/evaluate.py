"""Evaluation of a trained version on held-out months: metrics with CIs, calibration,
baselines, oracle, temporal stability, fairness audit, gates, plots and the model card.

Everything here is computed on the evaluation months only; nothing here fits trees.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import date
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from riskstrat.explain.reasons import shap_contributions
from riskstrat.fairness.subgroups import (
    FairnessGates,
    FairnessPlan,
    compare_audits,
    fairness_audit,
    fairness_gate_results,
)
from riskstrat.modelling.baselines import BASELINE_LABELS, Baseline
from riskstrat.modelling.evaluation import (
    EvaluationPlan,
    compare_predictions,
    evaluate_predictions,
    evaluate_stability,
)
from riskstrat.modelling.gates import (
    GateResult,
    calibration_gate_results,
    logistic_gate_results,
    target_results,
)
from riskstrat.modelling.model import IndexPlan, RiskModel, model_matrix, raw_log_odds
from riskstrat.modelling.registry import ModelRegistry
from riskstrat.modelling.spec import ModelSpec

MODEL_LABEL = "riskstrat model"
CALIBRATION_WORDS = {
    "platt": "Platt scaling: logistic regression on the trees' log-odds (scikit-learn), "
    "fitted on a month the trees did not see",
    "isotonic": "isotonic regression (scikit-learn), fitted on a month the trees did not see",
    "none": "none: the trees' own probabilities",
}


@dataclass
class ChampionPredictions:
    """The current champion's risks on the same held-out rows, for a fair comparison."""

    version: str
    risk: npt.NDArray[np.float64]


@dataclass
class EvaluationReport:
    """Everything measured about one version, as plain data (for MLflow and the card)."""

    primary: dict[str, Any]
    baselines: list[dict[str, Any]]
    stability: list[dict[str, Any]]
    fairness: dict[str, Any]
    gates: list[GateResult]
    oracle: dict[str, Any] | None = None
    champion_comparison: dict[str, Any] | None = None
    fairness_comparison: list[dict[str, Any]] | None = None
    plots: dict[str, Path] = field(default_factory=dict)
    #: The risks the primary month was measured on (the model's, then each baseline's, by
    #: label), kept for the plots so that they are not predicted twice; never logged.
    primary_risks: dict[str, npt.NDArray[np.float64]] = field(default_factory=dict, repr=False)

    @property
    def gates_passed(self) -> bool:
        return all(g.passed for g in self.gates)

    def flat_metrics(self) -> dict[str, float]:
        """The headline numbers as MLflow metrics (names are stable; used by `models`)."""
        p = self.primary
        out: dict[str, float] = {
            "validation_rows": float(p["rows"]),
            "validation_events": float(p["events"]),
            "validation_event_rate": float(p["event_rate"]),
            "validation_mean_risk": float(p["mean_risk"]),
            "validation_share_flagged_for_70pct_recall": float(
                p["share_flagged_for_recall"]["value"]
            ),
            "gates_passed": 1.0 if self.gates_passed else 0.0,
            "gates_failed": float(sum(not g.passed for g in self.gates)),
        }
        for key in ("auroc", "auprc", "brier"):
            _ci_metrics(out, f"validation_{key}", p[key])
        for key, name in (("oe", "oe"), ("slope", "calibration_slope"),
                          ("intercept", "calibration_intercept")):  # fmt: skip
            _ci_metrics(out, f"validation_{name}", p["calibration"][key])
        for row in p["lists"]:
            pct = round(row["share"] * 100)
            out[f"validation_sensitivity_top{pct}pct"] = float(row["sensitivity"]["value"])
            out[f"validation_ppv_top{pct}pct"] = float(row["ppv"]["value"])
        for b in self.baselines[1:]:
            out[f"baseline_{b['key']}_auroc"] = float(b["auroc"]["value"])
            out[f"baseline_{b['key']}_auroc_difference"] = float(b["auroc_difference"]["value"])
        for s in self.stability:
            out[f"stability_{s['month'][:7].replace('-', '_')}_auroc"] = float(s["auroc"]["value"])
        if self.oracle:
            out["validation_oracle_auroc"] = float(self.oracle["auroc"])
            out["validation_auroc_ratio_to_oracle"] = float(self.oracle["ratio"])
            out["validation_oracle_share_flagged_for_70pct_recall"] = float(
                self.oracle["share_flagged_for_recall"]
            )
        if self.champion_comparison:
            out["champion_auroc_same_rows"] = float(
                self.champion_comparison["champion_auroc"]["value"]
            )
            out["auroc_difference_vs_champion"] = float(
                self.champion_comparison["difference"]["value"]
            )
        return out


def _ci_metrics(out: dict[str, float], name: str, ci: Mapping[str, Any]) -> None:
    out[name] = float(ci["value"])
    if ci.get("lo") is not None and ci.get("hi") is not None:
        out[f"{name}_lo"] = float(ci["lo"])
        out[f"{name}_hi"] = float(ci["hi"])


def evaluation_plan(spec: ModelSpec) -> EvaluationPlan:
    e = spec.evaluation
    return EvaluationPlan(
        bootstrap_samples=e.bootstrap_samples,
        ci_level=e.ci_level,
        list_shares=tuple(e.list_shares),
        recall_target=e.recall_target,
        net_benefit_thresholds=tuple(e.net_benefit_thresholds),
        calibration_bins=e.calibration_bins,
        seed=e.seed,
    )


def evaluation_workers() -> int:
    """Threads for ``evaluate_version``: one per core this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def run_jobs(jobs: Mapping[str, Callable[[], Any]], workers: int) -> dict[str, Any]:
    """Run independent jobs on ``workers`` threads and return their results by name.

    The bootstraps spend most of their time inside NumPy, which releases the GIL: two
    threads on two cores took about 70% of the time of one, measured here. (Processes are
    not used: a spawned process imports the caller's main script again, which runs an
    unguarded script's training a second time.) Every job seeds its own generator, so the
    results equal a serial run's exactly.
    """
    if workers <= 1 or len(jobs) <= 1:
        return {name: job() for name, job in jobs.items()}
    with ThreadPoolExecutor(max_workers=min(workers, len(jobs))) as pool:
        futures = {name: pool.submit(job) for name, job in jobs.items()}
        return {name: future.result() for name, future in futures.items()}


def _settle(future: Future[Any], work: Callable[[], Any]) -> None:
    """Run ``work`` and give its result (or its error) to ``future``."""
    try:
        future.set_result(work())
    except BaseException as error:
        future.set_exception(error)
        raise


def evaluate_version(
    *,
    spec: ModelSpec,
    plan: IndexPlan,
    model: RiskModel,
    baselines: Mapping[str, Baseline] | Callable[[], Mapping[str, Baseline]],
    evaluation_rows: pd.DataFrame,
    oracle: pd.DataFrame | None,
    champion: ChampionPredictions | None,
    workers: int | None = None,
) -> EvaluationReport:
    """Measure a fitted model on the evaluation months (``evaluation_rows`` has features,
    ``label``, ``index_date`` and the group columns).

    The bootstrapped measurements are independent jobs on ``workers`` threads (default
    ``evaluation_workers()``). The model's predictions are made here first, so the jobs only
    count. The validation month's stability row comes from the primary evaluation itself.
    ``baselines`` may be a function that fits them: it then runs as the first job, beside
    the measurements that do not need it, and only the baselines' comparison waits for it
    (a caller that needs them afterwards can pass one that keeps its result,
    ``functools.cache``)."""
    eplan = evaluation_plan(spec)
    dates = evaluation_rows["index_date"]
    labels = evaluation_rows["label"].to_numpy()

    def predicted(month: date) -> tuple[npt.NDArray[Any], npt.NDArray[np.float64]]:
        # A month's outcomes and risks, from its rows' model features alone (no copy of
        # the month's other columns).
        rows = (dates == month).to_numpy()
        matrix = model_matrix(model.booster_, evaluation_rows, rows)
        return labels[rows], model.calibrator_.transform(raw_log_odds(model.booster_, matrix))

    primary_rows = evaluation_rows.loc[(dates == plan.validation_month).to_numpy()]
    y, risk = predicted(plan.validation_month)

    fplan = FairnessPlan(
        attributes=tuple(spec.fairness.attributes),
        list_share=spec.fairness.list_share,
        min_group_rows=spec.fairness.min_group_rows,
        min_group_events=spec.fairness.min_group_events,
        bootstrap_samples=eplan.bootstrap_samples,
        ci_level=eplan.ci_level,
        seed=eplan.seed,
    )
    groups = primary_rows[["label", *spec.fairness.attributes]]
    light = replace(eplan, bootstrap_samples=min(eplan.bootstrap_samples, 100))
    fitted: Future[Mapping[str, Baseline]] = Future()
    jobs: dict[str, Callable[[], Any]] = {}
    if callable(baselines):
        jobs["fit baselines"] = partial(_settle, fitted, baselines)
    else:
        fitted.set_result(baselines)

    def compare_baselines() -> tuple[dict[str, Any], list[dict[str, Any]]]:
        # The same resamples as the primary evaluation (the same plan): paired intervals.
        risks = {MODEL_LABEL: risk} | {
            BASELINE_LABELS[name]: baseline.predict_proba(primary_rows)
            for name, baseline in fitted.result().items()
        }
        return risks, compare_predictions(y, risks, reference=MODEL_LABEL, plan=eplan)

    # Largest first, so the last job to start is a short one.
    jobs["primary"] = partial(evaluate_predictions, y, risk, plan=eplan)
    jobs["baselines"] = compare_baselines
    jobs["fairness"] = partial(fairness_audit, groups.assign(risk=risk), plan=fplan)
    if champion is not None:
        jobs["champion"] = partial(
            compare_predictions,
            y,
            {"challenger": risk, "champion": champion.risk},
            reference="challenger",
            plan=eplan,
        )
        jobs["champion fairness"] = partial(
            fairness_audit, groups.assign(risk=champion.risk), plan=fplan
        )
    for month in plan.evaluation_months:
        if month == plan.validation_month:
            continue  # measured already, with the full bootstrap
        # Only what the stability table reports (the same values evaluate_predictions gives).
        jobs[f"month {month.isoformat()}"] = partial(
            evaluate_stability, *predicted(month), plan=light
        )
    done = run_jobs(jobs, evaluation_workers() if workers is None else workers)

    primary = done["primary"]
    risks, compared = done["baselines"]
    label_to_key = {BASELINE_LABELS[k]: k for k in fitted.result()} | {MODEL_LABEL: "model"}
    # "name" is what the card shows; "key" names the metrics
    baseline_rows = [{**row, "key": label_to_key[row["name"]]} for row in compared]
    stability = []
    for month in plan.evaluation_months:
        if month == plan.validation_month:
            month_eval = {
                "rows": primary["rows"],
                "events": primary["events"],
                "auroc": primary["auroc"],
                "oe": primary["calibration"]["oe"],
                "slope": primary["calibration"]["slope"],
                "brier": primary["brier"],
            }
        else:
            month_eval = done[f"month {month.isoformat()}"]
        stability.append({"month": month.isoformat(), **month_eval})
    audit = done["fairness"]
    gates = (
        calibration_gate_results(
            primary,
            oe_range=spec.gates.calibration.oe_range,
            slope_range=spec.gates.calibration.slope_range,
            rule=spec.gates.rule,
        )
        + logistic_gate_results(
            baseline_rows,
            margin=spec.gates.max_auroc_below_logistic,
            rule=spec.gates.rule,
            level=eplan.ci_level,
        )
        + fairness_gate_results(
            audit,
            FairnessGates(
                oe_range=spec.gates.fairness.oe_range,
                max_auroc_gap=spec.gates.fairness.max_auroc_gap,
                auroc_gap_attributes=tuple(spec.gates.fairness.auroc_gap_attributes),
                rule=spec.gates.rule,
            ),
        )
    )

    report = EvaluationReport(
        primary=primary,
        baselines=baseline_rows,
        stability=stability,
        fairness=audit,
        gates=gates,
        primary_risks=risks,
    )
    if oracle is not None:
        report.oracle = _oracle_section(primary_rows, risk, oracle, eplan)
    if champion is not None:
        pair = done["champion"]
        report.champion_comparison = {
            "champion_version": champion.version,
            "challenger_auroc": pair[0]["auroc"],
            "champion_auroc": pair[1]["auroc"],
            "difference": pair[1]["auroc_difference"],  # challenger - champion
            "tolerance": spec.promotion.max_auroc_drop,
        }
        report.fairness_comparison = compare_audits(audit, done["champion fairness"])
    return report


def quality_targets(report: EvaluationReport, spec: ModelSpec) -> list[GateResult]:
    """The spec's model-quality targets (``targets``) checked on a report's point estimates."""
    t = spec.targets
    return target_results(
        primary=report.primary,
        baselines=report.baselines,
        stability=report.stability,
        oracle=report.oracle,
        max_auroc_below_logistic=t.max_auroc_below_logistic,
        min_auroc_ratio_to_oracle=t.min_auroc_ratio_to_oracle,
        max_share_flagged_ratio_to_oracle=t.max_share_flagged_ratio_to_oracle,
        oe_range=t.oe_range,
        slope_range=t.slope_range,
    )


def _oracle_section(
    rows: pd.DataFrame, risk: npt.NDArray[np.float64], oracle: pd.DataFrame, plan: EvaluationPlan
) -> dict[str, Any] | None:
    matched = (
        rows[["nhs_number", "index_date", "label"]]
        .assign(risk=risk)
        .merge(oracle, on=["nhs_number", "index_date"], how="inner", validate="1:1")
    )
    if len(matched) != len(rows):
        return None
    light = replace(plan, bootstrap_samples=0)
    model_eval = evaluate_predictions(matched["label"], matched["risk"], plan=light)
    oracle_eval = evaluate_predictions(matched["label"], matched["true_risk"], plan=light)
    return {
        "auroc": oracle_eval["auroc"]["value"],
        "model_auroc": model_eval["auroc"]["value"],
        "ratio": model_eval["auroc"]["value"] / oracle_eval["auroc"]["value"],
        "share_flagged_for_recall": oracle_eval["share_flagged_for_recall"]["value"],
        "model_share_flagged_for_recall": model_eval["share_flagged_for_recall"]["value"],
        "oe_of_true_risk": oracle_eval["calibration"]["oe"]["value"],
    }


def draw_plots(
    report: EvaluationReport,
    *,
    model: RiskModel,
    baselines: Mapping[str, Baseline],
    evaluation_rows: pd.DataFrame,
    plan: IndexPlan,
    out_dir: Path,
    shap_rows: int = 5000,
    seed: int = 0,
) -> dict[str, Path]:
    """Draw every plot of the card into ``out_dir``; returns {name: path}."""
    from riskstrat.reports import explanation_plots, plots, subgroup_plots

    out_dir.mkdir(parents=True, exist_ok=True)
    names = model.feature_names_
    rows = evaluation_rows.loc[evaluation_rows["index_date"] == plan.validation_month]
    y = rows["label"].to_numpy()
    labels = [MODEL_LABEL, *(BASELINE_LABELS[name] for name in baselines)]
    risks = {k: report.primary_risks[k] for k in labels if k in report.primary_risks}
    if len(risks) != len(labels) or any(len(r) != len(rows) for r in risks.values()):
        # a report made elsewhere: predict again
        risks = {MODEL_LABEL: model.predict_proba(rows[names])}
        for name, baseline in baselines.items():
            risks[BASELINE_LABELS[name]] = baseline.predict_proba(rows)
    sample = rows.sample(n=min(shap_rows, len(rows)), random_state=seed)[names]
    contributions = shap_contributions(model.booster_, sample)
    drawn = {
        "roc": plots.roc_png(y, risks, out_dir / "roc.png"),
        "precision_recall": plots.precision_recall_png(y, risks, out_dir / "precision_recall.png"),
        "calibration": plots.calibration_png(
            {MODEL_LABEL: report.primary["calibration"]["bins"]}, out_dir / "calibration.png"
        ),
        "shap_summary": explanation_plots.shap_summary_png(
            contributions, sample, out_dir / "shap_summary.png"
        ),
        "reasons": explanation_plots.reason_importance_png(
            contributions, names, out_dir / "reasons.png"
        ),
        "subgroups": subgroup_plots.subgroup_png(report.fairness, out_dir / "subgroups.png"),
        "stability": plots.stability_png(report.stability, out_dir / "stability.png"),
        "net_benefit": plots.net_benefit_png(
            {MODEL_LABEL: report.primary["net_benefit"]}, out_dir / "net_benefit.png"
        ),
    }
    report.plots = {k: Path(v) for k, v in drawn.items()}
    return report.plots


def codelist_summary(provenance: Mapping[str, Any]) -> str:
    """One line on the codelists an imported extract was mapped with (from its manifest's
    provenance): where it came from, the set's digest, and every list not at the usual
    version, so a changed list shows on the card."""
    codelists = provenance.get("codelists")
    if not isinstance(codelists, Mapping):
        return ""
    versions = {str(k): str(v) for k, v in dict(codelists.get("versions", {})).items()}
    usual = Counter(versions.values()).most_common(1)[0][0] if versions else "?"
    odd = [f"{k} {v}" for k, v in sorted(versions.items()) if v != usual]
    omop = provenance.get("omop", {})
    where = (
        f"OMOP CDM {omop.get('cdm_version', '?')} import"
        if isinstance(omop, Mapping) and omop
        else str(provenance.get("adapter", "import"))
    )
    text = (
        f"{where}; codelists digest {str(codelists.get('digest', ''))[:16]}, "
        f"{len(versions)} lists at version {usual}"
    )
    return text + (f", except {', '.join(odd)}" if odd else "")


def card_context(
    report: EvaluationReport,
    *,
    spec: ModelSpec,
    plan: IndexPlan,
    model: RiskModel,
    version: str,
    run_id: str | None,
    created_at: str,
    extract_date: date,
    source: str | None,
    train_rows: int,
    identifier_kind: str = "nhs_number",
    provenance: Mapping[str, Any] | None = None,
    censored_rows: int | None = None,
) -> dict[str, Any]:
    """The model card's context (see ``riskstrat.reports.card``); ``identifier_kind`` and
    ``provenance`` come from the extract's manifest; ``censored_rows`` is how many
    person-months ``training.post_intervention: censor`` left out (None: not counted)."""
    return {
        "model": {
            "name": spec.name,
            "version": version,
            "created_at": created_at,
            "run_id": run_id,
            "spec_source": spec.source,
            "horizon_days": spec.horizon_days,
            "outcome": {
                **spec.outcome.model_dump(include={"name", "noun", "plural", "happened", "rate"}),
                "definition": spec.outcome.definition,
            },
            "intended_use": spec.card.intended_use,
            "out_of_scope": spec.card.out_of_scope,
            "algorithm": f"LightGBM gradient-boosted trees ({model.best_iteration_} trees, "
            "binary log loss, early stopping on a held-back month)",
            "n_features": len(model.feature_names_),
            "features": list(model.feature_names_),
            "monotone_increasing": list(spec.monotone.increasing),
            "monotone_decreasing": list(spec.monotone.decreasing),
            "calibration_method": CALIBRATION_WORDS[spec.calibration.method],
            "seasonal_baseline": (
                season.as_dict()
                if (season := getattr(model, "seasonal_baseline_", None)) is not None
                else None
            ),
        },
        "data": {
            "extract_date": extract_date.isoformat(),
            "source": source or "not stated",
            "synthetic": report.oracle is not None
            or (source or "").startswith("riskstrat synthetic generator"),
            "train_months": [d.isoformat() for d in plan.train_months],
            "early_stopping_months": [d.isoformat() for d in plan.early_stopping_months],
            "early_stopping_people": (
                0.0 if plan.early_stopping_months else spec.training.early_stopping_people
            ),
            "calibration_months": [d.isoformat() for d in plan.calibration_months],
            "evaluation_months": [d.isoformat() for d in plan.evaluation_months],
            "primary_month": plan.validation_month.isoformat(),
            "train_rows": train_rows,
            "evaluation_rows": report.primary["rows"],
            "population": "everyone registered with a practice and alive on the index date "
            "(the first day of a month); people with a type 1 opt-out are never "
            "used to train or evaluate",
            "identifiers": "pseudonyms (the source's own person ids, not NHS numbers)"
            if identifier_kind == "pseudonym"
            else "NHS numbers",
            "codelists": codelist_summary(provenance or {}),
            "post_intervention": {
                "policy": spec.training.post_intervention,
                "interventions": list(spec.training.censor_interventions),
                "censored_rows": censored_rows,
            },
        },
        "evaluation": report.primary,
        "baselines": report.baselines,
        "oracle": report.oracle,
        "stability": report.stability,
        "fairness": report.fairness,
        "fairness_comparison": report.fairness_comparison,
        "gates": [g.as_dict() for g in report.gates],
        "gates_passed": report.gates_passed,
        "targets": [t.as_dict() for t in quality_targets(report, spec)],
        "champion_comparison": report.champion_comparison,
        "plots": {k: f"plots/{p.name}" for k, p in report.plots.items()},
    }


def log_card(
    registry: ModelRegistry,
    run_id: str | None,
    context: dict[str, Any],
    spec: ModelSpec,
    plots_dir: Path,
    out_dir: Path,
) -> None:
    """Write the card (Markdown, standalone HTML, plots, its context) into ``out_dir`` and log
    it as the run's ``card/`` folder: training, recalibration and a card refreshed with
    external validations all write it this one way."""
    from riskstrat.reports.card import write_card

    write_card(context, template=spec.card_template_path, out_dir=out_dir, plots_dir=plots_dir)
    (out_dir / "context.json").write_text(
        json.dumps(context, indent=2, default=str), encoding="utf-8"
    )
    if run_id:
        registry.log_run_folder(run_id, out_dir, "card")
