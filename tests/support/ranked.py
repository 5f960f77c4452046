"""A published run whose advance care planning list is ranked by another model (the 12-month
mortality model, cohort file ``rank_by``), as ``riskstrat score`` publishes one: each member
carries a ``ranking`` (that model's name, version, label, risk, expected bed days and
reasons), and the run's cohort record names the version that ranked it. Or, with
``fell_back``, the run of a month when that model had no champion: the list is ranked by
admission risk and its members carry no ranking."""

from __future__ import annotations

from datetime import UTC, date, datetime
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd

from riskstrat.cohorts.listing import cohort_items_json
from riskstrat.cohorts.select import load_cohort_config
from riskstrat.config import Settings
from riskstrat.nhs_number import synthetic_nhs_numbers
from riskstrat.pipelines.score import cohort_config_record
from riskstrat.store import Store

MORTALITY = "riskstrat-death-12m"
MORTALITY_VERSION = "3"
LABEL = "12-month mortality risk"
PER_EVENT = 5.0
PCN = "U11111"
MONTH = date(2026, 12, 1)
ADMISSION_REASON = {"group": "age", "text": "aged 80", "direction": "raises", "log_odds": 0.2,
                    "percentage_points": 1.0}  # fmt: skip
MORTALITY_REASON = {"group": "frailty", "text": "severe frailty", "direction": "raises",
                    "log_odds": 0.5, "percentage_points": 6.0}  # fmt: skip


def ranking_of(risk: float) -> dict[str, Any]:
    """A member's ranking as ``pipelines.score.ranking_records`` writes it."""
    return {
        "model": MORTALITY, "version": MORTALITY_VERSION, "label": LABEL, "risk": risk,
        "expected_bed_days": risk * PER_EVENT, "reasons": [MORTALITY_REASON],
    }  # fmt: skip


def ranked_run(*, fell_back: bool = False, n: int = 30) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """Scores of ``n`` people in one PCN (two practices), a falls list of all of them by
    admission risk and an advance care planning list of the first 20, ranked by 12-month
    mortality risk (which runs opposite to admission risk, so the two orders differ); and
    the run's cohort record. ``fell_back``: no mortality champion, ACP ranked by admission
    risk and without rankings."""
    rng = np.random.default_rng(12)
    scores = pd.DataFrame(
        {
            "nhs_number": synthetic_nhs_numbers(rng, n),
            "practice_code": ["A11111" if i % 2 == 0 else "B22222" for i in range(n)],
            "pcn_code": PCN,
            "risk": np.linspace(0.6, 0.02, n),
            "percentile": np.linspace(100, 100 / n, n),
            "rank": np.arange(1, n + 1),
            "reasons": [[ADMISSION_REASON]] * n,
            "contributions": [{"age": 1.0}] * n,
        }
    )
    falls = scores[["nhs_number", "practice_code", "pcn_code", "risk"]].copy()
    falls.insert(0, "intervention", "falls_review")
    falls["expected_benefit"] = falls["risk"] * 0.35
    falls["rank"] = np.arange(1, n + 1)
    falls["criteria"] = [["aged_65_plus"]] * n
    acp = scores[["nhs_number", "practice_code", "pcn_code", "risk"]].head(20).copy()
    acp.insert(0, "intervention", "advance_care_planning")
    acp["expected_benefit"] = np.nan
    acp["criteria"] = [["palliative_care_register"]] * len(acp)
    if fell_back:
        acp["rank"] = np.arange(1, len(acp) + 1)
        acp["ranking"] = None
    else:
        mortality = np.linspace(0.05, 0.81, len(acp))  # lowest admission risk, highest mortality
        acp["ranking"] = [ranking_of(float(r)) for r in mortality]
        acp = acp.iloc[::-1].reset_index(drop=True)
        acp["rank"] = np.arange(1, len(acp) + 1)
    falls["ranking"] = None
    config = load_cohort_config()
    loaded: Any = {MORTALITY: SimpleNamespace(info=SimpleNamespace(version=MORTALITY_VERSION))}
    record = cohort_config_record(
        config,
        ranking_models=None if fell_back else loaded,
        ranking_missing=[MORTALITY] if fell_back else None,
    )
    members = pd.concat([falls, acp], ignore_index=True)
    texts = {k: i["criteria"] for k, i in record["interventions"].items()}
    members["item_json"] = cohort_items_json(members, scores, texts)
    return scores, members, record


def publish_ranked(settings: Settings, *, fell_back: bool = False) -> dict[str, Any]:
    """``ranked_run`` published into the settings' store: ``scores``, ``members``, ``run_id``."""
    scores, members, record = ranked_run(fell_back=fell_back)
    store = Store(settings.serving_database_url)
    store.create_schema()
    run_id = store.runs.publish_run(
        month=MONTH, extract_date=MONTH, model_name="riskstrat-emergency-admission-90d",
        model_version="7", scores=scores, cohorts=members, n_type1_opt_outs_excluded=0,
        started_at=datetime.now(UTC), details={"cohort_config": record},
    )  # fmt: skip
    store.dispose()
    return {"scores": scores, "members": members, "run_id": run_id}
