"""Model metrics on held-out rows (scikit-learn underneath)."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from sklearn.metrics import average_precision_score, brier_score_loss, roc_auc_score


def discrimination_metrics(
    y_true: npt.ArrayLike, risk: npt.ArrayLike, *, recall_target: float = 0.7
) -> dict[str, float]:
    """AUROC, AUPRC, Brier score, event rate, and the share flagged to catch ``recall_target``.

    ``share_flagged_for_70pct_recall`` answers "what share of the population must be listed,
    highest risk first, to include 70% of the people who were admitted?".
    """
    y = np.asarray(y_true, dtype=np.int8)
    p = np.asarray(risk, dtype=np.float64)
    if y.shape != p.shape or y.ndim != 1:
        raise ValueError("y_true and risk must be 1-D and the same length")
    if y.min(initial=0) == y.max(initial=0):
        raise ValueError("need both outcomes among the rows to measure discrimination")
    order = np.argsort(-p, kind="stable")
    caught = np.cumsum(y[order]) / y.sum()
    flagged = int(np.searchsorted(caught, recall_target) + 1)
    return {
        "auroc": float(roc_auc_score(y, p)),
        "auprc": float(average_precision_score(y, p)),
        "brier": float(brier_score_loss(y, p)),
        "event_rate": float(y.mean()),
        "mean_risk": float(p.mean()),
        "share_flagged_for_70pct_recall": flagged / len(y),
        "rows": float(len(y)),
    }


def oracle_comparison(
    y_true: npt.ArrayLike, risk: npt.ArrayLike, true_risk: npt.ArrayLike
) -> dict[str, float]:
    """The model beside the ceiling: the oracle's AUROC on the same rows and the ratio.

    ``true_risk`` is each person's true probability from the synthetic population's hidden
    state; no model can rank the realised outcomes better on average.
    """
    y = np.asarray(y_true, dtype=np.int8)
    model_auroc = float(roc_auc_score(y, np.asarray(risk, dtype=np.float64)))
    oracle_auroc = float(roc_auc_score(y, np.asarray(true_risk, dtype=np.float64)))
    return {
        "oracle_auroc": oracle_auroc,
        "auroc_ratio_to_oracle": model_auroc / oracle_auroc,
        "oracle_brier": float(brier_score_loss(y, np.asarray(true_risk, dtype=np.float64))),
        "oracle_rows": float(len(y)),
    }
