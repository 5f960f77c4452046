"""The rows staging hands to the database driver: plain Python values, whatever the frame's
column types (text as strings or None, numbers as ints and floats, NaN as None, JSON text
kept as it is)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa

from riskstrat.store.records import frame_tuples


def _frame(text_dtype: object) -> pd.DataFrame:
    reasons = ['[{"group":"age","text":"Age 84"}]', None, "[]", '[{"group":"x"}]']
    return pd.DataFrame(
        {
            "nhs_number": pd.Series(
                ["9990000018", "9990000026", None, "9990000034"], dtype=text_dtype
            ),
            "risk": [0.5, np.nan, 0.25, 1.0],
            "rank": np.array([1, 2, 3, 4], dtype=np.int32),
            "reasons": pd.Series(reasons, dtype=pd.ArrowDtype(pa.large_string())),
            "contributions": [{"age": 1.5}, None, {"age": np.float64(0.25)}, {}],
        }
    )


def test_rows_are_plain_values_for_every_kind_of_text_column():
    columns = ["nhs_number", "risk", "rank", "reasons", "contributions"]
    encode = [False, False, False, True, True]
    expected = [
        ("9990000018", 0.5, 1, '[{"group":"age","text":"Age 84"}]', '{"age":1.5}'),
        ("9990000026", None, 2, None, None),
        (None, 0.25, 3, "[]", '{"age":0.25}'),
        ("9990000034", 1.0, 4, '[{"group":"x"}]', "{}"),
    ]
    for text_dtype in (object, pd.StringDtype(), pd.StringDtype("pyarrow")):
        chunks = list(frame_tuples(_frame(text_dtype), columns, 3, encode))
        assert [len(c) for c in chunks] == [3, 1]
        rows = [row for chunk in chunks for row in chunk]
        assert rows == expected, text_dtype
        for row in rows:  # nothing numpy or pandas reaches the driver
            assert all(v is None or type(v) in (str, int, float) for v in row), row
