"""A published world for service tests: a run of 40 people in two PCNs and a key per role
for each PCN (NHS numbers, or pseudonyms), and signing in to the pages with a key."""

from __future__ import annotations

from datetime import UTC, date, datetime

import numpy as np
import pandas as pd
from fastapi.testclient import TestClient

from riskstrat.cohorts.select import load_cohort_config
from riskstrat.config import Settings
from riskstrat.nhs_number import synthetic_nhs_numbers
from riskstrat.pipelines.score import cohort_config_record
from riskstrat.service.auth import ROLES
from riskstrat.store import Store
from tests.support.auth import add_fixed_key, fixed_key

PCNS = ("U11111", "U22222")
MONTH = date(2026, 11, 1)


def key_for(role: str, pcn: str) -> str:
    return fixed_key(10 * (ROLES.index(role) + 1) + PCNS.index(pcn))


def pseudonyms(n: int) -> list[str]:
    """``n`` pseudonyms in the shapes the contract allows: among them ten digits that pass
    Modulus 11 (as an NHS number would, and must still never be taken for one), ten that
    fail it (and must never be checked), 64 characters, and '.', '_' and '-'."""
    shapes = ["9998336376", "9998336377", "p" * 63 + "1", "person.2_b-3", "7"]
    return (shapes + [str(104233 + i) for i in range(n)])[:n]


def publish_world(settings: Settings, *, identifier_kind: str = "nhs_number") -> dict:
    """A published run of 40 people in two PCNs, and a key per role for each PCN; the people
    are identified by NHS numbers, or by pseudonyms with ``identifier_kind="pseudonym"``."""
    rng = np.random.default_rng(4)
    people = synthetic_nhs_numbers(rng, 40)
    if identifier_kind == "pseudonym":
        people = np.array(pseudonyms(40), dtype=object)
    scores = pd.DataFrame(
        {
            "nhs_number": people,
            "practice_code": ["A11111" if i % 2 == 0 else "B22222" for i in range(40)],
            "pcn_code": [PCNS[i % 2] for i in range(40)],
            "risk": np.linspace(0.5, 0.01, 40),
            "percentile": np.linspace(100, 2.5, 40),
            "rank": np.arange(1, 41),
            "reasons": [[{"group": "age", "text": "aged 80", "direction": "raises",
                          "log_odds": 0.2, "percentage_points": 1.0}]] * 40,
            "contributions": [{"age": 1.0}] * 40,
        }
    )  # fmt: skip
    members = scores[["nhs_number", "practice_code", "pcn_code", "risk"]].copy()
    members.insert(0, "intervention", "falls_review")
    members["expected_benefit"] = members["risk"] * 0.35
    members["rank"] = np.arange(1, 41)
    members["criteria"] = [["aged_65_plus"]] * 40
    store = Store(settings.serving_database_url)
    store.create_schema()
    run_id = store.runs.publish_run(
        month=MONTH, extract_date=MONTH, model_name="m", model_version="1", scores=scores,
        cohorts=members, n_type1_opt_outs_excluded=0, started_at=datetime.now(UTC),
        details={"cohort_config": cohort_config_record(load_cohort_config())},
        identifier_kind=identifier_kind,
    )  # fmt: skip
    store.dispose()
    for role in ROLES:
        for pcn in PCNS:
            add_fixed_key(settings, role, key_for(role, pcn), pcns=(pcn,))
    return {"settings": settings, "scores": scores, "run_id": run_id}


def sign_in(client: TestClient, key: str) -> None:
    response = client.post("/login", content=f"key={key}",
                           headers={"Content-Type": "application/x-www-form-urlencoded"},
                           follow_redirects=False)  # fmt: skip
    assert response.status_code == 303, response.text
    cookie = response.headers["set-cookie"]
    assert "httponly" in cookie.lower() and "samesite=strict" in cookie.lower()
    assert key not in cookie
