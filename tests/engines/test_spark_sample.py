"""The training sample (``riskstrat sample``): drawn on Spark or DuckDB, the same people and
the same rows, written as an extract that validates with nothing rejected."""

from __future__ import annotations

from datetime import date

import duckdb
import pytest
from typer.testing import CliRunner

from riskstrat.cli import app
from riskstrat.data.contract import TABLE_ORDER
from riskstrat.data.extract import read_manifest, validate_extract
from riskstrat.data.sample import draws
from riskstrat.errors import UsageError
from riskstrat.pipelines.sample import sample_fraction

EXTRACT_DATE = date(2026, 11, 1)


def test_draws_depend_only_on_the_seed_and_the_identifier():
    ids = [f"999{i:07d}" for i in range(2000)]
    first = draws(ids, seed=3)
    assert (first == draws(list(reversed(ids)), seed=3)[::-1]).all()
    assert ((first >= 0) & (first < 1)).all()
    assert 0.45 < (first < 0.5).mean() < 0.55
    assert (first != draws(ids, seed=4)).mean() > 0.99


def test_a_fraction_or_a_number_of_people_but_not_both():
    assert sample_fraction(None, 250, 1000) == 0.25
    assert sample_fraction(None, 5000, 1000) == 1.0
    assert sample_fraction(0.1, None, 1000) == 0.1
    with pytest.raises(UsageError):
        sample_fraction(0.1, 100, 1000)
    with pytest.raises(UsageError):
        sample_fraction(None, None, 1000)


def _rows(folder, table):
    return duckdb.sql(
        f"SELECT * FROM read_parquet('{folder / (table + '.parquet')}') ORDER BY ALL"
    ).fetchall()


@pytest.mark.spark
def test_spark_and_duckdb_draw_the_same_sample_and_it_validates(tmp_path, monkeypatch, spark):
    monkeypatch.setenv("RISKSTRAT_HOME", str(tmp_path / "home"))
    runner = CliRunner()
    extract = tmp_path / "extract"
    made = runner.invoke(app, [
        "generate", "--out", str(extract), "--patients", "1500", "--seed", "3",
        "--extract-date", EXTRACT_DATE.isoformat(),
    ])  # fmt: skip
    assert made.exit_code == 0, made.output
    outs = {}
    for engine in ("duckdb", "spark"):
        outs[engine] = tmp_path / f"sample-{engine}"
        result = runner.invoke(app, [
            "sample", "--data", str(extract), "--out", str(outs[engine]), "--fraction", "0.3",
            "--seed", "7", "--engine", engine,
        ])  # fmt: skip
        assert result.exit_code == 0, result.output
    for table in TABLE_ORDER:
        assert _rows(outs["spark"], table) == _rows(outs["duckdb"], table), table
    manifests = {e: read_manifest(p) for e, p in outs.items()}
    assert manifests["spark"].row_counts == manifests["duckdb"].row_counts
    assert manifests["spark"].extract_date == EXTRACT_DATE
    with validate_extract(outs["spark"], max_reject_share=0.0) as sampled:
        people = sampled.summary.rows_accepted["patients"]
        assert not any(sampled.summary.rows_rejected.values())
    with validate_extract(extract) as whole:
        everyone = whole.summary.rows_accepted["patients"]
        # Every row of a sampled person is there, and nobody else's.
        sampled_ids = {r[0] for r in _rows(outs["duckdb"], "patients")}
        for table in ("activity", "observations"):
            expected = whole.con.execute(
                f"SELECT count(*) FROM {table} WHERE nhs_number IN (SELECT unnest(?))",
                [sorted(sampled_ids)],
            ).fetchall()[0][0]
            assert manifests["duckdb"].row_counts[table] == expected > 0
    assert 0.25 * everyone < people < 0.35 * everyone
