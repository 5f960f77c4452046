"""The generator at scale: blocks, ordering, NHS number capacity and pinned digests."""

from __future__ import annotations

import datetime as dt
import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from riskstrat.data import contract
from riskstrat.data.extract import validate_extract
from riskstrat.nhs_number import (
    SYNTHETIC_NHS_CAPACITY,
    all_synthetic_nhs_numbers,
    check_digit,
    is_valid_nhs_number,
    sorted_synthetic_nhs_numbers,
    synthetic_nhs_numbers,
)
from riskstrat.synth import blocks as blocks_module
from riskstrat.synth import generate_extract, simulate

EXTRACT_DATE = dt.date(2025, 4, 1)
DATE_COLUMN = {
    "activity": "start_date",
    "conditions": "diagnosed_on",
    "medications": "issued_on",
    "observations": "observed_on",
}


def _digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


# ---------------------------------------------------------------------------- NHS numbers


def test_capacity_is_exact() -> None:
    # Independent count: nine-digit bodies 999xxxxxx whose Modulus 11 check digit is not 10.
    body = np.arange(999_000_000, 1_000_000_000, dtype=np.int64)
    digits = (body[:, None] // (10 ** np.arange(8, -1, -1, dtype=np.int64))) % 10
    total = digits @ np.arange(10, 1, -1, dtype=np.int64)
    assert int(((11 - total % 11) % 11 != 10).sum()) == SYNTHETIC_NHS_CAPACITY == 909_091
    valid = all_synthetic_nhs_numbers()
    assert valid.shape == (SYNTHETIC_NHS_CAPACITY,)
    assert np.all(np.diff(valid) > 0)
    for x in (*valid[:50], *valid[-50:], *valid[::20_011]):
        assert is_valid_nhs_number(str(x))
    assert check_digit("999000000") is None  # a body the range skips
    assert valid[0] // 10 != 999_000_000


def test_sorted_numbers_up_to_the_capacity() -> None:
    rng = np.random.default_rng(1)
    some = sorted_synthetic_nhs_numbers(rng, 1000)
    assert np.all(np.diff(some) > 0) and all(is_valid_nhs_number(str(x)) for x in some)
    everyone = sorted_synthetic_nhs_numbers(rng, SYNTHETIC_NHS_CAPACITY)
    np.testing.assert_array_equal(everyone, all_synthetic_nhs_numbers())
    with pytest.raises(ValueError, match="909,091"):
        sorted_synthetic_nhs_numbers(rng, SYNTHETIC_NHS_CAPACITY + 1)
    with pytest.raises(ValueError, match="909,091"):
        synthetic_nhs_numbers(rng, SYNTHETIC_NHS_CAPACITY + 1)


def test_more_people_than_numbers_is_refused_clearly(tmp_path: Path) -> None:
    out = tmp_path / "x"
    with pytest.raises(ValueError, match=r"909,091 valid numbers .*check digit would be 10"):
        generate_extract(
            out, n_patients=SYNTHETIC_NHS_CAPACITY + 1, seed=1, extract_date=EXTRACT_DATE
        )
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError, match="999"):
        simulate(n_patients=1_000_000, seed=1, extract_date=EXTRACT_DATE)


# ---------------------------------------------------------------------------- blocks


@pytest.fixture()
def small_blocks(monkeypatch: pytest.MonkeyPatch) -> int:
    monkeypatch.setattr(blocks_module, "BLOCK_SIZE", 150)
    return 150


def _sorted_by_number_then_date(frame: pd.DataFrame, date_col: str | None) -> bool:
    keys = frame[["nhs_number"] + ([date_col] if date_col else [])].astype(str)
    return keys.equals(keys.sort_values(list(keys.columns)).reset_index(drop=True))


def test_blocks_concatenate_into_globally_sorted_valid_tables(
    tmp_path: Path, small_blocks: int
) -> None:
    n = 400  # three blocks: 150, 150, 100
    out = tmp_path / "x"
    s = generate_extract(out, n_patients=n, seed=7, months=14, extract_date=EXTRACT_DATE)
    assert s.rows["patients"] == n
    with validate_extract(out, max_reject_share=0.0, rejects_path=tmp_path / "r.csv") as ex:
        assert ex.summary.rows_rejected == dict.fromkeys(contract.TABLE_ORDER, 0)
        assert ex.summary.warnings == []
    tables = {
        t: pd.read_csv(out / f"{t}.csv", dtype=str, keep_default_na=False)
        for t in contract.TABLE_ORDER
    }
    for t in contract.TABLE_ORDER:
        assert _sorted_by_number_then_date(tables[t], DATE_COLUMN.get(t)), t
        # One header line only, however many blocks.
        assert (out / f"{t}.csv").read_text().count("nhs_number,") == 1
    # Every block drew its own people: all three practices' worth of registrations exist.
    assert tables["patients"].nhs_number.is_unique
    # simulate() with the same arguments gives the same rows (blocks concatenated).
    sim = simulate(n_patients=n, seed=7, months=14, extract_date=EXTRACT_DATE)
    for t in contract.TABLE_ORDER:
        assert len(sim.tables[t]) == len(tables[t]), t
    assert list(sim.patients.nhs_number.astype(str)) == list(tables["patients"].nhs_number)
    assert sim.state.n == n and len(sim.nhs_numbers) == n


def test_parquet_blocks_are_row_groups_with_contract_types(
    tmp_path: Path, small_blocks: int
) -> None:
    out = tmp_path / "p"
    generate_extract(
        out, n_patients=400, seed=7, months=14, extract_date=EXTRACT_DATE, fmt="parquet"
    )
    patients = pq.ParquetFile(out / "patients.parquet")
    assert patients.metadata.num_row_groups == 3
    assert str(patients.schema_arrow.field("imd_decile").type) == "int32"
    frame = pq.read_table(out / "medications.parquet").to_pandas()
    assert _sorted_by_number_then_date(frame, "issued_on")
    again = tmp_path / "q"
    generate_extract(
        again, n_patients=400, seed=7, months=14, extract_date=EXTRACT_DATE, fmt="parquet"
    )
    assert _digests(out) == _digests(again)


def test_each_block_has_its_own_stream_keyed_by_its_index(small_blocks: int) -> None:
    small = blocks_module._plan(400, 3)
    large = blocks_module._plan(700, 3)
    assert small.blocks == 3 and large.blocks == 5
    keys = [(s.entropy, s.spawn_key) for s in small.block_seeds]
    assert len(set(keys)) == 3
    # A block's stream depends on the seed and its index only, not on how many blocks follow.
    assert keys == [(s.entropy, s.spawn_key) for s in large.block_seeds[:3]]
    assert [small.bounds(b) for b in range(3)] == [(0, 150), (150, 300), (300, 400)]


# ---------------------------------------------------------------------------- pinned digests

# The sha256 of every file of a small generation. Update these ONLY for an intentional change
# to the generator (its parameters, its random streams or its writing); any other change in
# them means generation stopped being deterministic. (December 2026, issue 22: the manifest
# became contract version 2 with row counts, and patients' IMD decile is recorded exactly when
# their LSOA is; every other file kept its digest, so the random streams are unchanged.
# December 2026, issue 25: the winter rise is England's published size, winter_amplitude
# 0.15 -> 0.095; every file that records admissions, and the oracle, changed.)
PINNED_CSV = {
    "activity.csv": "94586867aec1959e3f877417b3c1a19e2f41cc0c8d5f54136c1b42fdf14018ee",
    "conditions.csv": "6221ad5d8ce2b56eb72ae59151c072aea86ab09df1decf7775a6dbbabbb48c91",
    "manifest.json": "49faf5d0f7e08b2db5c7fd2c14bf6797bfe8a2ac100157afcafd464ce70d97c0",
    "medications.csv": "62733b3876270bd6363744823b78675ecf89201c78ed26c507dcaa1954a8e0e0",
    "observations.csv": "2242a27449773117fb8bf0107d0108307fe0fba48707e15448614e5b6e95d9eb",
    "patients.csv": "b1fa4d35ed7f2b7df762c7c5f3f0baca7ab2b9ecf673b76ad7df4fc28f00cf40",
    "oracle": "1e4a3e2ee86164bd26619ac74691a8a9fd6880c4fa4360f11f3de035da2b79a3",  # values, see _oracle_digest
}
PINNED_PARQUET = {
    "activity.parquet": "ff51b4f233d7cc2ca3a7745852023db1ca4ab380abfed17fa34187da5b3d6908",
    "conditions.parquet": "1c008abcde8f0417c46dc4ef6e7370cdb9b0369a77a2b982510afbfdc7e62f33",
    "manifest.json": "49faf5d0f7e08b2db5c7fd2c14bf6797bfe8a2ac100157afcafd464ce70d97c0",
    "medications.parquet": "f256312771901bc97445d452cfe95239bf1fe4c8c6282497234cb58850cb71dd",
    "observations.parquet": "89453a79934c2357f0ea143912e4448a52ccb67a5f3f127eb614f9fdb3002608",
    "patients.parquet": "73bb3b93639a7c6787e6b77949cd425259b4ac874b9993af79f0efc01ba690e4",
    "oracle": "1e4a3e2ee86164bd26619ac74691a8a9fd6880c4fa4360f11f3de035da2b79a3",  # values, see _oracle_digest
}


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_pinned_digests(tmp_path: Path, fmt: str) -> None:
    out = tmp_path / "pinned"
    generate_extract(
        out,
        n_patients=300,
        seed=20251123,
        months=13,
        extract_date=EXTRACT_DATE,
        fmt=fmt,  # type: ignore[arg-type]
        oracle=True,
    )
    got = _digests(out)
    got["oracle"] = _oracle_digest(tmp_path / "pinned.oracle.parquet")
    assert got == (PINNED_CSV if fmt == "csv" else PINNED_PARQUET)


def _oracle_digest(path: Path) -> str:
    """The oracle's values, floats rounded to 9 decimals. numpy's exp and log may differ in
    the last bit between CPUs (its SIMD code paths differ, e.g. AVX-512 against AVX2), so
    the file's bytes are not the same on every machine, while its values are."""
    frame = pd.read_parquet(path)
    floats = frame.select_dtypes("float").columns
    frame[floats] = frame[floats].round(9)
    return hashlib.sha256(frame.to_csv(index=False).encode()).hexdigest()
