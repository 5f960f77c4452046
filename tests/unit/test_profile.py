"""The realism profile on hand-made extracts (the synthetic population is checked in test_synth_realism)."""

from __future__ import annotations

from pytest import approx

from riskstrat.data.extract import validate_extract
from riskstrat.features.profile import profile_extract
from tests.support.extracts import P1, base_tables, write_extract


def _profile(tmp_path, tables):
    root = write_extract(tmp_path / "x", tables)
    with validate_extract(root, max_reject_share=1.0) as extract:
        return {
            m.name: m
            for m in profile_extract(extract.con, extract_date=extract.extract_date).measures
        }


def test_counts_on_a_tiny_extract(tmp_path):
    measures = _profile(tmp_path, base_tables())
    assert measures["type 1 opt-outs"].value == approx(100.0 / 3)
    assert measures["died during the history"].value == approx(100.0 / 3)
    assert measures["left the practice"].value == approx(100.0 / 3)
    assert measures["duplicate GP contacts (same person and day)"].value == 0.0
    # only P1 (85) is registered and alive on the index date: P2 left, P3 died
    assert measures["people registered and alive on 2026-08-01"].value == 1
    assert measures["aged 85+"].value == 100.0 and measures["aged 85+"].ok is False


def test_duplicate_gp_contacts_are_measured(tmp_path):
    tables = base_tables()
    gp = dict(tables["activity"][4])
    tables["activity"] += [gp, dict(gp, nhs_number=P1)]
    measures = _profile(tmp_path, tables)
    # GP rows: P2 x2 on one day, P1 x1 -> 1 duplicate of 3 rows
    assert measures["duplicate GP contacts (same person and day)"].value == approx(100.0 / 3)


def test_every_measure_has_a_section_and_a_shown_value(tmp_path):
    for m in _profile(tmp_path, base_tables()).values():
        assert m.section and m.shown
