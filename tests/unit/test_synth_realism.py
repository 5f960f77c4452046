"""The synthetic population's realism profile and its oracle, at a realistic size (slow)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import numpy as np
import pyarrow.parquet as pq
import pytest
from sklearn.metrics import roc_auc_score

from riskstrat.data.extract import Extract, validate_extract
from riskstrat.features.labels import build_labels
from riskstrat.features.profile import profile_extract
from riskstrat.synth import GenerationSummary, generate_extract

N = 60_000
EXTRACT_DATE = dt.date(2025, 4, 1)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> GenerationSummary:
    out = tmp_path_factory.mktemp("realism") / "extract"
    return generate_extract(
        out, n_patients=N, seed=2026, months=48, extract_date=EXTRACT_DATE, fmt="parquet",
        oracle=True,
    )  # fmt: skip


@pytest.fixture(scope="module")
def extract(
    generated: GenerationSummary, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Extract]:
    rejects = tmp_path_factory.mktemp("rejects") / "rejects.csv"
    with validate_extract(generated.out_dir, max_reject_share=0.0, rejects_path=rejects) as ex:
        yield ex


def test_every_realism_target_is_met(extract: Extract) -> None:
    profile = profile_extract(extract.con, extract_date=extract.extract_date)
    print()
    for m in profile.measures:
        mark = {True: "ok", False: "FAIL", None: ""}[m.ok]
        print(f"{m.section:28s} {m.name:62s} {m.shown:>12s} {m.reference:>20s} {mark}")
    assert [m.name for m in profile.failures] == []


def test_oracle_is_calibrated_on_the_extract_labels(
    generated: GenerationSummary, extract: Extract
) -> None:
    assert generated.oracle_path is not None
    risk = pq.read_table(generated.oracle_path).to_pandas()
    labels = build_labels(extract.con, index_dates=list(generated.oracle_dates))
    merged = risk.merge(labels, on=["nhs_number", "index_date"], validate="one_to_one")
    assert len(merged) == len(labels) == len(risk)
    observed = float(merged.label.sum())
    expected = float(merged.true_risk.sum())
    z = (observed - expected) / np.sqrt(float((merged.true_risk * (1 - merged.true_risk)).sum()))
    auroc = roc_auc_score(merged.label, merged.true_risk)
    print(f"\noracle at {generated.oracle_dates[0]}: O={observed:.0f} E={expected:.1f} "
          f"O/E={observed / expected:.3f} z={z:.2f} AUROC={auroc:.3f}")  # fmt: skip
    assert abs(z) < 3.3
