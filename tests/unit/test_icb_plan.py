"""An ICB plan (practices to ICBs, a store per ICB) is read strictly, and a computed month is
split into what each ICB's own run would hold: its people re-ranked among themselves, its
lists renumbered in their order, its opt-outs. That each part publishes exactly what scoring
the ICB's extract alone publishes, on both engines: tests/engines/test_spark_equality.py."""

from __future__ import annotations

from datetime import date

import numpy as np
import pandas as pd
import pytest

from riskstrat.errors import ConfigError, DataError, MissingFileError
from riskstrat.pipelines.icbs import IcbPlan, load_icb_plan, split_by_icb
from riskstrat.pipelines.score import Computed, ranked_scores


def _plan(tmp_path, practices: str, stores: str):
    (tmp_path / "practices.csv").write_text(practices, encoding="utf-8")
    path = tmp_path / "icbs.yaml"
    path.write_text(f"practices: practices.csv\nstores:\n{stores}", encoding="utf-8")
    return path


def test_a_plan_maps_practices_to_icbs_and_reads_urls_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("QKK_URL", "postgresql+psycopg://riskstrat@db-qkk/riskstrat")
    path = _plan(
        tmp_path,
        "practice_code,icb_code,name\nA81001,QE1,One\n A81002 ,QE1,Two\nB82001,QKK,Three\n",
        "  QE1: sqlite:////srv/qe1.db\n  QKK: env:QKK_URL\n",
    )
    plan = load_icb_plan(path)
    assert plan.practice_icb == {"A81001": "QE1", "A81002": "QE1", "B82001": "QKK"}
    assert plan.stores == {
        "QE1": "sqlite:////srv/qe1.db",
        "QKK": "postgresql+psycopg://riskstrat@db-qkk/riskstrat",
    }


@pytest.mark.parametrize(
    ("practices", "stores", "error"),
    [
        ("practice_code,icb_code\nA1,QE1\nB1,QKK\n", "  QE1: sqlite:///a.db\n", "no store for ICB QKK"),
        ("practice_code,icb_code\nA1,QE1\n", "  QE1: sqlite:///a.db\n  QKK: sqlite:///b.db\n",
         "ICB QKK has a store but no practices"),
        ("practice_code,icb_code\nA1,QE1\nA1,QKK\n", "  QE1: x\n  QKK: y\n",
         "practice A1 is listed in two ICBs"),
        ("practice_code,icb\nA1,QE1\n", "  QE1: x\n", "column icb_code is missing"),
        ("practice_code,icb_code\n,QE1\n", "  QE1: x\n", "line 2: a practice code and an ICB"),
        ("practice_code,icb_code\nA1,QE1\n", "  QE1: env:RISKSTRAT_NOT_SET_ANYWHERE\n",
         "read from RISKSTRAT_NOT_SET_ANYWHERE, which is not set"),
        ("practice_code,icb_code\nA1,Q E1\n", "  Q E1: x\n", "'Q E1' is not an ICB code"),
    ],
)  # fmt: skip
def test_a_plan_that_cannot_be_followed_is_refused_naming_the_file(
    tmp_path, practices, stores, error
):
    path = _plan(tmp_path, practices, stores)
    with pytest.raises(ConfigError, match=error) as exc:
        load_icb_plan(path)
    assert str(tmp_path) in str(exc.value)


def test_a_missing_plan_or_practices_file_is_named(tmp_path):
    with pytest.raises(MissingFileError, match="no ICB plan at"):
        load_icb_plan(tmp_path / "none.yaml")
    (tmp_path / "icbs.yaml").write_text("practices: gone.csv\nstores:\n  QE1: x\n")
    with pytest.raises(MissingFileError, match="no practices file at"):
        load_icb_plan(tmp_path / "icbs.yaml")


def _computed() -> Computed:
    """Eight people at four practices (two ICBs), one list, risks with a tie."""
    people = [f"999000000{i}" for i in range(8)]
    practices = ["A1", "A2", "B1", "A1", "B1", "B2", "A2", "B2"]
    risk = [0.9, 0.2, 0.5, 0.5, 0.7, 0.1, 0.3, 0.6]
    scores = ranked_scores(
        pd.DataFrame(
            {"nhs_number": people, "practice_code": practices, "pcn_code": "P1", "risk": risk}
        )
    )
    members = scores.loc[scores["risk"] >= 0.3].sort_values("rank")
    cohorts = pd.DataFrame(
        {
            "intervention": "falls_review",
            "nhs_number": members["nhs_number"].to_numpy(),
            "practice_code": members["practice_code"].to_numpy(),
            "rank": np.arange(1, len(members) + 1),
        }
    )
    features = pd.DataFrame({"nhs_number": people, "age": range(60, 68)})
    return Computed(
        extract_date=date(2026, 11, 1),
        validation={},
        identifier_kind="nhs_number",
        features=features,
        scores=scores,
        cohorts=cohorts,
        ranking_models={},
        ranking_missing=[],
        opt_outs={"A1": 2, "B2": 1},
    )


PLAN = IcbPlan({"A1": "QE1", "A2": "QE1", "B1": "QKK", "B2": "QKK"}, {"QE1": "a", "QKK": "b"})


def test_each_icb_gets_what_its_own_run_would_hold():
    computed = _computed()
    parts = split_by_icb(computed, PLAN)
    assert list(parts) == ["QE1", "QKK"]
    for icb, part in parts.items():
        alone = computed.scores.loc[computed.scores["practice_code"].map(PLAN.practice_icb) == icb]
        expected = ranked_scores(
            alone.drop(columns=["percentile", "rank"]).sort_values("nhs_number")
        )
        pd.testing.assert_frame_equal(part.scores, expected.reset_index(drop=True))
        assert part.scores["rank"].tolist() == list(range(1, len(alone) + 1))
        assert set(part.features["nhs_number"]) == set(alone["nhs_number"])
        # The list keeps its order and counts from 1 within the ICB.
        assert part.cohorts["rank"].tolist() == list(range(1, len(part.cohorts) + 1))
        order = computed.cohorts.loc[computed.cohorts["nhs_number"].isin(alone["nhs_number"])]
        assert part.cohorts["nhs_number"].tolist() == order["nhs_number"].tolist()
    assert parts["QE1"].opt_outs == {"A1": 2} and parts["QE1"].n_opt_out == 2
    assert parts["QKK"].opt_outs == {"B2": 1}
    # Percentiles are the ICB's: the top risk of each ICB is at 100.
    assert (
        parts["QE1"].scores["percentile"].iloc[0]
        == parts["QKK"].scores["percentile"].iloc[0]
        == 100.0
    )


def test_people_at_a_practice_in_no_icb_stop_the_run_naming_the_practice():
    plan = IcbPlan({"A1": "QE1", "A2": "QE1", "B1": "QKK"}, {"QE1": "a", "QKK": "b"})
    with pytest.raises(
        DataError, match=r"1 practice\(s\) with people this month are in no ICB of the plan: B2"
    ) as exc:
        split_by_icb(_computed(), plan)
    assert "999" not in str(exc.value)


def test_an_icb_with_nobody_this_month_gets_an_empty_part():
    plan = IcbPlan({**PLAN.practice_icb, "C1": "QWO"}, {"QE1": "a", "QKK": "b", "QWO": "c"})
    parts = split_by_icb(_computed(), plan)
    assert parts["QWO"].scores.empty and parts["QWO"].cohorts.empty
