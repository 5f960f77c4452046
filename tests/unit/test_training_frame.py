"""Training's frame, built in few passes, is the frame built one month at a time (issue 27).

Training builds its development months several per features query and its held-out months
in one pass over the extract, a range of NHS numbers at a time, with one labels query per
group of months; ``split_parts`` splits the pieces into the plan's parts without
concatenating them. Every value, dtype and row order must be what building each month on
its own (``build_features`` and ``build_labels`` for that month, as training did before)
and ``split_by_plan`` give, so the model fitted on it is the same model.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import date

import numpy as np
import pandas as pd
import pytest

from riskstrat.features.build import (
    build_features,
    people_sample,
    person_ranges,
    sample_people,
)
from riskstrat.features.labels import build_labels
from riskstrat.modelling.model import IndexPlan
from riskstrat.modelling.spec import ModelSpec, default_spec_dir, load_spec
from riskstrat.pipelines.frame import _compact
from riskstrat.pipelines.train import (
    build_training_frame,
    split_by_plan,
    split_parts,
    training_columns,
    training_parts,
    training_plan,
)
from tests.support.extracts import generated_in_small_row_groups

pytestmark = [
    pytest.mark.slow,  # features of a 1,500-person extract, many times over
    # building the frame never warns that it is highly fragmented (slow inserts into it)
    pytest.mark.filterwarnings("error::pandas.errors.PerformanceWarning"),
]


def _month_by_month(
    con, spec: ModelSpec, plan: IndexPlan, people, censored: dict[date, int]
) -> pd.DataFrame:
    """The frame as training built it before: each month's features and labels on their own
    (the development months of the sample, the held-out months of everyone), compacted, type
    1 opt-outs and censored rows dropped, the months one after another."""
    codes = (
        spec.training.censor_interventions if spec.training.post_intervention == "censor" else []
    )
    parts = []
    with people_sample(con, people) as sample:
        for month in plan.all_months:
            who = sample if month in plan.development_months else None
            part = build_features(con, index_dates=[month], people=who, chunk_people=10**9)
            labels = build_labels(
                con,
                index_dates=[month],
                horizon_days=spec.horizon_days,
                people=who,
                outcome=spec.outcome,
                censor_codes=codes,
            )
            part["label"] = labels["label"].to_numpy()
            keep = ~part["type1_opt_out"].astype(bool).to_numpy()
            if codes:
                cut = labels["censored"].to_numpy().astype(bool) & keep
                censored[month] = int(cut.sum())
                keep &= ~cut
            parts.append(_compact(part, spec.feature_names).loc[keep])
    return pd.concat(parts, ignore_index=True)


@pytest.fixture(scope="module")
def extract(tmp_path_factory):
    with generated_in_small_row_groups(tmp_path_factory.mktemp("frame")) as opened:
        yield opened


@pytest.mark.parametrize("censor", [False, True])
def test_the_training_frame_equals_the_frame_built_month_by_month(extract, censor):
    con = extract.con
    spec = load_spec(default_spec_dir())
    if censor:
        spec = spec.model_copy(
            update={"training": spec.training.model_copy(update={"post_intervention": "censor"})}
        )
    plan = training_plan(con, spec, extract.extract_date)
    assert len(plan.development_months) > 6 and len(plan.evaluation_months) == 3
    people = sample_people(con, fraction=0.6, seed=4)

    expected_censored: dict[date, int] = {}
    expected = _month_by_month(con, spec, plan, people, expected_censored)
    censored: dict[date, int] = {}
    # 400 people per query: the held-out months' one pass runs over 4 ranges
    assert len(person_ranges(con, chunk_people=400)) == 4
    pieces = training_parts(con, spec, plan, people=people, censored=censored, chunk_people=400)
    frame = pd.concat(pieces, ignore_index=True)
    pd.testing.assert_frame_equal(frame, expected)
    assert {m: n for m, n in censored.items() if n} == {
        m: n for m, n in expected_censored.items() if n
    }
    if censor:
        assert sum(censored.values()) > 0
    assert (frame["label"] == 1).any() and frame["nhs_number"].nunique() > 1000
    # the same frame with the default ranges
    assert build_training_frame(con, spec, plan, people=people).equals(expected)

    # the plan's parts from the pieces, without the whole frame: split_by_plan's rows
    parts = split_parts(
        training_parts(con, spec, plan, people=people, columns=training_columns(spec)),
        spec,
        plan,
    )
    for name, part in split_by_plan(expected, spec, plan).items():
        want = part[[c for c in part.columns if c in set(training_columns(spec))]]
        pd.testing.assert_frame_equal(parts[name], want.reset_index(drop=True))
    assert all(len(parts[n]) for n in ("train", "stop", "calibrate", "evaluate"))


def test_split_parts_with_early_stopping_months_and_no_calibration(extract):
    con = extract.con
    spec = load_spec(default_spec_dir())
    plan = training_plan(con, spec, extract.extract_date)
    plan = replace(
        plan,
        train_months=plan.train_months[:-1],
        early_stopping_months=(plan.train_months[-1],),
        calibration_months=(),
    )
    pieces = training_parts(con, spec, plan)
    expected = split_by_plan(pd.concat(pieces, ignore_index=True), spec, plan)
    parts = split_parts(pieces, spec, plan)
    assert pieces == []  # let go as they were split
    for name, part in expected.items():
        pd.testing.assert_frame_equal(parts[name], part.reset_index(drop=True))
    assert parts["calibrate"].empty and list(parts["calibrate"].columns) == list(
        parts["train"].columns
    )
    assert set(parts["stop"]["index_date"]) == {plan.early_stopping_months[0]}
    assert np.isin(parts["train"]["index_date"], plan.train_months).all()
