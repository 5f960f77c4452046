"""The subgroup audit and the fairness gates, on constructed populations and tiny frames."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from fairlearn.metrics import (
    MetricFrame,
    false_negative_rate,
    false_positive_rate,
    selection_rate,
)

from riskstrat.fairness.subgroups import (
    FairnessGates,
    FairnessPlan,
    compare_audits,
    fairness_audit,
    fairness_gate_results,
    group_sort_key,
)

FAST = FairnessPlan(bootstrap_samples=100)


def _sigmoid(z):
    return 1 / (1 + np.exp(-z))


def _frame(n=20_000, seed=0):
    """A calibrated, informative model on a population with the four audit attributes."""
    rng = np.random.default_rng(seed)
    risk = _sigmoid(rng.normal(-2.3, 1.1, n))
    ethnic = rng.choice(["White", "Asian", "Black", "Not stated"], n, p=[0.6, 0.2, 0.1, 0.1])
    ethnic[:40] = "Other"  # a group too small to estimate
    return pd.DataFrame(
        {
            "label": (rng.random(n) < risk).astype(int),
            "risk": risk,
            "sex": rng.choice(["F", "M"], n),
            "age_band": rng.choice(["85+", "18-44", "0-17", "65-74", "45-64", "75-84"], n),
            "imd_quintile": rng.choice(["3", "1", "5", "2", "4", "Not known"], n),
            "ethnic_group": ethnic,
        }
    )


def _group(audit, attribute, group):
    (g,) = [g for g in audit["groups"] if (g["attribute"], g["group"]) == (attribute, group)]
    return g


def _failed(results):
    return {(r.name, r.subject) for r in results if not r.passed}


def _plain(obj):
    if isinstance(obj, dict):
        return all(isinstance(k, str) and _plain(v) for k, v in obj.items())
    if isinstance(obj, list):
        return all(_plain(v) for v in obj)
    return obj is None or type(obj) in (bool, int, float, str)


# --------------------------------------------------------------------------- tiny, by hand

TINY = pd.DataFrame(
    {
        "label": [1, 0, 1, 0, 1, 0, 0, 1, 0, 0, 0, 0],
        "risk": [0.95, 0.9, 0.85, 0.8, 0.75, 0.5, 0.4, 0.3, 0.2, 0.1, 0.05, 0.04],
        "sex": ["F", "F", "M", "M", "F", "M", "F", "M", "F", "M", "U", "U"],
    }
)
TINY_PLAN = FairnessPlan(attributes=("sex",), list_share=0.25, bootstrap_samples=0)


def test_rates_match_hand_counts():
    audit = fairness_audit(TINY, plan=TINY_PLAN)
    # the top 25% of 12 is 3 people: rows 0 (F, event), 1 (F) and 2 (M, event)
    assert audit["threshold"] == 0.85 and audit["list_share"] == 0.25
    f, m, u = audit["groups"]
    # F: rows 0, 1, 4, 6, 8 -> TP 1, FP 1, FN 1, TN 2
    assert (f["group"], f["rows"], f["events"]) == ("F", 5, 2)
    assert f["selection_rate"]["value"] == pytest.approx(2 / 5)
    assert f["fpr"]["value"] == pytest.approx(1 / 3)
    assert f["fnr"]["value"] == pytest.approx(1 / 2)
    assert f["false_omission_rate"]["value"] == pytest.approx(1 / 3)
    assert f["false_discovery_rate"]["value"] == pytest.approx(1 / 2)
    # M: rows 2, 3, 5, 7, 9 -> TP 1, FP 0, FN 1, TN 3
    assert m["fpr"]["value"] == 0 and m["fnr"]["value"] == pytest.approx(1 / 2)
    assert m["false_omission_rate"]["value"] == pytest.approx(1 / 4)
    assert m["false_discovery_rate"]["value"] == 0
    # U: two non-events, never flagged: FNR and FDR have no denominator; no AUROC
    assert u["fnr"] is None and u["false_discovery_rate"] is None and u["auroc"] is None
    assert u["fpr"]["value"] == 0 and u["false_omission_rate"]["value"] == 0
    assert u["oe"]["value"] == 0.0
    # overall: TP 2, FP 1, FN 2, TN 7
    o = audit["overall"]
    assert (o["rows"], o["events"]) == (12, 4)
    assert o["fpr"]["value"] == pytest.approx(1 / 8)
    assert o["fnr"]["value"] == pytest.approx(1 / 2)
    assert o["false_omission_rate"]["value"] == pytest.approx(2 / 9)
    assert o["false_discovery_rate"]["value"] == pytest.approx(1 / 3)
    assert o["selection_rate"]["value"] == pytest.approx(3 / 12)
    assert o["event_rate"] == pytest.approx(4 / 12)
    # F's risks: events 0.95, 0.75 against non-events 0.9, 0.4, 0.2 -> 5 of 6 pairs
    assert f["auroc"]["value"] == pytest.approx(5 / 6)
    assert f["oe"]["value"] == pytest.approx(2 / (0.95 + 0.9 + 0.75 + 0.4 + 0.2))
    assert f["mean_risk"] == pytest.approx((0.95 + 0.9 + 0.75 + 0.4 + 0.2) / 5)


def test_rates_agree_with_a_row_level_metric_frame():
    frame = _frame(3000, seed=1)
    audit = fairness_audit(frame, plan=FairnessPlan(bootstrap_samples=0))
    flagged = (frame["risk"] >= audit["threshold"]).astype(int)  # no ties in these risks
    mf = MetricFrame(
        metrics={
            "selection_rate": selection_rate,
            "fpr": false_positive_rate,
            "fnr": false_negative_rate,
        },
        y_true=frame["label"],
        y_pred=flagged,
        sensitive_features=frame["ethnic_group"],
    )
    for group, row in mf.by_group.iterrows():
        g = _group(audit, "ethnic_group", group)
        for metric in ("selection_rate", "fpr", "fnr"):
            assert g[metric]["value"] == pytest.approx(row[metric], abs=1e-12)


def test_wilson_intervals_on_rates():
    audit = fairness_audit(_frame(5000), plan=FairnessPlan(bootstrap_samples=0))
    for g in audit["groups"]:
        for metric in ("selection_rate", "fpr", "fnr", "false_omission_rate"):
            ci = g[metric]
            assert ci is None or ci["lo"] <= ci["value"] <= ci["hi"]


# --------------------------------------------------------------------------- groups


def test_groups_come_in_a_natural_order():
    frame = _frame(4000)
    frame.loc[:9, "sex"] = "U"
    frame.loc[10:19, "age_band"] = None  # an empty cell is "Not known"
    audit = fairness_audit(frame, plan=FairnessPlan(bootstrap_samples=0))
    order = {}
    for g in audit["groups"]:
        order.setdefault(g["attribute"], []).append(g["group"])
    assert list(order) == ["sex", "age_band", "imd_quintile", "ethnic_group"]
    assert order["sex"] == ["F", "M", "U"]
    assert order["age_band"] == ["0-17", "18-44", "45-64", "65-74", "75-84", "85+", "Not known"]
    assert order["imd_quintile"] == ["1", "2", "3", "4", "5", "Not known"]
    assert order["ethnic_group"] == ["Asian", "Black", "Other", "White", "Not stated"]


def test_sort_key_puts_unrecorded_groups_last():
    labels = ["U", "Not known", "10", "2", "Not stated", "b", "A"]
    assert sorted(labels, key=group_sort_key) == [
        "2",
        "10",
        "A",
        "b",
        "Not stated",
        "Not known",
        "U",
    ]


def test_not_stated_is_its_own_group():
    frame = _frame()
    audit = fairness_audit(frame, plan=FAST)
    g = _group(audit, "ethnic_group", "Not stated")
    assert g["rows"] == int((frame["ethnic_group"] == "Not stated").sum())
    assert g["estimable"] and g["reason"] == ""


def test_numeric_quintiles_become_labels():
    frame = _frame(3000)
    frame["imd_quintile"] = frame["imd_quintile"].replace("Not known", np.nan).astype(float)
    audit = fairness_audit(frame, plan=FairnessPlan(bootstrap_samples=0))
    groups = [g["group"] for g in audit["groups"] if g["attribute"] == "imd_quintile"]
    assert groups == ["1", "2", "3", "4", "5", "Not known"]


def test_a_tiny_group_is_reported_but_not_gated():
    audit = fairness_audit(_frame(), plan=FAST)
    other = _group(audit, "ethnic_group", "Other")
    assert other["rows"] == 40 and not other["estimable"]
    assert other["reason"].startswith(f"too small to estimate: 40 rows, {other['events']} events")
    results = fairness_gate_results(audit, FairnessGates())
    assert "ethnic_group=Other" not in {r.subject for r in results}
    assert "ethnic_group=White" in {r.subject for r in results}


# --------------------------------------------------------------------------- the gates


def test_a_fair_model_passes_every_gate():
    audit = fairness_audit(_frame(), plan=FAST)
    results = fairness_gate_results(audit, FairnessGates())
    assert results and not _failed(results)
    # O/E for every estimable group; AUROC gap for sex, IMD and ethnicity, never age
    gap_subjects = {r.subject for r in results if r.name == "subgroup AUROC gap"}
    oe_subjects = {r.subject for r in results if r.name == "subgroup O/E"}
    assert not any(s.startswith("age_band=") for s in gap_subjects)
    assert {"age_band=85+", "sex=F", "ethnic_group=Not stated"} <= oe_subjects
    assert {"sex=F", "imd_quintile=Not known", "ethnic_group=Black"} <= gap_subjects


@pytest.mark.parametrize("rule", ["ci", "point"])
def test_halved_risks_fail_the_oe_gate_for_that_group_only(rule):
    frame = _frame()
    black = frame["ethnic_group"] == "Black"
    frame.loc[black, "risk"] = frame.loc[black, "risk"] / 2
    audit = fairness_audit(frame, plan=FAST)
    assert _group(audit, "ethnic_group", "Black")["oe"]["value"] == pytest.approx(2, rel=0.2)
    results = fairness_gate_results(audit, FairnessGates(rule=rule))
    failed_oe = {s for n, s in _failed(results) if n == "subgroup O/E"}
    assert failed_oe == {"ethnic_group=Black"}
    (black_oe,) = [r for r in results if r.subject == "ethnic_group=Black" and "O/E" in r.name]
    assert "outside 0.8-1.25" in black_oe.detail


@pytest.mark.parametrize("rule", ["ci", "point"])
def test_an_uninformative_group_fails_the_auroc_gap_gate(rule):
    frame = _frame()
    asian = frame["ethnic_group"] == "Asian"
    rng = np.random.default_rng(3)
    # shuffled within the group: same risks (so O/E holds), no ranking left
    frame.loc[asian, "risk"] = rng.permutation(frame.loc[asian, "risk"].to_numpy())
    audit = fairness_audit(frame, plan=FAST)
    results = fairness_gate_results(audit, FairnessGates(rule=rule))
    assert _failed(results) == {("subgroup AUROC gap", "ethnic_group=Asian")}


def test_the_ci_rule_forgives_noise_and_the_point_rule_does_not():
    audit = {
        "ci_level": 0.95,
        "overall": {"auroc": {"value": 0.80, "lo": 0.79, "hi": 0.81}},
        "groups": [
            {
                "attribute": "ethnic_group",
                "group": "Mixed",
                "estimable": True,
                "oe": {"value": 1.4, "lo": 0.9, "hi": 2.0},
                "auroc": {"value": 0.72, "lo": 0.64, "hi": 0.79},
            },
            {
                "attribute": "age_band",
                "group": "85+",
                "estimable": True,
                "oe": {"value": 1.0, "lo": 0.9, "hi": 1.1},
                "auroc": {"value": 0.60, "lo": 0.58, "hi": 0.62},
            },
        ],
    }
    ci = fairness_gate_results(audit, FairnessGates(rule="ci"))
    point = fairness_gate_results(audit, FairnessGates(rule="point"))
    assert not _failed(ci)  # age bands are not gated on AUROC
    assert _failed(point) == {
        ("subgroup O/E", "ethnic_group=Mixed"),
        ("subgroup AUROC gap", "ethnic_group=Mixed"),
    }
    assert len(ci) == len(point) == 3
    assert all(json.dumps(r.as_dict()) for r in ci)


# --------------------------------------------------------------------------- output


def test_the_audit_is_plain_json_and_deterministic():
    frame = _frame(5000)
    audit = fairness_audit(frame, plan=FairnessPlan(bootstrap_samples=30))
    assert _plain(audit)
    assert json.loads(json.dumps(audit, allow_nan=False)) == audit
    assert fairness_audit(frame, plan=FairnessPlan(bootstrap_samples=30)) == audit
    g = audit["groups"][0]
    assert set(g) == {
        "attribute",
        "group",
        "rows",
        "events",
        "estimable",
        "reason",
        "auroc",
        "oe",
        "selection_rate",
        "fpr",
        "fnr",
        "false_omission_rate",
        "false_discovery_rate",
        "mean_risk",
        "event_rate",
    }
    assert g["auroc"]["lo"] <= g["auroc"]["value"] <= g["auroc"]["hi"]
    assert g["oe"]["lo"] <= g["oe"]["value"] <= g["oe"]["hi"]


def test_the_list_is_the_overall_top_share():
    frame = _frame(5000)
    audit = fairness_audit(frame, plan=FairnessPlan(bootstrap_samples=0))
    assert audit["overall"]["selection_rate"]["value"] == pytest.approx(0.05)
    assert audit["threshold"] == frame["risk"].nlargest(250).min()
    by_sex = [g for g in audit["groups"] if g["attribute"] == "sex"]
    flagged = sum(g["selection_rate"]["value"] * g["rows"] for g in by_sex)
    assert flagged == pytest.approx(250)


def test_bad_frames_are_refused():
    with pytest.raises(ValueError, match="column"):
        fairness_audit(TINY, plan=FairnessPlan(attributes=("sex", "age_band")))
    with pytest.raises(ValueError, match="both outcomes"):
        fairness_audit(TINY.assign(label=0), plan=TINY_PLAN)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        fairness_audit(TINY.assign(risk=TINY["risk"] * 2), plan=TINY_PLAN)


# --------------------------------------------------------------------------- comparison


def test_compare_audits_lines_up_groups_and_marks_missing_ones():
    old = fairness_audit(_frame(5000, seed=1), plan=FairnessPlan(bootstrap_samples=0))
    new_frame = _frame(5000, seed=2)
    new_frame.loc[:99, "age_band"] = "Not known"
    new = fairness_audit(new_frame, plan=FairnessPlan(bootstrap_samples=0))
    rows = compare_audits(new, old)
    ages = [r for r in rows if r["attribute"] == "age_band"]
    assert [r["group"] for r in ages][-1] == "Not known"
    unknown = ages[-1]
    assert unknown["auroc_old"] is None and unknown["oe_old"] is None
    assert unknown["auroc_change"] is None and unknown["oe_new"] is not None
    old_85 = _group(old, "age_band", "85+")
    new_85 = _group(new, "age_band", "85+")
    (row_85,) = [r for r in ages if r["group"] == "85+"]
    assert row_85["auroc_change"] == pytest.approx(
        new_85["auroc"]["value"] - old_85["auroc"]["value"]
    )
    assert row_85["oe_old"] == old_85["oe"]["value"]
    assert rows[0]["attribute"] == "sex"
    assert len(rows) == len(new["groups"]) and _plain(rows)
    # a group only the second audit has is kept, after the first audit's groups
    reverse = [r for r in compare_audits(old, new) if r["attribute"] == "age_band"]
    assert reverse[-1]["group"] == "Not known"
    assert reverse[-1]["auroc_new"] is None and reverse[-1]["auroc_old"] is not None
