"""The model card: Markdown from a Jinja2 template, and a standalone HTML copy of it.

``render_card`` fills the template (``models/<name>/card.md.j2``) from a plain ``dict`` whose
shape is :class:`CardContext` below, with ``StrictUndefined``, so a missing key is an error
rather than a blank in a safety document. Plot images are linked from the Markdown as
``plots/<file>.png``; the HTML embeds each one as a base64 data URI read from ``plots_dir``,
so the HTML file is the whole card. ``write_card`` writes ``card.md``, ``card.html`` and a
``plots/`` folder beside them, so the Markdown's links work too.

Template filters: ``ci`` ("0.812 (95% CI 0.801-0.824)", or ``ci(3, true)`` for the short
"0.812 (0.801-0.824)"), ``ci_pct`` (the same in percent),
``pct``, ``num`` (thousands separators), ``signed`` ("+0.012"), ``na`` ("n/a" for None),
``cell`` (safe inside a Markdown table cell), ``months`` (a run of index months),
``thin`` (at most n evenly spaced items), ``list_at`` (the list entry for a share),
``by_attribute`` (audit groups by attribute, in order) and ``label`` (an attribute's name).
The global ``level`` is the CI level as text ("95%").
"""

from __future__ import annotations

import base64
import html
import math
import mimetypes
import shutil
from collections.abc import Mapping, Sequence
from functools import partial
from pathlib import Path, PurePosixPath
from typing import Any, NotRequired, TypedDict

import jinja2
from markdown_it import MarkdownIt
from markdown_it.renderer import RendererHTML
from markdown_it.token import Token

from riskstrat.errors import ConfigError, MissingFileError, UsageError

# --------------------------------------------------------------------------------------------
# The context the template is filled from


class CI(TypedDict):
    """A point estimate and its 95% confidence interval (bounds None when not estimable)."""

    value: float
    lo: float | None
    hi: float | None


class OutcomeWords(TypedDict):
    """The outcome, as the card says it."""

    name: str  # e.g. "emergency_admission", "death"
    noun: str  # e.g. "one or more emergency admissions"
    plural: str  # e.g. "emergency admissions"
    happened: str  # e.g. "were admitted"
    rate: str  # e.g. "admission rate"
    definition: str  # the contract rows that count, e.g. "deaths: patients rows, dated by ..."


class ModelInfo(TypedDict):
    """The registered model version."""

    name: str  # registered model name, e.g. "riskstrat-emergency-admission-90d"
    version: str  # registry version, e.g. "7"
    created_at: str  # ISO date or datetime of the training run
    run_id: str  # MLflow run id
    spec_source: str  # e.g. "models/emergency_admission_90d/spec.yaml" (+ git commit if known)
    horizon_days: int  # outcome window in days, e.g. 90
    # What is predicted, in words (``features.labels.OutcomeDefinition``); the spec's own
    # intended use (None: the admission model's text); a further out-of-scope use it names.
    # Absent in contexts stored before them, which read as the admission model's.
    outcome: NotRequired[OutcomeWords]
    intended_use: NotRequired[str | None]
    out_of_scope: NotRequired[str | None]
    algorithm: str  # e.g. "LightGBM gradient-boosted trees (binary log-loss), 312 trees"
    n_features: int
    features: list[str]
    monotone_increasing: list[str]  # features whose increase never lowers the risk
    monotone_decreasing: list[str]  # features whose increase never raises the risk
    calibration_method: str  # e.g. "isotonic regression on the calibration months"
    # The season the trees start from (``modelling.seasons.SeasonalBaseline.as_dict``), or None
    seasonal_baseline: NotRequired[dict[str, float] | None]


class DataInfo(TypedDict):
    """Where the rows came from and how the index months were split."""

    extract_date: str
    source: str  # e.g. "synthetic extract (riskstrat generate, seed 1)" or the ICB's feed
    train_months: list[str]  # "YYYY-MM", oldest first
    early_stopping_months: list[str]
    early_stopping_people: float  # share of people held out of the training months (0: none)
    calibration_months: list[str]
    evaluation_months: list[str]  # held out, later than every month above
    primary_month: str  # the held-out month the headline metrics come from
    train_rows: int
    evaluation_rows: int  # rows in the primary month
    population: str  # plain-English eligible population, e.g. "registered and alive on ..."
    # How time after an intervention the lists trigger was treated (``training``
    # ``post_intervention``): {"policy": "include" | "censor", "interventions": [codes],
    # "censored_rows": person-months left out, or None where not counted}
    post_intervention: NotRequired[dict[str, Any]]
    synthetic: NotRequired[bool]  # a generated population (with or without an oracle)
    identifiers: str  # "NHS numbers" or "pseudonyms ..." (the extract's identifier_kind)
    codelists: str  # for an imported extract: the codelists it was mapped with; else ""


class Baseline(TypedDict):
    """One row of the baseline comparison; the model itself is the first row."""

    name: str
    auroc: CI
    auprc: CI
    brier: CI
    oe: CI
    auroc_difference: CI | None  # this model minus the baseline; None on the model's own row


class Oracle(TypedDict):
    """The generator's true risk on synthetic data (None on real data)."""

    auroc: float  # the oracle's AUROC on the primary month
    model_auroc: float
    ratio: float  # model_auroc / auroc
    share_flagged_for_recall: float  # the oracle's share flagged to catch recall_target


class StabilityMonth(TypedDict):
    """Metrics for one held-out index month."""

    month: str
    rows: int
    events: int
    auroc: CI
    oe: CI
    brier: CI


class FairnessChange(TypedDict):
    """One group's change against the previous model version (point estimates)."""

    attribute: str
    group: str
    auroc_new: float | None
    auroc_old: float | None
    auroc_change: float | None
    oe_new: float | None
    oe_old: float | None
    oe_change: float | None


class Gate(TypedDict):
    """One promotion gate's result."""

    name: str
    subject: str
    passed: bool
    detail: str


class ChampionComparison(TypedDict):
    """This version against the current champion on the same held-out months."""

    champion_version: str
    champion_auroc: CI
    challenger_auroc: CI
    difference: CI  # challenger minus champion
    tolerance: float  # the challenger may be at most this much below the champion
    #: The registry's verdict. Without it the card applies ``difference.value >= -tolerance``.
    not_worse: NotRequired[bool]


class Promotion(TypedDict):
    """A recorded promotion decision, when one has been made (optional in the context)."""

    decision: str  # e.g. "promoted to champion", "not promoted", "forced to champion"
    forced: bool
    reason: str | None
    decided_by: str | None
    decided_at: str | None


class ExternalValidation(TypedDict):
    """One evaluation of this version on another population (``riskstrat evaluate``)."""

    source: str  # the other extract's manifest source, e.g. "ICB B feed"
    data_digest: str  # digest of that extract's manifest (which files, how many rows)
    extract_date: str
    month: str  # the primary held-out month there
    rows: int
    events: int
    auroc: CI
    oe: CI
    slope: CI
    gates_passed: bool
    gate_failures: list[str]  # "name (subject)" of each failed gate
    run_id: str  # the MLflow run that holds the whole evaluation


class Lineage(TypedDict):
    """Where a locally recalibrated version came from (``riskstrat recalibrate``)."""

    parent_version: str
    recalibrated_on: str  # the extract's source, date and digest
    method: str  # the calibration method refitted
    calibration_months: list[str]


class CardContext(TypedDict):
    """Everything the card template reads. ``evaluation`` and ``fairness`` are the dicts that
    ``riskstrat.modelling.evaluation.evaluate_predictions`` and
    ``riskstrat.fairness.subgroups.fairness_audit`` return; ``plots`` maps a key of
    ``riskstrat.reports.plots.PLOT_FILES`` to ``"plots/<file>"`` for each plot that exists (a
    missing key skips that image).
    """

    model: ModelInfo
    data: DataInfo
    evaluation: dict[str, Any]
    baselines: list[Baseline]
    oracle: Oracle | None
    stability: list[StabilityMonth]
    fairness: dict[str, Any]
    fairness_comparison: list[FairnessChange] | None
    gates: list[Gate]
    gates_passed: bool
    champion_comparison: ChampionComparison | None
    plots: dict[str, str]
    promotion: NotRequired[Promotion | None]
    #: The spec's model-quality targets on point estimates (``Gate``-shaped: passed = met).
    targets: NotRequired[list[Gate]]
    #: Evaluations on other populations, newest last; the section shows only when present.
    external_validation: NotRequired[list[ExternalValidation]]
    lineage: NotRequired[Lineage | None]


# --------------------------------------------------------------------------------------------
# Formatting helpers (also the template's filters)

NA = "n/a"

ATTRIBUTE_LABELS = {
    "sex": "Sex",
    "age_band": "Age band",
    "imd_quintile": "IMD quintile",
    "ethnic_group": "Ethnic group",
}


def _number(value: Any) -> float | None:
    if value is None:
        return None
    try:
        x = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(x) else x


def na(value: Any) -> Any:
    """``"n/a"`` for None (or NaN), the value otherwise."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return NA
    return value


def _level_label(level: float) -> str:
    return f"{100 * level:g}%"


def format_ci(
    ci: Mapping[str, Any] | None, digits: int = 3, short: bool = False, *, level: float = 0.95
) -> str:
    """``"0.812 (95% CI 0.801-0.824)"``; ``"n/a"`` when the CI or its value is missing.

    ``short=True`` gives ``"0.812 (0.801-0.824)"`` for tables whose header says "95% CI";
    ``level`` is the interval's coverage, for the label.
    Bounds that are negative are joined with "to" ("-0.010 to 0.004"), so signs stay readable.
    """
    if ci is None:
        return NA
    value = _number(ci.get("value"))
    if value is None:
        return NA
    lo, hi = _number(ci.get("lo")), _number(ci.get("hi"))
    text = f"{value:.{digits}f}"
    label = "" if short else f"{_level_label(level)} CI "
    if lo is None or hi is None:
        return f"{text} (CI n/a)" if short else f"{text} ({_level_label(level)} CI n/a)"
    joiner = " to " if lo < 0 or hi < 0 else "-"
    return f"{text} ({label}{lo:.{digits}f}{joiner}{hi:.{digits}f})"


def format_pct(value: Any, digits: int = 1) -> str:
    """A proportion as a percentage: ``0.0512`` -> ``"5.1%"``; ``"n/a"`` for None."""
    x = _number(value)
    return NA if x is None else f"{100 * x:.{digits}f}%"


def format_ci_pct(
    ci: Mapping[str, Any] | None, digits: int = 1, short: bool = False, *, level: float = 0.95
) -> str:
    """A proportion's CI in percent: ``"5.1% (95% CI 4.8%-5.4%)"``; ``"n/a"`` if missing.

    ``short=True`` gives ``"5.1% (4.8-5.4)"``.
    """
    if ci is None:
        return NA
    value = _number(ci.get("value"))
    if value is None:
        return NA
    lo, hi = _number(ci.get("lo")), _number(ci.get("hi"))
    text = format_pct(value, digits)
    label = _level_label(level)
    if lo is None or hi is None:
        return f"{text} (CI n/a)" if short else f"{text} ({label} CI n/a)"
    if short:
        return f"{text} ({100 * lo:.{digits}f}-{100 * hi:.{digits}f})"
    return f"{text} ({label} CI {format_pct(lo, digits)}-{format_pct(hi, digits)})"


def format_number(value: Any, digits: int | None = None) -> str:
    """Thousands separators: ``12345`` -> ``"12,345"``; ``digits`` decimals for floats."""
    x = _number(value)
    if x is None:
        return NA
    if digits is None:
        return f"{int(x):,}" if x.is_integer() else f"{x:,.2f}"
    return f"{x:,.{digits}f}"


def format_signed(value: Any, digits: int = 3) -> str:
    """A difference with its sign: ``"+0.012"``, ``"-0.004"``; ``"n/a"`` for None."""
    x = _number(value)
    return NA if x is None else f"{x:+.{digits}f}"


def table_cell(value: Any) -> str:
    """Text safe inside a Markdown table cell: pipes escaped, line breaks flattened."""
    text = str(na(value))
    return " ".join(text.replace("|", "\\|").split())


def format_months(months: Sequence[str]) -> str:
    """``"2024-01 to 2024-12 (12 months)"``, one month as itself, ``"none"`` when empty."""
    items = [str(m) for m in months]
    if not items:
        return "none"
    if len(items) == 1:
        return items[0]
    return f"{items[0]} to {items[-1]} ({len(items)} months)"


def thin(items: Sequence[Any], limit: int = 10) -> list[Any]:
    """At most ``limit`` items, evenly spaced, always keeping the first and the last."""
    items = list(items)
    if len(items) <= limit:
        return items
    if limit < 2:
        return items[: max(limit, 0)]
    step = (len(items) - 1) / (limit - 1)
    return [items[round(i * step)] for i in range(limit)]


def list_at(lists: Sequence[Mapping[str, Any]], share: float) -> Mapping[str, Any] | None:
    """The evaluation's list entry for ``share`` (e.g. 0.05), or None."""
    for entry in lists:
        if math.isclose(float(entry["share"]), share, abs_tol=1e-9):
            return entry
    return None


def by_attribute(groups: Sequence[Mapping[str, Any]]) -> list[tuple[str, list[Mapping[str, Any]]]]:
    """Audit groups as ``(attribute, groups)`` pairs, in the order attributes first appear."""
    out: dict[str, list[Mapping[str, Any]]] = {}
    for g in groups:
        out.setdefault(str(g["attribute"]), []).append(g)
    return list(out.items())


def attribute_label(attribute: str) -> str:
    """``"imd_quintile"`` -> ``"IMD quintile"``."""
    return ATTRIBUTE_LABELS.get(attribute, attribute.replace("_", " ").capitalize())


_FILTERS: dict[str, Any] = {
    "ci": format_ci,
    "ci_pct": format_ci_pct,
    "pct": format_pct,
    "num": format_number,
    "signed": format_signed,
    "na": na,
    "cell": table_cell,
    "months": format_months,
    "thin": thin,
    "list_at": list_at,
    "by_attribute": by_attribute,
    "label": attribute_label,
}


# --------------------------------------------------------------------------------------------
# Rendering


def _environment(template_dir: Path, *, level: float = 0.95) -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(template_dir),
        undefined=jinja2.StrictUndefined,
        autoescape=False,  # noqa: S701 - the output is Markdown; the HTML step escapes
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters.update(_FILTERS)
    env.filters["ci"] = partial(format_ci, level=level)
    env.filters["ci_pct"] = partial(format_ci_pct, level=level)
    env.globals["level"] = _level_label(level)
    return env


def render_markdown(context: Mapping[str, Any], *, template: Path) -> str:
    """The card as Markdown: ``template`` filled from ``context`` (see :class:`CardContext`).

    Intervals are labelled with ``evaluation["ci_level"]`` (default 0.95); the template sees
    it as ``level`` ("95%"). Raises ``jinja2.UndefinedError`` when the template reads a key
    the context lacks.
    """
    template = Path(template)
    evaluation = context.get("evaluation")
    level = evaluation.get("ci_level", 0.95) if isinstance(evaluation, Mapping) else 0.95
    env = _environment(template.parent, level=float(level))
    text = env.get_template(template.name).render(**context)
    # Blank lines left by skipped blocks: never more than one in a row.
    lines: list[str] = []
    for line in text.splitlines():
        if line.strip() or (lines and lines[-1].strip()):
            lines.append(line.rstrip())
    return "\n".join(lines).strip() + "\n"


def _markdown_parser() -> MarkdownIt:
    # Raw HTML in the Markdown is shown as text, never passed through.
    return MarkdownIt("commonmark", {"html": False}).enable("table")


def _images(tokens: Sequence[Token]) -> list[Token]:
    return [c for t in tokens if t.children for c in t.children if c.type == "image"]


#: What to do about an image the card template links wrongly.
_TEMPLATE_HINT = "fix the image in the card template (card.md.j2 beside the model's spec.yaml)"


def _check_image_source(src: str) -> PurePosixPath:
    rel = PurePosixPath(src)
    if "://" in src or src.startswith(("data:", "/")) or ".." in rel.parts:
        raise ConfigError(
            f"card images must be linked as plots/<file>, not {src!r}", hint=_TEMPLATE_HINT
        )
    if len(rel.parts) < 2 or rel.parts[0] != "plots":
        raise ConfigError(
            f"card images must be linked as plots/<file>, not {src!r}", hint=_TEMPLATE_HINT
        )
    return rel


def image_sources(markdown: str) -> list[str]:
    """The ``src`` of every image in ``markdown``, in order (e.g. ``["plots/roc.png"]``)."""
    parser = _markdown_parser()
    return [str(img.attrGet("src")) for img in _images(parser.parse(markdown))]


def _image_file(src: str, plots_dir: Path) -> Path:
    rel = _check_image_source(src)
    return plots_dir.joinpath(*rel.parts[1:])


def _data_uri(path: Path) -> str:
    mime = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    return f"data:{mime};base64,{base64.b64encode(path.read_bytes()).decode('ascii')}"


_CSS = """
:root { color-scheme: light; }
body { font-family: system-ui, -apple-system, "Segoe UI", Arial, sans-serif; font-size: 16px;
  line-height: 1.55; color: #1a1a1a; background: #ffffff; margin: 0; }
main { max-width: 62rem; margin: 0 auto; padding: 1.5rem 1.25rem 3rem; }
h1 { font-size: 1.9rem; line-height: 1.25; border-bottom: 3px solid #005eb8;
  padding-bottom: 0.4rem; }
h2 { font-size: 1.45rem; margin-top: 2.4rem; border-bottom: 1px solid #c8c8c8;
  padding-bottom: 0.25rem; }
h3 { font-size: 1.15rem; margin-top: 1.6rem; }
p, li { max-width: 48rem; }
a { color: #005eb8; }
code { font-family: ui-monospace, Consolas, monospace; font-size: 0.88em;
  background: #f2f2f2; padding: 0.05em 0.3em; border-radius: 3px; }
blockquote { margin: 1rem 0; padding: 0.6rem 1rem; border-left: 5px solid #005eb8;
  background: #eef4fb; }
table { border-collapse: collapse; margin: 0.8rem 0 1.2rem; font-size: 0.9rem; }
th, td { border: 1px solid #b8b8b8; padding: 0.3rem 0.55rem; vertical-align: top; }
th { background: #e8edf2; font-weight: 600; text-align: left; }
tbody tr:nth-child(even) { background: #f7f7f7; }
img { max-width: 100%; height: auto; display: block; margin: 0.8rem 0; }
@media screen { table { display: block; overflow-x: auto; max-width: 100%; } }
@media print {
  @page { size: A4; margin: 15mm 12mm; }
  body { font-size: 10.5pt; color: #000000; }
  main { max-width: none; padding: 0; }
  h1 { border-bottom-color: #000000; }
  h2, h3 { break-after: avoid; page-break-after: avoid; }
  h2 { break-before: auto; }
  table { font-size: 8.5pt; display: table; }
  tr, img, blockquote { break-inside: avoid; page-break-inside: avoid; }
  thead { display: table-header-group; }
  th { background: #e8e8e8 !important; print-color-adjust: exact;
    -webkit-print-color-adjust: exact; }
  img { max-height: 24cm; }
  a { color: #000000; text-decoration: underline; }
}
"""


def markdown_to_html(markdown: str, *, plots_dir: Path | None, title: str | None = None) -> str:
    """A standalone HTML document of ``markdown``: tables, and images as data URIs.

    The ``<title>`` is ``title``, else the text of the first level-1 heading.

    Every image must be linked as ``plots/<file>`` with alt text; the file is read from
    ``plots_dir / <file>``. Raises ``ConfigError`` for an image without alt text or linked any
    other way, ``UsageError`` when ``plots_dir`` is None (both ``ValueError``), and
    ``MissingFileError`` (a ``FileNotFoundError``) for a missing file.
    """
    parser = _markdown_parser()
    renderer = parser.renderer
    assert isinstance(renderer, RendererHTML)
    env: dict[str, Any] = {}
    tokens = parser.parse(markdown, env)
    for img in _images(tokens):
        src = str(img.attrGet("src"))
        alt = renderer.renderInlineAsText(img.children or [], parser.options, env)
        if not alt.strip():
            raise ConfigError(f"image {src!r} has no alt text", hint=_TEMPLATE_HINT)
        if plots_dir is None:
            raise UsageError("plots_dir is needed to embed the card's images in the HTML")
        path = _image_file(src, Path(plots_dir))
        if not path.is_file():
            raise MissingFileError(f"plot {src!r} not found at {path}")
        img.attrSet("src", _data_uri(path))
    for token in tokens:
        if token.type == "th_open":
            token.attrSet("scope", "col")
    body = renderer.render(tokens, parser.options, env)
    title = title or _first_heading(tokens) or "Model card"
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n'
        "<head>\n"
        '<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        '<meta name="generator" content="riskstrat">\n'
        f"<title>{html.escape(title)}</title>\n"
        f"<style>{_CSS}</style>\n"
        "</head>\n"
        "<body>\n"
        "<main>\n"
        f"{body}"
        "</main>\n"
        "</body>\n"
        "</html>\n"
    )


def _first_heading(tokens: Sequence[Token]) -> str | None:
    for i, token in enumerate(tokens[:-1]):
        if token.type == "heading_open" and token.tag == "h1":
            return "".join(
                child.content
                for child in tokens[i + 1].children or []
                if child.type in ("text", "code_inline")
            )
    return None


def render_card(
    context: Mapping[str, Any], *, template: Path, plots_dir: Path | None = None
) -> tuple[str, str]:
    """The model card as ``(markdown, html)``.

    The Markdown comes from the Jinja2 ``template`` filled from ``context`` (a
    :class:`CardContext`) and links its plots as ``plots/<file>.png``. The HTML is one
    standalone document, titled by the Markdown's first heading, with each plot embedded
    from ``plots_dir`` as a data URI. Raises ``jinja2.UndefinedError`` for a missing context
    key, ``FileNotFoundError`` for a linked plot that is not in ``plots_dir``, and
    ``ValueError`` when plots are linked but ``plots_dir`` is None.
    """
    markdown = render_markdown(context, template=template)
    page = markdown_to_html(markdown, plots_dir=Path(plots_dir) if plots_dir is not None else None)
    return markdown, page


def write_card(
    context: Mapping[str, Any],
    *,
    template: Path,
    out_dir: Path,
    plots_dir: Path | None = None,
) -> tuple[Path, Path]:
    """Write ``card.md``, ``card.html`` and the linked plots into ``out_dir``.

    Plots are read from ``plots_dir`` (default ``out_dir / "plots"``) and copied to
    ``out_dir / "plots"`` so the Markdown's relative links work. Returns the two card paths.
    """
    out_dir = Path(out_dir)
    source = Path(plots_dir) if plots_dir is not None else out_dir / "plots"
    markdown, page = render_card(context, template=template, plots_dir=source)
    out_dir.mkdir(parents=True, exist_ok=True)
    for src in dict.fromkeys(image_sources(markdown)):
        origin = _image_file(src, source)
        target = out_dir.joinpath(*_check_image_source(src).parts)
        if target.exists() and target.resolve() == origin.resolve():
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(origin, target)
    md_path, html_path = out_dir / "card.md", out_dir / "card.html"
    md_path.write_text(markdown, encoding="utf-8")
    html_path.write_text(page, encoding="utf-8")
    return md_path, html_path
