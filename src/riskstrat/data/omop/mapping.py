"""From CDM tables to the contract's five tables, in DuckDB SQL, with a reason for every drop.

Each contract table is first built as ``cand_<table>``: every candidate row, with the column
``drop_reason`` NULL for a row that is kept and otherwise the rule that removed it. The extract
is written from the kept rows; the report counts the rest by reason. The rules, as the report
and docs/omop.md state them:

patients (one per CDM person)
  * registration is the person's latest observation period starting before the extract date;
    ``registered_to`` is the day after it ends, or empty when it runs to the extract date;
  * date of birth from ``birth_datetime``, else year/month/day; a missing day is the 15th and a
    missing month is 1 July (the middle of what is known);
  * sex: 8507 M, 8532 F, anything else U;
  * ethnic category only from UK ethnic-category concepts (the ``ethnicity`` codelists) in
    ``race_concept_id`` or ``ethnicity_concept_id``, else the latest such record; a person
    described only by US race or ethnicity concepts is Z (not stated);
  * LSOA from the person's location (``location_source_value``, ``county`` or ``zip``: the
    first that has an LSOA code's shape); IMD decile from the LSOA through the lookup file;
  * practice and PCN from the person's care site (or their latest visit's) through the site
    map, or one named practice and PCN for everyone;
  * type-1 opt-out from the latest dissent (true) or dissent-withdrawn (false) record.
activity (one per visit)
  * 9201 inpatient, 262 emergency inpatient, 9203 A&E, 9202 outpatient, 581477 (office) and
    5083 (telehealth) GP, 581476 (home) community; other visit concepts are not activity;
  * an inpatient stay's admission method: 262 is emergency; else a HES admission method code
    as the admitted-from source value (2x emergency, 1x elective, 3x maternity, 8x transfer);
    else admitted from 8870 (emergency room) emergency, from 8717 (another hospital) transfer;
    else emergency when an A&E visit ended that day or the day before; else elective;
  * discharge: the visit's end date when it is before the extract date, else empty (still in);
    outside inpatient stays end_date is empty;
  * primary diagnosis: the ICD-10 source value of the visit's condition with status 32902
    (primary diagnosis; v5.3 type 44786627);
  * an outpatient or GP visit with a did-not-attend record (linked to it; or, for a record
    linked to no visit, on the same day) was not attended.
conditions: codelist matches, the earliest date per person and condition.
medications: every drug exposure whose drug has an ingredient (see ``vocab.map_drugs``).
observations: codelist matches in observation, measurement, condition_occurrence and
  procedure_occurrence; BMI and CFS take ``value_as_number`` (or the value a code carries).
Conditions and observations are the GP record in the contract, so by default records linked
to a hospital visit (inpatient, A&E, outpatient) are left out of both: they are that visit's
activity and primary diagnosis (``hospital_records="include"`` keeps them).
Everything dated on or after the extract date is dropped, as the contract requires.
"""

from __future__ import annotations

from datetime import date
from typing import Literal

from riskstrat.data.contract import ICD10_PATTERN, LSOA_PATTERN
from riskstrat.data.omop import concepts as C
from riskstrat.data.omop.spark_con import Connection

#: Records linked to a hospital visit (inpatient, A&E, outpatient): "exclude" (default) keeps
#: them out of conditions and observations, which in the contract are the GP record.
HospitalRecords = Literal["exclude", "include"]
EVENT_TABLES = ("condition_occurrence", "observation", "measurement", "procedure_occurrence")
_EVENT_COLUMNS = {
    # table: (id, concept, source concept, source value, date, value)
    "condition_occurrence": ("condition_occurrence_id", "condition_concept_id",
                             "condition_source_concept_id", "condition_source_value",
                             "condition_start_date", "NULL"),
    "observation": ("observation_id", "observation_concept_id", "observation_source_concept_id",
                    "observation_source_value", "observation_date", "value_as_number"),
    "measurement": ("measurement_id", "measurement_concept_id", "measurement_source_concept_id",
                    "measurement_source_value", "measurement_date", "value_as_number"),
    "procedure_occurrence": ("procedure_occurrence_id", "procedure_concept_id",
                             "procedure_source_concept_id", "procedure_source_value",
                             "procedure_date", "NULL"),
}  # fmt: skip
#: Tables whose source values are matched to ICD-10 codes (procedure codes such as OPCS-4
#: share the letter-and-digits shape and must not match).
_ICD10_VALUE_TABLES = ("condition_occurrence", "observation")
_NORM = "replace(replace(replace(upper(trim({x})), '.', ''), ' ', ''), '-', '')"
AFTER = "dated on or after the extract date"
NO_PERSON = "person not imported"


def match_events(con: Connection) -> None:
    """Create ``ev`` (the four event tables as one view) and ``ev_match``: each event record
    and contract code it matches, through its concept, its source concept or its source
    value."""
    parts = []
    for table, (rid, concept, source_concept, value, day, number) in _EVENT_COLUMNS.items():
        parts.append(
            f"SELECT '{table}' AS src, {rid} AS rid, person_id, {concept} AS concept_id, "
            f"{source_concept} AS source_concept_id, {_NORM.format(x=value)} AS norm_value, "
            f"{day} AS event_date, CAST({number} AS DOUBLE) AS record_value, "
            f"visit_occurrence_id FROM cdm_{table}"
        )
    # Kept once, narrow: every matching route below reads it.
    con.execute("CREATE OR REPLACE TEMP TABLE ev AS " + " UNION ALL ".join(parts))
    icd = ", ".join(f"'{t}'" for t in _ICD10_VALUE_TABLES)
    lengths = [
        int(n) for (n,) in con.execute("SELECT DISTINCT len FROM cl_value WHERE prefix").fetchall()
    ]
    routes = [
        "SELECT e.*, m.list_table, m.list_code, m.value AS code_value, 'concept' AS via "
        "FROM ev e JOIN cl_concept m ON m.concept_id = e.concept_id",
        "SELECT e.*, m.list_table, m.list_code, m.value, 'source concept' "
        "FROM ev e JOIN cl_concept m ON m.concept_id = e.source_concept_id "
        "WHERE e.source_concept_id <> 0",
        "SELECT e.*, v.list_table, v.list_code, v.value, 'source value' "
        "FROM ev e JOIN cl_value v ON NOT v.prefix AND v.norm = e.norm_value "
        f"WHERE NOT v.icd10 OR e.src IN ({icd})",
    ]
    routes += [
        "SELECT e.*, v.list_table, v.list_code, v.value, 'source value' "
        f"FROM ev e JOIN cl_value v ON v.prefix AND v.len = {n} "
        f"AND v.norm = left(e.norm_value, {n}) WHERE e.src IN ({icd})"
        for n in lengths
    ]
    con.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE ev_match AS
        SELECT src, rid, list_table, list_code, any_value(person_id) AS person_id,
               any_value(concept_id) AS concept_id, any_value(event_date) AS event_date,
               any_value(record_value) AS record_value, any_value(code_value) AS code_value,
               any_value(visit_occurrence_id) AS visit_occurrence_id, min(via) AS via
        FROM ({" UNION ALL ".join(routes)})
        GROUP BY src, rid, list_table, list_code
        """
    )


def build_activity(con: Connection, extract_date: date) -> None:
    """``visit_map`` (every visit, its setting or none) and ``cand_activity``, as views (a
    copy of tens of millions of visits cost more than reading them again); needs
    ``kept_person`` for dates of birth."""
    d = _date(extract_date)
    hes = " ".join(
        f"WHEN left(v.admitted_from_source_value, 1) = '{k}' THEN '{m}'"
        for k, m in C.HES_ADMISSION_METHODS.items()
    )
    con.execute(
        f"""
        CREATE OR REPLACE TEMP VIEW visit_map AS
        WITH er_day AS (
            SELECT DISTINCT person_id, day FROM (
                SELECT person_id, coalesce(visit_end_date, visit_start_date) AS day
                FROM cdm_visit_occurrence WHERE visit_concept_id = {C.EMERGENCY_ROOM_VISIT}
                UNION ALL
                SELECT person_id, CAST(coalesce(visit_end_date, visit_start_date)
                                       + INTERVAL 1 DAY AS DATE)
                FROM cdm_visit_occurrence WHERE visit_concept_id = {C.EMERGENCY_ROOM_VISIT}
            )
        ),
        v AS (
            SELECT v.*,
                   CASE v.visit_concept_id
                        WHEN {C.INPATIENT_VISIT} THEN 'inpatient'
                        WHEN {C.EMERGENCY_ROOM_AND_INPATIENT_VISIT} THEN 'inpatient'
                        WHEN {C.EMERGENCY_ROOM_VISIT} THEN 'ae'
                        WHEN {C.OUTPATIENT_VISIT} THEN 'outpatient'
                        WHEN {C.OFFICE_VISIT} THEN 'gp'
                        WHEN {C.TELEHEALTH} THEN 'gp'
                        WHEN {C.HOME_VISIT} THEN 'community' END AS setting,
                   er.person_id IS NOT NULL AS after_ae
            FROM cdm_visit_occurrence v
            LEFT JOIN er_day er ON er.person_id = v.person_id AND er.day = v.visit_start_date
                 AND v.visit_concept_id = {C.INPATIENT_VISIT}
        )
        SELECT v.visit_occurrence_id, v.person_id, v.visit_concept_id, v.setting,
               v.visit_start_date AS start_date,
               CASE WHEN v.setting = 'inpatient' AND v.visit_end_date < {d}
                    THEN v.visit_end_date END AS end_date,
               CASE WHEN v.setting <> 'inpatient' THEN NULL
                    WHEN v.visit_concept_id = {C.EMERGENCY_ROOM_AND_INPATIENT_VISIT}
                         THEN 'emergency'
                    WHEN regexp_full_match(v.admitted_from_source_value, '[1238][0-9A-D]')
                         THEN CASE {hes} END
                    WHEN v.admitted_from_concept_id = {C.EMERGENCY_ROOM_HOSPITAL}
                         THEN 'emergency'
                    WHEN v.admitted_from_concept_id = {C.INPATIENT_HOSPITAL} THEN 'transfer'
                    WHEN v.after_ae THEN 'emergency'
                    ELSE 'elective' END AS admission_method,
               CASE WHEN v.setting <> 'inpatient' THEN NULL
                    WHEN v.visit_concept_id = {C.EMERGENCY_ROOM_AND_INPATIENT_VISIT}
                         THEN 'visit concept 262 (emergency room and inpatient)'
                    WHEN regexp_full_match(v.admitted_from_source_value, '[1238][0-9A-D]')
                         THEN 'HES admission method code'
                    WHEN v.admitted_from_concept_id IN ({C.EMERGENCY_ROOM_HOSPITAL},
                                                        {C.INPATIENT_HOSPITAL})
                         THEN 'admitted-from concept'
                    WHEN v.after_ae THEN 'A&E visit that day or the day before'
                    ELSE 'no admission source: elective' END AS method_rule
        FROM v
        """
    )
    icd = ICD10_PATTERN.replace("'", "''")
    con.execute(
        f"""
        CREATE OR REPLACE TEMP VIEW cand_activity AS
        WITH dx AS (
            SELECT visit_occurrence_id,
                   arg_min(upper(trim(condition_source_value)), condition_occurrence_id) AS dx
            FROM cdm_condition_occurrence
            WHERE visit_occurrence_id IS NOT NULL
              AND (condition_status_concept_id = {C.PRIMARY_DIAGNOSIS}
                   OR condition_type_concept_id = {C.PRIMARY_CONDITION_TYPE})
            GROUP BY 1
        ),
        dna AS (
            SELECT DISTINCT m.visit_occurrence_id FROM ev_match m
            WHERE m.list_table = 'activity' AND m.visit_occurrence_id IS NOT NULL
            UNION
            SELECT DISTINCT v.visit_occurrence_id FROM ev_match m
            JOIN visit_map v ON v.person_id = m.person_id AND v.start_date = m.event_date
             AND v.setting IN ('outpatient', 'gp')
            WHERE m.list_table = 'activity' AND m.visit_occurrence_id IS NULL
        )
        SELECT v.visit_occurrence_id, v.person_id, v.visit_concept_id, v.setting,
               v.admission_method,
               v.method_rule, v.start_date, v.end_date,
               CASE WHEN regexp_full_match(dx.dx, '{icd}') THEN dx.dx END AS primary_diagnosis,
               dx.dx IS NOT NULL AND NOT regexp_full_match(dx.dx, '{icd}') AS dx_not_icd10,
               CASE WHEN v.setting IN ('outpatient', 'gp') AND dna.visit_occurrence_id
                         IS NOT NULL THEN false END AS attended,
               CASE WHEN v.setting IS NULL THEN 'visit concept not mapped to a setting'
                    WHEN p.person_id IS NULL THEN '{NO_PERSON}'
                    WHEN v.start_date IS NULL THEN 'no start date'
                    WHEN v.start_date >= {d} THEN '{AFTER}'
                    WHEN v.start_date < p.date_of_birth THEN 'before the date of birth'
                    WHEN v.setting = 'inpatient' AND v.end_date < v.start_date
                         THEN 'discharged before admitted'
               END AS drop_reason
        FROM visit_map v
        LEFT JOIN dx ON dx.visit_occurrence_id = v.visit_occurrence_id
        LEFT JOIN dna ON dna.visit_occurrence_id = v.visit_occurrence_id
        LEFT JOIN kept_person p ON p.person_id = v.person_id
        """
    )


def build_patients(
    con: Connection,
    extract_date: date,
    *,
    sites: Literal["map", "single"],
    practice_code: str | None = None,
    pcn_code: str | None = None,
    imd: bool,
) -> None:
    """``cand_patients``: one row per CDM person (needs ``ev_match``, and ``site_map`` or the
    single practice, and ``imd_lookup`` when ``imd``)."""
    d = _date(extract_date)
    lsoa = LSOA_PATTERN.replace("'", "''")
    if sites == "map":
        site_cols = "s.practice_code, s.pcn_code"
        site_join = """
        LEFT JOIN (
            SELECT person_id, arg_max(care_site_id, (visit_start_date, visit_occurrence_id))
                   AS care_site_id
            FROM cdm_visit_occurrence WHERE care_site_id IS NOT NULL GROUP BY 1
        ) lv ON lv.person_id = p.person_id
        LEFT JOIN site_map s ON s.care_site_id = coalesce(p.care_site_id, lv.care_site_id)
        """
    else:
        site_cols = f"'{practice_code}' AS practice_code, '{pcn_code}' AS pcn_code"
        site_join = ""
    no_site = "WHEN s.practice_code IS NULL THEN 'care site not in the site map'"
    imd_col = "i.imd_decile" if imd else "CAST(NULL AS INTEGER)"
    imd_join = "LEFT JOIN imd_lookup i ON i.lsoa_code = l.lsoa_code" if imd else ""
    con.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE cand_patients AS
        WITH op AS (
            SELECT person_id,
                   arg_max(observation_period_start_date,
                           (observation_period_end_date, observation_period_start_date))
                       AS start_date,
                   max(observation_period_end_date) AS end_date,
                   count(*) AS periods
            FROM cdm_observation_period WHERE observation_period_start_date < {d}
            GROUP BY 1
        ),
        n AS (SELECT person_id, count(*) AS copies FROM cdm_person GROUP BY 1),
        death AS (SELECT person_id, min(death_date) AS death_date FROM cdm_death GROUP BY 1),
        eth_record AS (
            SELECT person_id, arg_max(list_code, (event_date, rid)) AS category
            FROM ev_match WHERE list_table = 'ethnicity' AND event_date < {d} GROUP BY 1
        ),
        opt AS (
            SELECT person_id, arg_max(list_code, (event_date, rid)) = 'TYPE1_OPT_OUT' AS opt_out
            FROM ev_match WHERE list_table = 'patients' AND event_date < {d} GROUP BY 1
        ),
        eth AS (SELECT concept_id, list_code FROM cl_concept WHERE list_table = 'ethnicity'),
        us AS (
            SELECT concept_id FROM cdm_concept
            WHERE vocabulary_id IN ('Race', 'Ethnicity') AND concept_id <> 0
        ),
        l AS (
            SELECT location_id, CASE
                WHEN regexp_full_match(upper(trim(location_source_value)), '{lsoa}')
                     THEN upper(trim(location_source_value))
                WHEN regexp_full_match(upper(trim(county)), '{lsoa}') THEN upper(trim(county))
                WHEN regexp_full_match(upper(trim(zip)), '{lsoa}') THEN upper(trim(zip))
                END AS lsoa_code
            FROM cdm_location
        ),
        p AS (
            SELECT p.*,
                   CASE WHEN p.birth_datetime IS NOT NULL THEN CAST(p.birth_datetime AS DATE)
                        WHEN p.year_of_birth IS NULL THEN NULL
                        WHEN p.month_of_birth IS NULL
                             THEN TRY_CAST(printf('%04d-07-01', p.year_of_birth) AS DATE)
                        WHEN p.day_of_birth IS NULL
                             THEN TRY_CAST(printf('%04d-%02d-15', p.year_of_birth,
                                                  p.month_of_birth) AS DATE)
                        ELSE TRY_CAST(printf('%04d-%02d-%02d', p.year_of_birth,
                                             p.month_of_birth, p.day_of_birth) AS DATE)
                   END AS dob,
                   CASE WHEN p.birth_datetime IS NOT NULL THEN 'birth_datetime'
                        WHEN p.year_of_birth IS NULL THEN 'none'
                        WHEN p.month_of_birth IS NULL THEN 'year only: 1 July'
                        WHEN p.day_of_birth IS NULL THEN 'year and month: the 15th'
                        ELSE 'year, month and day' END AS dob_rule
            FROM cdm_person p
        )
        SELECT p.person_id,
               CAST(p.person_id AS VARCHAR) AS nhs_number,
               p.dob AS date_of_birth,
               p.dob_rule,
               CASE p.gender_concept_id WHEN {C.MALE} THEN 'M' WHEN {C.FEMALE} THEN 'F'
                    ELSE 'U' END AS sex,
               coalesce(er.list_code, ee.list_code, eth_record.category,
                        CASE WHEN ur.concept_id IS NOT NULL OR ue.concept_id IS NOT NULL
                             THEN 'Z' END) AS ethnic_category,
               CASE WHEN coalesce(er.list_code, ee.list_code) IS NOT NULL
                         THEN 'UK ethnic-category concept on the person'
                    WHEN eth_record.category IS NOT NULL
                         THEN 'latest UK ethnic-category record'
                    WHEN ur.concept_id IS NOT NULL OR ue.concept_id IS NOT NULL
                         THEN 'US race/ethnicity concept only: not stated'
                    ELSE 'not recorded' END AS ethnicity_rule,
               l.lsoa_code,
               {imd_col} AS imd_decile,
               {site_cols},
               op.start_date AS registered_from,
               CASE WHEN CAST(op.end_date + INTERVAL 1 DAY AS DATE) < {d}
                    THEN CAST(op.end_date + INTERVAL 1 DAY AS DATE) END AS registered_to,
               CASE WHEN death.death_date < {d} THEN death.death_date END AS date_of_death,
               death.death_date >= {d} AS death_after_extract,
               opt.opt_out AS type1_opt_out,
               op.periods,
               CASE WHEN p.person_id IS NULL THEN 'no person_id'
                    WHEN n.copies > 1 THEN 'person_id appears more than once'
                    WHEN op.person_id IS NULL
                         THEN 'no observation period starting before the extract date'
                    WHEN op.end_date < op.start_date
                         THEN 'observation period ends before it starts'
                    WHEN p.dob IS NULL THEN 'no usable date of birth'
                    WHEN p.dob > {d} THEN 'born after the extract date'
                    WHEN p.dob <= CAST({d} - INTERVAL 115 YEAR AS DATE)
                         THEN 'aged 115 or more at the extract date'
                    WHEN death.death_date < p.dob THEN 'death before birth'
                    WHEN op.start_date < p.dob THEN 'registered before birth'
                    {no_site if sites == "map" else ""}
               END AS drop_reason
        FROM p
        LEFT JOIN n ON n.person_id = p.person_id
        LEFT JOIN op ON op.person_id = p.person_id
        LEFT JOIN death ON death.person_id = p.person_id
        LEFT JOIN eth_record ON eth_record.person_id = p.person_id
        LEFT JOIN opt ON opt.person_id = p.person_id
        LEFT JOIN eth er ON er.concept_id = p.race_concept_id
        LEFT JOIN eth ee ON ee.concept_id = p.ethnicity_concept_id
        LEFT JOIN us ur ON ur.concept_id = p.race_concept_id
        LEFT JOIN us ue ON ue.concept_id = p.ethnicity_concept_id
        LEFT JOIN l ON l.location_id = p.location_id
        {imd_join}
        {site_join}
        """
    )
    # One row per imported person, for the event tables to join.
    con.execute(
        "CREATE OR REPLACE TEMP TABLE kept_person AS SELECT person_id, date_of_birth "
        "FROM cand_patients WHERE drop_reason IS NULL"
    )


def summarise(con: Connection) -> None:
    """``sum_activity`` and ``sum_medications``: the big candidate views counted once by
    everything the report needs, so the report never reads them again."""
    con.execute(
        """
        CREATE OR REPLACE TEMP TABLE sum_activity AS
        SELECT drop_reason, setting, admission_method, method_rule, dx_not_icd10,
               attended IS NOT DISTINCT FROM false AS not_attended, visit_concept_id,
               count(*) AS n
        FROM cand_activity GROUP BY ALL
        """
    )
    con.execute(
        """
        CREATE OR REPLACE TEMP TABLE sum_medications AS
        SELECT drop_reason, drug_class, drug_concept_id, count(*) AS n
        FROM cand_medications GROUP BY ALL
        """
    )


def build_events(con: Connection, extract_date: date, *, hospital_records: HospitalRecords) -> None:
    """``cand_conditions``, ``cand_medications`` and ``cand_observations`` (needs
    ``kept_person``, ``visit_map``, ``ev_match`` and ``drug_map``)."""
    d = _date(extract_date)
    person_ok = "p.person_id IS NOT NULL"
    hospital = (
        "WHEN h.visit_occurrence_id IS NOT NULL THEN 'recorded at a hospital visit (the "
        "visit''s activity, not the GP record)'"
        if hospital_records == "exclude"
        else ""
    )
    hospital_visits = ", ".join(
        str(c)
        for c in (C.INPATIENT_VISIT, C.EMERGENCY_ROOM_AND_INPATIENT_VISIT,
                  C.EMERGENCY_ROOM_VISIT, C.OUTPATIENT_VISIT)
    )  # fmt: skip
    hospital_join = (
        "LEFT JOIN (SELECT visit_occurrence_id FROM cdm_visit_occurrence WHERE visit_concept_id "
        f"IN ({hospital_visits})) h ON h.visit_occurrence_id = m.visit_occurrence_id"
    )
    con.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE cand_conditions AS
        SELECT m.src, m.rid, m.person_id, m.list_code AS condition, m.event_date, m.concept_id,
               CASE WHEN NOT ({person_ok}) THEN '{NO_PERSON}'
                    WHEN m.event_date IS NULL THEN 'no date'
                    WHEN m.event_date >= {d} THEN '{AFTER}'
                    {hospital}
               END AS drop_reason
        FROM ev_match m
        LEFT JOIN kept_person p ON p.person_id = m.person_id
        {hospital_join}
        WHERE m.list_table = 'conditions'
        """
    )
    con.execute(
        f"""
        CREATE OR REPLACE TEMP VIEW cand_medications AS
        SELECT e.drug_exposure_id, e.person_id, e.drug_exposure_start_date AS issued_on,
               dm.medicine, dm.drug_class,
               CASE WHEN coalesce(e.drug_concept_id, 0) = 0 THEN e.drug_source_concept_id
                    ELSE e.drug_concept_id END AS drug_concept_id,
               CASE WHEN dm.drug_concept_id IS NULL THEN 'no ingredient found for the drug'
                    WHEN NOT ({person_ok}) THEN '{NO_PERSON}'
                    WHEN e.drug_exposure_start_date IS NULL THEN 'no date'
                    WHEN e.drug_exposure_start_date >= {d} THEN '{AFTER}'
               END AS drop_reason
        FROM cdm_drug_exposure e
        LEFT JOIN drug_map dm ON dm.drug_concept_id =
             CASE WHEN coalesce(e.drug_concept_id, 0) = 0 THEN e.drug_source_concept_id
                  ELSE e.drug_concept_id END
        LEFT JOIN kept_person p ON p.person_id = e.person_id
        """
    )
    con.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE cand_observations AS
        WITH m AS (
            SELECT m.*, CASE WHEN m.list_code IN ('BMI', 'CFS')
                             THEN coalesce(m.code_value, m.record_value) END AS value
            FROM ev_match m WHERE m.list_table = 'observations'
        )
        SELECT m.src, m.rid, m.person_id, m.list_code AS code, m.event_date, m.value,
               m.concept_id,
               CASE WHEN NOT ({person_ok}) THEN '{NO_PERSON}'
                    WHEN m.event_date IS NULL THEN 'no date'
                    WHEN m.event_date >= {d} THEN '{AFTER}'
                    WHEN m.list_code = 'BMI' AND (m.value IS NULL OR NOT isfinite(m.value)
                         OR m.value NOT BETWEEN 10 AND 90)
                         THEN 'BMI value missing or outside 10-90'
                    {hospital}
                    WHEN m.list_code = 'CFS' AND (m.value IS NULL OR NOT isfinite(m.value)
                         OR m.value NOT BETWEEN 1 AND 9 OR m.value <> round(m.value))
                         THEN 'CFS value missing or not a whole number from 1 to 9'
               END AS drop_reason
        FROM m LEFT JOIN kept_person p ON p.person_id = m.person_id
        {hospital_join}
        """
    )


#: The contract tables' SELECTs over the kept candidate rows, in the contract's column order.
#: The small tables are sorted by person_id (integers sort much faster than pseudonym text);
#: activity and medications, tens of millions of rows, keep the order the CDM holds them in
#: (DuckDB keeps insertion order through these joins), which is by person in every CDM seen so
#: far: sorting 50 million prescriptions cost more than the rest of the import.
OUTPUT_SQL = {
    "patients": """
        SELECT nhs_number, date_of_birth, sex, ethnic_category, lsoa_code,
               CAST(imd_decile AS INTEGER) AS imd_decile, practice_code, pcn_code,
               registered_from, registered_to, date_of_death, type1_opt_out
        FROM cand_patients WHERE drop_reason IS NULL
        ORDER BY person_id""",
    "activity": """
        SELECT CAST(person_id AS VARCHAR) AS nhs_number, setting, admission_method,
               start_date, end_date, primary_diagnosis, attended
        FROM cand_activity WHERE drop_reason IS NULL
""",
    "conditions": """
        SELECT CAST(person_id AS VARCHAR) AS nhs_number, condition,
               min(event_date) AS diagnosed_on
        FROM cand_conditions WHERE drop_reason IS NULL
        GROUP BY person_id, condition
        ORDER BY person_id, diagnosed_on, condition""",
    "medications": """
        SELECT CAST(person_id AS VARCHAR) AS nhs_number, issued_on, medicine, drug_class
        FROM cand_medications WHERE drop_reason IS NULL
""",
    "observations": """
        SELECT CAST(person_id AS VARCHAR) AS nhs_number, event_date AS observed_on, code, value
        FROM cand_observations WHERE drop_reason IS NULL
        ORDER BY person_id, event_date, code, src, rid""",
}


def _date(d: date) -> str:
    return f"DATE '{d.isoformat()}'"
