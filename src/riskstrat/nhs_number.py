"""NHS number check digits (Modulus 11) and synthetic number generation.

The rule (NHS Data Dictionary): multiply digits 1-9 by the weights 10..2, sum, take
``11 - (sum mod 11)``; 11 means a check digit of 0 and 10 means the number is invalid.
The same rule is written once more in SQL for DuckDB (``riskstrat.extract``); a test checks
that the two agree.
"""

from __future__ import annotations

import re

import numpy as np
import numpy.typing as npt

_WEIGHTS = np.arange(10, 1, -1, dtype=np.int64)  # 10, 9, ..., 2
_TEN_DIGITS = re.compile(r"[0-9]{10}")

#: Prefix of NHS numbers that are never issued to real people.
SYNTHETIC_PREFIX = "999"


def check_digit(first_nine: str) -> int | None:
    """Return the Modulus 11 check digit for nine digits, or None when it would be 10.

    Args:
        first_nine: the first nine digits of an NHS number.

    Returns:
        The check digit 0-9, or None if no valid NHS number starts with these digits.
    """
    if len(first_nine) != 9 or not first_nine.isdigit():
        raise ValueError("expected exactly nine digits")
    total = sum(int(d) * w for d, w in zip(first_nine, range(10, 1, -1), strict=True))
    digit = (11 - total % 11) % 11
    return None if digit == 10 else digit


def is_valid_nhs_number(value: str) -> bool:
    """True when ``value`` is ten digits whose last digit is the Modulus 11 check digit."""
    if not _TEN_DIGITS.fullmatch(value):
        return False
    return check_digit(value[:9]) == int(value[9])


def synthetic_nhs_numbers(rng: np.random.Generator, n: int) -> npt.NDArray[np.str_]:
    """Draw ``n`` distinct valid NHS numbers in the ``999`` synthetic range.

    Numbers whose check digit would be 10 are skipped, as the NHS does. The range holds
    about 909,000 valid numbers, so ``n`` must be below that.
    """
    capacity = 909_000
    if n > capacity:
        raise ValueError(f"the 999 range holds about {capacity:,} valid numbers; asked for {n:,}")
    chosen: npt.NDArray[np.int64] = np.empty(0, dtype=np.int64)
    while chosen.size < n:
        need = n - chosen.size
        draw = rng.choice(1_000_000, size=min(1_000_000, int(need * 1.2) + 16), replace=False)
        body = 999_000_000 + draw.astype(np.int64)  # nine digits starting 999
        digits = (body[:, None] // (10 ** np.arange(8, -1, -1, dtype=np.int64))) % 10
        check = (11 - (digits @ _WEIGHTS) % 11) % 11
        ok = check != 10
        numbers = body[ok] * 10 + check[ok]
        chosen = np.unique(np.concatenate([chosen, numbers]))
    chosen = rng.permutation(chosen)[:n]
    return chosen.astype("U10")
