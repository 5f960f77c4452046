"""NHS number check digits (Modulus 11) and synthetic number generation.

The rule (NHS Data Dictionary): multiply digits 1-9 by the weights 10..2, sum, take
``11 - (sum mod 11)``; 11 means a check digit of 0 and 10 means the number is invalid.
The same rule is written once more in SQL, for DuckDB and Spark alike (``check_digit_sql`` in
``riskstrat.data.rules``); a test checks that the two agree.
"""

from __future__ import annotations

import re

import numpy as np
import numpy.typing as npt

_WEIGHTS = np.arange(10, 1, -1, dtype=np.int64)  # 10, 9, ..., 2
_TEN_DIGITS = re.compile(r"[0-9]{10}")

#: Prefix of NHS numbers that are never issued to real people.
SYNTHETIC_PREFIX = "999"
#: How many distinct valid NHS numbers the ``999`` range holds, exactly: the 10**6 nine-digit
#: bodies ``999000000..999999999`` less the 90,909 whose Modulus 11 check digit would be 10
#: (those bodies are never issued). A test recomputes it by enumeration.
SYNTHETIC_NHS_CAPACITY = 909_091


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


#: How people write an NHS number: three, three and four digits, apart or joined by single
#: spaces or dashes ("999 725 7952", "999-725-7952"), with spaces around the whole.
_WRITTEN = re.compile(r"\s*([0-9]{3})[ -]?([0-9]{3})[ -]?([0-9]{4})\s*")


def normalise_nhs_number(text: str) -> str:
    """An NHS number as people write it, as ten digits: ``"999 725 7952"`` -> ``"9997257952"``.

    Anything that is not ten digits in the 3-3-4 pattern (with single spaces or dashes
    between the groups) comes back unchanged, so a pseudonym or a malformed value is judged
    by the caller's own rules. The check digit is not checked here.
    """
    m = _WRITTEN.fullmatch(text)
    return "".join(m.groups()) if m else text


def is_valid_nhs_number(value: str) -> bool:
    """True when ``value`` is ten digits whose last digit is the Modulus 11 check digit."""
    if not _TEN_DIGITS.fullmatch(value):
        return False
    return check_digit(value[:9]) == int(value[9])


def synthetic_nhs_numbers(rng: np.random.Generator, n: int) -> npt.NDArray[np.str_]:
    """Draw ``n`` distinct valid NHS numbers in the ``999`` synthetic range, in random order.

    Numbers whose check digit would be 10 are skipped, as the NHS does. The range holds
    exactly :data:`SYNTHETIC_NHS_CAPACITY` valid numbers, so ``n`` must not exceed that.
    """
    _check_capacity(n)
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


def _check_capacity(n: int) -> None:
    if n > SYNTHETIC_NHS_CAPACITY:
        raise ValueError(
            f"asked for {n:,} synthetic NHS numbers, but the 999 range holds only "
            f"{SYNTHETIC_NHS_CAPACITY:,} valid ones (10**6 nine-digit bodies less those whose "
            "Modulus 11 check digit would be 10), and synthetic data may use no other prefix"
        )


def all_synthetic_nhs_numbers() -> npt.NDArray[np.int64]:
    """Every valid NHS number in the ``999`` range, ascending, as 10-digit integers."""
    body = 999_000_000 + np.arange(1_000_000, dtype=np.int64)
    total = np.zeros(body.shape[0], dtype=np.int64)
    rest = body.copy()
    for weight in range(2, 11):  # the last digit of the body has weight 2, the first 10
        total += (rest % 10) * weight
        rest //= 10
    check = (11 - total % 11) % 11
    ok = check != 10
    numbers: npt.NDArray[np.int64] = body[ok] * 10 + check[ok]
    return numbers


def sorted_synthetic_nhs_numbers(rng: np.random.Generator, n: int) -> npt.NDArray[np.int64]:
    """Draw ``n`` distinct valid ``999`` NHS numbers, returned in ascending order.

    Any ``n`` up to :data:`SYNTHETIC_NHS_CAPACITY` works (all of them at the capacity).

    Raises:
        ValueError: ``n`` is above the capacity of the range.
    """
    _check_capacity(n)
    if n < 0:
        raise ValueError("n must not be negative")
    valid = all_synthetic_nhs_numbers()
    pick = rng.choice(valid.shape[0], size=n, replace=False)
    return valid[np.sort(pick)]
