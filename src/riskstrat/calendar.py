"""Calendar months, once: index dates are first days of months, and months are ``YYYY-MM``."""

from __future__ import annotations

from datetime import date, timedelta

from riskstrat.errors import UsageError


def first_of_month(d: date) -> date:
    """The first day of ``d``'s month."""
    return d.replace(day=1)


def add_months(d: date, months: int) -> date:
    """The first day of the month ``months`` after the month of ``d`` (negative: before)."""
    total = d.year * 12 + (d.month - 1) + months
    return date(total // 12, total % 12 + 1, 1)


def month_starts(first: date, last: date) -> list[date]:
    """Every first-of-month from ``first`` to ``last`` inclusive (both firsts of months)."""
    out, d = [], first_of_month(first)
    while d <= last:
        out.append(d)
        d = add_months(d, 1)
    return out


def latest_complete_month(extract_date: date, horizon_days: int) -> date:
    """The latest index month whose ``horizon_days`` outcome window an extract covers."""
    month = first_of_month(extract_date - timedelta(days=horizon_days))
    while month + timedelta(days=horizon_days) > extract_date:
        month = add_months(month, -1)
    return month


def parse_month(text: str) -> date:
    """``YYYY-MM`` to the first day of that month.

    Raises:
        UsageError: the text is not a month written as ``YYYY-MM`` (a ``ValueError``).
    """
    try:
        year, month = text.split("-")
        if len(year) != 4 or len(month) != 2:
            raise ValueError
        return date(int(year), int(month), 1)
    except ValueError:
        raise UsageError(f"month must look like YYYY-MM, got {text!r}") from None


def format_month(d: date) -> str:
    """A date's month as ``YYYY-MM``."""
    return f"{d.year:04d}-{d.month:02d}"
