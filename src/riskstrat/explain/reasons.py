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
import orjson
import pandas as pd
import pyarrow as pa

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
from riskstrat.modelling.model import Calibrator, raw_log_odds

__all__ = [
    "CFS_BANDS", "CONDITION_NAMES", "DRUG_NAMES", "PROBLEM_NAMES", "REASON_GROUPS",
    "REASON_LABELS", "STATE_NAMES", "ChosenReasons", "ExplainedJson", "GroupedContributions",
    "ReasonGroup", "Values", "cfs_band", "choose_reasons", "contributions_and_log_odds",
    "efi_band", "explain_as_json",
    "explain_rows", "explain_with_contributions", "group_contributions", "group_matrix",
    "shap_contributions",
]  # fmt: skip

_EXPLAINERS: weakref.WeakKeyDictionary[lgb.Booster, TreeShapExplainer] = weakref.WeakKeyDictionary()


def shap_contributions(
    booster: lgb.Booster, X: pd.DataFrame | npt.NDArray[np.float32], *, keep: bool = True
) -> npt.NDArray[np.float64]:
    """Exact TreeSHAP values in log-odds: one column per model feature plus the base value,
    for the rows of ``X`` (a frame, or ``riskstrat.modelling.model.model_matrix``'s array).

    Each row sums to the model's log-odds for that row. Equal to LightGBM's
    ``pred_contrib`` (tested to 1e-12 against it and against shap's TreeExplainer); the
    per-model tables are built once per booster and kept while the booster lives, unless
    ``keep`` is False: then tables built by this call are let go when it returns (a monthly
    run explains everyone once, and the shipped model's tables are about 270 MB).
    """
    return _explainer(booster, keep=keep).shap_values(X)


#: Rows of every ``contributions_and_log_odds`` call checked against LightGBM's prediction.
CHECKED_ROWS = 1024


def contributions_and_log_odds(
    booster: lgb.Booster, X: pd.DataFrame | npt.NDArray[np.float32], *, keep: bool = True
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """``shap_contributions``, and the model's log-odds for the same rows from the same pass
    over the trees: LightGBM's own ``booster.predict(X, raw_score=True)`` to the bit (the
    leaves the row reaches, summed in tree order), which a month's run would otherwise pay
    for again (about 2 s at a million people on two cores).

    Every call checks up to ``CHECKED_ROWS`` rows spread over ``X`` against LightGBM itself,
    so a LightGBM release that decided a split differently would stop the run, not publish
    other risks.

    Raises:
        RuntimeError: a checked row's log-odds differ from LightGBM's.
    """
    contributions, log_odds = _explainer(booster, keep=keep).shap_values_and_raw_scores(X)
    n = len(log_odds)
    rows = np.unique(np.linspace(0, n - 1, min(n, CHECKED_ROWS)).astype(np.intp))
    sample = X.iloc[rows] if isinstance(X, pd.DataFrame) else X[rows]
    if n and not np.array_equal(log_odds[rows], raw_log_odds(booster, sample)):
        raise RuntimeError(
            "the log-odds worked out with the explanation differ from LightGBM's prediction "
            f"(lightgbm {lgb.__version__}): the run stops rather than publish them"
        )
    return contributions, log_odds


def _explainer(booster: lgb.Booster, *, keep: bool) -> TreeShapExplainer:
    """The booster's explainer: the one kept for it, or a new one (kept if ``keep``)."""
    explainer = _EXPLAINERS.get(booster)
    if explainer is None:
        explainer = TreeShapExplainer(booster, num_iteration=booster.best_iteration or None)
        if keep:
            _EXPLAINERS[booster] = explainer
    return explainer


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


def top_groups(
    grouped: npt.NDArray[np.float64],
    pp: npt.NDArray[np.float64],
    top_raising: int,
    top_lowering: int,
    min_percentage_points: float,
) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.bool_]]:
    """Each row's reason slots: the ``top_raising`` groups of largest ``grouped`` then the
    ``top_lowering`` of smallest (ties in group order, as ``np.argsort(-grouped,
    kind="stable")`` orders them, and its reverse), and whether each slot is shown (its size
    ``pp`` at least ``min_percentage_points`` raising, at most minus that lowering). A slot
    count above the number of groups gives as many slots as groups. One pass per row in a
    compiled kernel: sorting every row took most of a second at a million people."""
    n, g = grouped.shape
    if g > 63:
        raise ValueError("at most 63 reason groups are supported")
    n_up, n_down = min(top_raising, g), min(top_lowering, g)
    chosen = np.empty((n, n_up + n_down), dtype=np.int64)
    shown = np.empty((n, n_up + n_down), dtype=np.bool_)
    if n and g:
        from riskstrat.explain._json_kernels import kernels

        kernels()["_top_groups"](
            np.ascontiguousarray(grouped, dtype=np.float64),
            np.ascontiguousarray(pp, dtype=np.float64),
            n_up,
            n_down,
            float(min_percentage_points),
            chosen,
            shown,
        )
    return chosen.astype(np.intp, copy=False), shown


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


@dataclass(frozen=True)
class ChosenReasons:
    """Each row's reasons before they are written out: which group fills each slot (up to
    ``top_raising`` raising then ``top_lowering`` lowering), whether the slot is shown, its
    words (a number into ``phrases``) and sizes; and every group's size in points."""

    keys: list[str]  # the reason groups' keys, in group order
    chosen: npt.NDArray[np.intp]  # (rows, slots): the group in each slot
    shown: npt.NDArray[np.bool_]  # (rows, slots)
    phrase: npt.NDArray[np.intp]  # (rows, slots): into ``phrases``; -1 where not shown
    phrases: list[str]  # every distinct phrase worded, once
    log_odds: npt.NDArray[np.float64]  # (rows, slots): the chosen groups' log-odds
    percentage_points: npt.NDArray[np.float64]  # (rows, slots)
    sizes: npt.NDArray[np.float64]  # (rows, groups): every group's size in points


def choose_reasons(
    booster: lgb.Booster,
    X: pd.DataFrame,
    *,
    top_raising: int = 3,
    top_lowering: int = 1,
    min_percentage_points: float = 0.001,
    contributions: npt.NDArray[np.float64] | None = None,
    calibrator: Calibrator | None = None,
) -> ChosenReasons:
    """Each row's top reasons (see ``explain_rows``) as arrays, every phrase worded once."""
    names = list(booster.feature_name())
    contrib = shap_contributions(booster, X) if contributions is None else contributions
    gc = group_contributions(booster, X, contributions=contrib, calibrator=calibrator)
    groups, grouped, pp = gc.groups, gc.log_odds, gc.percentage_points
    # Each group's phrase depends only on the row's values of that group's features (and,
    # for conditions, the order of their contributions), so it is worded once per distinct
    # combination among the rows that show that group: a million people share far fewer.
    n = len(X)
    index = {name: i for i, name in enumerate(names)}
    # The values the words read, a column at a time as they are needed (as float64, as
    # the extract holds them: the model's float32 copy would move band edges such as 0.12).
    columns: dict[str, npt.NDArray[np.float64]] = {}

    def column(name: str) -> npt.NDArray[np.float64]:
        if name not in columns:
            columns[name] = X[name].to_numpy(dtype=np.float64, na_value=np.nan)
        return columns[name]

    rows = np.arange(n)[:, None]
    chosen, shown = top_groups(grouped, pp, top_raising, top_lowering, min_percentage_points)
    phrase = np.full(chosen.shape, -1, dtype=np.intp)
    phrases: list[str] = []
    for j, group in enumerate(groups):
        hit = shown & (chosen == j)
        if not hit.any():
            continue
        r = np.flatnonzero(hit.any(axis=1))
        raises = pp[r, j] > 0
        # The words depend on the values they read, on which way the reason pushes and, for
        # some groups, on their features' contributions (through the group's words key).
        present = [f for f in group.words_from if f in index]
        read = (
            np.column_stack([column(f)[r] for f in present]) if present else np.empty((len(r), 0))
        )
        every = [f for f in group.features if f in index]
        every_cols = np.array([index[f] for f in every], dtype=np.intp)
        if group.words_key is not None:
            block = np.full((len(r), len(group.features)), np.nan)
            block_contrib = np.zeros((len(r), len(group.features)))
            for k, name in enumerate(group.features):
                if name in index:
                    block[:, k] = column(name)[r]
                    block_contrib[:, k] = contrib[r, index[name]]
            key = np.concatenate(
                [group.words_key(block, block_contrib, raises), raises[:, None]], axis=1
            )
        else:
            # Missing values as one bit pattern, so equal rows compare equal.
            keyed = np.where(np.isnan(read), np.inf, read)
            key = np.concatenate([keyed, raises[:, None]], axis=1)
        first, inverse = _distinct_rows(key)
        offset = len(phrases)
        for at, i in zip(first.tolist(), r[first].tolist(), strict=True):
            v = dict(zip(present, read[at].tolist(), strict=True))
            v = {f: (None if x != x else x) for f, x in v.items()}  # NaN as missing
            fc = dict(zip(every, contrib[i, every_cols].tolist(), strict=True))
            told = fc if group.uses_contributions else {}
            phrases.append(group.phrase(v, told, bool(raises[at])))
        slot = np.argmax(hit[r], axis=1)
        phrase[r, slot] = offset + inverse
    return ChosenReasons(
        keys=[g.key for g in groups],
        chosen=chosen,
        shown=shown,
        phrase=phrase,
        phrases=phrases,
        log_odds=grouped[rows, chosen],
        percentage_points=pp[rows, chosen],
        sizes=pp,
    )


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
    (groups under 0.001 points left out), which is what "what changed" compares.

    As Python objects, for the few rows a caller handles one by one (a ranked list's
    people); a month's scores are written by ``explain_as_json`` instead, which gives the
    same values as JSON text without a Python object per person."""
    c = choose_reasons(
        booster,
        X,
        top_raising=top_raising,
        top_lowering=top_lowering,
        min_percentage_points=min_percentage_points,
        contributions=contributions,
        calibrator=calibrator,
    )
    n = len(c.chosen)
    key_list = np.asarray(c.keys, dtype=object)[c.chosen].tolist()
    words = np.asarray([*c.phrases, None], dtype=object)[c.phrase]  # -1: the None at the end
    shown_list, text_list = c.shown.tolist(), words.tolist()
    # The direction is the sign of the size shown beside it (the same as the log-odds' sign
    # for any calibrator that keeps the order of risks).
    raises_list = (c.percentage_points > 0).tolist()
    lo_list = np.round(c.log_odds, 4).tolist()
    pp_list = np.round(c.percentage_points, 3).tolist()
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
    pp_rounded = np.round(c.sizes, 3)
    size_mask, sizes_list = (np.abs(pp_rounded) >= 0.001).tolist(), pp_rounded.tolist()
    sizes = [
        {k: v for k, v, keep in zip(c.keys, sizes_list[i], size_mask[i], strict=True) if keep}
        for i in range(n)
    ]
    return out, sizes


@dataclass(frozen=True)
class ExplainedJson:
    """Each row's reasons and group sizes as JSON text (Arrow strings, no Python object per
    row): exactly the text the store's ``json_text`` (orjson) writes for the objects of
    ``explain_with_contributions``."""

    reasons: pa.LargeStringArray
    contributions: pa.LargeStringArray


def explain_as_json(
    booster: lgb.Booster,
    X: pd.DataFrame,
    *,
    top_raising: int = 3,
    top_lowering: int = 1,
    min_percentage_points: float = 0.001,
    contributions: npt.NDArray[np.float64] | None = None,
    calibrator: Calibrator | None = None,
    order: npt.NDArray[np.intp] | None = None,
) -> ExplainedJson:
    """``explain_with_contributions``, written straight to JSON text by array operations:
    the same reasons and sizes, byte for byte the text the store would write for them, at a
    cost that does not grow with Python objects per person (a million people's reasons as
    dicts took most of a monthly run's scoring time and gigabytes of memory).

    With ``order`` (a permutation of the rows), the texts are written in that order: text
    ``i`` is row ``order[i]``'s, so a caller that sorts its rows never copies the texts."""
    c = choose_reasons(
        booster,
        X,
        top_raising=top_raising,
        top_lowering=top_lowering,
        min_percentage_points=min_percentage_points,
        contributions=contributions,
        calibrator=calibrator,
    )
    del contributions  # the caller's, if it kept none: let go before the texts are written
    n = len(c.chosen)
    if order is None:
        order = np.arange(n)
    elif order.shape != (n,) or not np.array_equal(
        np.bincount(order, minlength=n), np.ones(n, dtype=np.intp)
    ):
        raise ValueError("order must be a permutation of the rows")
    # The kernels read row order[i] for text i: the rows are never copied into that order.
    rows = np.ascontiguousarray(order, dtype=np.int64)
    from riskstrat.explain._json_kernels import CONSTANTS, kernels

    run = kernels()
    # Each group's key and each phrase written as JSON once; the kernels copy their bytes.
    prefixes = _pieces([f'{{"group":{_json_string(k)},"text":' for k in c.keys])
    phrases = _pieces([_json_string(p) for p in c.phrases])
    consts = _pieces(list(CONSTANTS))
    lo_k, lo_neg = _scaled(c.log_odds, 4)
    pp_k, pp_neg = _scaled(c.percentage_points, 3)
    slots = (
        np.ascontiguousarray(c.shown),
        np.ascontiguousarray(c.chosen, dtype=np.int64),
        np.ascontiguousarray(c.phrase, dtype=np.int64),
        np.ascontiguousarray(c.percentage_points > 0),
        lo_k, lo_neg, pp_k, pp_neg,
    )  # fmt: skip
    lengths = np.empty(n, dtype=np.int64)
    run["_reason_lengths"](rows, *slots, prefixes[1], phrases[1], consts[1], lengths)
    starts, out = _text_buffer(lengths)
    run["_write_reasons"](rows, *slots, *prefixes, *phrases, *consts, starts, out)
    reasons = _string_array(starts, out)
    size_k, size_neg = _scaled(c.sizes, 3)
    keep = np.ascontiguousarray(np.abs(np.round(c.sizes, 3)) >= 0.001)
    keys = _pieces([f"{_json_string(k)}:" for k in c.keys])
    run["_size_lengths"](rows, keep, size_k, size_neg, keys[1], consts[1], lengths)
    starts, out = _text_buffer(lengths)
    run["_write_sizes"](rows, keep, size_k, size_neg, *keys, *consts, starts, out)
    return ExplainedJson(reasons=reasons, contributions=_string_array(starts, out))


def _pieces(texts: Sequence[str]) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.int64]]:
    """``texts`` as one UTF-8 byte buffer and the offsets of each (``len(texts) + 1``)."""
    encoded = [t.encode() for t in texts]
    offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
    offsets[1:] = np.cumsum([len(b) for b in encoded])
    data = np.frombuffer(b"".join(encoded), dtype=np.uint8).copy()
    return (data if len(data) else np.zeros(1, dtype=np.uint8)), offsets


def _scaled(
    values: npt.NDArray[np.float64], places: int
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.bool_]]:
    """``np.round(values, places)`` as whole numbers of 10**-places (``np.round`` is
    ``rint(v * 10**places) / 10**places``) and their signs (-0.0 too, as orjson writes it)."""
    scaled = np.rint(np.ascontiguousarray(values) * 10**places)
    if not np.isfinite(scaled).all() or np.abs(scaled).max(initial=0) >= 2**53:
        raise ValueError("reasons are sized by finite numbers under 2**53 / 10**places")
    return np.abs(scaled).astype(np.int64), np.signbit(scaled)


def _text_buffer(
    lengths: npt.NDArray[np.int64],
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.uint8]]:
    starts = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=starts[1:])
    return starts, np.empty(int(starts[-1]), dtype=np.uint8)


def _string_array(starts: npt.NDArray[np.int64], out: npt.NDArray[np.uint8]) -> pa.LargeStringArray:
    return pa.LargeStringArray.from_buffers(
        len(starts) - 1, pa.py_buffer(starts), pa.py_buffer(out)
    )


def _json_string(text: str) -> str:
    return orjson.dumps(text).decode()
