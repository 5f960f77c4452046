"""Commands on models: train, evaluate, recalibrate, promote, models, card, ui and predict."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from riskstrat.cli.common import (
    DATA_HELP,
    ENGINE_HELP,
    console,
    extract_location,
    library_errors,
    out,
    parse_date,
    progress_bar,
    settings_for_engine,
    setup,
)
from riskstrat.cli.home import require_registry, sqlite_file
from riskstrat.errors import NotFoundError

#: Every --spec option's help.
SPEC_HELP = (
    "Model folder with spec.yaml, or a shipped model by name (death_12m); default the 90-day model."
)


def _ci(ci: dict[str, float | None], digits: int = 3) -> str:
    value = f"{ci['value']:.{digits}f}"
    if ci.get("lo") is None or ci.get("hi") is None:
        return value
    return f"{value} ({ci['lo']:.{digits}f}-{ci['hi']:.{digits}f})"


def train(
    data: Annotated[Path, typer.Option("--data", help="Extract folder.")],
    spec: Annotated[Path | None, typer.Option(help=SPEC_HELP)] = None,
    oracle: Annotated[
        Path | None,
        typer.Option(help="True-risk file of a synthetic extract; default DIR.oracle.parquet."),
    ] = None,
) -> None:
    """Train, evaluate on held-out months, audit fairness, and register a challenger."""
    from riskstrat.config import get_settings
    from riskstrat.pipelines.train import run_training

    setup()
    registry_file = sqlite_file(get_settings().tracking_uri)
    new_registry = registry_file is not None and not registry_file.is_file()
    with library_errors(), progress_bar("train") as progress:
        result = run_training(data, spec_dir=spec, oracle_path=oracle, progress=progress)
    if new_registry:
        console.print(f"made a new model registry at {registry_file}", highlight=False)
    r = result.report
    p = r.primary
    table = Table(
        "measure",
        "value (95% CI)",
        title=f"Held-out month {result.plan.validation_month} ({p['rows']:,} people)",
    )
    table.add_row("AUROC", _ci(p["auroc"]))
    table.add_row("AUPRC", _ci(p["auprc"]))
    table.add_row("Brier", _ci(p["brier"], 4))
    table.add_row("observed / expected", _ci(p["calibration"]["oe"]))
    table.add_row("calibration slope", _ci(p["calibration"]["slope"]))
    table.add_row("share flagged to catch 70%", _ci(p["share_flagged_for_recall"]))
    for row in p["lists"]:
        table.add_row(
            f"top {row['share']:.0%}: sensitivity / PPV",
            f"{row['sensitivity']['value']:.3f} / {row['ppv']['value']:.3f}",
        )
    for b in r.baselines[1:]:
        table.add_row(
            f"baseline: {b['name']}",
            f"AUROC {b['auroc']['value']:.3f} (model better by {_ci(b['auroc_difference'])})",
        )
    if r.oracle:
        table.add_row("oracle AUROC (true risk)", f"{r.oracle['auroc']:.3f}")
        table.add_row("model / oracle AUROC", f"{r.oracle['ratio']:.3f}")
    if r.champion_comparison:
        c = r.champion_comparison
        table.add_row(
            f"champion v{c['champion_version']} on the same rows",
            f"AUROC {c['champion_auroc']['value']:.3f}; difference {_ci(c['difference'])}",
        )
    out.print(table)
    failed = [g for g in r.gates if not g.passed]
    out.print(f"gates: {len(r.gates) - len(failed)} of {len(r.gates)} passed")
    for g in failed:
        out.print(f"  [red]failed[/] {g.name} ({g.subject}): {g.detail}")
    out.print(
        f"validation AUROC {p['auroc']['value']:.3f}; trained on {result.train_rows:,} rows from "
        f"{len(result.plan.train_months)} index months "
        f"({result.plan.train_months[0]} to {result.plan.train_months[-1]}); registered "
        f"{result.model.name} version {result.model.version} as challenger in "
        f"{result.seconds:.0f} s. Next: riskstrat promote {result.model.version}"
    )


def _gate_lines(gates: list[Any]) -> None:
    failed = [g for g in gates if not g.passed]
    out.print(f"gates: {len(gates) - len(failed)} of {len(gates)} passed")
    for g in failed:
        out.print(f"  [red]failed[/] {g.name} ({g.subject}): {g.detail}")


def evaluate(
    version: Annotated[str, typer.Argument(help="Version number or alias (champion, challenger).")],
    data: Annotated[Path, typer.Option("--data", help="Another population's extract folder.")],
    spec: Annotated[Path | None, typer.Option(help=SPEC_HELP)] = None,
    oracle: Annotated[
        Path | None,
        typer.Option(help="True-risk file of a synthetic extract; default DIR.oracle.parquet."),
    ] = None,
) -> None:
    """Evaluate a registered version on another population (external validation).

    The full evaluation, fairness audit and gates on the extract's latest complete months,
    logged as an MLflow run linked to the version and added to its card. Failed gates are
    reported, and the command still succeeds: it is an evaluation.
    """
    from riskstrat.pipelines.external import run_external_validation

    setup()
    require_registry()
    with library_errors(), progress_bar("evaluate") as progress:
        result = run_external_validation(
            version, data, spec_dir=spec, oracle_path=oracle, progress=progress
        )
    p = result.report.primary
    fairness = [g for g in result.report.gates if g.name.startswith("subgroup")]
    table = Table(
        "measure",
        "value (95% CI)",
        title=(
            f"Version {result.version} on {result.population.describe()}: "
            f"{result.population.plan.validation_month} ({p['rows']:,} people)"
        ),
    )
    table.add_row("AUROC", _ci(p["auroc"]))
    table.add_row("observed / expected", _ci(p["calibration"]["oe"]))
    table.add_row("calibration slope", _ci(p["calibration"]["slope"]))
    table.add_row(
        "fairness gates",
        f"{sum(g.passed for g in fairness)} of {len(fairness)} passed",
    )
    out.print(table)
    _gate_lines(result.report.gates)
    out.print(
        f"logged as MLflow run {result.run_id}, linked to version {result.version}, and added "
        f"to its card (riskstrat card {result.version})"
    )
    if not result.report.gates_passed:
        out.print(
            f"the version does not pass its gates on this population; to calibrate it here: "
            f"riskstrat recalibrate {result.version} --data {data}"
        )


def recalibrate(
    version: Annotated[str, typer.Argument(help="Version number or alias (champion, challenger).")],
    data: Annotated[Path, typer.Option("--data", help="The local population's extract folder.")],
    months: Annotated[
        int | None,
        typer.Option(
            min=1,
            max=24,
            help="Complete index months to calibrate on; a year by default, so that no "
            "season sets the level.",
        ),
    ] = None,
    spec: Annotated[Path | None, typer.Option(help=SPEC_HELP)] = None,
    oracle: Annotated[
        Path | None,
        typer.Option(help="True-risk file of a synthetic extract; default DIR.oracle.parquet."),
    ] = None,
) -> None:
    """Refit only a version's calibration on a local population and register the result.

    The trees are kept; the calibrator (the spec's method) is fitted on the extract's
    complete months before its held-out months, evaluated with the same gates, and
    registered as a new version (challenger) whose lineage names the parent and the data.
    """
    from riskstrat.pipelines.recalibrate import DEFAULT_CALIBRATION_MONTHS, run_recalibration

    setup()
    require_registry()
    with library_errors(), progress_bar("recalibrate") as progress:
        result = run_recalibration(
            version,
            data,
            spec_dir=spec,
            calibration_months=DEFAULT_CALIBRATION_MONTHS if months is None else months,
            oracle_path=oracle,
            progress=progress,
        )
    p = result.report.primary
    table = Table(
        "measure",
        "value (95% CI)",
        title=f"Held-out month {result.population.plan.validation_month} ({p['rows']:,} people)",
    )
    table.add_row("AUROC", _ci(p["auroc"]))
    table.add_row("observed / expected", _ci(p["calibration"]["oe"]))
    table.add_row("calibration slope", _ci(p["calibration"]["slope"]))
    old, new = result.parent_calibrator, result.calibrator
    table.add_row(
        "calibration (a * log-odds + b)",
        f"a {old.a:.3f} -> {new.a:.3f}, b {old.b:.3f} -> {new.b:.3f}",
    )
    out.print(table)
    _gate_lines(result.report.gates)
    out.print(
        f"registered {result.model.name} version {result.model.version} as challenger: "
        f"version {result.parent_version}'s trees recalibrated on "
        f"{result.population.describe()}. Next: riskstrat promote {result.model.version}"
    )


def promote(
    version: Annotated[
        str | None, typer.Argument(help="Version to promote; default the challenger.")
    ] = None,
    spec: Annotated[Path | None, typer.Option(help=SPEC_HELP)] = None,
    force: Annotated[bool, typer.Option(help="Promote even though a check failed.")] = False,
    reason: Annotated[str | None, typer.Option(help="Why (required with --force).")] = None,
) -> None:
    """Make a version the champion if it passed its gates and is not worse than the champion."""
    from riskstrat.modelling.spec import default_spec_dir, load_spec
    from riskstrat.pipelines.promote import run_promotion

    setup()
    require_registry()
    with library_errors():
        model_spec = load_spec(spec or default_spec_dir())
        decision = run_promotion(model_spec, version=version, force=force, reason=reason)
    if not decision.promoted:
        out.print(f"version {decision.version}: {'; '.join(decision.reasons)}")
        return
    how = (
        "forced; overriding: " + "; ".join(decision.reasons) if decision.forced else "gates passed"
    )
    out.print(
        f"version {decision.version} is now the champion ({how}); previous champion: "
        f"{decision.previous_champion or 'none'}"
    )


def models(
    spec: Annotated[Path | None, typer.Option(help=SPEC_HELP)] = None,
) -> None:
    """List registered versions with aliases, key metrics, gates and promotion decisions."""
    from riskstrat.config import get_settings
    from riskstrat.modelling.registry import registry_for
    from riskstrat.modelling.spec import default_spec_dir, load_spec

    setup()
    require_registry()
    with library_errors():
        model_spec = load_spec(spec or default_spec_dir())
    versions = registry_for(get_settings()).versions(model_spec.name)
    if not versions:
        raise NotFoundError(f"no versions of {model_spec.name} yet: run riskstrat train")
    table = Table(
        "version",
        "aliases",
        "trained",
        "held-out month",
        "AUROC",
        "O/E",
        "slope",
        "oracle ratio",
        "gates",
        "promotion",
        title=model_spec.name,
    )
    for v in versions:
        m, t = v.metrics, v.tags
        gates = (
            "passed"
            if t.get("riskstrat.gates_passed") == "true"
            else (f"[red]failed[/] ({int(m.get('gates_failed', 0))})")
        )
        table.add_row(
            v.version,
            ", ".join(v.aliases),
            v.created_at.strftime("%Y-%m-%d %H:%M"),
            t.get("riskstrat.validation_month", ""),
            _metric_ci(m, "validation_auroc"),
            _metric_ci(m, "validation_oe"),
            f"{m['validation_calibration_slope']:.2f}"
            if "validation_calibration_slope" in m
            else "",
            f"{m['validation_auroc_ratio_to_oracle']:.3f}"
            if "validation_auroc_ratio_to_oracle" in m
            else "",
            gates,
            t.get("riskstrat.promotion.decision", "")
            + (" (forced)" if t.get("riskstrat.promotion.forced") == "true" else ""),
        )
    out.print(table)


def _metric_ci(metrics: dict[str, float], name: str) -> str:
    if name not in metrics:
        return ""
    if f"{name}_lo" in metrics:
        return f"{metrics[name]:.3f} ({metrics[name + '_lo']:.3f}-{metrics[name + '_hi']:.3f})"
    return f"{metrics[name]:.3f}"


def card(
    version: Annotated[str, typer.Argument(help="Version number or alias (champion, challenger).")],
    out_dir: Annotated[
        Path | None,
        typer.Option(
            "--out", help="Folder to write; default RISKSTRAT_HOME/cards/<model>-v<version>."
        ),
    ] = None,
    spec: Annotated[Path | None, typer.Option(help=SPEC_HELP)] = None,
) -> None:
    """Write a version's model card (Markdown and HTML, with its plots)."""
    from riskstrat.config import get_settings
    from riskstrat.modelling.registry import registry_for
    from riskstrat.modelling.spec import default_spec_dir, load_spec

    setup()
    require_registry()
    with library_errors():
        model_spec = load_spec(spec or default_spec_dir())
    settings = get_settings()
    registry = registry_for(settings)
    info = registry.describe(model_spec.name, version)
    target = out_dir or settings.home / "cards" / f"{info.name}-v{info.version}"
    if info.run_id is None:
        raise NotFoundError(f"version {info.version} has no training run to take the card from")
    target.parent.mkdir(parents=True, exist_ok=True)
    folder = registry.download_artifacts(info.run_id, "card", target.parent / f".{target.name}.tmp")
    if target.exists():
        import shutil

        shutil.rmtree(target)
    folder.rename(target)
    folder.parent.rmdir()
    out.print(
        f"model card of version {info.version}: {target / 'card.md'} and {target / 'card.html'}"
    )


def ui(
    port: Annotated[int, typer.Option(help="Port on 127.0.0.1.")] = 5000,
) -> None:
    """Open MLflow's own UI on the local store (loopback only)."""
    from riskstrat.config import get_settings
    from riskstrat.modelling.registry import registry_for

    setup()
    require_registry()
    command = registry_for(get_settings()).ui_command(host="127.0.0.1", port=port)
    console.print(f"MLflow UI on http://127.0.0.1:{port} (Ctrl-C to stop)", highlight=False)
    raise typer.Exit(run_process_group(command))


def run_process_group(command: list[str]) -> int:
    """Run ``command`` as the leader of a process group of its own and wait for it. However
    this process ends (the command exits, Ctrl-C, SIGTERM or SIGHUP), the whole group (the
    command and every worker it started) is stopped before it returns: SIGTERM, then SIGKILL
    after five seconds. Returns the command's exit code, or 128 + the signal that stopped us.
    """
    posix = os.name == "posix"
    child = subprocess.Popen(command, start_new_session=posix)  # noqa: S603 - the venv's own

    def stop(signum: int, _frame: object) -> None:
        raise _Stopped(signum)

    handled = [signal.SIGTERM] + ([signal.SIGHUP] if posix else [])
    previous = {s: signal.getsignal(s) for s in [*handled, signal.SIGINT]}
    for s in handled:
        signal.signal(s, stop)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # Ctrl-C: KeyboardInterrupt
    try:
        return child.wait()
    except KeyboardInterrupt:
        return 128 + signal.SIGINT
    except _Stopped as stopped:
        return 128 + stopped.signum
    finally:
        for s in previous:  # a second Ctrl-C or SIGTERM must not cut the cleanup short
            signal.signal(s, signal.SIG_IGN)
        try:
            _stop_group(child, posix)
        finally:
            for s, handler in previous.items():
                if handler is not None:  # None: set outside Python, cannot be put back
                    signal.signal(s, handler)


class _Stopped(Exception):
    """SIGTERM or SIGHUP arrived: unwind, so that the process group is stopped."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _stop_group(child: subprocess.Popen[bytes], posix: bool) -> None:
    """SIGTERM to ``child``'s whole process group (on POSIX; else to ``child``), then
    SIGKILL to whatever is left after five seconds."""

    def signal_group(kill: bool) -> None:
        try:
            if posix:  # the group lives on after its leader exits: signal the group
                os.killpg(child.pid, signal.SIGKILL if kill else signal.SIGTERM)
            elif kill:
                child.kill()
            else:
                child.terminate()
        except (ProcessLookupError, PermissionError):
            pass  # gone already

    signal_group(kill=False)
    deadline = time.monotonic() + 5
    with contextlib.suppress(subprocess.TimeoutExpired):
        child.wait(timeout=5)
    while posix and _group_alive(child.pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    signal_group(kill=True)
    child.wait()


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def predict(
    data: Annotated[str, typer.Option("--data", help=DATA_HELP, show_default=False)],
    as_of: Annotated[str, typer.Option("--as-of", help="Date to predict from (YYYY-MM-DD).")],
    out_file: Annotated[Path, typer.Option("--out", help="CSV to write (nhs_number, risk).")],
    model: Annotated[
        str, typer.Option(help="champion, another alias, or a version number.")
    ] = "champion",
    engine: Annotated[str | None, typer.Option(help=ENGINE_HELP)] = None,
) -> None:
    """Write each eligible person's 90-day risk at a date (type 1 opt-outs left out)."""
    from riskstrat.pipelines.common import check_engine_reads
    from riskstrat.pipelines.predict import run_predict

    setup()
    when = parse_date(as_of, "--as-of")
    settings = settings_for_engine(engine)
    location = extract_location(data)
    check_engine_reads(settings, location)
    require_registry()
    with library_errors(), progress_bar("predict") as progress:
        n = run_predict(
            location,
            as_of=when,
            out=out_file,
            model_ref=model,
            progress=progress,
            settings=settings,
        )
    out.print(f"wrote {n:,} risks to {out_file}")


def sample(
    data: Annotated[str, typer.Option("--data", help=DATA_HELP, show_default=False)],
    out_dir: Annotated[Path, typer.Option("--out", help="Sample extract folder to create.")],
    fraction: Annotated[
        float | None, typer.Option(min=0.0, max=1.0, help="Share of people to draw.")
    ] = None,
    people: Annotated[
        int | None, typer.Option(min=1, help="About this many people (instead of --fraction).")
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of the draw; same seed, same people.")] = 1,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing folder.")] = False,
    engine: Annotated[str | None, typer.Option(help=ENGINE_HELP)] = None,
) -> None:
    """Write a sample of an extract's people, every row of theirs, as an extract to train on
    (training stays on one machine; on Spark the draw runs where the population is)."""
    from riskstrat.pipelines.sample import run_sample

    setup()
    with library_errors(), progress_bar("sample") as progress:
        result = run_sample(
            extract_location(data),
            out_dir,
            fraction=fraction,
            people=people,
            seed=seed,
            overwrite=overwrite,
            settings=settings_for_engine(engine),
            progress=progress,
        )
    out.print(
        f"wrote a sample of {result.people:,} people ({result.fraction:.4g} of them, seed "
        f"{result.seed}) to {result.out_dir}: train on it with riskstrat train --data "
        f"{result.out_dir}"
    )
