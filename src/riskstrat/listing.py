"""Cohort lists as a practice team reads them: one row per person, in rank order, with the
NHS number formatted as text and the criteria and reasons in words."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from riskstrat.store import CohortMember, PatientScore

LISTING_COLUMNS = (
    "rank", "nhs_number", "practice_code", "pcn_code", "risk_percent",
    "expected_admissions_avoided", "eligible_because", "reasons",
)  # fmt: skip


def format_nhs_number(nhs_number: str) -> str:
    """``9990001234`` as ``999 000 1234``: the NHS display format, which spreadsheet programs
    keep as text (no scientific notation, no lost leading digits)."""
    n = str(nhs_number)
    return f"{n[:3]} {n[3:6]} {n[6:]}" if len(n) == 10 and n.isdigit() else n


def reasons_text(reasons: Sequence[Mapping[str, Any]]) -> str:
    """Reasons as one readable cell: ``text (+4.1 points); text (-0.3 points)``."""
    return "; ".join(f"{r['text']} ({float(r['percentage_points']):+.1f} points)" for r in reasons)


def listing_frame(
    rows: Sequence[tuple[CohortMember, PatientScore]], criteria_text: Mapping[str, str]
) -> pd.DataFrame:
    """A cohort page as a table for CSV or Excel (``LISTING_COLUMNS``)."""
    records = [
        {
            "rank": member.rank,
            "nhs_number": format_nhs_number(member.nhs_number),
            "practice_code": member.practice_code,
            "pcn_code": member.pcn_code,
            "risk_percent": round(100.0 * member.risk, 1),
            "expected_admissions_avoided": (
                None if member.expected_benefit is None else round(member.expected_benefit, 4)
            ),
            "eligible_because": "; ".join(criteria_text.get(k, k) for k in member.criteria),
            "reasons": reasons_text(score.reasons),
        }
        for member, score in rows
    ]
    return pd.DataFrame(records, columns=list(LISTING_COLUMNS))
