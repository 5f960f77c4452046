"""A complete, made-up but consistent model card context, its evaluation and fairness audit,
and tiny plot files: what card and plot tests render."""

from __future__ import annotations

import zlib
from pathlib import Path
from typing import Any

from riskstrat.reports.plots import PLOT_FILES


def ci(value: float, lo: float | None, hi: float | None) -> dict[str, Any]:
    """A CI dict as the evaluation and fairness code return it."""
    return {"value": value, "lo": lo, "hi": hi}


def example_evaluation(*, auroc: float = 0.812) -> dict[str, Any]:
    """An evaluation dict shaped like ``riskstrat.modelling.evaluation.evaluate_predictions``'s."""
    bins = []
    for i, risk in enumerate((0.002, 0.004, 0.007, 0.011, 0.016, 0.024, 0.036, 0.058, 0.10, 0.31)):
        observed = risk * (1.05 if i % 2 else 0.95)
        bins.append(
            {
                "bin": i + 1,
                "rows": 2000,
                "mean_risk": risk,
                "observed_rate": observed,
                "observed_lo": observed * 0.7,
                "observed_hi": observed * 1.35,
            }
        )
    thresholds = [round(0.01 * k, 2) for k in range(1, 31)]
    prevalence = 0.0567
    net_benefit = [
        {
            "threshold": t,
            "model": max(prevalence - t * 0.9, -0.002) * 0.9,
            "treat_all": prevalence - (1 - prevalence) * t / (1 - t),
            "treat_none": 0.0,
        }
        for t in thresholds
    ]
    return {
        "rows": 20000,
        "events": 1134,
        "event_rate": prevalence,
        "mean_risk": 0.0571,
        "auroc": ci(auroc, auroc - 0.011, auroc + 0.012),
        "auprc": ci(0.281, 0.262, 0.301),
        "brier": ci(0.0471, 0.0455, 0.0488),
        "calibration": {
            "oe": ci(0.99, 0.94, 1.05),
            "intercept": ci(-0.01, -0.07, 0.05),
            "slope": ci(0.97, 0.91, 1.03),
            "bins": bins,
        },
        "lists": [
            {
                "share": 0.01,
                "flagged": 200,
                "threshold": 0.412,
                "sensitivity": ci(0.089, 0.073, 0.106),
                "ppv": ci(0.505, 0.436, 0.574),
            },
            {
                "share": 0.05,
                "flagged": 1000,
                "threshold": 0.173,
                "sensitivity": ci(0.291, 0.265, 0.318),
                "ppv": ci(0.330, 0.301, 0.360),
            },
            {
                "share": 0.10,
                "flagged": 2000,
                "threshold": 0.102,
                "sensitivity": ci(0.452, 0.423, 0.481),
                "ppv": ci(0.256, 0.237, 0.276),
            },
        ],
        "recall_target": 0.7,
        "share_flagged_for_recall": ci(0.322, 0.305, 0.341),
        "net_benefit": net_benefit,
    }


def _audit_group(
    attribute: str, group: str, rows: int, events: int, *, auroc: float | None, oe: float
) -> dict[str, Any]:
    estimable = auroc is not None
    return {
        "attribute": attribute,
        "group": group,
        "rows": rows,
        "events": events,
        "estimable": estimable,
        "reason": "" if estimable else "fewer than 20 admissions",
        "auroc": ci(auroc, auroc - 0.03, auroc + 0.03) if auroc is not None else None,
        "oe": ci(oe, oe * 0.85, oe * 1.17) if estimable else ci(oe, 0.1, 2.9),
        "selection_rate": ci(0.05, 0.045, 0.056),
        "fpr": ci(0.036, 0.031, 0.041),
        "fnr": ci(0.70, 0.66, 0.74),
        "false_omission_rate": ci(0.042, 0.038, 0.047),
        "false_discovery_rate": ci(0.67, 0.63, 0.71),
        "mean_risk": 0.057,
        "event_rate": events / rows,
    }


def example_audit() -> dict[str, Any]:
    """A fairness audit shaped like ``riskstrat.fairness.subgroups.fairness_audit``'s, with one group
    too small to estimate (AUROC None)."""
    groups = [
        _audit_group("sex", "F", 10200, 601, auroc=0.805, oe=1.02),
        _audit_group("sex", "M", 9800, 533, auroc=0.819, oe=0.97),
        _audit_group("age_band", "18-44", 7000, 150, auroc=0.741, oe=1.08),
        _audit_group("age_band", "45-64", 6500, 280, auroc=0.752, oe=0.96),
        _audit_group("age_band", "65-79", 4500, 390, auroc=0.731, oe=0.99),
        _audit_group("age_band", "80+", 2000, 314, auroc=0.702, oe=1.01),
        _audit_group("imd_quintile", "1 (most deprived)", 4100, 290, auroc=0.806, oe=1.06),
        _audit_group("imd_quintile", "3", 4000, 220, auroc=0.812, oe=0.98),
        _audit_group("imd_quintile", "5 (least deprived)", 3900, 180, auroc=0.815, oe=0.93),
        _audit_group("ethnic_group", "White", 15500, 900, auroc=0.811, oe=1.0),
        _audit_group("ethnic_group", "Asian or Asian British", 2100, 110, auroc=0.798, oe=0.95),
        _audit_group("ethnic_group", "Mixed | multiple", 120, 4, auroc=None, oe=0.6),
        _audit_group("ethnic_group", "Not stated", 2280, 120, auroc=0.79, oe=1.12),
    ]
    return {
        "list_share": 0.05,
        "threshold": 0.173,
        "overall": {
            "rows": 20000,
            "events": 1134,
            "auroc": ci(0.812, 0.801, 0.824),
            "oe": ci(0.99, 0.94, 1.05),
            "selection_rate": ci(0.05, 0.047, 0.053),
            "fpr": ci(0.036, 0.033, 0.039),
            "fnr": ci(0.709, 0.682, 0.735),
            "false_omission_rate": ci(0.042, 0.039, 0.045),
            "false_discovery_rate": ci(0.67, 0.64, 0.70),
            "mean_risk": 0.0571,
            "event_rate": 0.0567,
        },
        "groups": groups,
    }


def example_context() -> dict[str, Any]:
    """A complete card context: every key of ``riskstrat.reports.card.CardContext`` and every plot."""
    evaluation = example_evaluation()
    months = [f"2024-{m:02d}" for m in range(1, 13)]
    return {
        "model": {
            "name": "riskstrat-emergency-admission-90d",
            "version": "7",
            "created_at": "2026-11-20T09:14:00Z",
            "run_id": "abcdef" * 5 + "ab",
            "spec_source": "models/emergency_admission_90d/spec.yaml",
            "horizon_days": 90,
            "algorithm": "LightGBM gradient-boosted trees (binary log-loss), 312 trees",
            "n_features": 6,
            "features": [
                "age_years",
                "sex_female",
                "imd_decile",
                "emergency_admissions_365d",
                "ltc_heart_failure",
                "efi",
            ],
            "monotone_increasing": ["emergency_admissions_365d", "ltc_heart_failure"],
            "monotone_decreasing": [],
            "calibration_method": "isotonic regression (scikit-learn)",
        },
        "data": {
            "extract_date": "2025-10-01",
            "source": "synthetic extract (riskstrat generate, 20,000 people, seed 1)",
            "train_months": months[:10],
            "early_stopping_months": months[10:11],
            "early_stopping_people": 0.0,
            "calibration_months": months[11:12],
            "evaluation_months": ["2025-01", "2025-02", "2025-03"],
            "primary_month": "2025-03",
            "train_rows": 198_432,
            "evaluation_rows": 20000,
            "population": "people registered with the PCN's practices and alive on the index "
            "date, aged 18 or over, without a type 1 opt-out",
            "identifiers": "NHS numbers",
            "codelists": "",
        },
        "evaluation": evaluation,
        "baselines": [
            {
                "name": "This model (LightGBM)",
                "auroc": evaluation["auroc"],
                "auprc": evaluation["auprc"],
                "brier": evaluation["brier"],
                "oe": evaluation["calibration"]["oe"],
                "auroc_difference": ci(0.0, 0.0, 0.0),  # as compare_predictions gives it
            },
            {
                "name": "Logistic regression, same features",
                "auroc": ci(0.781, 0.769, 0.793),
                "auprc": ci(0.231, 0.213, 0.249),
                "brier": ci(0.0489, 0.0472, 0.0506),
                "oe": ci(1.01, 0.95, 1.07),
                "auroc_difference": ci(0.031, 0.024, 0.038),
            },
            {
                "name": "Prior admissions + age score",
                "auroc": ci(0.731, 0.717, 0.745),
                "auprc": ci(0.182, 0.166, 0.199),
                "brier": ci(0.0512, 0.0494, 0.0530),
                "oe": ci(1.0, 0.94, 1.06),
                "auroc_difference": ci(0.081, 0.071, 0.091),
            },
            {
                "name": "Electronic frailty index",
                "auroc": ci(0.702, 0.688, 0.716),
                "auprc": ci(0.141, 0.128, 0.155),
                "brier": ci(0.0530, 0.0511, 0.0549),
                "oe": ci(0.98, 0.92, 1.04),
                "auroc_difference": ci(0.110, -0.002, 0.121),
            },
        ],
        "oracle": {
            "auroc": 0.846,
            "model_auroc": 0.812,
            "ratio": 0.960,
            "share_flagged_for_recall": 0.281,
        },
        "stability": [
            {
                "month": m,
                "rows": 19800 + 100 * i,
                "events": 1100 + 17 * i,
                "auroc": ci(0.808 + 0.002 * i, 0.796 + 0.002 * i, 0.820 + 0.002 * i),
                "oe": ci(1.02 - 0.015 * i, 0.96 - 0.015 * i, 1.08 - 0.015 * i),
                "brier": ci(0.0475, 0.0459, 0.0491),
            }
            for i, m in enumerate(["2025-01", "2025-02", "2025-03"])
        ],
        "fairness": example_audit(),
        "fairness_comparison": [
            {
                "attribute": "age_band",
                "group": "18-44",
                "auroc_new": 0.741,
                "auroc_old": 0.735,
                "auroc_change": 0.006,
                "oe_new": 1.08,
                "oe_old": 1.11,
                "oe_change": -0.03,
            },
            {
                "attribute": "age_band",
                "group": "80+",
                "auroc_new": 0.702,
                "auroc_old": None,
                "auroc_change": None,
                "oe_new": 1.01,
                "oe_old": 0.97,
                "oe_change": 0.04,
            },
        ],
        "gates": [
            {
                "name": "oe_within_band",
                "subject": "ethnic_group=Not stated",
                "passed": True,
                "detail": "O/E 1.12 within [0.8, 1.25]",
            },
            {
                "name": "auroc_gap",
                "subject": "sex=F",
                "passed": True,
                "detail": "AUROC 0.805 vs overall 0.812: gap 0.007 <= 0.05",
            },
            {
                "name": "calibration_slope",
                "subject": "overall",
                "passed": False,
                "detail": "slope 0.97 | target [0.9, 1.1]\nsecond line",
            },
        ],
        "gates_passed": False,
        "champion_comparison": {
            "champion_version": "6",
            "champion_auroc": ci(0.806, 0.794, 0.818),
            "challenger_auroc": ci(0.812, 0.801, 0.824),
            "difference": ci(0.006, -0.002, 0.014),
            "tolerance": 0.01,
        },
        "plots": {key: f"plots/{name}" for key, name in PLOT_FILES.items()},
    }


# Smallest valid PNG: 1x1 grey pixel.
def _tiny_png() -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return len(data).to_bytes(4, "big") + body + zlib.crc32(body).to_bytes(4, "big")

    header = (1).to_bytes(4, "big") * 2 + bytes([8, 0, 0, 0, 0])
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\x00\x80"))
        + chunk(b"IEND", b"")
    )


def write_example_plots(folder: Path) -> Path:
    """Write a tiny PNG for every plot in ``PLOT_FILES`` into ``folder``; return it."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in PLOT_FILES.values():
        (folder / name).write_bytes(_tiny_png())
    return folder
