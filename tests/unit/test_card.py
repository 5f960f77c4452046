"""The model card: Markdown from the template, standalone HTML, and files on disk.

``example_context()`` builds a complete card context (every key of
``riskstrat.reports.card.CardContext``) with made-up but consistent numbers; ``example_evaluation()``
and ``example_audit()`` build the evaluation and fairness-audit dicts on their own. The
``card_context`` and ``plots_dir`` fixtures wrap them for tests.
"""

from __future__ import annotations

import copy
import re
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
from tests.support.cards import ci, example_context, write_example_plots

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


def test_a_mortality_spec_and_censored_time_say_so_on_the_card(card_context, plots_dir):
    from riskstrat.features.labels import OUTCOMES
    from riskstrat.modelling.spec import load_spec
    from riskstrat.resources import model_dir

    spec = load_spec(model_dir("death_12m"))
    context = copy.deepcopy(card_context)
    death = OUTCOMES["death"]
    context["model"] |= {
        "horizon_days": 365,
        "outcome": death.model_dump(include={"name", "noun", "plural", "happened", "rate"})
        | {"definition": death.definition},
        "intended_use": spec.card.intended_use,
        "out_of_scope": spec.card.out_of_scope,
    }
    context["data"]["post_intervention"] = {
        "policy": "censor", "interventions": ["FALLS_ASSESSMENT"], "censored_rows": 1234,
    }  # fmt: skip
    markdown, _ = render_card(context, template=TEMPLATE, plots_dir=plots_dir)
    assert "the probability of death from any cause in the 365 days" in markdown
    assert "died within 365 days" in markdown and "under-predicts deaths" in markdown
    assert "dying in the next 12 months" in markdown  # the spec's intended use
    assert "must not be used to withhold or limit treatment" in markdown
    assert "**It is not a falls risk prediction tool.**" not in markdown
    assert "predicts the risk of death from any cause under current care" in markdown
    assert "because they predict deaths" in markdown
    assert "censored: a person-month with FALLS_ASSESSMENT" in markdown and "1,234" in markdown
    # A generated population with no oracle for this outcome still says it is synthetic.
    context["oracle"] = None
    context["data"]["synthetic"] = True
    markdown, _ = render_card(context, template=TEMPLATE, plots_dir=plots_dir)
    assert "- **Synthetic data.**" in markdown
    assert "this model predicts deaths, so there is no oracle" in markdown


def test_a_context_stored_before_outcomes_were_recorded_still_renders(card_context, plots_dir):
    context = copy.deepcopy(card_context)
    for key in ("outcome", "intended_use", "out_of_scope"):
        context["model"].pop(key, None)
    context["data"].pop("post_intervention", None)
    markdown, _ = render_card(context, template=TEMPLATE, plots_dir=plots_dir)
    assert "one or more emergency admissions in the 90 days" in markdown
    assert "included: the outcome counts whatever care followed" in markdown
    assert "The lists themselves change the outcome" in markdown
