"""A run's cohort items, written column by column in Arrow, are the text the one-at-a-time
writer gives, to the byte, whatever the values: pseudonyms that need escaping, floats that
``repr`` and Arrow lay out differently, people missing from the scores, reasons as JSON text
or as lists, cohorts ranked by another model."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from riskstrat.cohorts.items import (
    cohort_item_json,
    cohort_items_json,
    criteria_json,
    json_code,
    json_codes,
    json_number,
    json_numbers,
)
from riskstrat.nhs_number import synthetic_nhs_numbers
from riskstrat.pipelines.score import json_column
from riskstrat.service.schemas import CohortMemberPublic
from riskstrat.store.records import json_text

#: Values whose text Arrow and ``repr`` write differently, or that need care.
AWKWARD_FLOATS = [
    0.0, -0.0, 1.0, 3.0, 100.0, 57.0, 0.1, 0.30000000000000004, 1e-4, 9.999e-5, 1e-5,
    1.5e-05, 2.2250738585072014e-308, 5e-324, 1.2345678901234567e-7, 12345678.9,
    123456789012345.6, 1e15, 1e16, 1e22, 9999999999.0, 10000000000.0, -2.5, -1e-7,
    math.nan, math.inf, -math.inf,
]  # fmt: skip


def test_numbers_are_what_repr_and_json_write():
    rng = np.random.default_rng(3)
    values = np.concatenate(
        [
            np.array(AWKWARD_FLOATS),
            rng.random(20_000),  # risks
            np.round(rng.random(20_000) * 100, 2),  # percentiles, many whole
            rng.random(5_000) * 1e-3,
            np.exp(rng.uniform(-700, 700, 20_000)) * rng.choice([-1, 1], 20_000),
            rng.integers(0, 2**53, 5_000).astype(float),
        ]
    )
    assert json_numbers(values).to_pylist() == [json_number(v) for v in values.tolist()]


def test_codes_are_what_json_dumps_writes():
    values = pd.Series(
        ["9990000018", "L31605", "a-b.c_d", 'say "hi"', "back\\slash", "tab\tnew\nline",
         "caf\u00e9", "\u2603 snow", "\x7f", "", " spaced ", "[x]^{}~"]
    )  # fmt: skip
    assert json_codes(values).to_pylist() == [json_code(v) for v in values]
    assert all(json.loads(text) == v for text, v in zip(json_codes(values).to_pylist(), values))


def _world(
    n: int, *, arrow_reasons: bool, pseudonyms: bool, seed: int = 11
) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, dict[str, str]]]:
    rng = np.random.default_rng(seed)
    if pseudonyms:
        # some need escaping in JSON: a quote, a letter beyond ASCII
        people = [f"p-{i}.x_" + ('"' if i % 7 == 0 else "") + ("\u00e9" if i % 5 == 0 else "")
                  for i in range(n)]  # fmt: skip
    else:
        people = synthetic_nhs_numbers(rng, n)
    reasons = [
        [{"group": "age", "text": f"aged {70 + i % 20}", "direction": "raises",
          "log_odds": 0.25, "percentage_points": float(rng.random())}]
        for i in range(n)
    ]  # fmt: skip
    scores = pd.DataFrame(
        {
            "nhs_number": people,
            "percentile": np.round(rng.random(n) * 100, 2),
            "reasons": json_column(pa.array([json_text(r) for r in reasons], pa.large_string()),
                                   pd.RangeIndex(n))
            if arrow_reasons
            else reasons,
        }
    )  # fmt: skip
    scores.loc[3, "percentile"] = 100.0  # a whole number: Arrow writes "100"
    members = []
    for intervention, count in (("falls_review", n // 2), ("advance_care_planning", n // 4)):
        chosen = rng.choice(n, size=count, replace=False)
        for rank, person in enumerate(chosen, start=1):
            members.append(
                {
                    "intervention": intervention,
                    "nhs_number": people[person],
                    "practice_code": ["A11111", "B22222", "C33333"][person % 3],
                    "pcn_code": "U11111",
                    "risk": float(rng.random()),
                    "expected_benefit": (
                        math.nan if intervention == "advance_care_planning"
                        else float(rng.random() * 0.35)
                    ),
                    "rank": rank,
                    "criteria": [["aged_65_plus"], ["aged_65_plus", "polypharmacy"], []][
                        rank % 3
                    ],
                    "ranking": (
                        {"model": "riskstrat-death-12m", "version": "3", "label": "12-month mortality risk",
                         "risk": float(rng.random()),
                         "reasons": [], "expected_bed_days": 5.0}
                        if intervention == "advance_care_planning" else None
                    ),
                }
            )  # fmt: skip
    cohorts = pd.DataFrame(members)
    # values that need care, and someone listed who is not among the scores
    cohorts.loc[0, "risk"] = 1e-5
    cohorts.loc[1, "risk"] = 1.0
    cohorts.loc[2, "expected_benefit"] = 3.0
    cohorts.loc[4, "nhs_number"] = "not-scored"
    cohorts = cohorts.sample(frac=1.0, random_state=2)  # any order in, any index
    texts = {"falls_review": {"aged_65_plus": "aged 65 or over",
                              "polypharmacy": 'ten or more "repeat" medicines'}}  # fmt: skip
    return cohorts, scores, texts


def _one_at_a_time(
    cohorts: pd.DataFrame, scores: pd.DataFrame, texts: dict[str, dict[str, str]], kind: str
) -> list[str]:
    """The items as the per-member writer gives them, each fact found the plain way."""
    percentile = dict(zip(scores["nhs_number"], scores["percentile"], strict=True))
    reasons = dict(zip(scores["nhs_number"], scores["reasons"], strict=True))
    seen: dict[tuple[str, str], int] = {}
    practice_rank: dict[object, int] = {}
    for index, row in cohorts.sort_values(["intervention", "rank"], kind="stable").iterrows():
        key = (row["intervention"], row["practice_code"])
        seen[key] = seen.get(key, 0) + 1
        practice_rank[index] = seen[key]
    out = []
    for index, row in cohorts.iterrows():
        person = row["nhs_number"]
        given = reasons.get(person)
        benefit = row["expected_benefit"]
        out.append(
            cohort_item_json(
                rank=row["rank"], practice_rank=practice_rank[index], nhs_number=person,
                practice_code=row["practice_code"], pcn_code=row["pcn_code"], risk=row["risk"],
                percentile=percentile.get(person, math.nan),
                expected_benefit=None if pd.isna(benefit) else benefit,
                because_json=criteria_json(row["criteria"], texts.get(row["intervention"], {})),
                reasons_json=given if isinstance(given, str) else json_text(given),
                identifier_kind=kind,  # type: ignore[arg-type]
                ranking_json="null" if row["ranking"] is None else json_text(row["ranking"]),
            )
        )  # fmt: skip
    return out


@pytest.mark.parametrize("arrow_reasons", [True, False], ids=["reasons as text", "as lists"])
@pytest.mark.parametrize("kind", ["nhs_number", "pseudonym"])
def test_a_runs_items_are_the_one_at_a_time_items(arrow_reasons, kind):
    cohorts, scores, texts = _world(
        120, arrow_reasons=arrow_reasons, pseudonyms=kind == "pseudonym"
    )
    items = cohort_items_json(cohorts, scores, texts, identifier_kind=kind)
    # on the frame's own index, so assigning it to the frame puts each item on its member
    assert items.index.equals(cohorts.index)
    assert list(items) == _one_at_a_time(cohorts, scores, texts, kind)
    scored = cohorts["nhs_number"] != "not-scored"  # as every member of a real run is
    for text in items[scored]:
        item = CohortMemberPublic.model_validate_json(text)  # what the API serves
        assert item.identifier_kind == kind
    unscored = json.loads(items[~scored].iloc[0])
    assert unscored["percentile"] is None and unscored["reasons"] is None


def test_no_members_no_items():
    cohorts, scores, texts = _world(12, arrow_reasons=True, pseudonyms=False)
    items = cohort_items_json(cohorts.iloc[:0], scores, texts)
    assert items.empty and items.index.equals(cohorts.index[:0])
