"""Outcomes after a month's lists were used: expected against observed admissions.

For a published run's cohorts, a later extract says who was admitted in the 90 days after
the index date and who received the intervention in that window. The marks teams made on
the lists (reviewed, declined, ...) split the same people another way (``mark_table``).
Everything here is a pure function of frames and returns aggregates only: no identifiers
leave this module.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from riskstrat.cohorts.select import CohortConfig, oe_ratio, poisson_ci


def outcome_table(
    members: pd.DataFrame, followed: pd.DataFrame, config: CohortConfig
) -> pd.DataFrame:
    """Per intervention, practice and delivered/not: people, expected and observed admissions.

    Args:
        members: the run's cohort members (``intervention``, ``nhs_number``,
            ``practice_code``, ``pcn_code``, ``risk``).
        followed: ``labels.outcomes_after`` for those people (``admitted`` and
            ``delivered_<code>`` columns).
        config: the cohort configuration (which code records each intervention).

    Returns:
        Columns ``intervention, practice_code, pcn_code, delivered, people, expected,
        observed``; ``expected`` is the sum of published risks.
    """
    joined = members.merge(followed, on="nhs_number", how="left", validate="many_to_one")
    if joined["admitted"].isna().any():
        raise ValueError("some cohort members have no follow-up row")
    delivered = np.zeros(len(joined), dtype=bool)
    for key, intervention in config.interventions.items():
        column = f"delivered_{intervention.served_by.lower()}"
        rows = (joined["intervention"] == key).to_numpy()
        delivered[rows] = joined.loc[rows, column].astype(int).to_numpy() == 1
    joined = joined.assign(delivered=delivered, admitted=joined["admitted"].astype(int))
    table = (
        joined.groupby(["intervention", "practice_code", "pcn_code", "delivered"], sort=True)
        .agg(people=("nhs_number", "size"), expected=("risk", "sum"), observed=("admitted", "sum"))
        .reset_index()
    )
    table["observed"] = table["observed"].astype(int)
    return table


def summarise_outcomes(
    table: pd.DataFrame, config: CohortConfig, *, by: tuple[str, ...] = ("intervention",)
) -> pd.DataFrame:
    """Roll the outcome table up (by intervention, or by intervention and practice) into
    delivered and not-delivered columns, with O/E and exact Poisson CIs.

    Estimated admissions avoided among people who received the intervention:

    * ``avoided_vs_expected`` = expected - observed, taking the published risks as the
      counterfactual (CI from the observed count's exact Poisson interval);
    * ``avoided_vs_not_delivered`` = expected x (O/E of those not reached) - observed,
      which corrects for the model's calibration in the same month; it needs both groups.

    Neither is a trial: who receives a review is not random.
    """
    rows: list[dict[str, Any]] = []
    keys = list(by)
    for group_key, part in table.groupby(keys, sort=True):
        values = group_key if isinstance(group_key, tuple) else (group_key,)
        row: dict[str, Any] = dict(zip(keys, values, strict=True))
        intervention = config.interventions.get(str(row["intervention"]))
        for flag, label in ((True, "delivered"), (False, "not_delivered")):
            sub = part[part["delivered"] == flag]
            people, expected = int(sub["people"].sum()), float(sub["expected"].sum())
            observed = int(sub["observed"].sum())
            oe = oe_ratio(observed, expected)
            row |= {
                f"{label}_people": people,
                f"{label}_expected": expected,
                f"{label}_observed": observed,
                f"{label}_oe": oe["oe"],
                f"{label}_oe_low": oe["oe_low"],
                f"{label}_oe_high": oe["oe_high"],
            }
        obs_d, exp_d = row["delivered_observed"], row["delivered_expected"]
        if row["delivered_people"] == 0:  # nobody reached: nothing to estimate
            row |= dict.fromkeys(
                ("avoided_vs_expected", "avoided_vs_expected_low", "avoided_vs_expected_high")
            )
        else:
            low, high = poisson_ci(obs_d)
            row["avoided_vs_expected"] = exp_d - obs_d
            row["avoided_vs_expected_low"] = exp_d - high
            row["avoided_vs_expected_high"] = exp_d - low
        oe_nd = row["not_delivered_oe"]
        row["avoided_vs_not_delivered"] = (
            None if oe_nd is None or row["delivered_people"] == 0 else exp_d * oe_nd - obs_d
        )
        row["expected_avoided_by_effect"] = (
            None
            if intervention is None or intervention.effect is None
            else exp_d * intervention.effect
        )
        rows.append(row)
    return pd.DataFrame(rows)


#: How a listed person's latest mark (see ``riskstrat.store.marks``) is counted, in order:
#: the marks a team can make, then nobody marked them.
MARK_GROUPS = ("reviewed", "declined", "not_appropriate", "contacted", "unmarked")


def mark_table(members: pd.DataFrame, followed: pd.DataFrame, marks: pd.DataFrame) -> pd.DataFrame:
    """Per intervention and latest mark: people, expected and observed admissions.

    Args:
        members: the run's cohort members (``intervention``, ``nhs_number``, ``risk``).
        followed: ``labels.outcomes_after`` for those people (``admitted``).
        marks: each marked member's latest mark for that intervention (``intervention``,
            ``nhs_number``, ``status``); members with none count as ``unmarked``.

    Returns:
        Columns ``intervention, mark, people, expected, observed`` (aggregates only).
    """
    joined = members[["intervention", "nhs_number", "risk"]].merge(
        followed[["nhs_number", "admitted"]], on="nhs_number", how="left", validate="many_to_one"
    )
    if joined["admitted"].isna().any():
        raise ValueError("some cohort members have no follow-up row")
    latest = marks.reindex(columns=["intervention", "nhs_number", "status"])
    joined = joined.merge(
        latest, on=["intervention", "nhs_number"], how="left", validate="one_to_one"
    )
    joined["mark"] = joined["status"].fillna("unmarked").astype(str)
    unknown = set(joined["mark"]) - set(MARK_GROUPS)
    if unknown:
        raise ValueError(f"unknown mark statuses: {sorted(unknown)}")
    joined["admitted"] = joined["admitted"].astype(int)
    table = (
        joined.groupby(["intervention", "mark"], sort=True)
        .agg(people=("nhs_number", "size"), expected=("risk", "sum"), observed=("admitted", "sum"))
        .reset_index()
    )
    table["observed"] = table["observed"].astype(int)
    return table


def summarise_marks(table: pd.DataFrame) -> pd.DataFrame:
    """Roll ``mark_table`` up by intervention: how many listed people have each latest mark
    (``<mark>_people`` for each of ``MARK_GROUPS``), and observed against expected admissions
    (O/E with exact Poisson CIs, as ``summarise_outcomes``) for the people marked reviewed and
    for the rest. Marking is not random: a difference is not an effect of the review."""
    rows: list[dict[str, Any]] = []
    for intervention, part in table.groupby("intervention", sort=True):
        row: dict[str, Any] = {"intervention": intervention}
        people = part.groupby("mark")["people"].sum()
        for group in MARK_GROUPS:
            row[f"{group}_people"] = int(people.get(group, 0))
        reviewed = part["mark"] == "reviewed"
        for label, sub in (("reviewed", part[reviewed]), ("rest", part[~reviewed])):
            observed, expected = int(sub["observed"].sum()), float(sub["expected"].sum())
            oe = oe_ratio(observed, expected)
            row |= {
                f"{label}_people": int(sub["people"].sum()),
                f"{label}_expected": expected,
                f"{label}_observed": observed,
                f"{label}_oe": oe["oe"],
                f"{label}_oe_low": oe["oe_low"],
                f"{label}_oe_high": oe["oe_high"],
            }
        rows.append(row)
    return pd.DataFrame(rows)
