"""SHAP contributions turned into reasons a clinician can read.

Contributions are exact TreeSHAP values in log-odds: the same numbers as LightGBM's own
``pred_contrib`` (to rounding, about 1e-14), computed by ``riskstrat.explain.treeshap`` at tens of
times its speed.
Related features are summed into one reason (all emergency-admission counts and recency
make "recent emergency admissions"), so a reason's size is the whole group's share of the
prediction. Each reason is phrased from the patient's own values (``riskstrat.explain.wording``)
and sized in percentage points: how much lower the risk would be without that group's
contribution. Its ``direction`` ("raises" or "lowers") is the sign of that size, and the phrase
is told it too.
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import lightgbm as lgb
import numpy as np
import numpy.typing as npt
import pandas as pd

from riskstrat.explain.treeshap import TreeShapExplainer
from riskstrat.explain.wording import (
    CFS_BANDS,
    CONDITION_NAMES,
    DRUG_NAMES,
    PROBLEM_NAMES,
    REASON_GROUPS,
    REASON_LABELS,
    STATE_NAMES,
    ReasonGroup,
    Values,
    cfs_band,
    efi_band,
)
from riskstrat.modelling.model import Calibrator

__all__ = [
    "CFS_BANDS", "CONDITION_NAMES", "DRUG_NAMES", "PROBLEM_NAMES", "REASON_GROUPS",
    "REASON_LABELS", "STATE_NAMES", "GroupedContributions", "ReasonGroup", "Values",
    "cfs_band", "efi_band", "explain_rows", "explain_with_contributions", "group_contributions",
    "group_matrix", "shap_contributions",
]  # fmt: skip

_EXPLAINERS: weakref.WeakKeyDictionary[lgb.Booster, TreeShapExplainer] = weakref.WeakKeyDictionary()


def shap_contributions(booster: lgb.Booster, X: pd.DataFrame) -> npt.NDArray[np.float64]:
    """Exact TreeSHAP values in log-odds: one column per model feature plus the base value.

    Each row sums to the model's log-odds for that row. Equal to LightGBM's
    ``pred_contrib`` (tested to 1e-12 against it and against shap's TreeExplainer); the
    per-model tables are built once per booster and kept while the booster lives.
    """
    explainer = _EXPLAINERS.get(booster)
    if explainer is None:
        explainer = TreeShapExplainer(booster, num_iteration=booster.best_iteration or None)
        _EXPLAINERS[booster] = explainer
    return explainer.shap_values(X)


def group_matrix(feature_names: Sequence[str]) -> tuple[list[ReasonGroup], npt.NDArray[np.float64]]:
    """The reason groups that cover ``feature_names`` and a 0/1 feature-by-group matrix."""
    groups = [g for g in REASON_GROUPS if set(g.features) & set(feature_names)]
    index = {name: i for i, name in enumerate(feature_names)}
    matrix = np.zeros((len(feature_names), len(groups)))
    for j, g in enumerate(groups):
        for f in g.features:
            if f in index:
                matrix[index[f], j] = 1.0
    unassigned = [f for f, i in index.items() if matrix[i].sum() == 0]
    if unassigned:
        raise ValueError(f"features without a reason group: {', '.join(unassigned)}")
    return groups, matrix


def explain_rows(
    booster: lgb.Booster,
    X: pd.DataFrame,
    *,
    top_raising: int = 3,
    top_lowering: int = 1,
    min_percentage_points: float = 0.001,
    contributions: npt.NDArray[np.float64] | None = None,
    calibrator: Calibrator | None = None,
) -> list[list[dict[str, Any]]]:
    """The top reasons for each row of ``X``.

    Returns, per row, up to ``top_raising`` reasons that raise the risk (largest first) then
    up to ``top_lowering`` that lower it; contributions under ``min_percentage_points`` are
    too small to be a reason. Each reason is a dict with ``group``, ``text``,
    ``direction`` ("raises" or "lowers"), ``log_odds`` and ``percentage_points``. With a
    calibrator, risks and sizes are the calibrated model's.
    """
    reasons, _ = explain_with_contributions(
        booster,
        X,
        top_raising=top_raising,
        top_lowering=top_lowering,
        min_percentage_points=min_percentage_points,
        contributions=contributions,
        calibrator=calibrator,
    )
    return reasons


@dataclass(frozen=True)
class GroupedContributions:
    """SHAP contributions summed into reason groups, for a batch of rows."""

    groups: list[ReasonGroup]
    log_odds: npt.NDArray[np.float64]  # (rows, groups), the calibrated model's log-odds
    percentage_points: npt.NDArray[np.float64]  # (rows, groups)
    base_log_odds: npt.NDArray[np.float64]  # (rows,), the calibrated base value
    risk: npt.NDArray[np.float64]  # (rows,)


def group_contributions(
    booster: lgb.Booster,
    X: pd.DataFrame,
    *,
    contributions: npt.NDArray[np.float64] | None = None,
    calibrator: Calibrator | None = None,
) -> GroupedContributions:
    """Exact TreeSHAP summed into reason groups.

    With Platt calibration (or none), ``base_log_odds + log_odds.sum(axis=1)`` is exactly the
    calibrated model's log-odds for each row. A group's size in percentage points is how much
    lower the calibrated risk would be without that group's contribution.
    """
    names = list(booster.feature_name())
    contrib = shap_contributions(booster, X) if contributions is None else contributions
    calibrator = calibrator or Calibrator()
    groups, matrix = group_matrix(names)
    raw_grouped = contrib[:, :-1] @ matrix  # (rows, groups) in the trees' log-odds
    logit = contrib.sum(axis=1)
    risk = calibrator.transform(logit)
    pp = 100.0 * (risk[:, None] - calibrator.transform(logit[:, None] - raw_grouped))
    # Platt calibration is linear in log-odds, so contributions scale exactly to the
    # calibrated model's log-odds; other calibrators report the trees' own log-odds.
    if calibrator.method == "platt":
        grouped = raw_grouped * calibrator.a
        base = contrib[:, -1] * calibrator.a + calibrator.b
    else:
        grouped, base = raw_grouped, contrib[:, -1]
    return GroupedContributions(groups, grouped, pp, base, risk)


def _distinct_rows(
    key: npt.NDArray[np.float64],
) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.intp]]:
    """The first row of each distinct row of ``key`` (no NaNs), in order of first
    appearance, and each row's distinct-row number: ``np.unique(axis=0)`` by hashing
    instead of sorting (which took seconds for a million rows)."""
    codes = (
        pd.DataFrame(key).groupby(list(range(key.shape[1])), sort=False).ngroup().to_numpy()
    ).astype(np.intp)
    # Numbered by first appearance, so a row opens a new group when its number is new.
    seen = np.maximum.accumulate(codes)
    first = np.flatnonzero(np.concatenate([[True], codes[1:] > seen[:-1]]))
    return first, codes


def explain_with_contributions(
    booster: lgb.Booster,
    X: pd.DataFrame,
    *,
    top_raising: int = 3,
    top_lowering: int = 1,
    min_percentage_points: float = 0.001,
    contributions: npt.NDArray[np.float64] | None = None,
    calibrator: Calibrator | None = None,
) -> tuple[list[list[dict[str, Any]]], list[dict[str, float]]]:
    """``explain_rows``'s reasons, and every group's size in percentage points per row
    (groups under 0.001 points left out), which is what "what changed" compares."""
    names = list(booster.feature_name())
    contrib = shap_contributions(booster, X) if contributions is None else contributions
    gc = group_contributions(booster, X, contributions=contrib, calibrator=calibrator)
    groups, grouped, pp = gc.groups, gc.log_odds, gc.percentage_points
    keys = [g.key for g in groups]
    # Each group's phrase depends only on the row's values of that group's features (and,
    # for conditions, the order of their contributions), so it is worded once per distinct
    # combination among the rows that show that group: a million people share far fewer.
    n = len(X)
    index = {name: i for i, name in enumerate(names)}
    values = X[names].to_numpy(dtype=np.float64, na_value=np.nan)
    # Missing values as one bit pattern, so equal rows compare equal.
    keyed = np.where(np.isnan(values), np.inf, values)
    order = np.argsort(-grouped, axis=1, kind="stable")
    rows = np.arange(n)[:, None]
    up = order[:, :top_raising]
    down = order[:, ::-1][:, :top_lowering]
    chosen = np.concatenate([up, down], axis=1)
    shown = np.concatenate(
        [pp[rows, up] >= min_percentage_points, pp[rows, down] <= -min_percentage_points], axis=1
    )
    texts = np.empty(chosen.shape, dtype=object)
    for j, group in enumerate(groups):
        hit = shown & (chosen == j)
        if not hit.any():
            continue
        r = np.flatnonzero(hit.any(axis=1))
        cols = np.array([index[f] for f in group.features if f in index], dtype=np.intp)
        present = [f for f in group.features if f in index]
        # The words depend on the values, on which way the reason pushes and, for some
        # groups, on the order and signs of their features' contributions.
        raises = pp[r, j] > 0
        key = np.concatenate([keyed[np.ix_(r, cols)], raises[:, None].astype(np.float64)], axis=1)
        if group.uses_contributions:
            part = contrib[np.ix_(r, cols)]
            ranks = np.argsort(np.argsort(-part, axis=1, kind="stable"), axis=1, kind="stable")
            key = np.concatenate([key, ranks.astype(np.float64), np.sign(part)], axis=1)
        first, inverse = _distinct_rows(key)
        worded = []
        for at, i in zip(first.tolist(), r[first].tolist(), strict=True):
            v = dict(zip(present, values[i, cols].tolist(), strict=True))
            v = {f: (None if x != x else x) for f, x in v.items()}  # NaN as missing
            fc = dict(zip(present, contrib[i, cols].tolist(), strict=True))
            worded.append(group.phrase(v, fc if group.uses_contributions else {}, bool(raises[at])))
        per_row = np.asarray(worded, dtype=object)[inverse]
        slot = np.argmax(hit[r], axis=1)
        texts[r, slot] = per_row

    # Only the chosen groups' sizes become Python objects, rounded as arrays (as the sizes
    # below are): a million rows of every group's sizes as lists took seconds.
    chosen_lo, chosen_pp = grouped[rows, chosen], pp[rows, chosen]
    key_list = np.asarray(keys, dtype=object)[chosen].tolist()
    shown_list, text_list = shown.tolist(), texts.tolist()
    # The direction is the sign of the size shown beside it (the same as the log-odds' sign
    # for any calibrator that keeps the order of risks).
    raises_list = (chosen_pp > 0).tolist()
    lo_list, pp_list = np.round(chosen_lo, 4).tolist(), np.round(chosen_pp, 3).tolist()
    out: list[list[dict[str, Any]]] = [
        [
            {
                "group": g,
                "text": t,
                "direction": "raises" if positive else "lowers",
                "log_odds": lo,
                "percentage_points": p,
            }
            for g, ok, t, positive, lo, p in zip(
                key_list[i],
                shown_list[i],
                text_list[i],
                raises_list[i],
                lo_list[i],
                pp_list[i],
                strict=True,
            )
            if ok
        ]
        for i in range(n)
    ]
    pp_rounded = np.round(pp, 3)
    size_mask, sizes_list = (np.abs(pp_rounded) >= 0.001).tolist(), pp_rounded.tolist()
    sizes = [
        {k: v for k, v, keep in zip(keys, sizes_list[i], size_mask[i], strict=True) if keep}
        for i in range(n)
    ]
    return out, sizes
