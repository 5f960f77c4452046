"""The training frame: features and labels of every planned index month, built in few
passes over the extract (pieces of a few months, the held-out months an NHS-number range at
a time), made compact, and split into the plan's parts without concatenating it whole.

``riskstrat.pipelines.train`` runs these steps and re-exports the public ones, which the
benchmark times one by one and tests call directly.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import ExitStack
from datetime import date
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from riskstrat.errors import DataError
from riskstrat.features.build import (
    CHUNK_PEOPLE,
    GROUP_COLUMNS,
    KEY_COLUMNS,
    build_features,
    feature_columns,
    iter_feature_ranges,
    people_sample,
)
from riskstrat.features.labels import build_labels
from riskstrat.modelling.model import IndexPlan, hold_out_people
from riskstrat.modelling.spec import ModelSpec

__all__ = [
    "DEVELOPMENT_MONTHS_PER_QUERY",
    "build_training_frame",
    "iter_development_parts",
    "iter_evaluation_parts",
    "iter_training_parts",
    "split_by_plan",
    "split_parts",
    "training_columns",
    "training_parts",
]


def build_training_frame(
    con: Any,
    spec: ModelSpec,
    plan: IndexPlan,
    *,
    people: Sequence[str] | None = None,
    chunk_people: int = CHUNK_PEOPLE,
) -> pd.DataFrame:
    """Features and labels for every planned index month, type 1 opt-outs removed. With
    ``people``, the months the model is fitted on (trees, early stopping, calibration) hold
    only that sample; the held-out evaluation months always hold everyone."""
    pieces = training_parts(con, spec, plan, people=people, chunk_people=chunk_people)
    return pd.concat(pieces, ignore_index=True)


def training_parts(
    con: Any,
    spec: ModelSpec,
    plan: IndexPlan,
    *,
    people: Sequence[str] | None = None,
    censored: dict[date, int] | None = None,
    columns: Sequence[str] | None = None,
    chunk_people: int = CHUNK_PEOPLE,
) -> list[pd.DataFrame]:
    """``build_training_frame`` in pieces, a few months each, to concatenate (or to split with
    ``split_parts``) once DuckDB has been closed: at a million people, DuckDB's tables and
    the whole frame side by side were the peak of training's memory. With ``columns``, the
    pieces hold only those of the frame's columns (in the frame's order)."""
    return list(
        iter_training_parts(
            con,
            spec,
            plan,
            people=people,
            censored=censored,
            columns=columns,
            chunk_people=chunk_people,
        )
    )


#: Development months per features query. A query's cost grows with its rows, but less than
#: in proportion: on 2 cores (a shared machine, 2026-12-07, 12 sampled months of a
#: 300,000-person extract, CPU seconds) one month per query took 31-36 s, three 23-26 s,
#: six 20-21 s and all twelve 23 s. Six months of a sample (about 83,000 people) are about
#: 500,000 rows, which DuckDB's result and its pandas copy hold in a few hundred MB.
DEVELOPMENT_MONTHS_PER_QUERY = 6


def iter_training_parts(
    con: Any,
    spec: ModelSpec,
    plan: IndexPlan,
    *,
    people: Sequence[str] | None = None,
    censored: dict[date, int] | None = None,
    columns: Sequence[str] | None = None,
    chunk_people: int = CHUNK_PEOPLE,
) -> Iterator[pd.DataFrame]:
    """``training_parts`` one piece at a time, for a caller that keeps less of each: the
    development months' pieces (``iter_development_parts``), then the held-out months'
    (``iter_evaluation_parts``). ``chunk_people`` is ``build_features``' (the frame is the
    same whatever it is)."""
    yield from iter_development_parts(
        con, spec, plan, people=people, censored=censored, columns=columns,
        chunk_people=chunk_people,
    )  # fmt: skip
    yield from iter_evaluation_parts(
        con, spec, plan, censored=censored, columns=columns, chunk_people=chunk_people
    )


def iter_development_parts(
    con: Any,
    spec: ModelSpec,
    plan: IndexPlan,
    *,
    people: Sequence[str] | None = None,
    censored: dict[date, int] | None = None,
    columns: Sequence[str] | None = None,
    chunk_people: int = CHUNK_PEOPLE,
) -> Iterator[pd.DataFrame]:
    """The development months' pieces of the training frame (trees, early stopping,
    calibration): of ``people`` only, if given, several months per features query
    (``DEVELOPMENT_MONTHS_PER_QUERY``), with one labels query for them all."""
    development = list(plan.development_months)
    if not development:
        return
    codes = _censor_codes(spec)
    with ExitStack() as stack:
        # The sampled months read the sample's own copies of the event tables, made once.
        sample = stack.enter_context(people_sample(con, people)) if people is not None else None
        labels = _labels(con, spec, development, people=sample, censor_codes=codes)
        step = DEVELOPMENT_MONTHS_PER_QUERY
        for i in range(0, len(development), step):
            months = development[i : i + step]
            part = build_features(con, index_dates=months, people=sample, chunk_people=chunk_people)
            yield _labelled(
                part,
                _months_of(labels, months),
                spec=spec,
                censor_codes=codes,
                censored=censored,
                columns=columns,
            )
            del part


def iter_evaluation_parts(
    con: Any,
    spec: ModelSpec,
    plan: IndexPlan,
    *,
    censored: dict[date, int] | None = None,
    columns: Sequence[str] | None = None,
    chunk_people: int = CHUNK_PEOPLE,
) -> Iterator[pd.DataFrame]:
    """The held-out months' pieces of the training frame, one per month, of everyone.

    They are most of the frame's rows (a million people is ~800,000 rows a month), so they
    are built together in one pass over the extract, an NHS-number range at a time
    (``iter_feature_ranges``), each range made compact before the next is built, with one
    labels query for them all.
    """
    evaluation = list(plan.evaluation_months)
    if not evaluation:
        return
    codes = _censor_codes(spec)
    labels = _labels(con, spec, evaluation, people=None, censor_codes=codes)
    pieces: dict[date, list[pd.DataFrame]] = {month: [] for month in evaluation}
    for frame in iter_feature_ranges(con, index_dates=evaluation, chunk_people=chunk_people):
        # Compact before the next range's query: the held-out months' query results are the
        # largest of training.
        small = _compact(frame, spec.feature_names)
        del frame
        dates = small["index_date"].to_numpy()
        for month in evaluation:
            pieces[month].append(small.loc[dates == month])
        del small
    for month in evaluation:
        part = _concat_compact(pieces.pop(month), spec.feature_names)
        yield _labelled(
            part,
            _months_of(labels, [month]),
            spec=spec,
            censor_codes=codes,
            censored=censored,
            columns=columns,
            compact=False,
        )
        del part


def _censor_codes(spec: ModelSpec) -> list[str]:
    """The interventions that censor a person-month (none unless the spec censors)."""
    t = spec.training
    return list(t.censor_interventions) if t.post_intervention == "censor" else []


def _labels(
    con: Any,
    spec: ModelSpec,
    months: Sequence[date],
    *,
    people: Any,
    censor_codes: Sequence[str],
) -> pd.DataFrame:
    """The labels of every month of one group, in one query (sorted like the features)."""
    return build_labels(
        con,
        index_dates=list(months),
        horizon_days=spec.horizon_days,
        people=people,
        outcome=spec.outcome,
        censor_codes=censor_codes,
    )


def _months_of(labels: pd.DataFrame, months: Sequence[date]) -> pd.DataFrame:
    """The rows of ``labels`` (sorted by index date) in ``months``: one block of rows."""
    return labels.loc[labels["index_date"].isin(months).to_numpy()]


def _labelled(
    part: pd.DataFrame,
    labels: pd.DataFrame,
    *,
    spec: ModelSpec,
    censor_codes: Sequence[str],
    censored: dict[date, int] | None,
    columns: Sequence[str] | None,
    compact: bool = True,
) -> pd.DataFrame:
    """A piece of the training frame: features with their ``label``, made compact (unless it
    is already), without type 1 opt-outs or censored rows, and only ``columns`` if given."""
    # Both come sorted by index date and NHS number over the same population.
    for key in KEY_COLUMNS:
        if not _same_values(part[key], labels[key]):
            raise RuntimeError(f"features and labels disagree on {key}")
    # Added beside the columns, not inserted: a compacted piece is many blocks, and
    # inserting into it is slow (pandas warns that the frame is highly fragmented).
    label = pd.Series(labels["label"].to_numpy(), index=part.index, name="label")
    part = pd.concat([part, label], axis=1)
    keep = ~part["type1_opt_out"].astype(bool).to_numpy()
    if censor_codes:
        # training.post_intervention: censor: reached before the outcome, left out.
        cut = labels["censored"].to_numpy().astype(bool) & keep
        if censored is not None:
            for month in part["index_date"].to_numpy()[cut].tolist():
                censored[month] = censored.get(month, 0) + 1
        keep &= ~cut
    if columns is not None:
        wanted = set(columns)
        part = part[[c for c in part.columns if c in wanted]]
    if compact:
        part = _compact(part, spec.feature_names)  # before the copy that drops opt-outs
    return part.loc[keep]


def _same_values(a: pd.Series, b: pd.Series) -> bool:
    """Whether two columns hold the same values in the same order. Text columns (Arrow) are
    compared as Arrow arrays: ``to_numpy`` would make a Python string of every row."""
    if len(a) != len(b):
        return False
    if a.dtype == b.dtype and isinstance(a.dtype, pd.ArrowDtype | pd.StringDtype):
        return bool(a.array.equals(b.array))
    return bool(np.array_equal(a.to_numpy(), b.to_numpy()))


def _concat_compact(pieces: list[pd.DataFrame], names: Sequence[str]) -> pd.DataFrame:
    """Compacted pieces of one frame, one after another, as ``_compact`` would have made the
    whole frame: a model feature that is a whole number in one piece and has missing values
    (so floats) in another is 32-bit floats throughout, not the 64-bit floats that
    concatenating an int32 and a float32 column gives."""
    frame = pd.concat(pieces, ignore_index=True) if len(pieces) != 1 else pieces[0]
    pieces.clear()
    widened = {
        name: frame[name].astype(np.float32)
        for name in names
        if name in frame.columns
        and pd.api.types.is_float_dtype(frame[name].dtype)
        and frame[name].dtype != np.float32
    }
    return frame.assign(**widened) if widened else frame.reset_index(drop=True)


def training_columns(spec: ModelSpec) -> list[str]:
    """The columns of the training frame that training reads: the keys, the audit's groups,
    every feature (a champion compared on the same rows may use some this spec leaves out)
    and the label; not where people are registered, nor the cohorts' facts."""
    wanted = [*KEY_COLUMNS, *GROUP_COLUMNS, *spec.fairness.attributes, *feature_columns()]
    return list(dict.fromkeys([*wanted, "label"]))


def _compact(frame: pd.DataFrame, names: Sequence[str]) -> pd.DataFrame:
    """Model features as 32-bit floats and the narrowest of 16- and 32-bit integers that
    holds a whole-number column (the trees read float32 anyway, so the model is the same),
    and each text or date column holding one object per distinct value instead of one per
    row: a million people's held-out months are millions of rows, and a Python string costs
    50-60 bytes."""
    out: dict[str, pd.Series] = {}
    for name in names:
        column = frame[name]
        if pd.api.types.is_float_dtype(column.dtype):
            out[name] = column.astype(np.float32)
        elif (
            column.dtype.kind == "i" and (narrow := _narrow_int(column.to_numpy())) != column.dtype
        ):
            out[name] = column.astype(narrow)
    for name in frame.columns:
        if frame[name].dtype == object and name not in out:
            values = frame[name].to_numpy()
            codes, uniques = pd.factorize(values)
            if len(uniques) == 0:
                continue
            shared = np.asarray(uniques, dtype=object)[codes]
            missing = codes < 0
            shared[missing] = values[missing]  # None stays None, NaN stays NaN
            out[name] = pd.Series(shared, index=frame.index, dtype=object)
    return frame.assign(**out) if out else frame


def _narrow_int(values: npt.NDArray[Any]) -> np.dtype[Any]:
    """The narrowest of int16 and int32 that holds every one of these whole numbers (their
    own type if neither does, or if it is already narrower)."""
    if values.dtype.itemsize <= 2:
        return values.dtype
    low, high = (int(values.min()), int(values.max())) if len(values) else (0, 0)
    for kind in (np.int16, np.int32):
        if np.iinfo(kind).min <= low and high <= np.iinfo(kind).max:
            return np.dtype(kind)
    return values.dtype


def split_by_plan(frame: pd.DataFrame, spec: ModelSpec, plan: IndexPlan) -> dict[str, pd.DataFrame]:
    """The frame's rows for each part of the plan (``train``, ``stop``, ``calibrate``,
    ``evaluate``), as copies. Without early-stopping months, a share of the training months'
    people (``training.early_stopping_people``) is held out to stop on instead."""
    t = spec.training
    masks = {
        name: frame["index_date"].isin(months).to_numpy()
        for name, months in (("train", plan.train_months),
                             ("stop", plan.early_stopping_months),
                             ("calibrate", plan.calibration_months),
                             ("evaluate", plan.evaluation_months))
    }  # fmt: skip
    if not plan.early_stopping_months and t.early_stopping_people > 0:
        # Early stopping on people the trees never see, in the training months themselves.
        # Each part is one copy out of the frame, never a copy of a copy.
        held = np.zeros(len(frame), dtype=bool)
        held[masks["train"]] = hold_out_people(
            frame["nhs_number"].loc[masks["train"]],
            share=t.early_stopping_people,
            seed=spec.evaluation.seed,
        )
        masks["stop"], masks["train"] = held, masks["train"] & ~held
    parts = {name: frame.loc[mask] for name, mask in masks.items()}
    for label in ("train", "evaluate"):
        if parts[label].empty or parts[label]["label"].nunique() < 2:
            raise DataError(
                f"the {label} months need people with and without the outcome",
                hint="use an extract with more people or more months of history",
            )
    return parts


def split_parts(
    pieces: list[pd.DataFrame], spec: ModelSpec, plan: IndexPlan
) -> dict[str, pd.DataFrame]:
    """``split_by_plan`` of the pieces' concatenation (``training_parts``), without making
    it: the same rows of each part, in the same order (with a fresh index). The list is
    emptied as the pieces are copied into their parts, so that each is let go once copied,
    and a piece that is all one part is that part's rows without a copy."""
    t = spec.training
    months = {
        "train": set(plan.train_months),
        "stop": set(plan.early_stopping_months),
        "calibrate": set(plan.calibration_months),
        "evaluate": set(plan.evaluation_months),
    }
    held: list[npt.NDArray[np.bool_]] | None = None
    if not plan.early_stopping_months and t.early_stopping_people > 0:
        # Early stopping on people the trees never see, chosen from the training months'
        # people exactly as split_by_plan chooses them from the whole frame.
        in_train = [p["index_date"].isin(plan.train_months).to_numpy() for p in pieces]
        numbers = pd.concat(
            [p["nhs_number"].loc[m] for p, m in zip(pieces, in_train, strict=True)],
            ignore_index=True,
        )
        flags = hold_out_people(numbers, share=t.early_stopping_people, seed=spec.evaluation.seed)
        cuts = np.cumsum([int(m.sum()) for m in in_train])[:-1]
        held = np.split(flags, cuts)
        del numbers, flags
    empty = pieces[0].iloc[:0] if pieces else pd.DataFrame()  # a part with no rows
    bits: dict[str, list[pd.DataFrame]] = {name: [] for name in months}
    for i in range(len(pieces)):
        piece = pieces[i]
        dates = piece["index_date"]
        masks = {name: dates.isin(list(m)).to_numpy() for name, m in months.items()}
        if held is not None:
            train_rows = np.flatnonzero(masks["train"])
            stop = np.zeros(len(piece), dtype=bool)
            stop[train_rows[held[i]]] = True
            masks["stop"], masks["train"] = stop, masks["train"] & ~stop
        for name, mask in masks.items():
            if mask.all():
                bits[name].append(piece)
            elif mask.any():
                bits[name].append(piece.loc[mask])
        pieces[i] = pd.DataFrame()  # let it go once its rows are in their parts
        del piece
    pieces.clear()
    parts: dict[str, pd.DataFrame] = {}
    for name in months:
        found = bits.pop(name) or [empty]
        part = pd.concat(found, ignore_index=True) if len(found) > 1 else found[0]
        parts[name] = part.reset_index(drop=True)
        del found, part
    for label in ("train", "evaluate"):
        if parts[label].empty or parts[label]["label"].nunique() < 2:
            raise DataError(
                f"the {label} months need people with and without the outcome",
                hint="use an extract with more people or more months of history",
            )
    return parts
