"""Data-quality drift of an OMOP import: the share of each source table's rows mapped to the
contract (``riskstrat.data.omop.report.mapping_coverage``), in the latest extract against a
reference (the training extract's, or the first monitored extract's).

A fall in coverage means records the model used to see arrive unmapped: a vocabulary update,
a new local code, a feed that changed its concepts. The features built from those records
then under-count, and the risks fall with them, before any outcome has matured to show it.

The thresholds are in percentage points of coverage (0.02 = 2 points). They are not in the
model spec's ``monitoring`` section yet: :func:`coverage_thresholds` takes
``coverage_drop_amber`` / ``coverage_drop_red`` from the config when it has them, else the
defaults here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from riskstrat.modelling.spec import MonitoringConfig
from riskstrat.monitoring.status import Status, threshold_status, worst

#: A drop of this many points of coverage (as a share) or more: amber.
COVERAGE_DROP_AMBER = 0.02
#: A drop of more than this: red.
COVERAGE_DROP_RED = 0.05
#: Fewer source rows than this in either extract: the table's coverage is shown, not judged
#: (with 1,000 rows a coverage of 50% has a standard error of 1.6 points).
MIN_COVERAGE_ROWS = 1000

NOT_OMOP = "not an OMOP import: no mapping coverage to check"
#: What to do when the coverage check is red (for the CLI's and the guide's lists).
WHAT_TO_DO = (
    "fewer source records map to the contract than in the reference extract: read the "
    "import's mapping-report.md (top unmapped concepts), fix the codelists or the vocabulary, "
    "and import again before trusting the risks"
)


def coverage_thresholds(config: MonitoringConfig) -> tuple[float, float]:
    """(amber, red) drops in coverage: the config's when it has them, else the defaults."""
    amber = getattr(config, "coverage_drop_amber", COVERAGE_DROP_AMBER)
    red = getattr(config, "coverage_drop_red", COVERAGE_DROP_RED)
    return float(amber), float(red)


def coverage_checks(
    reference: Mapping[str, Mapping[str, Any]] | None,
    latest: Mapping[str, Mapping[str, Any]] | None,
    config: MonitoringConfig,
    *,
    omop: bool,
    reference_source: str | None = None,
    min_rows: int = MIN_COVERAGE_ROWS,
) -> dict[str, Any]:
    """Mapping coverage per source table in the latest extract against the reference.

    Args:
        reference: the reference extract's coverage (``{table: {"rows_read", "mapped",
            "coverage"}}``), None when there is none.
        latest: the latest extract's coverage, None when it has no mapping report.
        config: the model spec's monitoring section (see :func:`coverage_thresholds`).
        omop: whether the latest extract was imported from OMOP (its manifest says so).
        reference_source: where the reference came from, in words.
        min_rows: below this many source rows in either extract a table is not judged.

    Returns:
        ``{"applies", "note", "reference_source", "thresholds", "tables", "status"}``;
        ``applies`` is False for an extract not imported from OMOP (nothing judged). Each
        table row holds both coverages, the ``drop`` in points (reference - latest, as a
        share) and its status.
    """
    amber, red = coverage_thresholds(config)
    out: dict[str, Any] = {
        "applies": omop,
        "note": None,
        "reference_source": reference_source if reference is not None else None,
        "thresholds": {"drop_amber": amber, "drop_red": red, "min_rows": min_rows},
        "latest": dict(latest) if latest is not None else None,
        "tables": [],
        "status": "unknown",
    }
    if not omop:
        out["note"] = NOT_OMOP
        return out
    if latest is None:
        out["note"] = "the extract says it was imported from OMOP but has no mapping report"
        return out
    if reference is None:
        out["note"] = (
            "no reference coverage: the training extract's was not stored; this extract's is "
            "kept with the results and is the reference of the next checks"
        )
    rows: list[dict[str, Any]] = []
    for table, now in latest.items():
        before = (reference or {}).get(table)
        cov = now.get("coverage")
        ref = before.get("coverage") if before else None
        read_now = int(now.get("rows_read") or 0)
        read_before = int(before.get("rows_read") or 0) if before else 0
        drop = ref - cov if cov is not None and ref is not None else None
        status: Status = "unknown"
        reason: str | None = None
        if before is None:
            reason = "no reference" if reference is None else "not in the reference extract"
        elif read_now == 0 and read_before >= min_rows:
            # a table that used to feed the model arrives empty: nothing of it is mapped
            status, reason = "red", f"no rows now ({read_before:,} in the reference)"
        elif read_now < min_rows or read_before < min_rows:
            reason = f"fewer than {min_rows:,} rows: shown, not judged"
        else:
            status = threshold_status(drop, amber, red)
        rows.append(
            {
                "table": table,
                "rows_read": read_now,
                "coverage": cov,
                "reference_rows_read": read_before if before else None,
                "reference_coverage": ref,
                "drop": drop,
                "status": status,
                "reason": reason,
            }
        )
    out["tables"] = rows
    out["status"] = worst(r["status"] for r in rows)
    return out
