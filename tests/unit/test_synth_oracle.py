"""The oracle: each person's true risk, rebuilt from the generator's hidden state."""

from __future__ import annotations

import copy
import datetime as dt
from dataclasses import fields
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sklearn.metrics import roc_auc_score

from riskstrat.data.extract import validate_extract
from riskstrat.features.labels import build_labels
from riskstrat.synth import Simulation, generate_extract, simulate
from riskstrat.synth import simulation as simulation_module
from riskstrat.synth.oracle import (
    compute_oracle,
    default_oracle_date,
    default_oracle_path,
)
from riskstrat.synth.state import HiddenState
from riskstrat.synth.truth import state_at

EXTRACT_DATE = dt.date(2025, 4, 1)
N = 20_000
MONTHS = 24
DATES = [dt.date(2024, 3, 1), dt.date(2024, 6, 1), dt.date(2024, 9, 1), dt.date(2025, 1, 1)]

# Slow: every test here simulates a population and draws its true risk.
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def sim() -> Simulation:
    return simulate(n_patients=N, seed=21, months=MONTHS, extract_date=EXTRACT_DATE)


@pytest.fixture(scope="module")
def oracle(sim: Simulation) -> pd.DataFrame:
    return compute_oracle(sim, DATES)


def _labels(sim: Simulation, dates: list[dt.date]) -> pd.DataFrame:
    """Realised labels from the simulated tables, with the features' population rule."""
    pat = sim.patients
    act = sim.activity
    em = act[(act.setting == "inpatient") & (act.admission_method == "emergency")]
    frames = []
    for d in dates:
        day = pd.Timestamp(d)
        pop = pat[
            (pat.registered_from <= day)
            & (pat.registered_to.isna() | (pat.registered_to > day))
            & (pat.date_of_death.isna() | (pat.date_of_death >= day))
            & (pat.date_of_birth <= day)
        ]
        hit = em[(em.start_date >= day) & (em.start_date < day + pd.Timedelta(days=90))]
        nhs = pop.nhs_number.astype(str)
        frames.append(
            pd.DataFrame(
                {
                    "nhs_number": nhs.to_numpy(),
                    "index_date": d,
                    "label": nhs.isin(set(hit.nhs_number.astype(str))).astype(int).to_numpy(),
                }
            )
        )
    return pd.concat(frames, ignore_index=True)


def _agreement(merged: pd.DataFrame) -> tuple[float, float, float, pd.DataFrame]:
    """Observed, expected, z of O - E, and the calibration table by decile of risk."""
    o = float(merged.label.sum())
    e = float(merged.true_risk.sum())
    v = float((merged.true_risk * (1 - merged.true_risk)).sum())
    decile = pd.qcut(merged.true_risk.rank(method="first"), 10, labels=False)
    table = merged.groupby(decile).agg(
        observed=("label", "sum"),
        expected=("true_risk", "sum"),
        variance=("true_risk", lambda p: float((p * (1 - p)).sum())),
    )
    table["z"] = (table.observed - table.expected) / np.sqrt(table.variance)
    return o, e, (o - e) / np.sqrt(v), table


# ---------------------------------------------------------------------------- hidden state


def test_state_at_rebuilds_the_loop_state(monkeypatch: pytest.MonkeyPatch) -> None:
    snapshots: dict[int, HiddenState] = {}
    original = simulation_module._Simulator._month

    def spy(self, s, e, month_of_year, *, recording):
        snapshots[s] = copy.deepcopy(self.state)
        return original(self, s, e, month_of_year, recording=recording)

    monkeypatch.setattr(simulation_module._Simulator, "_month", spy)
    s = simulate(n_patients=3000, seed=8, months=24, extract_date=EXTRACT_DATE)
    assert len(snapshots) == 24 + 12
    for day, snap in list(snapshots.items())[::5]:
        rebuilt = state_at(s, day)
        alive = np.flatnonzero(snap.death_day >= day)
        for f in fields(rebuilt):
            if f.name in ("people", "frailty_at_extract"):
                continue
            a = getattr(snap, f.name)[alive]
            b = getattr(rebuilt, f.name)[alive]
            if a.dtype.kind == "f":
                np.testing.assert_allclose(a, b, atol=1e-12, err_msg=f.name)
            else:
                np.testing.assert_array_equal(a, b, err_msg=f.name)


# ---------------------------------------------------------------------------- dates and paths


def test_default_date_and_path() -> None:
    assert default_oracle_date(dt.date(2025, 4, 1)) == dt.date(2025, 1, 1)  # Jan 1 + 90 = Apr 1
    assert default_oracle_date(dt.date(2025, 5, 1)) == dt.date(2025, 1, 1)  # Feb 1 + 90 > May 1
    assert default_oracle_date(dt.date(2024, 3, 1)) == dt.date(2023, 12, 1)  # leap year
    assert default_oracle_date(dt.date(2025, 4, 17)) == dt.date(2025, 1, 1)
    assert default_oracle_path(Path("/a/b/extract")) == Path("/a/b/extract.oracle.parquet")


def test_bad_dates_are_refused(sim: Simulation) -> None:
    for bad in (dt.date(2024, 3, 2), dt.date(2022, 1, 1), dt.date(2025, 2, 1)):
        with pytest.raises(ValueError):
            compute_oracle(sim, [bad])


# ---------------------------------------------------------------------------- the risk


def test_oracle_covers_the_population_exactly_and_is_a_probability(
    sim: Simulation, oracle: pd.DataFrame
) -> None:
    labels = _labels(sim, DATES)
    keys = ["index_date", "nhs_number"]
    assert oracle[keys].equals(labels.sort_values(keys)[keys].reset_index(drop=True))
    assert oracle.true_risk.between(0.0, 1.0).all()
    assert oracle.nhs_number.map(lambda v: isinstance(v, str)).all()
    # Deterministic for a simulation, and rising with age.
    again = compute_oracle(sim, DATES[:1])
    first = oracle[oracle.index_date == DATES[0]].reset_index(drop=True)
    pd.testing.assert_frame_equal(again, first)


def test_oracle_agrees_with_realised_labels(sim: Simulation, oracle: pd.DataFrame) -> None:
    merged = oracle.merge(_labels(sim, DATES), on=["nhs_number", "index_date"])
    assert len(merged) == len(oracle)
    observed, expected, z, table = _agreement(merged)
    auroc = roc_auc_score(merged.label, merged.true_risk)
    print(f"\noracle: O={observed:.0f} E={expected:.1f} O/E={observed / expected:.3f} z={z:.2f}")
    print(f"oracle AUROC on realised labels: {auroc:.3f}")
    print(table.round(2).to_string())
    # Overall counts agree within a 99.9% interval, and so does every decile.
    assert abs(z) < 3.3
    chi2 = float((table.z**2).sum())
    assert chi2 < 29.6, chi2  # 10 degrees of freedom, p = 0.001
    assert (table.observed.diff().dropna() >= -10).all()  # risk ranks people


def test_more_draws_change_little(sim: Simulation) -> None:
    few = compute_oracle(sim, DATES[:1], draws=4, seed=1)
    many = compute_oracle(sim, DATES[:1], draws=64, seed=2)
    assert abs(few.true_risk.sum() - many.true_risk.sum()) < 0.01 * many.true_risk.sum()
    assert float(np.corrcoef(few.true_risk, many.true_risk)[0, 1]) > 0.99


# ---------------------------------------------------------------------------- written file


def test_generate_writes_the_oracle_beside_the_extract(tmp_path: Path) -> None:
    out = tmp_path / "extract"
    s = generate_extract(
        out, n_patients=2000, seed=4, months=15, extract_date=EXTRACT_DATE, fmt="parquet",
        oracle=True,
    )  # fmt: skip
    path = default_oracle_path(out)
    assert s.oracle_path == path and s.oracle_dates == (dt.date(2025, 1, 1),)
    assert path.exists() and path.parent == out.parent and not (out / path.name).exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["extract", "extract.oracle.parquet"]
    table = pq.read_table(path)
    assert table.schema == pa.schema(
        [("nhs_number", pa.string()), ("index_date", pa.date32()), ("true_risk", pa.float64())]
    )
    risk = table.to_pandas()
    with validate_extract(out, max_reject_share=0.0, rejects_path=tmp_path / "r.csv") as ex:
        labels = build_labels(ex.con, index_dates=list(s.oracle_dates))
    assert list(risk.nhs_number) == list(labels.nhs_number)
    assert list(risk.index_date) == list(labels.index_date)
    # Chosen dates and path; refused when the file exists, unless overwriting.
    other = tmp_path / "risk.parquet"
    dates = [dt.date(2024, 6, 1), dt.date(2024, 12, 1)]
    s2 = generate_extract(
        tmp_path / "e2", n_patients=500, seed=4, months=15, extract_date=EXTRACT_DATE,
        oracle_dates=dates, oracle_path=other,
    )  # fmt: skip
    assert s2.oracle_path == other and s2.oracle_dates == tuple(dates)
    assert sorted(set(pq.read_table(other).to_pandas().index_date)) == dates
    with pytest.raises(FileExistsError):
        generate_extract(
            tmp_path / "e3", n_patients=50, seed=4, months=15, extract_date=EXTRACT_DATE,
            oracle_path=other,
        )  # fmt: skip
    assert not (tmp_path / "e3").exists()
    with pytest.raises(ValueError, match="window"):
        generate_extract(
            tmp_path / "e4", n_patients=50, seed=4, months=15, extract_date=EXTRACT_DATE,
            oracle_dates=[dt.date(2025, 3, 1)],
        )  # fmt: skip
    assert not (tmp_path / "e4").exists()
