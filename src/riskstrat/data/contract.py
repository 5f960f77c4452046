"""The input data contract (version 2) as data: tables, columns, vocabularies and rules.

This module is the single place that says what an extract may contain. ``riskstrat.data.extract``
turns it into DuckDB SQL; the synthetic generator and the OMOP importer write to it; tests
walk it so that every rule has a failing example. The prose version is
``docs/data-contract.md``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

#: The version writers put in a manifest. Readers accept every supported version: version 2
#: added the manifest's identifier_kind (NHS numbers or pseudonyms), row_counts and
#: provenance; a version 1 extract reads exactly as before.
CONTRACT_VERSION = 2
SUPPORTED_CONTRACT_VERSIONS = (1, 2)

IdentifierKind = Literal["nhs_number", "pseudonym"]
IDENTIFIER_KINDS: tuple[IdentifierKind, ...] = ("nhs_number", "pseudonym")
#: A pseudonym (e.g. an OMOP person_id): 1-64 letters, digits, '.', '_' or '-', starting with
#: a letter or digit; never checked as an NHS number.
PSEUDONYM_PATTERN = r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}"

ColumnKind = Literal["nhs_number", "date", "string", "code", "boolean", "integer", "number"]

ETHNIC_CATEGORIES = tuple("ABCDEFGHJKLMNPRSZ")
ETHNIC_GROUPS: dict[str, tuple[str, ...]] = {
    "White": ("A", "B", "C"),
    "Mixed": ("D", "E", "F", "G"),
    "Asian": ("H", "J", "K", "L"),
    "Black": ("M", "N", "P"),
    "Other": ("R", "S"),
    "Not stated": ("Z",),  # and empty
}
SEXES = ("F", "M", "U")
SETTINGS = ("inpatient", "ae", "outpatient", "gp", "community")
ADMISSION_METHODS = ("emergency", "elective", "maternity", "transfer")
CONDITIONS = (
    "AF", "ASTHMA", "CANCER", "CHD", "CKD", "COPD", "DEMENTIA", "DEPRESSION", "DIABETES",
    "EPILEPSY", "HEART_FAILURE", "HYPERTENSION", "LEARNING_DISABILITY", "LIVER_DISEASE",
    "OSTEOPOROSIS", "PAD", "PALLIATIVE", "PARKINSONS", "RHEUMATOID_ARTHRITIS", "SMI",
    "STROKE_TIA",
)  # fmt: skip
DRUG_CLASSES = (
    "ANTICOAGULANT", "ANTIPLATELET", "ANTIHYPERTENSIVE", "BETA_BLOCKER", "DIURETIC", "DIGOXIN",
    "STATIN", "INSULIN", "ORAL_HYPOGLYCAEMIC", "OPIOID", "NSAID", "BENZODIAZEPINE", "Z_DRUG",
    "ANTIPSYCHOTIC", "ANTIDEPRESSANT", "ANTIEPILEPTIC", "ANTICHOLINERGIC", "ORAL_CORTICOSTEROID",
    "INHALED_CORTICOSTEROID", "BRONCHODILATOR", "DOPAMINERGIC", "PPI", "LAXATIVE", "ANTIBIOTIC",
    "OTHER",
)  # fmt: skip
#: Drug classes that increase the risk of falls (product brief, falls review cohort).
FALLS_RISK_DRUG_CLASSES = (
    "BENZODIAZEPINE", "Z_DRUG", "ANTIPSYCHOTIC", "ANTIDEPRESSANT", "OPIOID", "ANTIEPILEPTIC",
    "DOPAMINERGIC", "ANTICHOLINERGIC",
)  # fmt: skip
STATE_CODES = (
    "LIVES_ALONE", "CARE_HOME", "HOUSEBOUND", "HOME_CARE_PACKAGE", "HAS_CARER", "IS_CARER",
    "HOMELESS", "SOCIAL_ISOLATION", "SMOKER",
)  # fmt: skip
EVENT_CODES = (
    "FALL", "MOBILITY_PROBLEM", "ALCOHOL_MISUSE", "INCONTINENCE", "MEMORY_CONCERN",
    "VISUAL_IMPAIRMENT", "HEARING_IMPAIRMENT", "WEIGHT_LOSS",
)  # fmt: skip
MEASUREMENT_CODES = ("BMI", "CFS")
INTERVENTION_CODES = ("FALLS_ASSESSMENT", "MEDICATION_REVIEW", "ADVANCE_CARE_PLAN")
OBSERVATION_CODES = STATE_CODES + EVENT_CODES + MEASUREMENT_CODES + INTERVENTION_CODES
#: A state code holds from its latest recording; version 1 counts it as current for 24 months.
STATE_CURRENT_MONTHS = 24
#: A medicine counts as current on a date if it was issued in the 90 days before it.
MEDICINE_CURRENT_DAYS = 90

# Shapes of identifiers the contract describes by example ("like E01000001").
ODS_PRACTICE_PATTERN = r"[A-Z][0-9]{5}"  # e.g. A81001
ODS_PCN_PATTERN = r"U[0-9]{5}"  # e.g. U12345
LSOA_PATTERN = r"[A-Z][0-9]{8}"  # ONS area code shape, e.g. E01000001
ICD10_PATTERN = r"[A-Z][0-9]{2}(\.?[0-9A-Z]{1,4})?"  # e.g. J44.1, J441, I10


@dataclass(frozen=True)
class Column:
    """One column of a contract table."""

    name: str
    kind: ColumnKind
    required: bool
    codes: tuple[str, ...] | None = None  # allowed values for kind == "code"
    pattern: str | None = None  # full-match regular expression for kind == "string"


@dataclass(frozen=True)
class Rule:
    """A row-level rule. ``violation`` is a DuckDB SQL predicate, true when a row breaks it.

    Predicates see the parsed, typed columns by their contract names, ``extract_date`` as a
    DATE column and, for tables other than patients, ``patient_date_of_birth``. A predicate
    that is NULL counts as not broken, so a missing value only breaks ``required``.
    """

    table: str
    column: str
    rule: str
    message: str
    violation: str


@dataclass(frozen=True)
class Table:
    name: str
    columns: tuple[Column, ...]
    rules: tuple[Rule, ...] = field(default=())

    @property
    def required_columns(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns if c.required)

    def column(self, name: str) -> Column:
        for c in self.columns:
            if c.name == name:
                return c
        raise KeyError(name)


def _nhs() -> Column:
    return Column("nhs_number", "nhs_number", True)


def _patient_ref() -> Column:
    # In the event tables the contract only asks that the number exists in patients; a
    # malformed number cannot exist there, so it is reported as unknown_patient.
    return Column("nhs_number", "string", True)


PATIENTS = Table(
    "patients",
    (
        _nhs(),
        Column("date_of_birth", "date", True),
        Column("sex", "code", True, codes=SEXES),
        Column("ethnic_category", "code", False, codes=ETHNIC_CATEGORIES),
        Column("lsoa_code", "string", False, pattern=LSOA_PATTERN),
        Column("imd_decile", "integer", False),
        Column("practice_code", "string", True, pattern=ODS_PRACTICE_PATTERN),
        Column("pcn_code", "string", True, pattern=ODS_PCN_PATTERN),
        Column("registered_from", "date", True),
        Column("registered_to", "date", False),
        Column("date_of_death", "date", False),
        Column("type1_opt_out", "boolean", False),
    ),
    (
        Rule("patients", "date_of_birth", "date_of_birth_after_extract_date",
             "date_of_birth is after the extract date", "date_of_birth > extract_date"),
        Rule("patients", "date_of_birth", "age_115_or_over",
             "age at the extract date is 115 or more",
             "date_of_birth <= CAST(extract_date - INTERVAL 115 YEAR AS DATE)"),
        Rule("patients", "imd_decile", "imd_decile_out_of_range",
             "imd_decile is not between 1 and 10", "imd_decile NOT BETWEEN 1 AND 10"),
        Rule("patients", "registered_to", "registered_to_before_registered_from",
             "registered_to is before registered_from", "registered_to < registered_from"),
        Rule("patients", "date_of_death", "date_of_death_before_date_of_birth",
             "date_of_death is before date_of_birth", "date_of_death < date_of_birth"),
        Rule("patients", "date_of_death", "date_of_death_not_before_extract_date",
             "date_of_death is on or after the extract date", "date_of_death >= extract_date"),
    ),
)  # fmt: skip

ACTIVITY = Table(
    "activity",
    (
        _patient_ref(),
        Column("setting", "code", True, codes=SETTINGS),
        Column("admission_method", "code", False, codes=ADMISSION_METHODS),
        Column("start_date", "date", True),
        Column("end_date", "date", False),
        Column("primary_diagnosis", "string", False, pattern=ICD10_PATTERN),
        Column("attended", "boolean", False),
    ),
    (
        Rule("activity", "admission_method", "admission_method_required_for_inpatient",
             "admission_method is required for inpatient activity",
             "setting = 'inpatient' AND _raw_admission_method IS NULL"),
        Rule("activity", "admission_method", "admission_method_only_for_inpatient",
             "admission_method must be empty outside inpatient activity",
             "setting <> 'inpatient' AND _raw_admission_method IS NOT NULL"),
        Rule("activity", "start_date", "start_date_not_before_extract_date",
             "start_date is on or after the extract date", "start_date >= extract_date"),
        Rule("activity", "start_date", "start_date_before_date_of_birth",
             "start_date is before the patient's date_of_birth",
             "start_date < patient_date_of_birth"),
        Rule("activity", "end_date", "end_date_before_start_date",
             "inpatient end_date (discharge) is before start_date",
             "setting = 'inpatient' AND end_date < start_date"),
        Rule("activity", "end_date", "end_date_not_start_date",
             "end_date must be empty or equal to start_date outside inpatient activity",
             "setting <> 'inpatient' AND end_date <> start_date"),
    ),
)  # fmt: skip

CONDITIONS_TABLE = Table(
    "conditions",
    (
        _patient_ref(),
        Column("condition", "code", True, codes=CONDITIONS),
        Column("diagnosed_on", "date", True),
    ),
    (
        Rule("conditions", "diagnosed_on", "diagnosed_on_not_before_extract_date",
             "diagnosed_on is on or after the extract date", "diagnosed_on >= extract_date"),
    ),
)  # fmt: skip

MEDICATIONS = Table(
    "medications",
    (
        _patient_ref(),
        Column("issued_on", "date", True),
        Column("medicine", "string", True),
        Column("drug_class", "code", True, codes=DRUG_CLASSES),
    ),
    (
        Rule("medications", "issued_on", "issued_on_not_before_extract_date",
             "issued_on is on or after the extract date", "issued_on >= extract_date"),
        Rule("medications", "medicine", "medicine_not_lower_case",
             "medicine must be a lower-case generic name", "medicine <> lower(medicine)"),
    ),
)  # fmt: skip

OBSERVATIONS = Table(
    "observations",
    (
        _patient_ref(),
        Column("observed_on", "date", True),
        Column("code", "code", True, codes=OBSERVATION_CODES),
        Column("value", "number", False),
    ),
    (
        Rule("observations", "observed_on", "observed_on_not_before_extract_date",
             "observed_on is on or after the extract date", "observed_on >= extract_date"),
        Rule("observations", "value", "value_required",
             "value is required for BMI and CFS",
             "code IN ('BMI', 'CFS') AND _raw_value IS NULL"),
        Rule("observations", "value", "value_not_allowed",
             "value must be empty for codes other than BMI and CFS",
             "code NOT IN ('BMI', 'CFS') AND _raw_value IS NOT NULL"),
        Rule("observations", "value", "bmi_out_of_range",
             "BMI value is not between 10 and 90", "code = 'BMI' AND value NOT BETWEEN 10 AND 90"),
        Rule("observations", "value", "cfs_out_of_range",
             "CFS value is not a whole number from 1 to 9",
             "code = 'CFS' AND (value NOT BETWEEN 1 AND 9 OR value <> round(value))"),
    ),
)  # fmt: skip

TABLES: dict[str, Table] = {
    t.name: t for t in (PATIENTS, ACTIVITY, CONDITIONS_TABLE, MEDICATIONS, OBSERVATIONS)
}
TABLE_ORDER = tuple(TABLES)

#: Rules every column gets from its kind, with their messages (see ``riskstrat.data.extract``).
GENERIC_RULES: dict[str, str] = {
    "required": "a required value is missing",
    "invalid_nhs_number_format": "NHS number is not exactly 10 digits",
    "nhs_number_check_digit": "NHS number fails the Modulus 11 check digit",
    "invalid_pseudonym_format": (
        "pseudonym is not 1-64 letters, digits, '.', '_' or '-' starting with a letter or digit"
    ),
    "duplicate_nhs_number": "NHS number appears on more than one patients row",
    "unknown_patient": "NHS number is not in the patients table",
    "patient_rejected": "the patient's own row in patients was rejected",
    "invalid_date": "not an ISO 8601 date (YYYY-MM-DD)",
    "invalid_boolean": "not a boolean (true or false)",
    "invalid_integer": "not a whole number",
    "invalid_number": "not a finite number",
    "invalid_code": "not one of the contract's codes for this column",
    "invalid_format": "does not have the contract's shape for this column",
    "malformed_row": "CSV row has the wrong number of fields or cannot be parsed",
}


def all_rule_ids() -> set[tuple[str, str]]:
    """Every (table, rule) pair a reader can report; used to prove each rule has a test."""
    out: set[tuple[str, str]] = set()
    for t in TABLES.values():
        out.update((t.name, r.rule) for r in t.rules)
    return out
