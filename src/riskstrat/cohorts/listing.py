"""Cohort lists as a practice team reads them: one row per person, in rank order, with the
NHS number formatted as text (or, in a pseudonymous run, the pseudonym as it is, under its own
heading) and the criteria and reasons in words."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from riskstrat.data.contract import IdentifierKind
from riskstrat.store.records import CohortMember, PatientScore, json_text

LISTING_COLUMNS = (
    "rank", "nhs_number", "practice_code", "pcn_code", "risk_percent",
    "expected_admissions_avoided", "eligible_because", "reasons",
)  # fmt: skip
#: The heading of the identifier column in lists and exports, by what it holds.
IDENTIFIER_COLUMNS: dict[IdentifierKind, str] = {
    "nhs_number": "nhs_number",
    "pseudonym": "pseudonym",
}
#: What people are told the identifier is, on pages.
IDENTIFIER_LABELS: dict[IdentifierKind, str] = {
    "nhs_number": "NHS number",
    "pseudonym": "Pseudonym",
}


def listing_columns(identifier_kind: IdentifierKind = "nhs_number") -> tuple[str, ...]:
    """``LISTING_COLUMNS`` with the identifier column named for what it holds."""
    heading = IDENTIFIER_COLUMNS[identifier_kind]
    return tuple(heading if c == "nhs_number" else c for c in LISTING_COLUMNS)


def format_nhs_number(nhs_number: str) -> str:
    """``9990001234`` as ``999 000 1234``: the NHS display format, which spreadsheet programs
    keep as text (no scientific notation, no lost leading digits)."""
    n = str(nhs_number)
    return f"{n[:3]} {n[3:6]} {n[6:]}" if len(n) == 10 and n.isdigit() else n


def display_identifier(identifier: str, identifier_kind: IdentifierKind) -> str:
    """An identifier as people read it: an NHS number in the NHS display format; a pseudonym
    exactly as it is (a ten-digit pseudonym is not an NHS number and must not look like one)."""
    return format_nhs_number(identifier) if identifier_kind == "nhs_number" else identifier


def reasons_text(reasons: Sequence[Mapping[str, Any]]) -> str:
    """Reasons as one readable cell: ``text (+4.1 points); text (-0.3 points)``."""
    return "; ".join(f"{r['text']} ({float(r['percentage_points']):+.1f} points)" for r in reasons)


def listing_frame(
    rows: Sequence[tuple[CohortMember, PatientScore]],
    criteria_text: Mapping[str, str],
    *,
    identifier_kind: IdentifierKind = "nhs_number",
) -> pd.DataFrame:
    """A cohort page as a table for CSV or Excel (``listing_columns(identifier_kind)``: the
    identifier column is ``pseudonym`` in a pseudonymous run)."""
    heading = IDENTIFIER_COLUMNS[identifier_kind]
    records = [
        {
            "rank": member.rank,
            heading: display_identifier(member.nhs_number, identifier_kind),
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
    return pd.DataFrame(records, columns=list(listing_columns(identifier_kind)))


# ---- The API's cohort page items, as JSON text -----------------------------------------


def json_code(text: str) -> str:
    """A JSON string. Codes and NHS numbers are plain letters and digits (the contract
    checks them), which need no escaping; anything else (a pseudonym with ``.``, ``_`` or
    ``-``) goes through ``json.dumps``."""
    return f'"{text}"' if text.isascii() and text.isalnum() else json.dumps(text)


def json_number(value: float | None) -> str:
    """A JSON number (``repr`` of a finite float is what ``json.dumps`` writes), or null."""
    if value is None:
        return "null"
    number = float(value)
    if math.isnan(number):
        return "null"
    return repr(number) if math.isfinite(number) else json.dumps(number)


def criteria_json(keys: Sequence[str], criteria_text: Mapping[str, str]) -> str:
    """The ``eligible_because`` list of a cohort item."""
    return json.dumps([{"key": k, "text": criteria_text.get(k, k)} for k in keys])


def cohort_item_json(
    *,
    rank: int,
    nhs_number: str,
    practice_code: str,
    pcn_code: str,
    risk: float,
    percentile: float,
    expected_benefit: float | None,
    because_json: str,
    reasons_json: str,
    identifier_kind: IdentifierKind = "nhs_number",
) -> str:
    """One item of the API's cohort page (``CohortMemberPublic``) as JSON text."""
    return (
        f'{{"cohort_rank":{int(rank)},"nhs_number":{json_code(nhs_number)},'
        f'"identifier_kind":"{identifier_kind}",'
        f'"practice_code":{json_code(practice_code)},"pcn_code":{json_code(pcn_code)},'
        f'"risk":{json_number(risk)},"percentile":{json_number(percentile)},'
        f'"expected_admissions_avoided":{json_number(expected_benefit)},'
        f'"eligible_because":{because_json},"reasons":{reasons_json}}}'
    )


def cohort_items_json(
    cohorts: pd.DataFrame,
    scores: pd.DataFrame,
    criteria_text: Mapping[str, Mapping[str, str]],
    *,
    identifier_kind: IdentifierKind = "nhs_number",
) -> list[str]:
    """Each cohort member's API item as JSON text, written once at publication so that
    serving a page is reading stored text, not building it.

    Args:
        cohorts: cohort members (``intervention``, ``nhs_number``, ``practice_code``,
            ``pcn_code``, ``risk``, ``expected_benefit``, ``rank``, ``criteria``).
        scores: everyone scored (``nhs_number``, ``percentile``, ``reasons``).
        criteria_text: per intervention, each criterion's words.
        identifier_kind: what ``nhs_number`` holds (NHS numbers or pseudonyms), said in
            every item.

    Returns:
        One JSON object per row of ``cohorts``, in its order.
    """
    if cohorts.empty:
        return []
    people = scores.set_index("nhs_number")
    percentile = people["percentile"].reindex(cohorts["nhs_number"]).to_numpy()
    reasons = people["reasons"].reindex(cohorts["nhs_number"]).tolist()
    out = []
    because: dict[tuple[str, tuple[str, ...]], str] = {}
    for i, (intervention, nhs, practice, pcn, risk, benefit, rank, criteria) in enumerate(
        cohorts[
            ["intervention", "nhs_number", "practice_code", "pcn_code", "risk",
             "expected_benefit", "rank", "criteria"]
        ].itertuples(index=False, name=None)
    ):  # fmt: skip
        key = (str(intervention), tuple(criteria))
        if key not in because:
            because[key] = criteria_json(key[1], criteria_text.get(key[0], {}))
        out.append(
            cohort_item_json(
                rank=int(rank), nhs_number=str(nhs), practice_code=str(practice),
                pcn_code=str(pcn), risk=float(risk), percentile=float(percentile[i]),
                expected_benefit=None if pd.isna(benefit) else float(benefit),
                because_json=because[key], reasons_json=json_text(reasons[i]),
                identifier_kind=identifier_kind,
            )
        )  # fmt: skip
    return out
