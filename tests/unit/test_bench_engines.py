"""The bench beside Spark: a process tree's peak memory, populations beyond the synthetic
NHS number range combined into one pseudonymous extract, the stages' Spark twins, the
report's engines table."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap

import duckdb
import pytest

from riskstrat.bench.data_stages import population_sizes
from riskstrat.bench.measure import (
    BENCH_EXTRACT_DATE,
    TreeRssSampler,
    process_tree,
    tree_rss_mb,
)
from riskstrat.bench.report import render_report
from riskstrat.bench.stages import with_engine
from riskstrat.data.combine import combine_extracts
from riskstrat.data.contract import PSEUDONYM_PATTERN, TABLE_ORDER
from riskstrat.data.extract import validate_extract
from riskstrat.errors import UsageError
from riskstrat.synth import generate_extract

#: A child that starts a grandchild holding ~200 MB, busy for a second of CPU time and then
#: asleep for half a second, and waits for it.
_PARENT = textwrap.dedent(
    """
    import subprocess, sys
    grandchild = (
        "import time; block = b'x' * (200 * 1024 * 1024)\\n"
        "while time.process_time() < 1.0: pass\\n"
        "time.sleep(0.5)"
    )
    subprocess.run([sys.executable, "-c", grandchild], check=True)
    """
)


def test_the_tree_sampler_counts_what_a_process_starts():
    proc = subprocess.Popen([sys.executable, "-c", _PARENT])
    with TreeRssSampler(proc.pid, interval=0.1) as sampler:
        proc.wait(timeout=60)
    assert proc.returncode == 0
    assert sampler.samples >= 5
    # the 200 MB are the grandchild's: the child itself holds ~10 MB of interpreter
    assert sampler.peak_mb is not None and sampler.peak_mb > 200
    # and the grandchild's second of CPU, read from /proc while it ran
    assert sampler.cpu_seconds is not None and sampler.cpu_seconds > 0.9
    assert tree_rss_mb(proc.pid) is None  # gone: nothing to read


def test_the_process_tree_lists_this_process_and_its_children():
    import os

    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(5)"])
    try:
        tree = process_tree(os.getpid())
        assert tree[0] == os.getpid() and child.pid in tree
        assert (tree_rss_mb(os.getpid()) or 0) > 20
    finally:
        child.kill()
        child.wait()
    assert process_tree(2**22 + 7) == []  # above Linux's largest pid: no such process


def test_a_population_beyond_the_synthetic_range_is_split_evenly():
    assert population_sizes(20_000) == [20_000]
    assert population_sizes(909_091) == [909_091]
    assert population_sizes(909_092) == [454_546, 454_546]
    assert population_sizes(3_636_364) == [909_091] * 4
    assert population_sizes(2_000_001) == [666_667, 666_667, 666_667]


def test_with_spark_the_stages_with_a_twin_run_on_both_engines():
    stages = ["generate", "train", "features", "score", "api"]
    assert with_engine(stages, "duckdb") == stages
    assert with_engine(stages, "spark") == [
        "generate", "train", "features", "features-spark", "score", "score-spark", "api",
    ]  # fmt: skip
    assert with_engine(["features-spark", "features"], "spark") == ["features-spark", "features"]
    with pytest.raises(UsageError, match="engine must be"):
        with_engine(stages, "polars")


def _two_populations(tmp_path, out):
    """Two populations of 300 (seeds 1 and 2) and their oracles, combined into ``out``."""
    parts, oracles, rows = [], [], {}
    for copy in range(2):
        summary = generate_extract(
            tmp_path / f"part{copy}", n_patients=300, seed=copy + 1, months=13,
            extract_date=BENCH_EXTRACT_DATE, fmt="parquet", oracle=True,
        )  # fmt: skip
        parts.append(summary.out_dir)
        oracles.append(summary.oracle_path)
        rows = {t: rows.get(t, 0) + n for t, n in summary.rows.items()}
    combined = combine_extracts(
        parts, out, oracle_parts=oracles, oracle_path=tmp_path / "o.parquet"
    )
    return parts, oracles, rows, combined


@pytest.mark.slow  # generates two populations
def test_two_populations_combine_into_one_pseudonymous_extract_that_validates(tmp_path):
    parts, oracles, rows, combined = _two_populations(tmp_path, tmp_path / "extract")
    assert combined.rows == rows and combined.parts == 2
    manifest = json.loads((tmp_path / "extract" / "manifest.json").read_text())
    assert manifest["identifier_kind"] == "pseudonym" and manifest["row_counts"] == rows
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporaries
    # validates with nothing rejected: every event's person is in patients, every
    # pseudonym is one the contract accepts
    with validate_extract(tmp_path / "extract") as extract:
        assert extract.summary.rows_read == rows
        assert sum(extract.summary.rows_rejected.values()) == 0
        assert extract.summary.manifest.identifier_kind == "pseudonym"
        people = [r[0] for r in extract.con.execute("SELECT nhs_number FROM patients").fetchall()]
    assert len(people) == len(set(people)) == 600
    assert all(re.fullmatch(PSEUDONYM_PATTERN, p) for p in people)
    assert {p.split("-")[0] for p in people} == {"p0", "p1"}
    # each copy's people keep their own events: copy 1's activity is the second part's
    con = duckdb.connect()
    for table in TABLE_ORDER:
        own = con.execute(
            f"SELECT count(*) FROM read_parquet('{tmp_path / 'extract' / table}.parquet') "
            "WHERE nhs_number LIKE 'p1-%'"
        ).fetchall()[0][0]
        assert (
            own
            == con.execute(
                f"SELECT count(*) FROM read_parquet('{parts[1] / table}.parquet')"
            ).fetchall()[0][0]
        )
    oracle = con.execute(
        f"SELECT count(*), count(DISTINCT (nhs_number, index_date)), "
        f"count(*) FILTER (WHERE nhs_number NOT IN (SELECT nhs_number FROM "
        f"read_parquet('{tmp_path / 'extract' / 'patients'}.parquet'))) "
        f"FROM read_parquet('{tmp_path / 'o.parquet'}')"
    ).fetchall()[0]
    expected = sum(
        con.execute(f"SELECT count(*) FROM read_parquet('{o}')").fetchall()[0][0] for o in oracles
    )
    assert oracle == (expected, expected, 0)


def _result(stage, patients, seconds, tree):
    return {"stage": stage, "patients": patients, "seconds": seconds, "rows": patients,
            "peak_rss_mb": tree / 2, "peak_tree_rss_mb": tree}  # fmt: skip


def test_the_report_sets_each_spark_stage_beside_its_duckdb_twin():
    run = {
        "at": "2026-12-06T20:00:00+00:00",
        "machine": {"cpu": "x", "cores": 2, "memory_gb": 23.4},
        "results": [
            _result("features", 2_000_000, 30.0, 3000.0),
            _result("features-spark", 2_000_000, 90.0, 9000.0),
            _result("train", 2_000_000, 200.0, 6000.0),
        ],
    }
    text = render_report(run)
    assert "peak tree RSS (MB)" in text
    section = text.split("### DuckDB beside Spark", 1)[1].split("###", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    assert rows == ["| `features` | 2,000,000 | 30.0 | 15.0 | 90.0 | 45.0 | 3,000 | 9,000 | 3.0x |"]
    del run["results"][1]
    assert "### DuckDB beside Spark" not in render_report(run)


@pytest.mark.spark
def test_the_spark_features_stage_measures_validation_and_a_month_on_pseudonyms(tmp_path, spark):
    """features-spark on a combined (pseudonymous) extract, in this process's session: the
    month's people are DuckDB's, and the figures name the session it ran in."""
    from riskstrat.bench.spark_stages import stage_features_spark
    from riskstrat.features.build import build_features

    _two_populations(tmp_path, tmp_path / "w" / "extract")
    result = stage_features_spark({"patients": 600, "workdir": str(tmp_path / "w")})
    with validate_extract(tmp_path / "w" / "extract") as extract:
        expected = build_features(extract.con, index_dates=[BENCH_EXTRACT_DATE])
    detail = result["detail"]
    assert result["rows"] == detail["people"] == len(expected) > 300
    assert detail["columns"] == expected.shape[1]
    assert detail["validate_seconds"] > 0 and detail["features_seconds"] > 0
    assert result["seconds"] == pytest.approx(
        detail["validate_seconds"] + detail["features_seconds"], abs=0.02
    )
    assert detail["spark"]["shuffle_partitions"] == 4  # the test session's, not a default
    assert set(detail["input_partitions"]) == set(TABLE_ORDER)
    assert all(n >= 1 for n in detail["input_partitions"].values())
    # Spark's own totals for each step: the validation read the files and cached the tables
    assert detail["spark_validate"]["input_mb"] > 0 and detail["spark_validate"]["tasks"] > 0
    assert detail["spark_features"]["tasks"] > 0


def test_beyond_one_population_training_reads_a_sample_of_one_populations_size(
    tmp_path, monkeypatch
):
    from riskstrat.bench import model_stages
    from riskstrat.config import Settings
    from riskstrat.nhs_number import SYNTHETIC_NHS_CAPACITY

    _, _, rows, _ = _two_populations(tmp_path, tmp_path / "extract")
    settings = Settings(home=tmp_path / "home")
    extract = tmp_path / "extract"
    # At one population's size, training reads the whole extract.
    assert model_stages._training_extract(extract, SYNTHETIC_NHS_CAPACITY, settings) == (None, 0.0)
    # Beyond it, a sample of SYNTHETIC_NHS_CAPACITY people (here more than the 600 there are,
    # so everyone, every row) drawn by riskstrat sample beside the extract.
    from riskstrat.pipelines import sample as sample_pipeline

    drawn: dict[str, object] = {}
    original = sample_pipeline.run_sample

    def spy(data_dir, out, **kwargs):
        drawn.update(kwargs)
        return original(data_dir, out, **kwargs)

    monkeypatch.setattr(sample_pipeline, "run_sample", spy)
    sampled, seconds = model_stages._training_extract(extract, SYNTHETIC_NHS_CAPACITY + 1, settings)
    assert drawn["people"] == SYNTHETIC_NHS_CAPACITY
    assert sampled == tmp_path / "train-sample" and seconds > 0
    with validate_extract(sampled) as sample:
        assert sample.summary.rows_read == rows
