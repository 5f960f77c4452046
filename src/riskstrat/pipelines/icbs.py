"""One run for several ICBs: score a multi-ICB (or national) extract once and publish each
ICB's people to that ICB's own serving store (``riskstrat score --icbs PLAN``).

The data contract has no ICB column; the practice does. An ICB plan says which ICB each
practice belongs to (a CSV, e.g. from ODS's practice file) and where each ICB's serving store
is::

    practices: practice-icbs.csv      # columns practice_code, icb_code; beside this file
    stores:
      QE1: env:RISKSTRAT_QE1_DATABASE_URL   # a URL, or env:NAME to read it from the environment
      QKK: postgresql+psycopg://riskstrat@db-qkk/riskstrat

The extract is validated, its features built and everyone scored and explained once, on
either engine. The result is then split by ICB, and each part is exactly what scoring that
ICB's extract alone would publish: percentiles and ranks are over the ICB's people, each
list's rank counts within the ICB (membership depends on a person's own values only, so it
does not change), the type 1 opt-outs are the ICB's. Each ICB's store takes its run by bulk
copy and switches in one transaction, as a single run does. A store that fails records the
failure in that store and the others still publish; the command then fails, naming which.
"""

from __future__ import annotations

import csv
import os
import re
from dataclasses import dataclass, replace
from datetime import date
from pathlib import Path

import yaml

from riskstrat.config import Settings, get_settings
from riskstrat.errors import ConfigError, DataError, MissingFileError, RiskstratError
from riskstrat.modelling.registry import CHAMPION
from riskstrat.pipelines.common import Progress, report
from riskstrat.pipelines.score import (
    Computed,
    ScoreResult,
    load_and_compute,
    publish_computed,
    ranked_scores,
    record_failure,
    scoring_job,
)
from riskstrat.store import Store

#: An ICB's code as ODS gives it (e.g. QE1) or any short code without spaces.
_CODE = re.compile(r"[A-Za-z0-9_-]{1,16}")
_PLAN_HINT = "an ICB plan names a practices CSV (practice_code, icb_code) and a store per ICB"


@dataclass(frozen=True)
class IcbPlan:
    """Which ICB each practice belongs to, and each ICB's serving store URL."""

    practice_icb: dict[str, str]
    stores: dict[str, str]


def load_icb_plan(path: Path) -> IcbPlan:
    """Read and check an ICB plan (see the module docstring).

    Raises:
        MissingFileError: no plan, or no practices file, where named.
        ConfigError: naming the file and what is wrong: a key missing, an ICB with no store
            or a store with no practices, a practice in two ICBs, an unset environment
            variable.
    """
    if not path.is_file():
        raise MissingFileError(f"no ICB plan at {path}", hint=_PLAN_HINT)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid YAML ({type(exc).__name__})") from None
    if not isinstance(data, dict) or not isinstance(data.get("practices"), str):
        raise ConfigError(f"{path}: 'practices' must name a CSV file", hint=_PLAN_HINT)
    stores_raw = data.get("stores")
    if not isinstance(stores_raw, dict) or not stores_raw:
        raise ConfigError(f"{path}: 'stores' must map each ICB code to a URL", hint=_PLAN_HINT)
    stores = {str(icb): _store_url(path, str(icb), url) for icb, url in stores_raw.items()}
    practice_icb = _read_practices(path.parent / data["practices"])
    without_store = sorted(set(practice_icb.values()) - set(stores))
    if without_store:
        raise ConfigError(
            f"{path}: no store for ICB {', '.join(without_store)} (its practices are listed)",
            hint="add each ICB's store under 'stores'",
        )
    without_practices = sorted(set(stores) - set(practice_icb.values()))
    if without_practices:
        raise ConfigError(
            f"{path}: ICB {', '.join(without_practices)} has a store but no practices",
            hint="list its practices in the practices file, or remove its store",
        )
    return IcbPlan(practice_icb=practice_icb, stores=stores)


def _store_url(path: Path, icb: str, value: object) -> str:
    if not _CODE.fullmatch(icb):
        raise ConfigError(f"{path}: {icb!r} is not an ICB code (letters, digits, - or _)")
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{path}: the store of ICB {icb} must be a URL or env:NAME")
    if value.startswith("env:"):
        name = value[4:]
        url = os.environ.get(name)
        if not url:
            raise ConfigError(
                f"{path}: the store of ICB {icb} is read from {name}, which is not set"
            )
        return url
    return value


def _read_practices(path: Path) -> dict[str, str]:
    """The practices file (configuration, not patient data): practice code -> ICB code."""
    if not path.is_file():
        raise MissingFileError(f"no practices file at {path}", hint=_PLAN_HINT)
    found: dict[str, str] = {}
    try:
        with path.open(encoding="utf-8-sig", newline="") as fh:
            reader = csv.DictReader(fh)
            missing = [
                c for c in ("practice_code", "icb_code") if c not in (reader.fieldnames or [])
            ]
            if missing:
                raise ConfigError(f"{path}: column {missing[0]} is missing", hint=_PLAN_HINT)
            for row in reader:
                practice = (row["practice_code"] or "").strip()
                icb = (row["icb_code"] or "").strip()
                if not practice or not _CODE.fullmatch(icb):
                    raise ConfigError(
                        f"{path}, line {reader.line_num}: a practice code and an ICB code are "
                        "needed"
                    )
                if found.setdefault(practice, icb) != icb:
                    raise ConfigError(f"{path}: practice {practice} is listed in two ICBs")
    except (UnicodeDecodeError, csv.Error) as exc:
        raise ConfigError(f"{path}: not a CSV file ({type(exc).__name__})") from None
    return found


def split_by_icb(computed: Computed, plan: IcbPlan) -> dict[str, Computed]:
    """Each ICB's part of a computed month, as scoring its people alone computes it: its
    scores re-ranked (percentile and rank within the ICB), its lists' members renumbered in
    their order, its features and opt-outs. Every ICB in the plan gets a part (empty when
    none of its practices has anyone this month).

    Raises:
        DataError: people registered at practices the plan does not place in an ICB (the
            practice codes are named; never a person).
    """
    unplaced = sorted(set(computed.scores["practice_code"].astype(str)) - set(plan.practice_icb))
    if unplaced:
        shown = ", ".join(unplaced[:5]) + (
            f" and {len(unplaced) - 5} more" if len(unplaced) > 5 else ""
        )
        raise DataError(
            f"{len(unplaced)} practice(s) with people this month are in no ICB of the plan: "
            f"{shown}",
            hint="add them to the plan's practices file; nothing was published",
        )
    icb_of = plan.practice_icb
    score_icb = computed.scores["practice_code"].astype(str).map(icb_of)
    cohort_icb = computed.cohorts["practice_code"].astype(str).map(icb_of)
    parts = {}
    for icb in plan.stores:
        scores = computed.scores.loc[score_icb == icb]
        people = set(scores["nhs_number"])
        scores = scores.drop(columns=["percentile", "rank"]).sort_values(
            "nhs_number", kind="stable"
        )
        cohorts = computed.cohorts.loc[cohort_icb == icb].sort_values(
            ["intervention", "rank"], kind="stable"
        )
        cohorts = cohorts.assign(rank=cohorts.groupby("intervention").cumcount() + 1)
        features = computed.features.loc[computed.features["nhs_number"].isin(people)]
        parts[icb] = replace(
            computed,
            scores=ranked_scores(scores.reset_index(drop=True)),
            cohorts=cohorts.reset_index(drop=True),
            features=features.reset_index(drop=True),
            opt_outs={p: n for p, n in computed.opt_outs.items() if icb_of.get(p) == icb},
        )
    return parts


class IcbPublishError(RiskstratError):
    """Some ICBs' stores did not take their run; the others published."""

    default_hint = "each failed store records why (riskstrat runs); fix it and score again"


def run_scoring_icbs(
    data_dir: Path | str,
    *,
    month: date,
    plan: IcbPlan,
    settings: Settings | None = None,
    model_ref: str = CHAMPION,
    cohorts_file: Path | None = None,
    progress: Progress = None,
) -> dict[str, ScoreResult]:
    """Score ``month`` once on the deployment's engine and publish each ICB's part to its
    store (see the module docstring). Returns each ICB's result.

    Raises:
        IcbPublishError: after every ICB was tried, naming those whose publish failed.
        RiskstratError: scoring failed, or people are at practices in no ICB: recorded as a
            failed run in every store, nothing published.
    """
    settings = settings or get_settings()
    job = scoring_job(month, cohorts_file)
    stores = {icb: Store(url) for icb, url in plan.stores.items()}
    for store in stores.values():
        store.create_schema()
    try:
        model, computed = load_and_compute(settings, data_dir, job, model_ref, progress)
        parts = split_by_icb(computed, plan)
    except BaseException as exc:
        for store in stores.values():
            record_failure(store, settings, job, exc)
        raise
    results: dict[str, ScoreResult] = {}
    failed: dict[str, str] = {}
    for i, (icb, part) in enumerate(parts.items()):
        report(progress, f"publish {icb}", 0.85 + 0.15 * i / len(parts))
        try:
            results[icb] = publish_computed(stores[icb], settings, job, model, part)
        except Exception as exc:
            failed[icb] = type(exc).__name__
    report(progress, "done", 1.0)
    if failed:
        raise IcbPublishError(
            f"{len(failed)} of {len(parts)} ICBs were not published: "
            + ", ".join(f"{icb} ({why})" for icb, why in failed.items())
            + f"; published: {', '.join(results) or 'none'}"
        )
    return results
