"""A synthetic run to stage and publish: scores for ``n`` people and half of them in a cohort."""

from __future__ import annotations

from datetime import UTC, date, datetime

import numpy as np
import pandas as pd

from riskstrat.nhs_number import synthetic_nhs_numbers
from riskstrat.store import Store


def make_run(n: int, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    risk = np.sort(rng.beta(1, 20, size=n))[::-1]
    scores = pd.DataFrame(
        {
            "nhs_number": synthetic_nhs_numbers(rng, n),
            "practice_code": rng.choice(["A81001", "B82001"], size=n),
            "pcn_code": "U12345",
            "risk": risk,
            "percentile": np.linspace(100, 1, n),
            "rank": np.arange(1, n + 1),
            "reasons": [[{"group": "age", "text": "aged 80", "percentage_points": 1.0}]] * n,
            "contributions": [{"age": 1.0}] * n,
        }
    )
    cohorts = scores[["nhs_number", "practice_code", "pcn_code", "risk"]].head(n // 2).copy()
    cohorts.insert(0, "intervention", "falls_review")
    cohorts["expected_benefit"] = cohorts["risk"] * 0.35
    cohorts["rank"] = np.arange(1, len(cohorts) + 1)
    cohorts["criteria"] = [["aged_65_plus"]] * len(cohorts)
    return scores, cohorts


def publish_run(store: Store, month: date, scores: pd.DataFrame, cohorts: pd.DataFrame) -> int:
    """Stage and publish ``scores`` and ``cohorts`` as ``month``'s run (50 rows a chunk)."""
    return store.runs.publish_run(
        month=month,
        extract_date=date(2026, 11, 1),
        model_name="m",
        model_version="1",
        scores=scores,
        cohorts=cohorts,
        n_type1_opt_outs_excluded=0,
        started_at=datetime.now(UTC),
        details={"note": "test"},
        chunk_rows=50,
    )
