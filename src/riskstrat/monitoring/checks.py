"""The monitoring checks as pure functions of frames: performance on matured outcomes
(overall, per PCN, per fairness group, actioned and not), input drift (PSI) and data-quality
drift (missingness, reject rates). Every result is plain JSON-serialisable data with no
identifiers; the statuses come from :mod:`riskstrat.monitoring.status`.

The statistics reuse the evaluation and fairness code the gates use
(:func:`riskstrat.modelling.evaluation.evaluate_predictions`, scikit-learn underneath;
:func:`riskstrat.fairness.subgroups.fairness_audit`, fairlearn underneath).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from riskstrat.fairness.subgroups import FairnessPlan, fairness_audit
from riskstrat.modelling.evaluation import EvaluationPlan, evaluate_predictions
from riskstrat.modelling.spec import MonitoringConfig
from riskstrat.monitoring.psi import psi_against
from riskstrat.monitoring.status import (
    Status,
    performance_status,
    threshold_status,
    worst,
)

#: Fewer rows or events than this in a group: reported with its counts, not estimated.
MIN_ROWS = 100
MIN_EVENTS = 20

#: What the split by marks means for the figures (said wherever it is shown).
CONFOUNDING_NOTE = (
    "People on the lists who were reviewed or contacted may have been admitted less because "
    "of that care: observed/expected among the actioned is biased downward when reviews "
    "work, and so are the overall O/E and the PPV of the top of the list; the not-actioned "
    "figures are the fairer measure of the model's calibration."
)


def performance(
    y: Sequence[int] | pd.Series,
    risk: Sequence[float] | pd.Series,
    config: MonitoringConfig,
    *,
    seed: int = 0,
) -> dict[str, Any]:
    """AUROC, O/E, calibration slope (with bootstrap CIs) and the PPV of the top
    ``config.list_share`` list (Wilson CI), for one set of matured rows."""
    y_s, r_s = pd.Series(y).astype(int), pd.Series(risk).astype(float)
    rows, events = len(y_s), int(y_s.sum())
    base: dict[str, Any] = {"rows": rows, "events": events}
    if rows < MIN_ROWS or events < MIN_EVENTS or rows - events < MIN_EVENTS:
        return base | {
            "estimable": False,
            "reason": f"too small to estimate: {rows} rows, {events} events "
            f"(needs {MIN_ROWS} rows and {MIN_EVENTS} of each outcome)",
        }
    plan = EvaluationPlan(
        bootstrap_samples=config.bootstrap_samples,
        list_shares=(config.list_share,),
        net_benefit_thresholds=(),
        seed=seed,
    )
    result = evaluate_predictions(y_s.to_numpy(), r_s.to_numpy(), plan=plan)
    return base | {
        "estimable": True,
        "event_rate": result["event_rate"],
        "mean_risk": result["mean_risk"],
        "auroc": result["auroc"],
        "oe": result["calibration"]["oe"],
        "slope": result["calibration"]["slope"],
        "ppv_top": result["lists"][0]["ppv"],
        "list_share": config.list_share,
    }


def performance_checks(
    frame: pd.DataFrame,
    config: MonitoringConfig,
    *,
    reference_auroc: float | None,
    fairness_attributes: Sequence[str] = (),
    seed: int = 0,
) -> dict[str, Any]:
    """Performance overall, per PCN, per fairness group, and for people actioned (marked
    reviewed or contacted) and not actioned.

    ``frame``: one row per matured person with ``label``, ``risk``, ``pcn_code``, ``actioned``
    (bool) and the fairness attribute columns.
    """
    overall = performance(frame["label"], frame["risk"], config, seed=seed)
    overall["status"] = performance_status(overall, config, reference_auroc=reference_auroc)
    by_pcn = []
    for pcn, part in frame.groupby("pcn_code", sort=True):
        block = performance(part["label"], part["risk"], config, seed=seed)
        block["status"] = performance_status(block, config, reference_auroc=reference_auroc)
        by_pcn.append({"pcn_code": str(pcn), **block})
    actioned = []
    for flag, label in ((True, "actioned"), (False, "not_actioned")):
        part = frame[frame["actioned"] == flag]
        block = performance(part["label"], part["risk"], config, seed=seed)
        actioned.append({"group": label, **block})
    groups: list[dict[str, Any]] = []
    attributes = [a for a in fairness_attributes if a in frame.columns]
    if attributes and overall.get("estimable"):
        audit = fairness_audit(
            frame,
            plan=FairnessPlan(
                attributes=tuple(attributes),
                list_share=config.list_share,
                min_group_rows=MIN_ROWS,
                min_group_events=MIN_EVENTS,
                bootstrap_samples=config.bootstrap_samples,
                seed=seed,
            ),
        )
        for g in audit["groups"]:
            status: dict[str, Status] = {"oe": "unknown", "auroc": "unknown"}
            if g["estimable"]:
                status = performance_status(
                    {"auroc": g["auroc"], "oe": g["oe"]}, config, reference_auroc=reference_auroc
                )
                status.pop("slope", None)
            groups.append(
                {
                    k: g[k]
                    for k in (
                        "attribute",
                        "group",
                        "rows",
                        "events",
                        "estimable",
                        "reason",
                        "auroc",
                        "oe",
                        "selection_rate",
                    )
                }
                | {"status": status}
            )
    return {
        "overall": overall,
        "by_pcn": by_pcn,
        "by_group": groups,
        "actioned": actioned,
        "confounding_note": CONFOUNDING_NOTE,
    }


def drift_checks(
    reference: Mapping[str, Any],
    frame: pd.DataFrame,
    features: Sequence[str],
    config: MonitoringConfig,
    *,
    score: pd.Series | None = None,
) -> list[dict[str, Any]]:
    """PSI and missingness of each feature (and the score) in ``frame`` against the training
    window's reference; each row carries its PSI and missingness statuses."""
    rows: list[dict[str, Any]] = []
    refs: dict[str, Any] = dict(reference.get("features", {}))
    items: list[tuple[str, str, Any]] = [
        (name, "feature", frame[name])
        for name in features
        if name in refs and name in frame and name not in config.drift_exclude
    ]
    if score is not None and "score" in reference:
        refs["(score)"] = reference["score"]
        items.append(("(score)", "score", score))
    for name, kind, values in items:
        found = psi_against(refs[name], values.to_numpy())
        increase = found["missing_share"] - found["reference_missing_share"]
        psi_s = threshold_status(found["psi"], config.psi_amber, config.psi_red)
        miss_s = threshold_status(
            increase, config.missing_increase_amber, config.missing_increase_red
        )
        rows.append(
            {
                "name": name,
                "kind": kind,
                **found,
                "missing_increase": increase,
                "status": {"psi": psi_s, "missingness": miss_s},
            }
        )
    return rows


def reject_shares(validation: Mapping[str, Any]) -> dict[str, float]:
    """Share of rows rejected per table, from an extract's validation summary."""
    read: Mapping[str, int] = validation.get("rows_read", {})
    rejected: Mapping[str, int] = validation.get("rows_rejected", {})
    return {t: (rejected.get(t, 0) / n if n else 0.0) for t, n in read.items()}


def reject_checks(
    reference: Mapping[str, Any] | None, latest: Mapping[str, Any], config: MonitoringConfig
) -> list[dict[str, Any]]:
    """Reject share per table in the latest extract against the training extract's."""
    now = reject_shares(latest)
    before = reject_shares(reference or {})
    rows = []
    for table, share in sorted(now.items()):
        base = before.get(table)
        increase = share - base if base is not None else None
        rows.append(
            {
                "table": table,
                "reject_share": share,
                "reference_reject_share": base,
                "increase": increase,
                "status": threshold_status(
                    increase, config.reject_share_increase_amber, config.reject_share_increase_red
                ),
            }
        )
    return rows


def summarise(
    months: Sequence[Mapping[str, Any]],
    drift: Sequence[Mapping[str, Any]],
    rejects: Sequence[Mapping[str, Any]],
    coverage: Mapping[str, Any] | None = None,
) -> dict[str, Status]:
    """One status per check (the worst over months, features and tables) and overall.

    ``coverage`` (:func:`riskstrat.monitoring.coverage.coverage_checks`) adds a
    ``mapping_coverage`` check for an extract imported from OMOP; for any other extract the
    check does not apply and is left out."""
    latest = months[-1] if months else None
    perf = latest["performance"]["overall"]["status"] if latest else {}
    out: dict[str, Status] = {
        "auroc": perf.get("auroc", "unknown"),
        "oe": perf.get("oe", "unknown"),
        "slope": perf.get("slope", "unknown"),
        "subgroup_oe": worst(
            [g["status"]["oe"] for g in (latest["performance"]["by_group"] if latest else [])]
            + [p["status"]["oe"] for p in (latest["performance"]["by_pcn"] if latest else [])]
        ),
        "feature_psi": worst(d["status"]["psi"] for d in drift if d["kind"] == "feature"),
        "score_psi": worst(d["status"]["psi"] for d in drift if d["kind"] == "score"),
        "missingness": worst(d["status"]["missingness"] for d in drift),
        "rejects": worst(r["status"] for r in rejects),
    }
    if coverage is not None and coverage.get("applies"):
        out["mapping_coverage"] = coverage["status"]
    out["overall"] = worst(out.values())
    return out
