"""``riskstrat monitor``: the champion's performance on matured outcomes, input drift and
data quality, each green / amber / red.

Exit status: 0 whenever the checks ran, whatever their status, so a scheduled job does not
fail on a red model; a red status is printed as a banner with what to do. Failures to run the
checks (no champion, no published run, a bad extract) exit non-zero as every command does.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from riskstrat.cli.common import library_errors, out, progress_bar, setup
from riskstrat.cli.home import require_registry, require_store

if TYPE_CHECKING:
    from riskstrat.pipelines.monitor import MonitoringReport

_COLOUR = {"green": "green", "amber": "yellow", "red": "red", "unknown": "dim"}

#: What to do when a check is red (printed under the banner).
WHAT_TO_DO = {
    "auroc": "discrimination has fallen: retrain on recent months (`riskstrat train`) and "
    "compare the challenger with the champion before promoting it",
    "oe": "the risks are miscalibrated: recalibrate or retrain, and tell list users that the "
    "risks over- or under-state admissions until then",
    "slope": "the risks are too extreme or too flat: recalibrate or retrain",
    "subgroup_oe": "a PCN or fairness group is miscalibrated: look at its row and raise it "
    "with the clinical safety officer",
    "feature_psi": "the population's inputs have shifted since training: check the extract "
    "(coding changes, missing feeds), then retrain if the shift is real",
    "score_psi": "the distribution of risk has shifted: check the inputs and the outcome rate",
    "missingness": "a feature arrives empty more often than in training: check the extract feed",
    "rejects": "more rows are rejected than in training: read the rejects file "
    "(`riskstrat validate`)",
    "mapping_coverage": "fewer OMOP source records map to the contract than in training: "
    "read the import's mapping-report.md (top unmapped concepts), fix the codelists or the "
    "vocabulary, and import again before trusting the risks",
}


def _cell(status: str) -> str:
    return f"[{_COLOUR.get(status, 'dim')}]{status}[/]"


def _ci(ci: dict[str, Any] | None, digits: int = 3) -> str:
    if not ci or ci.get("value") is None:
        return "-"
    lo, hi = ci.get("lo"), ci.get("hi")
    inner = f" ({lo:.{digits}f}-{hi:.{digits}f})" if lo is not None and hi is not None else ""
    return f"{ci['value']:.{digits}f}{inner}"


def print_report(report: MonitoringReport) -> None:
    """The status table, the months, the largest drifts and, when red, what to do."""
    title = (
        f"monitoring {report.model_name} v{report.model_version} on the extract of "
        f"{report.check_date.isoformat()}"
    )
    status = Table(title=title)
    status.add_column("check")
    status.add_column("status")
    for check, value in report.status.items():
        status.add_row(check, _cell(value))
    out.print(status)
    if report.months:
        months = Table(title="matured months (published risks against what happened)")
        columns = (
            "month",
            "version",
            "people",
            "events",
            "AUROC (95% CI)",
            "O/E (95% CI)",
            "slope (95% CI)",
            "PPV top list",
            "O/E actioned",
            "O/E not actioned",
        )
        for col in columns:
            months.add_column(col)
        for m in report.months:
            perf = m["performance"]
            o = perf["overall"]
            split = {a["group"]: a for a in perf["actioned"]}
            months.add_row(
                m["month"][:7],
                str(m["model_version"]),
                f"{o['rows']:,}",
                f"{o['events']:,}",
                _ci(o.get("auroc")),
                _ci(o.get("oe"), 2),
                _ci(o.get("slope"), 2),
                _ci(o.get("ppv_top"), 3),
                _ci(split["actioned"].get("oe"), 2),
                _ci(split["not_actioned"].get("oe"), 2),
            )
        out.print(months)
        out.print(report.months[-1]["performance"]["confounding_note"])
    drift = sorted(report.drift, key=lambda d: -(d["psi"] if d["psi"] == d["psi"] else 0))[:10]
    table = Table(title="largest drifts (PSI, latest month against the training window)")
    for col in ("input", "PSI", "missing now", "missing in training", "status"):
        table.add_column(col)
    for d in drift:
        table.add_row(d["name"], f"{d['psi']:.3f}", f"{d['missing_share']:.1%}",
                      f"{d['reference_missing_share']:.1%}", _cell(d["status"]["psi"]))  # fmt: skip
    out.print(table)
    out.print(f"drift reference: {report.reference_source}")
    for note in report.notes:
        out.print(note)
    red = [c for c, v in report.status.items() if v == "red" and c != "overall"]
    if red:
        out.print(f"[bold white on red] MONITORING RED: {', '.join(red)} [/]")
        for check in red:
            out.print(f"[red]{check}[/]: {WHAT_TO_DO.get(check, 'investigate')}")
        out.print(
            "The lists stay published; tell the clinical safety officer, and do not promote "
            "or keep using the model's risks unchanged until the cause is understood."
        )


def monitor(
    data: Annotated[Path, typer.Option("--data", help="The latest extract folder.")],
    store_results: Annotated[
        bool, typer.Option("--store/--no-store", help="Keep the results with the runs.")
    ] = True,
) -> None:
    """Monitor the champion: performance on every published month whose 90-day outcomes have
    matured in this extract, input drift (PSI) and data quality, green / amber / red.
    Exits 0 when the checks ran, red or not (a red status is printed as a banner)."""
    from riskstrat.pipelines.monitor import run_monitoring

    setup()
    require_store()
    require_registry()
    with library_errors(), progress_bar("monitor") as progress:
        report = run_monitoring(data, store_results=store_results, progress=progress)
    print_report(report)
