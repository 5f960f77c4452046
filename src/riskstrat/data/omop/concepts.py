"""The OMOP concepts the importer's rules are written in (standard vocabulary constants).

These are structural concepts every CDM shares (visit types, gender, place of service, type and
status concepts), not clinical codes: those live in the codelists.
"""

from __future__ import annotations

# Visit concepts (vocabulary Visit)
INPATIENT_VISIT = 9201
OUTPATIENT_VISIT = 9202
EMERGENCY_ROOM_VISIT = 9203
EMERGENCY_ROOM_AND_INPATIENT_VISIT = 262
OFFICE_VISIT = 581477
HOME_VISIT = 581476
TELEHEALTH = 5083

# Gender
MALE = 8507
FEMALE = 8532

# Place of service, as a visit's admitted_from (v5.4) / admitting_source (v5.3) concept
EMERGENCY_ROOM_HOSPITAL = 8870
INPATIENT_HOSPITAL = 8717

# Condition status: the episode's primary diagnosis
PRIMARY_DIAGNOSIS = 32902
#: v5.3-era condition type for an inpatient header's primary condition.
PRIMARY_CONDITION_TYPE = 44786627

# Type concepts the generator writes
EHR = 32817
EHR_PROBLEM_LIST = 32840
EHR_ENCOUNTER_DIAGNOSIS = 32020
DEATH_CERTIFICATE = 32815
PERIOD_COVERING_HEALTHCARE_ENCOUNTERS = 44814724

#: US race and ethnicity concepts (vocabularies Race and Ethnicity). riskstrat reads ethnicity
#: only from UK ethnic-category concepts; a person described by one of these is "not stated".
US_RACE_ETHNICITY_VOCABULARIES = ("Race", "Ethnicity")

#: HES admission method codes (admimeth), as an inpatient visit's admitted_from source value,
#: by their first character: the contract's admission_method.
HES_ADMISSION_METHODS = {"1": "elective", "2": "emergency", "3": "maternity", "8": "transfer"}
