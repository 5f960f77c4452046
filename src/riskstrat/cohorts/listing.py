"""Cohort lists as a practice team reads them: one row per person, in rank order, with the
NHS number formatted as text (or, in a pseudonymous run, the pseudonym as it is, under its own
heading), the rank within the whole run and within the person's practice, and the criteria,
reasons and expected benefit in words. The numbers in words (percentages, chances, admissions
avoided) are in ``riskstrat.cohorts.words``; the "about" sheet every Excel list carries is
built here (``about_rows``) and written with the list (``write_xlsx``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO

import pandas as pd

from riskstrat.cohorts.items import (
    cohort_item_json,
    cohort_items_json,
    criteria_json,
    json_code,
    json_number,
    json_rank,
)
from riskstrat.cohorts.words import (
    bed_days_in_words,
    benefit_in_words,
    chance_words,
    intervention_label,
    no_effect_in_words,
    person_benefit_in_words,
    points_words,
)
from riskstrat.data.contract import IdentifierKind
from riskstrat.store.records import CohortMember, PatientScore, RunInfo

__all__ = [
    "IDENTIFIER_COLUMNS",
    "IDENTIFIER_LABELS",
    "LISTING_COLUMNS",
    "RANKING_COLUMNS",
    "about_frame",
    "about_rows",
    "benefit_in_words",
    "chance_words",
    "cohort_item_json",
    "cohort_items_json",
    "criteria_json",
    "display_identifier",
    "format_nhs_number",
    "intervention_label",
    "json_code",
    "json_number",
    "json_rank",
    "listed_for",
    "listing_columns",
    "listing_frame",
    "no_effect_in_words",
    "person_benefit_in_words",
    "points_words",
    "practice_ranks",
    "ranking_cells",
    "ranking_model_words",
    "reason_sentence",
    "reasons_text",
    "write_xlsx",
]  # fmt: skip

#: The columns of a list: ``rank`` is the position in the run's whole list (every PCN in the
#: run), ``practice_rank`` the position within the person's practice (1 = first there).
LISTING_COLUMNS = (
    "rank", "nhs_number", "practice_code", "practice_rank", "pcn_code", "risk_percent",
    "expected_admissions_avoided", "expected_benefit_in_words", "eligible_because", "reasons",
)  # fmt: skip
#: The columns a list ranked by another model adds after ``LISTING_COLUMNS``: that model's
#: risk, the bed days expected to be saved and its reasons. Left out of other lists.
RANKING_COLUMNS = ("ranking_risk_percent", "expected_bed_days_saved", "ranking_reasons")
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


def listing_columns(
    identifier_kind: IdentifierKind = "nhs_number", *, ranked: bool = False
) -> tuple[str, ...]:
    """``LISTING_COLUMNS`` with the identifier column named for what it holds; the ranking
    columns only for a list ranked by another model (``ranked``)."""
    heading = IDENTIFIER_COLUMNS[identifier_kind]
    columns = (*LISTING_COLUMNS, *(RANKING_COLUMNS if ranked else ()))
    return tuple(heading if c == "nhs_number" else c for c in columns)


def format_nhs_number(nhs_number: str) -> str:
    """``9990001234`` as ``999 000 1234``: the NHS display format, which spreadsheet programs
    keep as text (no scientific notation, no lost leading digits)."""
    n = str(nhs_number)
    return f"{n[:3]} {n[3:6]} {n[6:]}" if len(n) == 10 and n.isdigit() else n


def display_identifier(identifier: str, identifier_kind: IdentifierKind) -> str:
    """An identifier as people read it: an NHS number in the NHS display format; a pseudonym
    exactly as it is (a ten-digit pseudonym is not an NHS number and must not look like one)."""
    return format_nhs_number(identifier) if identifier_kind == "nhs_number" else identifier


def reason_sentence(reason: Mapping[str, Any]) -> str:
    """One reason with its verb and size from the sign of its size:
    ``2 emergency admissions in the last 12 months (raises the risk by 4.1 points)``."""
    return f"{reason['text']} ({points_words(float(reason['percentage_points']))})"


def reasons_text(reasons: Sequence[Mapping[str, Any]]) -> str:
    """Reasons as one readable cell: ``text (raises the risk by 4.1 points); text (lowers the
    risk by 0.3 points)``."""
    return "; ".join(reason_sentence(r) for r in reasons)


def practice_ranks(
    practice_codes: Sequence[str], *, offset: int = 0, one_practice: bool = False
) -> list[int | None]:
    """Each row's rank within its practice (1 first), for rows of a ranked list that start
    at position ``offset`` (0-based) of a list filtered to whole practices (a PCN, the
    caller's PCNs, or one practice).

    A list for one practice counts on from ``offset``. Any other list counts each practice
    from 1, which is right only from the top (``offset`` 0): a practice belongs to one PCN,
    so the top of a PCN's list holds the top of each of its practices' lists. Further down,
    the rank within the practice is not known from the page alone (``None``).
    """
    if one_practice:
        return [offset + i + 1 for i in range(len(practice_codes))]
    if offset:
        return [None] * len(practice_codes)
    seen: dict[str, int] = {}
    out: list[int | None] = []
    for code in practice_codes:
        seen[code] = seen.get(code, 0) + 1
        out.append(seen[code])
    return out


def listing_frame(
    rows: Sequence[tuple[CohortMember, PatientScore]],
    criteria_text: Mapping[str, str],
    *,
    identifier_kind: IdentifierKind = "nhs_number",
    offset: int = 0,
    one_practice: bool = False,
    ranks_known: bool = True,
) -> pd.DataFrame:
    """A cohort page as a table for CSV or Excel (``listing_columns(identifier_kind)``: the
    identifier column is ``pseudonym`` in a pseudonymous run). ``offset`` is the position of
    the first row in the (filtered) list and ``one_practice`` says the list is one
    practice's, for ``practice_rank`` (see ``practice_ranks``); ``ranks_known=False`` (a list
    with people left out, such as those marked done) leaves ``practice_rank`` empty."""
    heading = IDENTIFIER_COLUMNS[identifier_kind]
    codes = [m.practice_code for m, _ in rows]
    ranks = (
        practice_ranks(codes, offset=offset, one_practice=one_practice)
        if ranks_known
        else [None] * len(codes)
    )
    records = [
        {
            "rank": member.rank,
            heading: display_identifier(member.nhs_number, identifier_kind),
            "practice_code": member.practice_code,
            "practice_rank": practice_rank,
            "pcn_code": member.pcn_code,
            "risk_percent": round(100.0 * min(max(member.risk, 0.0), 1.0), 1),
            "expected_admissions_avoided": (
                None if member.expected_benefit is None else round(member.expected_benefit, 4)
            ),
            "expected_benefit_in_words": person_benefit_in_words(member.expected_benefit),
            "eligible_because": "; ".join(criteria_text.get(k, k) for k in member.criteria),
            "reasons": reasons_text(score.reasons),
            **ranking_cells(member.ranking),
        }
        for (member, score), practice_rank in zip(rows, ranks, strict=True)
    ]
    ranked = any(member.ranking for member, _ in rows)
    frame = pd.DataFrame(records, columns=list(listing_columns(identifier_kind, ranked=ranked)))
    frame["practice_rank"] = frame["practice_rank"].astype("Int64")
    return frame


def ranking_cells(ranking: Mapping[str, Any] | None) -> dict[str, Any]:
    """A list row's cells from another model's ranking (empty for other lists)."""
    if not ranking:
        return dict.fromkeys(RANKING_COLUMNS)
    days = ranking.get("expected_bed_days")
    return {
        "ranking_risk_percent": round(100.0 * min(max(float(ranking["risk"]), 0.0), 1.0), 1),
        "expected_bed_days_saved": None if days is None else round(float(days), 2),
        "ranking_reasons": reasons_text(ranking.get("reasons") or []),
    }


def ranking_risks(members: Sequence[tuple[CohortMember, Any]]) -> list[float] | None:
    """The listed people's risks by the model that ranks their list, in list order; None
    unless every one of them has one (a list not ranked by another model, or fallen back)."""
    found = [m.ranking for m, _ in members]
    if not found or any(r is None for r in found):
        return None
    return [float(r["risk"]) for r in found if r is not None]


# ---- The "about" sheet of every Excel list ---------------------------------------------


def listed_for(
    *, pcn: str | None = None, practice: str | None = None, pcns: Sequence[str] | None = None
) -> str:
    """Whose list it is, in words: "practice A81001", "PCN U12345", "PCNs U1, U2" (the
    caller's), or "every PCN in the run"."""
    if practice:
        return f"practice {practice}" + (f" (PCN {pcn})" if pcn else "")
    if pcn:
        return f"PCN {pcn}"
    if pcns:
        return ("PCN " if len(pcns) == 1 else "PCNs ") + ", ".join(sorted(pcns))
    return "every PCN in the run"


#: What every list says about itself, whoever made it.
CAVEATS = (
    "A prediction to help prioritise proactive care, not a diagnosis. Risks are the model's "
    "estimates of an emergency admission in the 90 days after the index date, from the "
    "record as it stood then; people whose record is short or incomplete may be ranked too "
    "low. Expected benefit assumes the effect named here; it is an average over many people, "
    "not a promise for any one person. Check each person's record before acting."
)
#: What a list ranked by another model adds to the caveats ({label}, {model}).
RANKED_CAVEAT = (
    "This list is ranked by the {label} of another model ({model}): ranking_risk_percent and "
    "ranking_reasons are that model's estimate of its own outcome and its reasons, from the "
    "same record; risk_percent and reasons stay the emergency admission risk in 90 days. "
    "Both are estimates with the same limits."
)


def ranking_model_words(ranking: Mapping[str, Any]) -> str:
    """Which model ranked a list, in words, from the run's record of it (``model``,
    ``version``, ``label``, ``fell_back``): "riskstrat-death-12m version 3 (12-month
    mortality risk)", or that it had no champion and the list fell back to admission risk."""
    model, label = str(ranking.get("model", "")), str(ranking.get("label", "its risk"))
    if ranking.get("fell_back"):
        return (
            f"{model} had no champion when this run was scored, so the list is ranked by the "
            f"risk of an emergency admission instead of the {label}"
        )
    version = ranking.get("version")
    return f"{model}" + (f" version {version}" if version else "") + f" ({label})"


def about_rows(
    *,
    run: RunInfo,
    intervention: str,
    listed_for: str,
    risks: Sequence[float],
    identifier_kind: IdentifierKind = "nhs_number",
    reidentified: bool = False,
    exported_at: datetime | None = None,
    ranking_risks: Sequence[float] | None = None,
) -> list[tuple[str, str]]:
    """What a list is, in rows of (item, words), for the "about" sheet of every Excel list:
    the cohort and its criteria, the run and model it comes from, how it is ranked, what it
    is expected to yield, caveats and what identifies the people.

    Args:
        run: the published run the list is from.
        intervention: the cohort's key in the run.
        listed_for: whose list it is, in words ("practice A81001", "PCN U12345").
        risks: the listed people's risks, in list order.
        identifier_kind: what the identifier column holds.
        reidentified: NHS numbers were added from a linkage file.
        exported_at: when (UTC); now when not given.
        ranking_risks: for a list ranked by another model, the listed people's risks by
            that model, in list order (for the bed days it is expected to save).
    """
    record = run.interventions.get(intervention, {})
    title = str(record.get("title", intervention))
    effect = record.get("effect")
    label = intervention_label(title)
    expected = float(sum(min(max(float(r), 0.0), 1.0) for r in risks))
    if effect is not None:
        effect_words = f"{float(effect):.0%} fewer emergency admissions among people who receive it"
        benefit = benefit_in_words(
            expected * float(effect), len(risks), intervention_label=label, effect=float(effect)
        )
    else:
        effect_words = "none claimed"
        benefit = no_effect_in_words(
            expected, len(risks), intervention_label=label, served_by=record.get("served_by")
        )
    ranking: Mapping[str, Any] = record.get("ranking") or {}
    bed_days: Mapping[str, Any] | None = record.get("bed_days")
    # Ranked by that model when the run recorded the version that ranked it.
    ranked = bool(ranking) and not ranking.get("fell_back") and bool(ranking.get("version"))
    caveats = CAVEATS
    if ranked:
        caveats += " " + RANKED_CAVEAT.format(label=ranking["label"], model=ranking["model"])
    if ranked and bed_days is not None:
        per_event = float(bed_days["per_event"])
        effect_words = (
            f"none claimed on emergency admissions; {per_event:g} bed days saved for each "
            f"person with the outcome of the {ranking['label']}: {bed_days['text']}"
        )
        if ranking_risks is not None:
            days = per_event * sum(min(max(float(r), 0.0), 1.0) for r in ranking_risks)
            benefit = bed_days_in_words(
                days, len(ranking_risks), intervention_label=label, per_event=per_event,
                ranking_label=str(ranking["label"]), served_by=record.get("served_by"),
            )  # fmt: skip
        else:
            benefit = (
                f"each person's expected_bed_days_saved ({ranking['label']} x {per_event:g} "
                "days); their sum is the list's"
            )
    criteria = record.get("criteria") or {}
    at = exported_at or datetime.now(UTC)
    items = [
        ("cohort", title),
        ("list for", listed_for),
        ("people listed", str(len(risks))),
        ("month (index date)", run.month.isoformat()),
        ("run id", str(run.id)),
        ("model name", run.model_name),
        ("model version", run.model_version),
        ("cohort configuration version", run.cohort_config_version or "not recorded"),
        ("criteria source", str(record.get("source", ""))),
        (
            "criteria",
            "; ".join(str(t) for t in criteria.values())
            + " (each person's eligible_because names those they meet)",
        ),
        ("ranked by", str(record.get("ranked_by", ""))),
        *(
            [("ranked by model", ranking_model_words(ranking))]
            if ranked or ranking.get("fell_back")
            else []
        ),
        ("effect assumed", effect_words),
        ("expected benefit", benefit),
        *(
            [("expected benefit source", str(bed_days["source"]))]
            if ranked and bed_days is not None
            else []
        ),
        (
            "ranks",
            "rank is the position in the run's whole list (every PCN in the run); "
            "practice_rank is the position within the person's practice",
        ),
        ("note", str(record.get("note") or "")),
        ("caveats", caveats),
        (
            "identifiers",
            "pseudonyms (the pseudonym column), not NHS numbers: the run was scored from a "
            "pseudonymous extract"
            if identifier_kind == "pseudonym"
            else "NHS numbers (the nhs_number column, as text: 999 123 4567)",
        ),
    ]
    if reidentified:
        items.append(
            (
                "re-identified",
                "NHS numbers added from the practice's linkage file, for direct care only; "
                "this list identifies people: handle it as identifiable patient data",
            )
        )
    items.append(("exported at (UTC)", at.astimezone(UTC).strftime("%Y-%m-%d %H:%M")))
    return items


def about_frame(rows: Sequence[tuple[str, str]]) -> pd.DataFrame:
    """``about_rows`` as the sheet's table (columns ``item`` and ``value``)."""
    return pd.DataFrame(list(rows), columns=["item", "value"])


def write_xlsx(frame: pd.DataFrame, target: Path | BinaryIO, about: pd.DataFrame) -> None:
    """A list as an Excel workbook: the ``cohort`` sheet (identifiers as text, readable
    widths, header frozen) and the ``about`` sheet."""
    with pd.ExcelWriter(target, engine="openpyxl") as writer:
        frame.to_excel(writer, sheet_name="cohort", index=False)
        about.to_excel(writer, sheet_name="about", index=False)
        sheet = writer.sheets["cohort"]
        for name in ("nhs_number", "pseudonym"):
            if name not in frame.columns:
                continue
            col = list(frame.columns).index(name) + 1
            for (cell,) in sheet.iter_rows(min_row=2, min_col=col, max_col=col):
                cell.number_format = "@"  # text: never a number in scientific notation
        widths = {
            "nhs_number": 14, "pseudonym": 14, "eligible_because": 60, "reasons": 90,
            "expected_benefit_in_words": 50,
        }  # fmt: skip
        for i, name in enumerate(frame.columns, start=1):
            letter = sheet.cell(row=1, column=i).column_letter
            sheet.column_dimensions[letter].width = widths.get(name, 14)
        sheet.freeze_panes = "A2"
        notes = writer.sheets["about"]
        notes.column_dimensions["A"].width = 28
        notes.column_dimensions["B"].width = 120
