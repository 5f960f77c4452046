"""The model card: Markdown from the template, standalone HTML, and files on disk.

``example_context()`` builds a complete card context (every key of
``riskstrat.reports.card.CardContext``) with made-up but consistent numbers; ``example_evaluation()``
and ``example_audit()`` build the evaluation and fairness-audit dicts on their own. The
``card_context`` and ``plots_dir`` fixtures wrap them for tests.
"""

from __future__ import annotations

import copy
import re
import zlib
from pathlib import Path
from typing import Any

import jinja2
import pytest

from riskstrat.reports.card import (
    format_ci,
    format_ci_pct,
    format_months,
    format_number,
    format_pct,
    format_signed,
    image_sources,
    na,
    render_card,
    table_cell,
    thin,
    write_card,
)
from riskstrat.reports.plots import PLOT_FILES

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "models" / "emergency_admission_90d" / "card.md.j2"

SECTION_HEADINGS = (
    "## 1. Model details",
    "## 2. Intended use",
    "## 3. Out-of-scope uses",
    "## 4. Data",
    "## 5. Performance on held-out data",
    "## 6. Baselines compared",
    "## 7. Oracle (synthetic data only)",
    "## 8. Temporal stability",
    "## 9. Subgroup results",
    "## 10. Gates and promotion decision",
    "## 11. Caveats",
    "## 12. Patient-safety notes for the hazard log (DCB0129)",
)
HAZARDS = (
    "False reassurance",
    "Automation bias",
    "Drift or model staleness",
    "Miscalibration in a subgroup",
    "Data-quality gaps or missing records",
    "Use as a falls-prediction tool",
    "Wrong patient (identifier errors)",
)


# --------------------------------------------------------------------------------------------
# Example context (reusable)


def ci(value: float, lo: float | None, hi: float | None) -> dict[str, Any]:
    """A CI dict as the evaluation and fairness code return it."""
    return {"value": value, "lo": lo, "hi": hi}


def example_evaluation(*, auroc: float = 0.812) -> dict[str, Any]:
    """An evaluation dict shaped like ``riskstrat.modelling.evaluation.evaluate_predictions``'s."""
    bins = []
    for i, risk in enumerate((0.002, 0.004, 0.007, 0.011, 0.016, 0.024, 0.036, 0.058, 0.10, 0.31)):
        observed = risk * (1.05 if i % 2 else 0.95)
        bins.append(
            {
                "bin": i + 1,
                "rows": 2000,
                "mean_risk": risk,
                "observed_rate": observed,
                "observed_lo": observed * 0.7,
                "observed_hi": observed * 1.35,
            }
        )
    thresholds = [round(0.01 * k, 2) for k in range(1, 31)]
    prevalence = 0.0567
    net_benefit = [
        {
            "threshold": t,
            "model": max(prevalence - t * 0.9, -0.002) * 0.9,
            "treat_all": prevalence - (1 - prevalence) * t / (1 - t),
            "treat_none": 0.0,
        }
        for t in thresholds
    ]
    return {
        "rows": 20000,
        "events": 1134,
        "event_rate": prevalence,
        "mean_risk": 0.0571,
        "auroc": ci(auroc, auroc - 0.011, auroc + 0.012),
        "auprc": ci(0.281, 0.262, 0.301),
        "brier": ci(0.0471, 0.0455, 0.0488),
        "calibration": {
            "oe": ci(0.99, 0.94, 1.05),
            "intercept": ci(-0.01, -0.07, 0.05),
            "slope": ci(0.97, 0.91, 1.03),
            "bins": bins,
        },
        "lists": [
            {
                "share": 0.01,
                "flagged": 200,
                "threshold": 0.412,
                "sensitivity": ci(0.089, 0.073, 0.106),
                "ppv": ci(0.505, 0.436, 0.574),
            },
            {
                "share": 0.05,
                "flagged": 1000,
                "threshold": 0.173,
                "sensitivity": ci(0.291, 0.265, 0.318),
                "ppv": ci(0.330, 0.301, 0.360),
            },
            {
                "share": 0.10,
                "flagged": 2000,
                "threshold": 0.102,
                "sensitivity": ci(0.452, 0.423, 0.481),
                "ppv": ci(0.256, 0.237, 0.276),
            },
        ],
        "recall_target": 0.7,
        "share_flagged_for_recall": ci(0.322, 0.305, 0.341),
        "net_benefit": net_benefit,
    }


def _audit_group(
    attribute: str, group: str, rows: int, events: int, *, auroc: float | None, oe: float
) -> dict[str, Any]:
    estimable = auroc is not None
    return {
        "attribute": attribute,
        "group": group,
        "rows": rows,
        "events": events,
        "estimable": estimable,
        "reason": "" if estimable else "fewer than 20 admissions",
        "auroc": ci(auroc, auroc - 0.03, auroc + 0.03) if auroc is not None else None,
        "oe": ci(oe, oe * 0.85, oe * 1.17) if estimable else ci(oe, 0.1, 2.9),
        "selection_rate": ci(0.05, 0.045, 0.056),
        "fpr": ci(0.036, 0.031, 0.041),
        "fnr": ci(0.70, 0.66, 0.74),
        "false_omission_rate": ci(0.042, 0.038, 0.047),
        "false_discovery_rate": ci(0.67, 0.63, 0.71),
        "mean_risk": 0.057,
        "event_rate": events / rows,
    }


def example_audit() -> dict[str, Any]:
    """A fairness audit shaped like ``riskstrat.fairness.subgroups.fairness_audit``'s, with one group
    too small to estimate (AUROC None)."""
    groups = [
        _audit_group("sex", "F", 10200, 601, auroc=0.805, oe=1.02),
        _audit_group("sex", "M", 9800, 533, auroc=0.819, oe=0.97),
        _audit_group("age_band", "18-44", 7000, 150, auroc=0.741, oe=1.08),
        _audit_group("age_band", "45-64", 6500, 280, auroc=0.752, oe=0.96),
        _audit_group("age_band", "65-79", 4500, 390, auroc=0.731, oe=0.99),
        _audit_group("age_band", "80+", 2000, 314, auroc=0.702, oe=1.01),
        _audit_group("imd_quintile", "1 (most deprived)", 4100, 290, auroc=0.806, oe=1.06),
        _audit_group("imd_quintile", "3", 4000, 220, auroc=0.812, oe=0.98),
        _audit_group("imd_quintile", "5 (least deprived)", 3900, 180, auroc=0.815, oe=0.93),
        _audit_group("ethnic_group", "White", 15500, 900, auroc=0.811, oe=1.0),
        _audit_group("ethnic_group", "Asian or Asian British", 2100, 110, auroc=0.798, oe=0.95),
        _audit_group("ethnic_group", "Mixed | multiple", 120, 4, auroc=None, oe=0.6),
        _audit_group("ethnic_group", "Not stated", 2280, 120, auroc=0.79, oe=1.12),
    ]
    return {
        "list_share": 0.05,
        "threshold": 0.173,
        "overall": {
            "rows": 20000,
            "events": 1134,
            "auroc": ci(0.812, 0.801, 0.824),
            "oe": ci(0.99, 0.94, 1.05),
            "selection_rate": ci(0.05, 0.047, 0.053),
            "fpr": ci(0.036, 0.033, 0.039),
            "fnr": ci(0.709, 0.682, 0.735),
            "false_omission_rate": ci(0.042, 0.039, 0.045),
            "false_discovery_rate": ci(0.67, 0.64, 0.70),
            "mean_risk": 0.0571,
            "event_rate": 0.0567,
        },
        "groups": groups,
    }


def example_context() -> dict[str, Any]:
    """A complete card context: every key of ``riskstrat.reports.card.CardContext`` and every plot."""
    evaluation = example_evaluation()
    months = [f"2024-{m:02d}" for m in range(1, 13)]
    return {
        "model": {
            "name": "riskstrat-emergency-admission-90d",
            "version": "7",
            "created_at": "2026-11-20T09:14:00Z",
            "run_id": "abcdef" * 5 + "ab",
            "spec_source": "models/emergency_admission_90d/spec.yaml",
            "horizon_days": 90,
            "algorithm": "LightGBM gradient-boosted trees (binary log-loss), 312 trees",
            "n_features": 6,
            "features": [
                "age_years",
                "sex_female",
                "imd_decile",
                "emergency_admissions_365d",
                "ltc_heart_failure",
                "efi",
            ],
            "monotone_increasing": ["emergency_admissions_365d", "ltc_heart_failure"],
            "monotone_decreasing": [],
            "calibration_method": "isotonic regression (scikit-learn)",
        },
        "data": {
            "extract_date": "2025-10-01",
            "source": "synthetic extract (riskstrat generate, 20,000 people, seed 1)",
            "train_months": months[:10],
            "early_stopping_months": months[10:11],
            "early_stopping_people": 0.0,
            "calibration_months": months[11:12],
            "evaluation_months": ["2025-01", "2025-02", "2025-03"],
            "primary_month": "2025-03",
            "train_rows": 198_432,
            "evaluation_rows": 20000,
            "population": "people registered with the PCN's practices and alive on the index "
            "date, aged 18 or over, without a type 1 opt-out",
            "identifiers": "NHS numbers",
            "codelists": "",
        },
        "evaluation": evaluation,
        "baselines": [
            {
                "name": "This model (LightGBM)",
                "auroc": evaluation["auroc"],
                "auprc": evaluation["auprc"],
                "brier": evaluation["brier"],
                "oe": evaluation["calibration"]["oe"],
                "auroc_difference": ci(0.0, 0.0, 0.0),  # as compare_predictions gives it
            },
            {
                "name": "Logistic regression, same features",
                "auroc": ci(0.781, 0.769, 0.793),
                "auprc": ci(0.231, 0.213, 0.249),
                "brier": ci(0.0489, 0.0472, 0.0506),
                "oe": ci(1.01, 0.95, 1.07),
                "auroc_difference": ci(0.031, 0.024, 0.038),
            },
            {
                "name": "Prior admissions + age score",
                "auroc": ci(0.731, 0.717, 0.745),
                "auprc": ci(0.182, 0.166, 0.199),
                "brier": ci(0.0512, 0.0494, 0.0530),
                "oe": ci(1.0, 0.94, 1.06),
                "auroc_difference": ci(0.081, 0.071, 0.091),
            },
            {
                "name": "Electronic frailty index",
                "auroc": ci(0.702, 0.688, 0.716),
                "auprc": ci(0.141, 0.128, 0.155),
                "brier": ci(0.0530, 0.0511, 0.0549),
                "oe": ci(0.98, 0.92, 1.04),
                "auroc_difference": ci(0.110, -0.002, 0.121),
            },
        ],
        "oracle": {
            "auroc": 0.846,
            "model_auroc": 0.812,
            "ratio": 0.960,
            "share_flagged_for_recall": 0.281,
        },
        "stability": [
            {
                "month": m,
                "rows": 19800 + 100 * i,
                "events": 1100 + 17 * i,
                "auroc": ci(0.808 + 0.002 * i, 0.796 + 0.002 * i, 0.820 + 0.002 * i),
                "oe": ci(1.02 - 0.015 * i, 0.96 - 0.015 * i, 1.08 - 0.015 * i),
                "brier": ci(0.0475, 0.0459, 0.0491),
            }
            for i, m in enumerate(["2025-01", "2025-02", "2025-03"])
        ],
        "fairness": example_audit(),
        "fairness_comparison": [
            {
                "attribute": "age_band",
                "group": "18-44",
                "auroc_new": 0.741,
                "auroc_old": 0.735,
                "auroc_change": 0.006,
                "oe_new": 1.08,
                "oe_old": 1.11,
                "oe_change": -0.03,
            },
            {
                "attribute": "age_band",
                "group": "80+",
                "auroc_new": 0.702,
                "auroc_old": None,
                "auroc_change": None,
                "oe_new": 1.01,
                "oe_old": 0.97,
                "oe_change": 0.04,
            },
        ],
        "gates": [
            {
                "name": "oe_within_band",
                "subject": "ethnic_group=Not stated",
                "passed": True,
                "detail": "O/E 1.12 within [0.8, 1.25]",
            },
            {
                "name": "auroc_gap",
                "subject": "sex=F",
                "passed": True,
                "detail": "AUROC 0.805 vs overall 0.812: gap 0.007 <= 0.05",
            },
            {
                "name": "calibration_slope",
                "subject": "overall",
                "passed": False,
                "detail": "slope 0.97 | target [0.9, 1.1]\nsecond line",
            },
        ],
        "gates_passed": False,
        "champion_comparison": {
            "champion_version": "6",
            "champion_auroc": ci(0.806, 0.794, 0.818),
            "challenger_auroc": ci(0.812, 0.801, 0.824),
            "difference": ci(0.006, -0.002, 0.014),
            "tolerance": 0.01,
        },
        "plots": {key: f"plots/{name}" for key, name in PLOT_FILES.items()},
    }


# Smallest valid PNG: 1x1 grey pixel.
def _tiny_png() -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return len(data).to_bytes(4, "big") + body + zlib.crc32(body).to_bytes(4, "big")

    header = (1).to_bytes(4, "big") * 2 + bytes([8, 0, 0, 0, 0])
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\x00\x80"))
        + chunk(b"IEND", b"")
    )


def write_example_plots(folder: Path) -> Path:
    """Write a tiny PNG for every plot in ``PLOT_FILES`` into ``folder``; return it."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in PLOT_FILES.values():
        (folder / name).write_bytes(_tiny_png())
    return folder


@pytest.fixture
def card_context() -> dict[str, Any]:
    """A complete example card context (a fresh copy for each test)."""
    return example_context()


@pytest.fixture
def plots_dir(tmp_path: Path) -> Path:
    """A folder holding every plot the example context links."""
    return write_example_plots(tmp_path / "artefacts" / "plots")


# --------------------------------------------------------------------------------------------
# Formatting helpers


def test_ci_formats():
    assert format_ci(ci(0.8123, 0.8011, 0.8239)) == "0.812 (95% CI 0.801-0.824)"
    assert format_ci(ci(0.99, 0.94, 1.05), 2) == "0.99 (95% CI 0.94-1.05)"
    assert format_ci(ci(0.8123, 0.8011, 0.8239), 3, True) == "0.812 (0.801-0.824)"
    assert format_ci(ci(0.006, -0.002, 0.014)) == "0.006 (95% CI -0.002 to 0.014)"
    assert format_ci(ci(0.5, None, None)) == "0.500 (95% CI n/a)"
    assert format_ci(None) == "n/a"
    assert format_ci(ci(float("nan"), None, None)) == "n/a"
    assert format_ci_pct(ci(0.0512, 0.048, 0.054)) == "5.1% (95% CI 4.8%-5.4%)"
    assert format_ci_pct(ci(0.0512, 0.048, 0.054), 1, True) == "5.1% (4.8-5.4)"


def test_other_formats():
    assert format_pct(0.0512) == "5.1%"
    assert format_pct(None) == "n/a"
    assert format_number(198432) == "198,432"
    assert format_number(1234.5, 1) == "1,234.5"
    assert format_signed(0.012) == "+0.012"
    assert format_signed(-0.004) == "-0.004"
    assert format_signed(None) == "n/a"
    assert na(None) == "n/a" and na(0) == 0
    assert table_cell("a | b\nc") == "a \\| b c"
    assert format_months(["2024-01", "2024-02", "2024-03"]) == "2024-01 to 2024-03 (3 months)"
    assert format_months([]) == "none"
    assert thin(list(range(30)), 4) == [0, 10, 19, 29]
    assert thin([1, 2], 10) == [1, 2]


# --------------------------------------------------------------------------------------------
# Markdown


def test_markdown_has_every_section_and_the_key_statements(card_context, plots_dir):
    markdown, _ = render_card(card_context, template=TEMPLATE, plots_dir=plots_dir)
    for heading in SECTION_HEADINGS:
        assert f"\n{heading}\n" in markdown, heading
    assert markdown.startswith("# Model card: riskstrat-emergency-admission-90d version 7\n")
    assert "0.812 (95% CI 0.801-0.824)" in markdown  # AUROC with its CI
    assert "not a falls risk prediction tool" in markdown
    assert "It is not a diagnosis" in markdown
    assert "NICE NG249" in markdown
    assert "A clinician decides" in markdown
    # monotone constraints in plain English
    assert "the predicted risk never goes down: `emergency_admissions_365d`" in markdown
    # lists at 1/5/10%, recall share, oracle, synthetic caveat
    for share in ("Top 1%", "Top 5%", "Top 10%"):
        assert f"| {share} |" in markdown
    assert "flag 32.2% (95% CI 30.5%-34.1%) of the population" in markdown
    assert "| AUROC | 0.846 | 0.812 |" in markdown
    assert "synthetic population" in markdown


def test_markdown_tables(card_context, plots_dir):
    markdown, _ = render_card(card_context, template=TEMPLATE, plots_dir=plots_dir)
    lines = markdown.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("| ID | Hazard |"))
    assert lines[header] == (
        "| ID | Hazard | Cause | Effect | Existing controls | Residual-risk notes |"
    )
    hazard_rows = [line for line in lines[header + 2 :] if line.startswith("| H")]
    assert len(hazard_rows) >= 7
    for hazard in HAZARDS:
        assert any(hazard in row for row in hazard_rows), hazard
    # every table row has as many cells as its header (pipes inside cells are escaped)
    cells = re.compile(r"(?<!\\)\|")
    in_table, width = False, 0
    for line in lines:
        if line.startswith("|"):
            n = len(cells.findall(line))
            if not in_table:
                in_table, width = True, n
            assert n == width, line
        else:
            in_table = False
    # subgroup tables: the non-estimable group is marked, the overall row is there
    assert "| Mixed \\| multiple (too small to estimate) | 120 | 4 | not estimable |" in markdown
    assert markdown.count("| **All people** |") == 4
    assert "### Ethnic group" in markdown and "### IMD quintile" in markdown
    # gates: a failure is marked and summarised, detail flattened to one line
    assert "| **FAIL** | slope 0.97 \\| target [0.9, 1.1] second line |" in markdown
    assert "**1 of 3 gates failed:**" in markdown
    assert "| No worse than the champion | Yes |" in markdown
    assert "**not eligible** for promotion" in markdown
    # the baseline table marks the model's own row
    assert "| reference |" in markdown


def test_markdown_links_plots_by_relative_path(card_context, plots_dir):
    markdown, _ = render_card(card_context, template=TEMPLATE, plots_dir=plots_dir)
    assert sorted(image_sources(markdown)) == sorted(f"plots/{n}" for n in PLOT_FILES.values())
    assert "](plots/roc.png)" in markdown


# --------------------------------------------------------------------------------------------
# HTML


def test_html_is_standalone(card_context, plots_dir):
    _, page = render_card(card_context, template=TEMPLATE, plots_dir=plots_dir)
    assert page.startswith("<!DOCTYPE html>")
    assert '<html lang="en">' in page
    assert "<title>Model card: riskstrat-emergency-admission-90d version 7</title>" in page
    assert "@media print" in page
    assert 'src="plots/' not in page
    images = re.findall(r"<img [^>]*>", page)
    assert len(images) == len(PLOT_FILES)
    for img in images:
        assert 'src="data:image/png;base64,' in img
        alt = re.search(r'alt="([^"]*)"', img)
        assert alt and len(alt.group(1)) > 10
    assert "<th" in page and "<table>" in page
    assert "http://" not in page and "https://" not in page  # nothing fetched from elsewhere


def test_html_escapes_text(card_context, plots_dir):
    card_context["model"]["name"] = "<script>alert(1)</script>"
    markdown, page = render_card(card_context, template=TEMPLATE, plots_dir=plots_dir)
    assert "<script>" in markdown  # Markdown is not escaped
    assert "<script>" not in page
    assert "&lt;script&gt;" in page


def test_optional_parts_missing_still_render(card_context, plots_dir):
    card_context["oracle"] = None
    card_context["champion_comparison"] = None
    card_context["fairness_comparison"] = None
    card_context["stability"] = []
    card_context["gates_passed"] = True
    for gate in card_context["gates"]:
        gate["passed"] = True
    del card_context["plots"]["calibration"]
    (plots_dir / PLOT_FILES["calibration"]).unlink()
    markdown, page = render_card(card_context, template=TEMPLATE, plots_dir=plots_dir)
    for heading in SECTION_HEADINGS:
        assert heading in markdown
    assert "plots/calibration.png" not in markdown
    assert "Not applicable. The true risk is known only for synthetic populations" in markdown
    assert "No champion comparison was recorded" in markdown
    assert "There is no previous version to compare with." in markdown
    assert "No per-month results" in markdown
    assert "**All 3 gates passed.**" in markdown
    assert "**eligible** for promotion" in markdown
    assert "Synthetic data." not in markdown
    assert len(re.findall(r"<img ", page)) == len(PLOT_FILES) - 2  # calibration, stability


def test_no_plots_at_all(card_context):
    card_context["plots"] = {}
    markdown, page = render_card(card_context, template=TEMPLATE)
    assert "![" not in markdown
    assert "<img" not in page


def test_the_ci_level_labels_every_interval(card_context, plots_dir):
    card_context["evaluation"]["ci_level"] = 0.9
    markdown, _ = render_card(card_context, template=TEMPLATE, plots_dir=plots_dir)
    assert "0.812 (90% CI 0.801-0.824)" in markdown
    assert "| AUROC (90% CI) |" in markdown
    assert "95% CI" not in markdown


def test_a_recorded_forced_promotion_is_shown(card_context, plots_dir):
    card_context["promotion"] = {
        "decision": "promoted to champion",
        "forced": True,
        "reason": "urgent fix for a data feed change",
        "decided_by": "analyst@example.nhs.uk",
        "decided_at": "2026-11-21",
    }
    markdown, _ = render_card(card_context, template=TEMPLATE, plots_dir=plots_dir)
    assert "Recorded decision: **promoted to champion**" in markdown
    assert "This promotion was forced" in markdown
    assert '"urgent fix for a data feed change"' in markdown


def test_champion_verdict_from_the_registry_wins(card_context, plots_dir):
    card_context["champion_comparison"]["not_worse"] = False
    markdown, _ = render_card(card_context, template=TEMPLATE, plots_dir=plots_dir)
    assert "| No worse than the champion | **No** |" in markdown


@pytest.mark.parametrize(
    "remove",
    [("evaluation",), ("model", "calibration_method"), ("fairness", "overall"), ("gates_passed",)],
)
def test_a_missing_required_key_is_an_error(card_context, plots_dir, remove):
    target = card_context
    for key in remove[:-1]:
        target = target[key]
    del target[remove[-1]]
    with pytest.raises(jinja2.UndefinedError):
        render_card(card_context, template=TEMPLATE, plots_dir=plots_dir)


def test_a_linked_plot_that_is_not_there_is_an_error(card_context, plots_dir):
    (plots_dir / PLOT_FILES["roc"]).unlink()
    with pytest.raises(FileNotFoundError, match=r"roc\.png"):
        render_card(card_context, template=TEMPLATE, plots_dir=plots_dir)
    with pytest.raises(ValueError, match="plots_dir"):
        render_card(card_context, template=TEMPLATE)


def test_images_need_alt_text_and_a_plots_link(tmp_path, plots_dir):
    template = tmp_path / "t.md.j2"
    template.write_text("# {{ title }}\n\n![](plots/roc.png)\n", encoding="utf-8")
    with pytest.raises(ValueError, match="alt text"):
        render_card({"title": "x"}, template=template, plots_dir=plots_dir)
    template.write_text("# x\n\n![roc](../secret.png)\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"plots/<file>"):
        render_card({}, template=template, plots_dir=plots_dir)


# --------------------------------------------------------------------------------------------
# Files


def test_write_card_writes_both_files_and_the_plots(card_context, plots_dir, tmp_path):
    out = tmp_path / "card"
    md_path, html_path = write_card(
        card_context, template=TEMPLATE, out_dir=out, plots_dir=plots_dir
    )
    assert md_path == out / "card.md" and html_path == out / "card.html"
    markdown = md_path.read_text(encoding="utf-8")
    assert "## 12. Patient-safety notes" in markdown
    assert '<html lang="en">' in html_path.read_text(encoding="utf-8")
    for src in image_sources(markdown):
        copied = out / src
        assert copied.is_file()
        assert copied.read_bytes() == (plots_dir / Path(src).name).read_bytes()


def test_write_card_reads_plots_already_in_place(card_context, tmp_path):
    out = tmp_path / "card"
    write_example_plots(out / "plots")
    md_path, html_path = write_card(card_context, template=TEMPLATE, out_dir=out)
    assert md_path.is_file() and html_path.is_file()
    assert sorted(p.name for p in (out / "plots").iterdir()) == sorted(PLOT_FILES.values())


def test_example_context_is_not_shared_between_calls():
    a, b = example_context(), example_context()
    a["model"]["name"] = "changed"
    assert b["model"]["name"] != "changed"
    assert copy.deepcopy(b) == example_context()


def test_the_data_section_says_what_identifies_people_and_which_codelists_mapped_them(
    card_context, plots_dir
):
    from riskstrat.pipelines.evaluate import codelist_summary

    markdown, _ = render_card(card_context, template=TEMPLATE, plots_dir=plots_dir)
    assert "| People identified by | NHS numbers |" in markdown
    assert "| Codelists |" not in markdown  # a synthetic extract has none
    provenance = {
        "omop": {"cdm_version": "5.4"},
        "codelists": {
            "digest": "a7407d647d25a57a" + "0" * 48,
            "versions": {"conditions/AF": "1.0.0", "conditions/COPD": "1.0.0",
                         "observations/SMOKER": "1.0.1"},
        },
    }  # fmt: skip
    card_context["data"]["identifiers"] = "pseudonyms (the source's own person ids)"
    card_context["data"]["codelists"] = codelist_summary(provenance)
    markdown, _ = render_card(card_context, template=TEMPLATE, plots_dir=plots_dir)
    assert "| People identified by | pseudonyms (the source's own person ids) |" in markdown
    assert (
        "| Codelists | OMOP CDM 5.4 import; codelists digest a7407d647d25a57a, 3 lists at "
        "version 1.0.0, except observations/SMOKER 1.0.1 |" in markdown
    )
    assert codelist_summary({}) == ""
