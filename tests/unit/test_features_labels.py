"""Point-in-time features and labels on hand-made extracts."""

from __future__ import annotations

from datetime import date, timedelta
from itertools import pairwise

import pandas as pd
import pytest

from riskstrat.data.extract import validate_extract
from riskstrat.features.build import build_features as _build
from riskstrat.features.build import feature_columns
from riskstrat.features.labels import build_labels, label_window_complete
from tests.support.extracts import (
    P1,
    P2,
    P3,
    base_tables,
    generated_in_small_row_groups,
    write_extract,
)

D = date(2026, 2, 1)


def build(tmp_path, tables, index_dates=(D,)):
    root = write_extract(tmp_path / f"x{len(list(tmp_path.iterdir()))}", tables)
    with validate_extract(root, max_reject_share=1.0) as extract:
        feats = _build(extract.con, index_dates=list(index_dates))
        labels = build_labels(extract.con, index_dates=list(index_dates))
    return feats, labels


def row(frame: pd.DataFrame, nhs: str, when: date = D) -> pd.Series:
    hit = frame[(frame.nhs_number == nhs) & (frame.index_date == when)]
    assert len(hit) == 1, f"expected one row for the patient at {when}"
    return hit.iloc[0]


def test_feature_values_for_a_known_patient(tmp_path):
    feats, _ = build(tmp_path, base_tables())
    p1 = row(feats, P1)
    assert p1.age_years == 85  # born 1940-05-01
    assert p1.sex_female == 1 and p1.imd_decile == 3
    assert p1.emergency_admissions_90d == 1 and p1.emergency_admissions_365d == 1
    assert p1.days_since_last_emergency_admission == 22  # 2026-01-10 -> 2026-02-01
    assert p1.emergency_bed_days_365d == 5
    assert p1.ae_attendances_90d == 1
    assert p1.elective_admissions_365d == 0  # 2026-10-30 is after the index date
    assert p1.outpatient_missed_365d == 0  # 2026-02-01 is on the index date: not before it
    assert p1.ltc_copd == 1 and p1.ltc_count == 1
    assert p1.distinct_medicines_90d == 0  # issued 2026-09-01, after the index date
    assert p1.age_band == "85+" and p1.imd_quintile == "2" and p1.ethnic_group == "White"
    assert set(feature_columns()) <= set(feats.columns)


def test_features_at_a_later_date_see_later_events(tmp_path):
    later = date(2026, 10, 1)
    feats, _ = build(tmp_path, base_tables(), [later])
    p1 = row(feats, P1, later)
    assert p1.distinct_medicines_90d == 2 and p1.opioid_90d == 1
    assert p1.falls_risk_drug_classes_90d == 1
    assert p1.falls_365d == 1 and p1.lives_alone == 1
    assert p1.bmi_latest == 24.5 and p1.cfs_latest == 6
    assert p1.outpatient_missed_365d == 1
    # eFI deficits: respiratory disease, falls, social vulnerability -> 3/36
    assert p1.efi == pytest.approx(round(3 / 36, 4))


@pytest.mark.parametrize("values", [("31.0", "27.5"), ("27.5", "31.0")])
def test_two_readings_on_the_latest_day_give_the_higher_whatever_their_order(tmp_path, values):
    later = date(2026, 10, 1)
    tables = base_tables()
    tables["observations"] += [
        {"nhs_number": P1, "observed_on": "2026-07-01", "code": "BMI", "value": v} for v in values
    ] + [
        {"nhs_number": P1, "observed_on": "2026-07-01", "code": "CFS", "value": v}
        for v in ("5", "4")
    ]
    feats, _ = build(tmp_path, tables, [later])
    p1 = row(feats, P1, later)
    assert p1.bmi_latest == 31.0 and p1.cfs_latest == 5  # not 24.5/6 from May


EVENTS_ON_OR_AFTER = [
    ("activity", {"nhs_number": P1, "setting": "inpatient", "admission_method": "emergency",
                  "start_date": "{d}", "end_date": "", "primary_diagnosis": "", "attended": ""}),
    ("activity", {"nhs_number": P1, "setting": "ae", "admission_method": "",
                  "start_date": "{d}", "end_date": "", "primary_diagnosis": "", "attended": ""}),
    ("activity", {"nhs_number": P1, "setting": "gp", "admission_method": "",
                  "start_date": "{d}", "end_date": "", "primary_diagnosis": "", "attended": "true"}),
    ("conditions", {"nhs_number": P1, "condition": "HEART_FAILURE", "diagnosed_on": "{d}"}),
    ("medications", {"nhs_number": P1, "issued_on": "{d}", "medicine": "diazepam",
                     "drug_class": "BENZODIAZEPINE"}),
    ("observations", {"nhs_number": P1, "observed_on": "{d}", "code": "FALL", "value": ""}),
    ("observations", {"nhs_number": P1, "observed_on": "{d}", "code": "CARE_HOME", "value": ""}),
    ("observations", {"nhs_number": P1, "observed_on": "{d}", "code": "CFS", "value": "8"}),
]  # fmt: skip


@pytest.mark.parametrize("offset_days", [0, 1, 45, 200])
def test_events_on_or_after_the_index_date_never_change_features(tmp_path, offset_days):
    base, _ = build(tmp_path, base_tables())
    tables = base_tables()
    when = (D + timedelta(days=offset_days)).isoformat()
    for table, event in EVENTS_ON_OR_AFTER:
        tables[table].append({k: v.format(d=when) for k, v in event.items()})
    changed, _ = build(tmp_path, tables)
    pd.testing.assert_frame_equal(base, changed)


def test_the_same_events_the_day_before_do_change_features(tmp_path):
    base, _ = build(tmp_path, base_tables())
    tables = base_tables()
    when = (D - timedelta(days=1)).isoformat()
    for table, event in EVENTS_ON_OR_AFTER:
        tables[table].append({k: v.format(d=when) for k, v in event.items()})
    changed = row(build(tmp_path, tables)[0], P1)
    before = row(base, P1)
    assert changed.emergency_admissions_90d == before.emergency_admissions_90d + 1
    assert changed.days_since_last_emergency_admission == 1
    assert changed.ltc_heart_failure == 1 and changed.benzodiazepine_90d == 1
    assert changed.falls_365d == 1 and changed.care_home == 1 and changed.cfs_latest == 8
    assert changed.gp_contacts_90d == before.gp_contacts_90d + 1


def test_lookback_windows_include_day_minus_90_and_exclude_day_minus_91(tmp_path):
    tables = base_tables()
    for days in (90, 91, 365, 366):
        tables["activity"].append(
            {
                "nhs_number": P1,
                "setting": "gp",
                "admission_method": "",
                "start_date": (D - timedelta(days=days)).isoformat(),
                "end_date": "",
                "primary_diagnosis": "",
                "attended": "true",
            }
        )
    p1 = row(build(tmp_path, tables)[0], P1)
    assert p1.gp_contacts_90d == 1  # day -90 only
    assert p1.gp_contacts_365d == 3  # days -90, -91, -365


@pytest.mark.slow  # features at many dates or ranges
def test_label_window_includes_day_0_and_excludes_day_90(tmp_path):
    outcomes = {}
    for offset in (-1, 0, 89, 90):
        tables = base_tables()
        tables["activity"] = [r for r in tables["activity"] if r["admission_method"] != "emergency"]
        tables["activity"].append(
            {
                "nhs_number": P1,
                "setting": "inpatient",
                "admission_method": "emergency",
                "start_date": (D + timedelta(days=offset)).isoformat(),
                "end_date": "",
                "primary_diagnosis": "",
                "attended": "",
            }
        )
        _, labels = build(tmp_path, tables)
        outcomes[offset] = int(row(labels, P1).label)
    assert outcomes == {-1: 0, 0: 1, 89: 1, 90: 0}


def test_only_emergency_inpatient_admissions_are_the_outcome(tmp_path):
    tables = base_tables()
    tables["activity"] = [r for r in tables["activity"] if r["admission_method"] != "emergency"]
    for setting, method in (("inpatient", "elective"), ("inpatient", "maternity"), ("ae", "")):
        tables["activity"].append(
            {
                "nhs_number": P1,
                "setting": setting,
                "admission_method": method,
                "start_date": "2026-02-10",
                "end_date": "",
                "primary_diagnosis": "",
                "attended": "",
            }
        )
    _, labels = build(tmp_path, tables)
    assert row(labels, P1).label == 0


@pytest.mark.parametrize(
    ("changes", "in_population"),
    [
        ({"registered_from": "2026-02-01"}, True),
        ({"registered_from": "2026-02-02"}, False),
        ({"registered_to": "2026-02-01"}, False),
        ({"registered_to": "2026-02-02"}, True),
        ({"date_of_death": "2026-02-01"}, True),  # alive on the index date
        ({"date_of_death": "2026-01-31"}, False),
    ],
)
def test_population_is_registered_and_alive_on_the_index_date(tmp_path, changes, in_population):
    tables = base_tables()
    tables["patients"][0].update(changes)
    feats, labels = build(tmp_path, tables)
    assert (P1 in set(feats.nhs_number)) is in_population
    assert (P1 in set(labels.nhs_number)) is in_population


def test_left_practice_and_opt_outs(tmp_path):
    feats, _ = build(tmp_path, base_tables(), [D, date(2024, 12, 1)])
    assert P2 not in set(feats[feats.index_date == D].nhs_number)  # left 2025-01-01
    assert P2 in set(feats[feats.index_date == date(2024, 12, 1)].nhs_number)
    p3 = row(feats, P3)  # dies 2026-03-01, type 1 opt-out
    assert bool(p3.type1_opt_out) is True


@pytest.mark.slow  # features at many dates or ranges
def test_several_index_dates_equal_one_at_a_time(tmp_path):
    dates = [date(2025, 12, 1), D, date(2026, 6, 1)]
    together, labels = build(tmp_path, base_tables(), dates)
    for d in dates:
        alone, alone_labels = build(tmp_path, base_tables(), [d])
        part = together[together.index_date == d].reset_index(drop=True)
        pd.testing.assert_frame_equal(part, alone)
        pd.testing.assert_frame_equal(
            labels[labels.index_date == d].reset_index(drop=True), alone_labels
        )


def test_label_window_complete():
    assert label_window_complete(date(2026, 8, 1), date(2026, 11, 1), 90)
    assert label_window_complete(date(2026, 8, 3), date(2026, 11, 1), 90)  # ends 10-31
    assert not label_window_complete(date(2026, 8, 4), date(2026, 11, 1), 90)


def test_a_people_sample_keeps_exactly_their_rows(tmp_path):
    from riskstrat.features.build import population_size, sample_people

    dates = [date(2025, 12, 1), D]
    root = write_extract(tmp_path / "sample", base_tables())
    with validate_extract(root, max_reject_share=1.0) as extract:
        everyone = _build(extract.con, index_dates=dates)
        labels = build_labels(extract.con, index_dates=dates)
        assert population_size(extract.con, D) == int((everyone.index_date == D).sum())
        in_pop = sorted(everyone.nhs_number.unique())
        chosen = [in_pop[0], P3]  # P3 may not be in the population: asking is harmless
        some = _build(extract.con, index_dates=dates, people=chosen)
        some_labels = build_labels(extract.con, index_dates=dates, people=chosen)
        registered = extract.con.execute("SELECT nhs_number FROM patients").df()
        assert sample_people(extract.con, fraction=1.0, seed=3) == sorted(registered.nhs_number)
        assert sample_people(extract.con, fraction=0.5, seed=3) == sample_people(
            extract.con, fraction=0.5, seed=3
        )
        with pytest.raises(ValueError):
            sample_people(extract.con, fraction=0.0, seed=3)
    assert set(some.nhs_number) == set(chosen) & set(everyone.nhs_number)
    assert len(some) > 0
    expected = everyone[everyone.nhs_number.isin(chosen)].reset_index(drop=True)
    pd.testing.assert_frame_equal(some, expected)  # same values: only whose rows, not what
    pd.testing.assert_frame_equal(
        some_labels, labels[labels.nhs_number.isin(chosen)].reset_index(drop=True)
    )


def test_a_sample_with_its_own_event_tables_gives_the_same_rows(tmp_path):
    """Training builds its sampled months from copies of the event tables cut down to the
    sample (``people_sample``); every feature and label must equal those built from the
    whole extract, and the copies must be gone afterwards."""
    from riskstrat.features.build import people_sample, sample_people
    from riskstrat.synth import generate_extract

    out = generate_extract(
        tmp_path / "gen", n_patients=600, seed=5, months=30, extract_date=date(2026, 6, 1),
        fmt="parquet",
    )  # fmt: skip
    dates = [date(2025, 9, 1), date(2026, 1, 1), date(2026, 2, 1)]
    with validate_extract(out.out_dir, max_reject_share=1.0) as extract:
        con = extract.con
        temp_tables = "SELECT table_name FROM duckdb_tables() WHERE temporary ORDER BY 1"
        before = con.execute(temp_tables).fetchall()
        chosen = sample_people(con, fraction=0.3, seed=7)
        by_list = _build(con, index_dates=dates, people=chosen)
        labels_by_list = build_labels(con, index_dates=dates, people=chosen)
        with people_sample(con, chosen) as sample:
            assert sample.size == len(set(chosen))
            copied = con.execute(f"SELECT count(*) FROM {sample.tables['medications']}")
            assert (
                0
                < copied.fetchall()[0][0]
                < con.execute("SELECT count(*) FROM medications").fetchall()[0][0]
            )
            by_copies = _build(con, index_dates=dates, people=sample)
            labels_by_copies = build_labels(con, index_dates=dates, people=sample)
        left = con.execute(temp_tables).fetchall()
        everyone = _build(con, index_dates=dates)
    assert left == before
    assert len(by_copies) > 100 and by_copies.nhs_number.nunique() < everyone.nhs_number.nunique()
    pd.testing.assert_frame_equal(by_copies, by_list)
    pd.testing.assert_frame_equal(labels_by_copies, labels_by_list)
    # The history's start (recorded_history_days) still comes from the whole extract.
    expected = everyone[everyone.nhs_number.isin(chosen)].reset_index(drop=True)
    pd.testing.assert_frame_equal(by_copies, expected)


@pytest.mark.slow  # features over many ranges
def test_ranges_of_people_give_exactly_the_features_of_one_query(tmp_path):
    """Big populations are built in NHS-number ranges, one query each (``person_ranges``);
    every value and the row order must be those of one query over everyone, for one index
    month, for several, and for a sample of people."""
    from riskstrat.features.build import person_ranges, sample_people, sampled_people

    one_month = [date(2026, 1, 1)]
    months = [date(2025, 9, 1), date(2026, 1, 1), date(2026, 2, 1)]
    with generated_in_small_row_groups(tmp_path) as extract:
        con = extract.con
        ranges = person_ranges(con, chunk_people=400)
        assert len(ranges) == 4  # 1,500 people: 4 ranges of 375
        assert ranges[0][0] is None and ranges[-1][1] is None
        assert all(hi == lo for (_, hi), (lo, _) in pairwise(ranges))
        bounds = [lo for lo, _ in ranges[1:]]
        ranks = con.execute(
            "SELECT count(*) FROM patients p JOIN unnest(?) b(nhs) ON p.nhs_number < b.nhs "
            "GROUP BY b.nhs ORDER BY b.nhs",
            [bounds],
        ).fetchall()
        assert [r[0] for r in ranks] == [375, 750, 1125]
        for dates in (one_month, months):
            whole = _build(con, index_dates=dates, chunk_people=10**9)
            ranged = _build(con, index_dates=dates, chunk_people=400)
            assert len(whole) > 1000
            pd.testing.assert_frame_equal(ranged, whole)
        chosen = sample_people(con, fraction=0.5, seed=2)
        with sampled_people(con, chosen):
            assert len(person_ranges(con, sampled=True, chunk_people=200)) == -(-len(chosen) // 200)
        whole = _build(con, index_dates=months, people=chosen, chunk_people=10**9)
        ranged = _build(con, index_dates=months, people=chosen, chunk_people=200)
        assert 0 < whole.nhs_number.nunique() < 1500
        pd.testing.assert_frame_equal(ranged, whole)


def test_a_sample_listing_people_twice_counts_them_once(tmp_path):
    """A sample may name a person more than once; the ranges count people, not names."""
    from riskstrat.features.build import person_ranges, sample_people, sampled_people

    with generated_in_small_row_groups(tmp_path) as extract:
        con = extract.con
        chosen = sample_people(con, fraction=0.5, seed=2)
        with sampled_people(con, chosen):
            once = person_ranges(con, sampled=True, chunk_people=200)
        with sampled_people(con, chosen + chosen[::-1]):
            assert person_ranges(con, sampled=True, chunk_people=200) == once
            assert person_ranges(con, sampled=True, chunk_people=len(chosen)) == [(None, None)]
            assert len(person_ranges(con, sampled=True, chunk_people=len(chosen) - 1)) == 2


@pytest.mark.slow  # features at many dates or ranges
def test_a_column_missing_values_in_some_ranges_only_has_one_query_s_type(tmp_path):
    """Ranges of one person each: "days since the last emergency admission" is missing for
    people never admitted, so some ranges hold a value there and others only a missing one.
    The ranged result must still be one query's, float64 throughout, and every feature
    must come out a number."""
    import numpy as np

    from riskstrat.features.build import person_ranges, sampled_people

    months = [date(2025, 9, 1), date(2026, 1, 1)]
    column = "days_since_last_emergency_admission"
    with generated_in_small_row_groups(tmp_path) as extract:
        con = extract.con
        everyone = _build(con, index_dates=months[1:])
        admitted = everyone.loc[everyone[column].notna(), "nhs_number"].head(3).tolist()
        never = everyone.loc[everyone[column].isna(), "nhs_number"].head(3).tolist()
        chosen = sorted(admitted + never)
        assert len(admitted) == 3 and len(never) == 3
        with sampled_people(con, chosen):
            assert len(person_ranges(con, sampled=True, chunk_people=1)) == 6
        whole = _build(con, index_dates=months, people=chosen, chunk_people=10**9)
        ranged = _build(con, index_dates=months, people=chosen, chunk_people=1)
    assert len(whole) == 12 and whole[column].isna().any() and whole[column].notna().any()
    pd.testing.assert_frame_equal(ranged, whole)
    assert ranged[column].dtype == np.float64
    assert list(ranged["index_date"]) == [months[0]] * 6 + [months[1]] * 6
    for name in feature_columns():
        assert pd.api.types.is_numeric_dtype(ranged[name].dtype), name


@pytest.mark.slow  # features over many ranges
def test_stacked_ranges_are_copied_once_and_let_go_before_the_next_query():
    """``_stack_frames`` joins the ranges' frames as ``pd.concat`` would (widening a column
    whose dtype differs between them), but takes the next frame only after the last one has
    been released, so that its memory is reused."""
    import gc
    import weakref

    import numpy as np

    from riskstrat.features.build import _stack_frames

    frames = [
        pd.DataFrame(
            {
                "nhs_number": pd.Series(["9990000018", "9990000026"], dtype=str),
                "count": np.array([1, 2], dtype=np.int32),
                "days": np.array([3, 4], dtype=np.int32),
                "flag": [True, False],
            }
        ),
        pd.DataFrame(
            {
                "nhs_number": pd.Series(["9990000034"], dtype=str),
                "count": np.array([3], dtype=np.int32),
                "days": np.array([np.nan]),  # missing in this range only: float64
                "flag": [True],
            }
        ),
        pd.DataFrame(
            {
                "nhs_number": pd.Series(["9990000042", "9990000050"], dtype=str),
                "count": np.array([4, 5], dtype=np.int32),
                "days": np.array([6, 7], dtype=np.int32),
                "flag": [False, False],
            }
        ),
    ]
    expected = pd.concat(frames, ignore_index=True)
    released: list[bool] = []

    def produced():
        previous = None
        for frame in frames:
            if previous is not None:
                gc.collect()
                released.append(previous() is None)
            copy = frame.copy(deep=True)
            previous = weakref.ref(copy)
            yield copy
            del copy

    stacked = _stack_frames(produced(), capacity=10)
    pd.testing.assert_frame_equal(stacked, expected)
    assert stacked["count"].dtype == np.int32 and stacked["days"].dtype == np.float64
    assert released == [True, True]
    with pytest.raises(ValueError, match="more than the 4 rows"):
        _stack_frames(iter(frame.copy() for frame in frames), capacity=4)


def test_ranges_are_not_used_when_events_are_not_stored_in_nhs_number_order(tmp_path):
    """In an extract not sorted by patient, every range's query would read every row, so
    the features are built in one query; the same for tables without row-group statistics."""
    from riskstrat.features.build import _range_read_factor, person_ranges

    with generated_in_small_row_groups(tmp_path) as extract:
        con = extract.con
        assert len(person_ranges(con, chunk_people=400)) == 4
        con.execute(
            "CREATE OR REPLACE TABLE medications AS "
            "SELECT * FROM medications ORDER BY hash(nhs_number, issued_on, medicine)"
        )
        assert person_ranges(con, chunk_people=400) == [(None, None)]
        con.execute("CREATE TEMP VIEW medication_view AS SELECT * FROM medications")
        assert _range_read_factor(con, ["medication_view"], [(None, "9990000500")]) is None
