"""The features as SQL: which columns there are, and the DuckDB query that computes them.

The query uses only data dated strictly before the index date. Static patient fields
(date of birth, sex, deprivation, practice) are used as recorded; registration and death
dates only decide who is in the population at the index date and never become features.

The SQL is written once, in DuckDB's dialect, and runs on Spark SQL as sqlglot transpiles
it (``riskstrat.engines.dialect.to_spark``; ``riskstrat.features.spark`` runs it there). It
therefore avoids what has no Spark form: no ``SELECT * EXCLUDE`` (columns are named), no
``unnest`` of a list parameter (index dates are the table ``INDEX_DATES_TABLE``), no
``date_sub('year', ...)`` (age is written with year, month and day), and rounding goes
through ``round_half_up`` (the engines round doubles differently). The NHS-number range
parameters (``$range_lo``, ``$range_hi``) are DuckDB's alone: Spark partitions the work
itself, so its query has none. tests/engines/test_spark_equality.py holds the two engines'
results equal, column by column.

:mod:`riskstrat.features.build` runs the query (in NHS-number ranges, on samples of people);
this module only writes it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from riskstrat.data.contract import (
    CONDITIONS,
    DRUG_CLASSES,
    EVENT_CODES,
    FALLS_RISK_DRUG_CLASSES,
    MEDICINE_CURRENT_DAYS,
    STATE_CODES,
    STATE_CURRENT_MONTHS,
)
from riskstrat.engines.dialect import round_half_up

_ACTIVITY_COUNTS = {
    # feature stem: SQL condition on an activity row `a`
    "emergency_admissions": "a.setting = 'inpatient' AND a.admission_method = 'emergency'",
    "elective_admissions": "a.setting = 'inpatient' AND a.admission_method = 'elective'",
    "ae_attendances": "a.setting = 'ae'",
    "outpatient_attendances": "a.setting = 'outpatient' AND a.attended IS DISTINCT FROM false",
    "outpatient_missed": "a.setting = 'outpatient' AND a.attended = false",
    "gp_contacts": "a.setting = 'gp' AND a.attended IS DISTINCT FROM false",
    "gp_missed": "a.setting = 'gp' AND a.attended = false",
    "community_contacts": "a.setting = 'community'",
}
_WINDOWS_DAYS = (90, 365)

#: Unplanned care over the whole recorded history and in short recent windows. A person's
#: underlying tendency to be admitted shows mostly through how often they have needed
#: unplanned care, and a longer record measures it better; the rates per year of record
#: make counts comparable between people with short and long records.
UNPLANNED_HISTORY_COLUMNS = (
    "recorded_history_days",
    "emergency_admissions_ever",
    "ae_attendances_ever",
    "emergency_admissions_per_year",
    "ae_attendances_per_year",
    "emergency_admissions_30d",
    "ae_attendances_30d",
    "ae_attendances_180d",
)
#: Rates are per year of record, with at least this many days in the denominator so a new
#: registrant's single visit does not read as a huge rate.
MIN_RATE_DAYS = 30

#: Deficits of the electronic frailty index that this contract can see, each as a SQL flag
#: over the assembled feature columns. The eFI divides the count by its 36 deficits.
EFI_DEFICITS: dict[str, str] = {
    "atrial_fibrillation": "ltc_af",
    "cardiovascular_disease": "ltc_stroke_tia",
    "chronic_kidney_disease": "ltc_ckd",
    "diabetes": "ltc_diabetes",
    "heart_failure": "ltc_heart_failure",
    "hypertension": "ltc_hypertension",
    "ischaemic_heart_disease": "ltc_chd",
    "osteoporosis": "ltc_osteoporosis",
    "parkinsonism": "ltc_parkinsons",
    "peripheral_vascular_disease": "ltc_pad",
    "respiratory_disease": "greatest(ltc_copd, ltc_asthma)",
    "arthritis": "ltc_rheumatoid_arthritis",
    "memory_and_cognitive_problems": "greatest(ltc_dementia, memory_concern)",
    "falls": "CASE WHEN falls_365d > 0 THEN 1 ELSE 0 END",
    "housebound": "housebound",
    "mobility_problems": "mobility_problem",
    "requirement_for_care": "greatest(has_carer, home_care_package, care_home)",
    "social_vulnerability": "greatest(lives_alone, social_isolation)",
    "polypharmacy": "CASE WHEN distinct_medicines_90d >= 5 THEN 1 ELSE 0 END",
    "urinary_incontinence": "incontinence",
    "visual_impairment": "visual_impairment",
    "hearing_impairment": "hearing_impairment",
    "weight_loss": "weight_loss",
}
EFI_DEFICIT_TOTAL = 36


def _lower(code: str) -> str:
    return code.lower()


def feature_columns() -> list[str]:
    """Every feature ``build_features`` returns, in a stable order."""
    cols = ["age_years", "sex_female", "imd_decile"]
    for stem in _ACTIVITY_COUNTS:
        cols += [f"{stem}_{w}d" for w in _WINDOWS_DAYS]
    cols += ["days_since_last_emergency_admission", "emergency_bed_days_365d"]
    cols += ["emergency_admissions_730d", "ae_attendances_730d", "days_since_last_ae_attendance"]
    cols += list(UNPLANNED_HISTORY_COLUMNS) + ["gp_contacts_30d"]
    cols += [f"ltc_{_lower(c)}" for c in CONDITIONS] + ["ltc_count"]
    cols += ["distinct_medicines_90d"]
    cols += [f"{_lower(c)}_90d" for c in DRUG_CLASSES] + ["falls_risk_drug_classes_90d"]
    cols += [_lower(c) for c in STATE_CODES]
    cols += ["falls_180d", "falls_365d"] + [_lower(c) for c in EVENT_CODES if c != "FALL"]
    cols += ["bmi_latest", "cfs_latest", "efi", "index_month"]
    cols += ["falls_assessment_365d", "medication_review_365d", "advance_care_plan_ever"]
    return cols


#: The table a people sample is registered as, for ``population_sql(sampled=True)``.
SAMPLE_TABLE = "sampled_people"


#: The tables a person's events are read from; ``people_sample`` makes cut-down copies.
EVENT_TABLES = ("activity", "conditions", "medications", "observations")


def event_tables(tables: Mapping[str, str] | None) -> dict[str, str]:
    """Where each event table is read from: itself, or a ``people_sample`` copy."""
    return {name: name for name in EVENT_TABLES} | dict(tables or {})


#: Completed years of age: the years between the two dates, less one before the birthday
#: (written with year/month/day so that DuckDB and Spark SQL compute it alike).
_AGE_SQL = (
    "(year(i.index_date) - year(p.date_of_birth) - CASE WHEN month(i.index_date) * 100 "
    "+ day(i.index_date) < month(p.date_of_birth) * 100 + day(p.date_of_birth) "
    "THEN 1 ELSE 0 END)"
)


def population_sql(*, sampled: bool = False, lower: bool = False, upper: bool = False) -> str:
    """SQL for ``pop``: everyone registered and alive at each index date in ``idx`` (with
    ``sampled``, only the people in ``SAMPLE_TABLE``; with ``lower`` and ``upper``, only
    NHS numbers from ``$range_lo`` and below ``$range_hi``)."""
    sample = (
        f"\n        WHERE p.nhs_number IN (SELECT nhs_number FROM {SAMPLE_TABLE})"
        if sampled
        else ""
    )
    sample += range_sql("p", lower=lower, upper=upper)
    return f"""
    pop AS (
        SELECT p.nhs_number, i.index_date, i.d30, i.d90, i.d180, i.d365, i.d730, i.d24m,
               p.registered_from, p.practice_code, p.pcn_code,
               coalesce(p.type1_opt_out, false) AS type1_opt_out,
               {_AGE_SQL} AS age_years, p.sex, p.imd_decile, p.ethnic_category
        FROM patients p
        JOIN idx i
          ON p.registered_from <= i.index_date
         AND (p.registered_to IS NULL OR p.registered_to > i.index_date)
         AND (p.date_of_death IS NULL OR p.date_of_death >= i.index_date)
         AND p.date_of_birth <= i.index_date{sample}
    )"""


#: The table the index dates are read from: one ``index_date`` column, registered by the
#: engine that runs the query (``features.build.index_dates_table``; on Spark a temp view).
INDEX_DATES_TABLE = "_index_dates"


def index_sql() -> str:
    """SQL for ``idx``: the distinct dates of ``INDEX_DATES_TABLE`` and the window starts
    measured back from each."""
    return f"""
    idx AS (
        SELECT index_date,
               CAST(index_date - INTERVAL 30 DAY AS DATE) AS d30,
               CAST(index_date - INTERVAL 90 DAY AS DATE) AS d90,
               CAST(index_date - INTERVAL 180 DAY AS DATE) AS d180,
               CAST(index_date - INTERVAL 365 DAY AS DATE) AS d365,
               CAST(index_date - INTERVAL 730 DAY AS DATE) AS d730,
               CAST(index_date - INTERVAL {STATE_CURRENT_MONTHS} MONTH AS DATE) AS d24m
        FROM (SELECT DISTINCT CAST(index_date AS DATE) AS index_date FROM {INDEX_DATES_TABLE})
    )"""


def range_sql(alias: str, *, lower: bool, upper: bool) -> str:
    """Conditions keeping ``alias``'s rows in one ``person_ranges`` range (its bounds are the
    parameters ``$range_lo`` and ``$range_hi``). Written on every table, not only on the
    population, so that DuckDB skips the other ranges' row groups (Spark: its partitions)."""
    sql = f" AND {alias}.nhs_number >= $range_lo" if lower else ""
    return sql + (f" AND {alias}.nhs_number < $range_hi" if upper else "")


def _rate(count: str) -> str:
    """``count`` per year of record (see ``MIN_RATE_DAYS``), to 4 decimals. In doubles in
    both engines (a ``365.0`` literal would be a decimal in Spark SQL) and rounded by
    ``round_half_up``, so DuckDB and Spark give the same value to the last bit."""
    per_year = f"CAST({count} AS DOUBLE) * 365 / greatest(g.recorded_history_days, {MIN_RATE_DAYS})"
    return round_half_up(per_year, 4)


def _columns(alias: str, named: Sequence[str]) -> str:
    """``alias.name`` for each column, where ``named`` holds names or ``... AS name``
    expressions."""
    names = [_ALIAS.search(item).group(1) if " AS " in item else item for item in named]  # type: ignore[union-attr]
    return ", ".join(f"{alias}.{name}" for name in names)


_ALIAS = re.compile(r"\bAS (\w+)\s*$")


def features_sql(
    *,
    sampled: bool = False,
    tables: Mapping[str, str] | None = None,
    lower: bool = False,
    upper: bool = False,
) -> str:
    """The features query, with the index dates as the parameter ``$index_dates``;
    ``tables`` names copies to read events from (``people_sample``); ``lower`` and
    ``upper`` keep one NHS-number range (``person_ranges``). The history's start is always
    read from the whole activity table."""
    t = event_tables(tables)
    r = {alias: range_sql(alias, lower=lower, upper=upper) for alias in "acmo"}
    act_aggs = []
    for stem, cond in _ACTIVITY_COUNTS.items():
        act_aggs.append(f"count(*) FILTER (WHERE {cond} AND a.start_date >= pop.d90) AS {stem}_90d")
        act_aggs.append(f"count(*) FILTER (WHERE {cond}) AS {stem}_365d")
    act_aggs.append(
        f"count(*) FILTER (WHERE {_ACTIVITY_COUNTS['gp_contacts']} "
        "AND a.start_date >= pop.d30) AS gp_contacts_30d"
    )
    act_aggs.append(
        "coalesce(sum(date_diff('day', a.start_date, a.end_date)) FILTER (WHERE "
        "a.setting = 'inpatient' AND a.admission_method = 'emergency' AND a.end_date IS NOT NULL "
        "AND a.end_date < pop.index_date), 0) AS emergency_bed_days_365d"
    )
    ltc_aggs = [
        f"max(CASE WHEN c.condition = '{c}' THEN 1 ELSE 0 END) AS ltc_{_lower(c)}"
        for c in CONDITIONS
    ]
    med_aggs = ["count(DISTINCT m.medicine) AS distinct_medicines_90d"]
    med_aggs += [
        f"max(CASE WHEN m.drug_class = '{c}' THEN 1 ELSE 0 END) AS {_lower(c)}_90d"
        for c in DRUG_CLASSES
    ]
    frid = ", ".join(f"'{c}'" for c in FALLS_RISK_DRUG_CLASSES)
    med_aggs.append(
        f"count(DISTINCT m.drug_class) FILTER (WHERE m.drug_class IN ({frid})) "
        "AS falls_risk_drug_classes_90d"
    )
    obs_aggs = [
        f"max(CASE WHEN o.code = '{c}' THEN 1 ELSE 0 END) AS {_lower(c)}" for c in STATE_CODES
    ]
    obs_aggs.append(
        "count(*) FILTER (WHERE o.code = 'FALL' AND o.observed_on >= pop.d180) AS falls_180d"
    )
    obs_aggs.append(
        "count(*) FILTER (WHERE o.code = 'FALL' AND o.observed_on >= pop.d365) AS falls_365d"
    )
    obs_aggs += [
        f"max(CASE WHEN o.code = '{c}' THEN 1 ELSE 0 END) AS {_lower(c)}"
        for c in EVENT_CODES
        if c != "FALL"
    ]
    # The latest value; two on the same day give the higher, so the result never depends
    # on the order rows are read in.
    obs_aggs += [
        f"arg_max(o.value, {{'d': o.observed_on, 'v': o.value}}) FILTER (WHERE o.code = '{code}') "
        f"AS {name}"
        for code, name in (("BMI", "bmi_latest"), ("CFS", "cfs_latest"))
    ]
    obs_aggs.append(
        "max(CASE WHEN o.code = 'FALLS_ASSESSMENT' AND o.observed_on >= pop.d365 "
        "THEN 1 ELSE 0 END) "
        "AS falls_assessment_365d"
    )
    obs_aggs.append(
        "max(CASE WHEN o.code = 'MEDICATION_REVIEW' AND o.observed_on >= pop.d365 "
        "THEN 1 ELSE 0 END) "
        "AS medication_review_365d"
    )

    zero_fill = [
        c
        for c in feature_columns()
        if c
        not in {
            "age_years",
            "sex_female",
            "imd_decile",
            "days_since_last_emergency_admission",
            "days_since_last_ae_attendance",
            "index_month",
            "bmi_latest",
            "cfs_latest",
            "efi",
            "advance_care_plan_ever",
            "ltc_count",
            "recorded_history_days",
            "emergency_admissions_per_year",
            "ae_attendances_per_year",
        }
    ]
    efi = " + ".join(f"({expr})" for expr in EFI_DEFICITS.values())
    ltc_count = " + ".join(f"ltc_{_lower(c)}" for c in CONDITIONS)
    nullable = {"bmi_latest", "cfs_latest"}
    filled = ",\n".join(f"coalesce(f.{c}, 0) AS {c}" for c in zero_fill if c not in nullable)
    # g's columns, named: the query never uses ``SELECT * EXCLUDE``, which Spark SQL lacks.
    g_columns = [
        *("nhs_number", "index_date", "practice_code", "pcn_code", "type1_opt_out"),
        *("age_years", "sex_female", "imd_decile", "days_since_last_emergency_admission"),
        *("days_since_last_ae_attendance", "index_month", "bmi_latest", "cfs_latest"),
        *("advance_care_plan_ever", "days_since_falls_assessment"),
        *("days_since_medication_review", "days_since_advance_care_plan"),
        *("emergency_admissions_180d", "recorded_history_days"),
        *(c for c in zero_fill if c not in nullable),
        "sex",
    ]
    return f"""
    WITH {index_sql().strip()},
    {population_sql(sampled=sampled, lower=lower, upper=upper).strip()},
    act AS (
        SELECT pop.nhs_number, pop.index_date, {", ".join(act_aggs)}
        FROM pop JOIN {t["activity"]} a
          ON a.nhs_number = pop.nhs_number{r["a"]}
         AND a.start_date < pop.index_date AND a.start_date >= pop.d365
        GROUP BY pop.nhs_number, pop.index_date
    ),
    last_em AS (
        -- Unplanned care over the whole history: recency, counts in windows from 30 days
        -- to two years, and counts over the whole record. Only emergency admissions and
        -- A&E rows are read, so the long windows stay cheap.
        SELECT pop.nhs_number, pop.index_date,
               date_diff('day', max(a.start_date) FILTER (WHERE a.setting = 'inpatient'),
                         pop.index_date) AS days_since_last_emergency_admission,
               date_diff('day', max(a.start_date) FILTER (WHERE a.setting = 'ae'),
                         pop.index_date) AS days_since_last_ae_attendance,
               count(*) FILTER (WHERE a.setting = 'inpatient' AND a.start_date >= pop.d730)
                   AS emergency_admissions_730d,
               count(*) FILTER (WHERE a.setting = 'ae' AND a.start_date >= pop.d730)
                   AS ae_attendances_730d,
               count(*) FILTER (WHERE a.setting = 'inpatient' AND a.start_date >= pop.d180)
                   AS emergency_admissions_180d,
               count(*) FILTER (WHERE a.setting = 'inpatient' AND a.start_date >= pop.d30)
                   AS emergency_admissions_30d,
               count(*) FILTER (WHERE a.setting = 'ae' AND a.start_date >= pop.d30)
                   AS ae_attendances_30d,
               count(*) FILTER (WHERE a.setting = 'ae' AND a.start_date >= pop.d180)
                   AS ae_attendances_180d,
               count(*) FILTER (WHERE a.setting = 'inpatient') AS emergency_admissions_ever,
               count(*) FILTER (WHERE a.setting = 'ae') AS ae_attendances_ever
        FROM pop JOIN {t["activity"]} a
          ON a.nhs_number = pop.nhs_number{r["a"]} AND a.start_date < pop.index_date
         AND ((a.setting = 'inpatient' AND a.admission_method = 'emergency') OR a.setting = 'ae')
        GROUP BY pop.nhs_number, pop.index_date
    ),
    ltc AS (
        SELECT pop.nhs_number, pop.index_date, {", ".join(ltc_aggs)}
        FROM pop JOIN {t["conditions"]} c
          ON c.nhs_number = pop.nhs_number{r["c"]} AND c.diagnosed_on < pop.index_date
        GROUP BY pop.nhs_number, pop.index_date
    ),
    med AS (
        SELECT pop.nhs_number, pop.index_date, {", ".join(med_aggs)}
        FROM pop JOIN {t["medications"]} m
          ON m.nhs_number = pop.nhs_number{r["m"]}
         AND m.issued_on < pop.index_date
         AND m.issued_on >= CAST(pop.index_date - INTERVAL {MEDICINE_CURRENT_DAYS} DAY AS DATE)
        GROUP BY pop.nhs_number, pop.index_date
    ),
    obs AS (
        SELECT pop.nhs_number, pop.index_date, {", ".join(obs_aggs)}
        FROM pop JOIN {t["observations"]} o
          ON o.nhs_number = pop.nhs_number{r["o"]}
         AND o.observed_on < pop.index_date AND o.observed_on >= pop.d24m
        GROUP BY pop.nhs_number, pop.index_date
    ),
    acp AS (
        -- Interventions already delivered, over the whole history.
        SELECT pop.nhs_number, pop.index_date,
               max(CASE WHEN o.code = 'ADVANCE_CARE_PLAN' THEN 1 ELSE 0 END)
                   AS advance_care_plan_ever,
               date_diff('day', max(o.observed_on) FILTER (WHERE o.code = 'FALLS_ASSESSMENT'),
                         pop.index_date) AS days_since_falls_assessment,
               date_diff('day', max(o.observed_on) FILTER (WHERE o.code = 'MEDICATION_REVIEW'),
                         pop.index_date) AS days_since_medication_review,
               date_diff('day', max(o.observed_on) FILTER (WHERE o.code = 'ADVANCE_CARE_PLAN'),
                         pop.index_date) AS days_since_advance_care_plan
        FROM pop JOIN {t["observations"]} o
          ON o.nhs_number = pop.nhs_number{r["o"]} AND o.observed_on < pop.index_date
         AND o.code IN ('ADVANCE_CARE_PLAN', 'FALLS_ASSESSMENT', 'MEDICATION_REVIEW')
        GROUP BY pop.nhs_number, pop.index_date
    ),
    hist AS (
        -- Where the extract's recorded history begins (its earliest activity).
        SELECT min(start_date) AS history_start FROM activity
    ),
    f AS (
        SELECT pop.*, {_columns("act", act_aggs)},
               last_em.days_since_last_emergency_admission,
               last_em.days_since_last_ae_attendance,
               last_em.emergency_admissions_730d, last_em.ae_attendances_730d,
               last_em.emergency_admissions_30d, last_em.ae_attendances_30d,
               last_em.ae_attendances_180d, last_em.emergency_admissions_ever,
               last_em.ae_attendances_ever,
               {_columns("ltc", ltc_aggs)},
               {_columns("med", med_aggs)},
               {_columns("obs", obs_aggs)},
               coalesce(acp.advance_care_plan_ever, 0) AS advance_care_plan_ever,
               acp.days_since_falls_assessment, acp.days_since_medication_review,
               acp.days_since_advance_care_plan,
               coalesce(last_em.emergency_admissions_180d, 0) AS emergency_admissions_180d
        FROM pop
        LEFT JOIN act USING (nhs_number, index_date)
        LEFT JOIN last_em USING (nhs_number, index_date)
        LEFT JOIN ltc USING (nhs_number, index_date)
        LEFT JOIN med USING (nhs_number, index_date)
        LEFT JOIN obs USING (nhs_number, index_date)
        LEFT JOIN acp USING (nhs_number, index_date)
    ),
    g AS (
        SELECT f.nhs_number, f.index_date, f.practice_code, f.pcn_code, f.type1_opt_out,
               f.age_years, CASE WHEN f.sex = 'F' THEN 1 ELSE 0 END AS sex_female,
               CAST(f.imd_decile AS DOUBLE) AS imd_decile,
               CAST(f.days_since_last_emergency_admission AS DOUBLE)
                   AS days_since_last_emergency_admission,
               CAST(f.days_since_last_ae_attendance AS DOUBLE) AS days_since_last_ae_attendance,
               -- Month of the year: admissions rise in winter, so a month's risk level
               -- depends on the season as well as the person.
               month(f.index_date) AS index_month,
               CAST(f.bmi_latest AS DOUBLE) AS bmi_latest,
               CAST(f.cfs_latest AS DOUBLE) AS cfs_latest,
               f.advance_care_plan_ever,
               CAST(f.days_since_falls_assessment AS DOUBLE) AS days_since_falls_assessment,
               CAST(f.days_since_medication_review AS DOUBLE) AS days_since_medication_review,
               CAST(f.days_since_advance_care_plan AS DOUBLE) AS days_since_advance_care_plan,
               f.emergency_admissions_180d,
               -- Days of record: from the later of registration and the history's start.
               date_diff('day', greatest(f.registered_from, hist.history_start), f.index_date)
                   AS recorded_history_days,
               {filled},
               f.sex, f.ethnic_category
        FROM f CROSS JOIN hist
    )
    SELECT {_columns("g", g_columns)},
           {_rate("g.emergency_admissions_ever")} AS emergency_admissions_per_year,
           {_rate("g.ae_attendances_ever")} AS ae_attendances_per_year,
           ({ltc_count}) AS ltc_count,
           {round_half_up(f"CAST(({efi}) AS DOUBLE) / {EFI_DEFICIT_TOTAL}", 4)} AS efi,
           CASE WHEN g.age_years < 18 THEN '0-17' WHEN g.age_years < 45 THEN '18-44'
                WHEN g.age_years < 65 THEN '45-64' WHEN g.age_years < 75 THEN '65-74'
                WHEN g.age_years < 85 THEN '75-84' ELSE '85+' END AS age_band,
           CASE WHEN g.imd_decile IS NULL THEN 'Not known'
                ELSE CAST(CAST(floor((g.imd_decile + 1) / 2) AS INTEGER) AS VARCHAR) END
                AS imd_quintile,
           CASE WHEN g.ethnic_category IN ('A', 'B', 'C') THEN 'White'
                WHEN g.ethnic_category IN ('D', 'E', 'F', 'G') THEN 'Mixed'
                WHEN g.ethnic_category IN ('H', 'J', 'K', 'L') THEN 'Asian'
                WHEN g.ethnic_category IN ('M', 'N', 'P') THEN 'Black'
                WHEN g.ethnic_category IN ('R', 'S') THEN 'Other'
                ELSE 'Not stated' END AS ethnic_group
    FROM g
    ORDER BY g.index_date, g.nhs_number
    """
