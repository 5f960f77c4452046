"""The API's cohort page items as JSON text, written once at publication so that serving a
page is reading stored text, not building it.

``cohort_item_json`` writes one item (the service uses it for a run published before items
were stored); ``cohort_items_json`` writes a whole run's at once, column by column in Arrow
(no Python per member but for the rare value that needs ``json.dumps``), and gives exactly
the same text: a million people's run has some 170,000 members, whose items took seconds
one at a time."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from riskstrat.data.contract import IdentifierKind
from riskstrat.store.records import is_arrow_text, json_text

__all__ = [
    "cohort_item_json",
    "cohort_items_json",
    "criteria_json",
    "json_code",
    "json_codes",
    "json_number",
    "json_numbers",
    "json_rank",
]

_TEXT = pa.large_string()
#: Text ``json.dumps`` writes as it is between its quotes: printable ASCII but ``"`` and ``\``.
_PLAIN_TEXT = r"^[ !#-\[\]-~]*$"
#: Arrow writes the shortest digits that read back as the same float, as ``repr`` does, but
#: lays them out differently below this size (``0.00001`` for ``1e-05``) and from 1e10 up
#: (``1e+10`` for ``10000000000.0``): those go through ``repr``.
_SMALLEST_PLAIN = 1e-4


def json_code(text: str) -> str:
    """A JSON string. Codes and NHS numbers are plain letters and digits (the contract
    checks them), which need no escaping; anything else (a pseudonym with ``.``, ``_`` or
    ``-``) goes through ``json.dumps``."""
    return f'"{text}"' if text.isascii() and text.isalnum() else json.dumps(text)


def json_number(value: float | None) -> str:
    """A JSON number (``repr`` of a finite float is what ``json.dumps`` writes), or null."""
    if value is None:
        return "null"
    number = float(value)
    if math.isnan(number):
        return "null"
    return repr(number) if math.isfinite(number) else json.dumps(number)


def json_rank(rank: int | None) -> str:
    """A rank as a JSON number, or null."""
    return "null" if rank is None else str(int(rank))


def criteria_json(keys: Sequence[str], criteria_text: Mapping[str, str]) -> str:
    """The ``eligible_because`` list of a cohort item."""
    return json.dumps([{"key": k, "text": criteria_text.get(k, k)} for k in keys])


def cohort_item_json(
    *,
    rank: int,
    practice_rank: int | None = None,
    nhs_number: str,
    practice_code: str,
    pcn_code: str,
    risk: float,
    percentile: float,
    expected_benefit: float | None,
    because_json: str,
    reasons_json: str,
    identifier_kind: IdentifierKind = "nhs_number",
    ranking_json: str = "null",
) -> str:
    """One item of the API's cohort page (``CohortMemberPublic``) as JSON text."""
    return (
        f'{{"cohort_rank":{int(rank)},"nhs_number":{json_code(nhs_number)},'
        f'"identifier_kind":"{identifier_kind}",'
        f'"practice_code":{json_code(practice_code)},"pcn_code":{json_code(pcn_code)},'
        f'"practice_rank":{json_rank(practice_rank)},'
        f'"risk":{json_number(risk)},"percentile":{json_number(percentile)},'
        f'"expected_admissions_avoided":{json_number(expected_benefit)},'
        f'"eligible_because":{because_json},"reasons":{reasons_json},'
        f'"ranking":{ranking_json}}}'
    )


def _json(value: Any) -> str:
    """JSON text for ``value``, kept as it is if it is text already."""
    return value if isinstance(value, str) else json_text(value)


def _text(values: Sequence[Any] | npt.NDArray[Any]) -> pa.Array:
    return pa.array(values, _TEXT)


def _arrow_text(values: pd.Series) -> pa.Array:
    """Text values as Arrow text (no Python object per value where pandas holds Arrow)."""
    return pa.array(values, from_pandas=True).cast(_TEXT)


def _put(out: pa.Array, where: npt.NDArray[np.bool_], values: Sequence[str]) -> pa.Array:
    """``out`` with the rows ``where`` replaced by ``values`` (one per such row, in order)."""
    if not where.any():
        return out
    return pc.replace_with_mask(out, pa.array(where), _text(values))


def json_codes(values: pd.Series) -> pa.Array:
    """``json_code`` of each of ``values`` (text, none missing), as Arrow text."""
    text = _arrow_text(values)
    quote = pa.scalar('"', _TEXT)
    out = pc.binary_join_element_wise(quote, text, quote, pa.scalar("", _TEXT))
    plain = pc.match_substring_regex(text, _PLAIN_TEXT).to_numpy(zero_copy_only=False)
    odd = ~plain
    return _put(out, odd, [json.dumps(v) for v in text.filter(pa.array(odd)).to_pylist()])


def json_numbers(values: npt.ArrayLike) -> pa.Array:
    """``json_number`` of each of ``values`` (floats; NaN as null), as Arrow text."""
    number = np.asarray(values, dtype=np.float64)
    written = pc.cast(pa.array(number), _TEXT)
    # Arrow writes 3.0 as "3": repr's ".0" is added where neither a point nor an exponent is.
    whole = pc.invert(pc.match_substring_regex(written, r"[.en]"))
    point = pc.binary_join_element_wise(written, pa.scalar(".0", _TEXT), pa.scalar("", _TEXT))
    written = pc.if_else(whole, point, written)
    size = np.abs(number)
    exponent = pc.match_substring(written, "e").to_numpy(zero_copy_only=False)
    missing = np.isnan(number)
    written = pc.if_else(pa.array(missing), pa.scalar("null", _TEXT), written)
    odd = exponent | ~(size >= _SMALLEST_PLAIN) & ~missing | np.isinf(number)
    return _put(written, odd, [json_number(v) for v in number[odd].tolist()])


def _reasons_json(reasons: pd.Series, at: npt.NDArray[np.intp]) -> pa.Array:
    """The reasons of the rows ``at`` of ``reasons`` as JSON text (-1: none, written null):
    Arrow text as it is (``score_frame``'s), lists of reasons encoded."""
    if is_arrow_text(reasons):
        text = reasons.array.__arrow_array__().cast(_TEXT)
        taken = text.take(pa.array(at, mask=at < 0))
        return pc.fill_null(taken.combine_chunks(), "null")
    values = reasons.to_numpy(dtype=object)
    return _text(["null" if i < 0 else _json(values[i]) for i in at.tolist()])


def _because_json(
    cohorts: pd.DataFrame, criteria_text: Mapping[str, Mapping[str, str]]
) -> pa.Array:
    """Each member's ``eligible_because`` list, written once per cohort and set of criteria."""
    keys = pd.Series(
        list(
            zip(
                cohorts["intervention"].to_numpy(dtype=object).astype(str),
                map(tuple, cohorts["criteria"].to_numpy(dtype=object)),
                strict=True,
            )
        ),
        dtype=object,
    )
    codes, distinct = pd.factorize(keys)
    written = _text(
        [criteria_json(criteria, criteria_text.get(name, {})) for name, criteria in distinct]
    )
    return written.take(pa.array(codes))


def _ranking_json(cohorts: pd.DataFrame) -> pa.Array:
    """Each member's record of the model its cohort is ranked by, or null (most cohorts)."""
    if "ranking" not in cohorts:
        return _text(np.full(len(cohorts), "null", dtype=object))
    ranking = cohorts["ranking"].to_numpy(dtype=object)
    ranked = ~pd.isna(ranking)  # a record (a missing one, None or NaN, is written null)
    out = _text(np.full(len(cohorts), "null", dtype=object))
    return _put(out, ranked, [json_text(v) for v in ranking[ranked]])


def cohort_items_json(
    cohorts: pd.DataFrame,
    scores: pd.DataFrame,
    criteria_text: Mapping[str, Mapping[str, str]],
    *,
    identifier_kind: IdentifierKind = "nhs_number",
) -> pd.Series:
    """Each cohort member's API item as JSON text (``cohort_item_json``'s, to the byte).

    Args:
        cohorts: cohort members (``intervention``, ``nhs_number``, ``practice_code``,
            ``pcn_code``, ``risk``, ``expected_benefit``, ``rank``, ``criteria``, and
            optionally ``ranking``).
        scores: everyone scored (``nhs_number``, ``percentile``, ``reasons``: JSON text, as
            ``score_frame`` writes them, or lists of reasons).
        criteria_text: per intervention, each criterion's words.
        identifier_kind: what ``nhs_number`` holds (NHS numbers or pseudonyms), said in
            every item.

    Returns:
        Arrow-backed text, one item per row of ``cohorts`` and on its index.
    """
    if cohorts.empty:
        return pd.Series(pd.arrays.ArrowExtensionArray(pa.array([], _TEXT)), index=cohorts.index)
    members = cohorts["nhs_number"]
    # Each member's row among the scores (-1: not scored), found once for both columns read.
    found = pc.index_in(_arrow_text(members), value_set=_arrow_text(scores["nhs_number"]))
    at = found.fill_null(-1).to_numpy().astype(np.intp)
    scored = at >= 0
    percentile = np.full(len(at), np.nan)
    percentile[scored] = scores["percentile"].to_numpy(dtype=np.float64)[at[scored]]
    # Within each practice, by the cohort's order (the frame is in rank order per cohort).
    intervention = pd.factorize(cohorts["intervention"])[0]
    practice = pd.factorize(cohorts["practice_code"])[0]
    order = np.lexsort((cohorts["rank"].to_numpy(), intervention))  # stable: ties as given
    counted = pd.DataFrame({"i": intervention[order], "p": practice[order]})
    practice_rank = np.empty(len(order), dtype=np.int64)
    practice_rank[order] = counted.groupby(["i", "p"], sort=False).cumcount().to_numpy() + 1

    def whole(values: npt.NDArray[np.int64]) -> pa.Array:
        return pc.cast(pa.array(values), _TEXT)

    benefit = cohorts["expected_benefit"].to_numpy(dtype=np.float64, na_value=np.nan)
    parts: list[pa.Array | str] = [
        '{"cohort_rank":', whole(cohorts["rank"].to_numpy(dtype=np.int64)),
        ',"nhs_number":', json_codes(members),
        f',"identifier_kind":"{identifier_kind}","practice_code":',
        json_codes(cohorts["practice_code"]),
        ',"pcn_code":', json_codes(cohorts["pcn_code"]),
        ',"practice_rank":', whole(practice_rank),
        ',"risk":', json_numbers(cohorts["risk"].to_numpy(dtype=np.float64)),
        ',"percentile":', json_numbers(percentile),
        ',"expected_admissions_avoided":', json_numbers(benefit),
        ',"eligible_because":', _because_json(cohorts, criteria_text),
        ',"reasons":', _reasons_json(scores["reasons"], at),
        ',"ranking":', _ranking_json(cohorts),
        "}",
    ]  # fmt: skip
    pieces = [pa.scalar(p, _TEXT) if isinstance(p, str) else p for p in parts]
    items = pc.binary_join_element_wise(*pieces, pa.scalar("", _TEXT))
    return pd.Series(pd.arrays.ArrowExtensionArray(items), index=cohorts.index)
