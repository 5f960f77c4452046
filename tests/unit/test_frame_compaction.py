"""The training frame's compaction keeps every value: whole numbers in 16 bits where they
fit, 32 where they do not, floats in 32 bits with their missing values."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from riskstrat.pipelines.frame import _compact, _concat_compact, _narrow_int, _same_values


@pytest.mark.parametrize(
    ("values", "dtype"),
    [
        ([0, 1, 2], np.int16),
        ([-32768, 32767], np.int16),
        ([0, 32768], np.int32),
        ([-32769, 5], np.int32),
        ([0, 2**31 - 1], np.int32),
        ([0, 2**31], np.int64),
        ([], np.int16),
    ],
)
def test_a_whole_number_column_takes_the_narrowest_type_that_holds_it(values, dtype):
    column = pd.Series(values, dtype=np.int64)
    assert _narrow_int(column.to_numpy()) == dtype
    small = _compact(pd.DataFrame({"x": column}), ["x"])
    assert small["x"].dtype == dtype
    assert small["x"].tolist() == values


def test_narrower_columns_are_left_as_they_are():
    frame = pd.DataFrame({"x": np.array([1, 2], dtype=np.int8), "y": [1, 70_000]})
    small = _compact(frame.astype({"y": np.int32}), ["x", "y"])
    assert small["x"].dtype == np.int8 and small["y"].dtype == np.int32


def test_floats_keep_their_missing_values_and_the_trees_see_the_same_numbers():
    frame = pd.DataFrame(
        {
            "days": np.array([3, 0, 400, 30_000], dtype=np.int64),
            "bmi": [21.5, np.nan, 30.25, 18.0],
            "label": np.array([0, 1, 0, 1], dtype=np.int64),  # not a feature: left alone
        }
    )
    small = _compact(frame, ["days", "bmi"])
    assert small["days"].dtype == np.int16 and small["bmi"].dtype == np.float32
    assert small["label"].dtype == np.int64
    assert np.isnan(small["bmi"].iloc[1])
    # LightGBM reads float32: the compact frame gives it the very same matrix.
    as_trees_read = frame[["days", "bmi"]].to_numpy(dtype=np.float32, na_value=np.nan)
    compact_read = small[["days", "bmi"]].to_numpy(dtype=np.float32, na_value=np.nan)
    assert np.array_equal(as_trees_read, compact_read, equal_nan=True)


def test_pieces_concatenate_to_the_compact_whole():
    # As a database gives them: whole numbers in one piece, the same column with a missing
    # value (so floats) in the next.
    first = pd.DataFrame({"a": np.array([1, 2], dtype=np.int64), "b": [1, 2]})
    second = pd.DataFrame({"a": [np.nan, 4.0], "b": [40_000, 3]})
    pieces = [_compact(first, ["a", "b"]), _compact(second, ["a", "b"])]
    assert pieces[0]["a"].dtype == np.int16 and pieces[1]["b"].dtype == np.int32
    joined = _concat_compact(pieces, ["a", "b"])
    assert pieces == []
    assert joined["a"].dtype == np.float32 and joined["b"].dtype == np.int32
    assert np.array_equal(joined["a"], [1, 2, np.nan, 4], equal_nan=True)
    assert joined["b"].tolist() == [1, 2, 40_000, 3]


@pytest.mark.parametrize("dtype", ["str", object])
def test_keys_are_compared_value_by_value(dtype):
    a = pd.Series(["9990000018", "9990000026"], dtype=dtype)
    assert _same_values(a, pd.Series(["9990000018", "9990000026"], dtype=dtype))
    assert not _same_values(a, pd.Series(["9990000018", "9990000034"], dtype=dtype))
    assert not _same_values(a, a.iloc[:1])
