"""The synthetic population written as an OMOP CDM 5.4 (a DuckDB file or a folder of CSVs).

Each simulated block's contract tables are turned into CDM rows with DuckDB SQL and appended;
``finish`` adds the vocabulary rows the data needs and the files a real site would hold beside
its CDM: the site map (care site -> practice, PCN), the IMD lookup (LSOA -> decile) and the
linkage file (person_id -> NHS number, as a practice holds it for direct care).

Concepts: every code is written with its real vocabulary and code, and with its real OMOP
concept id where that id was verified from public material (``omop_vocab/*.csv`` names the
source). Where it was not, the concept gets an id from OMOP's range for site-specific concepts
(2,000,000,000 and up) instead of a guess; a combination product with no verified RxNorm
concept also gets vocabulary ``riskstrat``. The importer matches codelists by vocabulary and
code, so it reads these exactly as it reads a real vocabulary's rows.

Encoding (the importer's rules read it back to the same features):
person_id is 1 + the person's rank by NHS number; registration is the observation period (its
end is the day before ``registered_to``, or the day before the extract date); an emergency,
elective, maternity or transfer admission is an inpatient visit (9201) with a HES admission
method code (21, 11, 31, 81) as its admitted-from source value (and 8870 or 8717 as its
admitted-from concept for emergencies and transfers); a primary diagnosis is a condition linked
to the visit with status 32902 and the ICD-10 code as source value; a missed appointment is a
did-not-attend observation linked to the visit; a register condition is a problem-list record;
the type-1 opt-out is a dissent record dated at registration.
"""

from __future__ import annotations

import contextlib
import csv
import datetime as dt
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Literal

import duckdb
import pandas as pd

from riskstrat.data.contract import TABLE_ORDER
from riskstrat.data.omop import concepts as C

OmopLayout = Literal["duckdb", "csv"]
#: First id of the concepts the generator makes up where no real id was verified.
LOCAL_CONCEPT_START = 2_000_000_000
CDM_FILE = "cdm.duckdb"
CDM_FOLDER = "cdm"
SITE_MAP = "site_map.csv"
IMD_LOOKUP = "imd_lookup.csv"
LINKAGE = "linkage.csv"
_HES = {"emergency": "21", "elective": "11", "maternity": "31", "transfer": "81"}
_DOMAIN_TABLE = {
    "Condition": "condition_occurrence",
    "Observation": "observation",
    "Measurement": "measurement",
    "Procedure": "procedure_occurrence",
}


@dataclass(frozen=True)
class GeneratorVocabulary:
    """The concept rows the generator writes, and what it writes for each contract code."""

    concepts: pd.DataFrame  # OMOP concept columns plus emit_for, verified
    relationships: pd.DataFrame  # concept_id_1, concept_id_2, relationship_id

    def emitted(self, prefix: str = "") -> pd.DataFrame:
        rows = self.concepts[self.concepts["emit_for"].str.startswith(prefix)]
        return rows.assign(key=rows["emit_for"].str.removeprefix(prefix))


def load_vocabulary() -> GeneratorVocabulary:
    """Read ``omop_vocab/*.csv`` and give every unverified concept a site-specific id."""
    folder = resources.files("riskstrat.synth").joinpath("omop_vocab")
    frames = []
    for name in ("structural", "conditions", "observations", "drugs"):
        text = folder.joinpath(f"{name}.csv").read_text(encoding="utf-8")
        frames.append(pd.DataFrame(list(csv.DictReader(text.splitlines()))))
    concepts = pd.concat(frames, ignore_index=True).fillna("")
    concepts["concept_id"] = concepts["concept_id"].astype("int64")
    local = concepts["concept_id"] == 0
    # The same code may be emitted for two purposes (an ICD-10 code's target that is also a
    # register concept): one id per (vocabulary, code).
    key = concepts["vocabulary_id"] + "|" + concepts["concept_code"]
    unknown_code = concepts["concept_code"] == ""
    key[unknown_code] = "riskstrat|" + concepts.loc[unknown_code, "emit_for"]
    known = dict(zip(key[~local], concepts.loc[~local, "concept_id"], strict=True))
    ids: dict[str, int] = {}
    for i in concepts.index[local]:
        k = key[i]
        if k in known:
            concepts.loc[i, "concept_id"] = known[k]
            continue
        ids.setdefault(k, LOCAL_CONCEPT_START + len(ids))
        concepts.loc[i, "concept_id"] = ids[k]
    # A made-up concept with no known code goes in the local vocabulary under a local code; a
    # real concept whose code was not found keeps its vocabulary and an empty code (nothing
    # matches on it: the importer reads visit, type and race concepts by id).
    made_up = unknown_code & local
    concepts.loc[made_up, "vocabulary_id"] = "riskstrat"
    placeholder = "riskstrat:" + concepts["emit_for"].str.replace(" ", "-")
    concepts.loc[made_up, "concept_code"] = placeholder[made_up]
    relationships = []
    for name in ("conditions", "drugs"):
        text = folder.joinpath(f"{name}_relationships.csv").read_text(encoding="utf-8")
        relationships += list(csv.DictReader(text.splitlines()))
    rel = pd.DataFrame(relationships, columns=["concept_id_1", "concept_id_2", "relationship_id"])
    rel = rel.astype({"concept_id_1": "int64", "concept_id_2": "int64"})
    # ICD-10 codes map to their SNOMED targets; combination products have their ingredients.
    icd = concepts[concepts["emit_for"].str.startswith("icd10:")]
    target = concepts[concepts["emit_for"].str.startswith("maps_to:")]
    maps = icd.assign(code=icd["emit_for"].str.removeprefix("icd10:")).merge(
        target.assign(code=target["emit_for"].str.removeprefix("maps_to:")),
        on="code",
        suffixes=("", "_t"),
    )
    maps = maps[maps["concept_code_t"] != "UNRESOLVED"]
    rel = pd.concat(
        [
            rel,
            pd.DataFrame(
                {
                    "concept_id_1": maps["concept_id"].to_numpy(),
                    "concept_id_2": maps["concept_id_t"].to_numpy(),
                    "relationship_id": "Maps to",
                }
            ),
            _combination_links(concepts),
        ],
        ignore_index=True,
    ).drop_duplicates()
    concepts = concepts[concepts["concept_code"] != "UNRESOLVED"]
    return GeneratorVocabulary(concepts=concepts.reset_index(drop=True), relationships=rel)


def _combination_links(concepts: pd.DataFrame) -> pd.DataFrame:
    """'RxNorm has ing' rows from each combination product to its ingredients, by the
    combinations listed in the shipped medicines.yaml (which name their ingredient codes)."""
    from riskstrat.data.codelist import load_codelists

    combos = {c.uk_name: c.ingredients for c in load_codelists().medicines.combinations}
    drugs = concepts[concepts["domain_id"] == "Drug"]
    by_code = dict(
        zip(
            drugs.loc[drugs["concept_class_id"] == "Ingredient", "concept_code"],
            drugs.loc[drugs["concept_class_id"] == "Ingredient", "concept_id"],
            strict=False,
        )
    )
    rows = [
        {"concept_id_1": int(cid), "concept_id_2": int(by_code[code]),
         "relationship_id": "RxNorm has ing"}
        for cid, name in zip(drugs["concept_id"], drugs["emit_for"], strict=True)
        if name in combos
        for code in combos[name]
        if code in by_code
    ]  # fmt: skip
    return pd.DataFrame(rows, columns=["concept_id_1", "concept_id_2", "relationship_id"])


# --------------------------------------------------------------------------------------
# Writing

#: The CDM 5.4 tables the generator writes (what riskstrat reads, and what the CDM requires).
CDM_DDL = {
    "person": """person_id BIGINT, gender_concept_id INTEGER, year_of_birth INTEGER,
        month_of_birth INTEGER, day_of_birth INTEGER, birth_datetime TIMESTAMP,
        race_concept_id INTEGER, ethnicity_concept_id INTEGER, location_id BIGINT,
        provider_id BIGINT, care_site_id BIGINT, person_source_value VARCHAR,
        gender_source_value VARCHAR, gender_source_concept_id INTEGER,
        race_source_value VARCHAR, race_source_concept_id INTEGER,
        ethnicity_source_value VARCHAR, ethnicity_source_concept_id INTEGER""",
    "observation_period": """observation_period_id BIGINT, person_id BIGINT,
        observation_period_start_date DATE, observation_period_end_date DATE,
        period_type_concept_id INTEGER""",
    "death": """person_id BIGINT, death_date DATE, death_datetime TIMESTAMP,
        death_type_concept_id INTEGER, cause_concept_id INTEGER, cause_source_value VARCHAR,
        cause_source_concept_id INTEGER""",
    "visit_occurrence": """visit_occurrence_id BIGINT, person_id BIGINT,
        visit_concept_id INTEGER, visit_start_date DATE, visit_start_datetime TIMESTAMP,
        visit_end_date DATE, visit_end_datetime TIMESTAMP, visit_type_concept_id INTEGER,
        provider_id BIGINT, care_site_id BIGINT, visit_source_value VARCHAR,
        visit_source_concept_id INTEGER, admitted_from_concept_id INTEGER,
        admitted_from_source_value VARCHAR, discharged_to_concept_id INTEGER,
        discharged_to_source_value VARCHAR, preceding_visit_occurrence_id BIGINT""",
    "condition_occurrence": """condition_occurrence_id BIGINT, person_id BIGINT,
        condition_concept_id INTEGER, condition_start_date DATE,
        condition_start_datetime TIMESTAMP, condition_end_date DATE,
        condition_end_datetime TIMESTAMP, condition_type_concept_id INTEGER,
        condition_status_concept_id INTEGER, stop_reason VARCHAR, provider_id BIGINT,
        visit_occurrence_id BIGINT, visit_detail_id BIGINT, condition_source_value VARCHAR,
        condition_source_concept_id INTEGER, condition_status_source_value VARCHAR""",
    "drug_exposure": """drug_exposure_id BIGINT, person_id BIGINT, drug_concept_id INTEGER,
        drug_exposure_start_date DATE, drug_exposure_start_datetime TIMESTAMP,
        drug_exposure_end_date DATE, drug_exposure_end_datetime TIMESTAMP,
        verbatim_end_date DATE, drug_type_concept_id INTEGER, stop_reason VARCHAR,
        refills INTEGER, quantity DOUBLE, days_supply INTEGER, sig VARCHAR,
        route_concept_id INTEGER, lot_number VARCHAR, provider_id BIGINT,
        visit_occurrence_id BIGINT, visit_detail_id BIGINT, drug_source_value VARCHAR,
        drug_source_concept_id INTEGER, route_source_value VARCHAR,
        dose_unit_source_value VARCHAR""",
    "measurement": """measurement_id BIGINT, person_id BIGINT, measurement_concept_id INTEGER,
        measurement_date DATE, measurement_datetime TIMESTAMP, measurement_time VARCHAR,
        measurement_type_concept_id INTEGER, operator_concept_id INTEGER,
        value_as_number DOUBLE, value_as_concept_id INTEGER, unit_concept_id INTEGER,
        range_low DOUBLE, range_high DOUBLE, provider_id BIGINT, visit_occurrence_id BIGINT,
        visit_detail_id BIGINT, measurement_source_value VARCHAR,
        measurement_source_concept_id INTEGER, unit_source_value VARCHAR,
        unit_source_concept_id INTEGER, value_source_value VARCHAR,
        measurement_event_id BIGINT, meas_event_field_concept_id INTEGER""",
    "observation": """observation_id BIGINT, person_id BIGINT, observation_concept_id INTEGER,
        observation_date DATE, observation_datetime TIMESTAMP,
        observation_type_concept_id INTEGER, value_as_number DOUBLE, value_as_string VARCHAR,
        value_as_concept_id INTEGER, qualifier_concept_id INTEGER, unit_concept_id INTEGER,
        provider_id BIGINT, visit_occurrence_id BIGINT, visit_detail_id BIGINT,
        observation_source_value VARCHAR, observation_source_concept_id INTEGER,
        unit_source_value VARCHAR, qualifier_source_value VARCHAR, value_source_value VARCHAR,
        observation_event_id BIGINT, obs_event_field_concept_id INTEGER""",
    "procedure_occurrence": """procedure_occurrence_id BIGINT, person_id BIGINT,
        procedure_concept_id INTEGER, procedure_date DATE, procedure_datetime TIMESTAMP,
        procedure_end_date DATE, procedure_end_datetime TIMESTAMP,
        procedure_type_concept_id INTEGER, modifier_concept_id INTEGER, quantity INTEGER,
        provider_id BIGINT, visit_occurrence_id BIGINT, visit_detail_id BIGINT,
        procedure_source_value VARCHAR, procedure_source_concept_id INTEGER,
        modifier_source_value VARCHAR""",
    "location": """location_id BIGINT, address_1 VARCHAR, address_2 VARCHAR, city VARCHAR,
        state VARCHAR, zip VARCHAR, county VARCHAR, location_source_value VARCHAR,
        country_concept_id INTEGER, country_source_value VARCHAR, latitude DOUBLE,
        longitude DOUBLE""",
    "care_site": """care_site_id BIGINT, care_site_name VARCHAR,
        place_of_service_concept_id INTEGER, location_id BIGINT,
        care_site_source_value VARCHAR, place_of_service_source_value VARCHAR""",
    "concept": """concept_id BIGINT, concept_name VARCHAR, domain_id VARCHAR,
        vocabulary_id VARCHAR, concept_class_id VARCHAR, standard_concept VARCHAR,
        concept_code VARCHAR, valid_start_date DATE, valid_end_date DATE,
        invalid_reason VARCHAR""",
    "concept_ancestor": """ancestor_concept_id BIGINT, descendant_concept_id BIGINT,
        min_levels_of_separation INTEGER, max_levels_of_separation INTEGER""",
    "concept_relationship": """concept_id_1 BIGINT, concept_id_2 BIGINT,
        relationship_id VARCHAR, valid_start_date DATE, valid_end_date DATE,
        invalid_reason VARCHAR""",
    "cdm_source": """cdm_source_name VARCHAR, cdm_source_abbreviation VARCHAR,
        cdm_holder VARCHAR, source_description VARCHAR, source_documentation_reference VARCHAR,
        cdm_etl_reference VARCHAR, source_release_date DATE, cdm_release_date DATE,
        cdm_version VARCHAR, cdm_version_concept_id INTEGER, vocabulary_version VARCHAR""",
}
#: Event tables written block by block, and the id column each numbers.
_EVENT_IDS = {
    "visit_occurrence": "visit_occurrence_id",
    "condition_occurrence": "condition_occurrence_id",
    "drug_exposure": "drug_exposure_id",
    "measurement": "measurement_id",
    "observation": "observation_id",
    "procedure_occurrence": "procedure_occurrence_id",
}


class OmopWriter:
    """Writes blocks of contract tables as CDM rows; ``finish`` completes the CDM."""

    def __init__(
        self,
        folder: Path,
        *,
        layout: OmopLayout,
        extract_date: dt.date,
        source: str,
        practices: pd.DataFrame,
        lsoas: pd.DataFrame,
    ) -> None:
        """``practices``: practice_code, pcn_code; ``lsoas``: lsoa_code, imd_decile (each
        becomes a care site or location, numbered in the order given)."""
        if layout not in ("duckdb", "csv"):
            raise ValueError(f"layout must be 'duckdb' or 'csv', not {layout!r}")
        self.folder = folder
        self.layout = layout
        self.extract_date = extract_date
        self.source = source
        self.vocab = load_vocabulary()
        self._db = folder / (CDM_FILE if layout == "duckdb" else ".cdm-work.duckdb")
        self.con = duckdb.connect(str(self._db))
        self.con.execute("SET preserve_insertion_order = true")
        for table, ddl in CDM_DDL.items():
            self.con.execute(f"CREATE TABLE {table} ({ddl})")
        self.practices = practices.assign(care_site_id=range(1, len(practices) + 1))
        self.lsoas = lsoas.assign(location_id=range(1, len(lsoas) + 1))
        self.con.register("gen_practices", self.practices)
        self.con.register("gen_lsoas", self.lsoas)
        self._lookups()
        self.persons = 0
        self.next_id = dict.fromkeys(_EVENT_IDS, 1)
        self.rows: dict[str, int] = {}

    def _lookups(self) -> None:
        v = self.vocab
        self.con.register("gen_vocab", v.concepts)
        lookups = {
            "gen_condition": v.emitted("").loc[lambda f: ~f["emit_for"].str.contains(":")],
            "gen_icd10": v.emitted("icd10:"),
            "gen_maps_to": v.emitted("maps_to:"),
            "gen_ethnicity": v.emitted("ethnicity:"),
        }
        for name, frame in lookups.items():
            self.con.register(f"{name}_frame", frame[["key", "concept_id", "domain_id"]])
            self.con.execute(
                f"CREATE TEMP TABLE {name} AS SELECT key, CAST(concept_id AS BIGINT) AS "
                f"concept_id, domain_id, concept_code FROM {name}_frame "
                f"JOIN (SELECT DISTINCT concept_id, concept_code FROM gen_vocab) "
                f"USING (concept_id)"
            )
        drugs = v.concepts[
            (v.concepts["domain_id"] == "Drug") & (v.concepts["emit_for"] != "ingredient")
        ]
        self.con.register("gen_drug_frame", drugs[["emit_for", "concept_id", "concept_code"]])
        self.con.execute(
            "CREATE TEMP TABLE gen_drug AS SELECT emit_for AS medicine, CAST(concept_id AS BIGINT) "
            "AS concept_id, concept_code FROM gen_drug_frame"
        )

    def _id(self, key: str) -> int:
        rows = self.vocab.concepts.loc[self.vocab.concepts["emit_for"] == key, "concept_id"]
        return int(rows.iloc[0])

    def _code(self, key: str) -> str:
        rows = self.vocab.concepts.loc[self.vocab.concepts["emit_for"] == key, "concept_code"]
        return str(rows.iloc[0])

    def write_block(
        self,
        tables: dict[str, pd.DataFrame],
        report: Callable[[float], None] | None = None,
    ) -> None:
        """Append one block's people and events (people in NHS-number order, as the
        generator's blocks are)."""
        con = self.con
        for name in TABLE_ORDER:
            frame = tables[name].copy()
            for col in frame.columns:
                if isinstance(frame[col].dtype, pd.CategoricalDtype):
                    frame[col] = frame[col].astype("object")
            con.register(f"b_{name}", frame)
        con.execute(
            f"CREATE OR REPLACE TEMP TABLE b_people AS SELECT CAST(nhs_number AS VARCHAR) AS "
            f"nhs_number, {self.persons} + row_number() OVER () AS person_id FROM b_patients"
        )
        self._people()
        self._visits()
        self._conditions()
        self._drugs()
        self._observations()
        if report is not None:
            report(1.0)
        self.persons += int(con.execute("SELECT count(*) FROM b_people").fetchall()[0][0])
        for name in TABLE_ORDER:
            con.unregister(f"b_{name}")

    def _people(self) -> None:
        d = f"DATE '{self.extract_date.isoformat()}'"
        opt = self._id("TYPE1_OPT_OUT")
        opt_code = self._code("TYPE1_OPT_OUT")
        self.con.execute(
            f"""
            INSERT INTO person (person_id, gender_concept_id, year_of_birth, month_of_birth,
                day_of_birth, birth_datetime, race_concept_id, ethnicity_concept_id,
                location_id, care_site_id, gender_source_value, race_source_value)
            SELECT b.person_id,
                   CASE p.sex WHEN 'M' THEN {C.MALE} WHEN 'F' THEN {C.FEMALE} ELSE 0 END,
                   year(p.date_of_birth), month(p.date_of_birth), day(p.date_of_birth),
                   CAST(p.date_of_birth AS TIMESTAMP), coalesce(e.concept_id, 0), 0,
                   l.location_id, s.care_site_id, p.sex, NULL
            FROM b_patients p JOIN b_people b ON b.nhs_number = CAST(p.nhs_number AS VARCHAR)
            LEFT JOIN gen_ethnicity e ON e.key = p.ethnic_category
            LEFT JOIN gen_lsoas l ON l.lsoa_code = p.lsoa_code
            LEFT JOIN gen_practices s ON s.practice_code = p.practice_code
            ORDER BY b.person_id
            """
        )
        self.con.execute(
            f"""
            INSERT INTO observation_period
            SELECT b.person_id, b.person_id, p.registered_from,
                   CAST(coalesce(p.registered_to, {d}) - INTERVAL 1 DAY AS DATE),
                   {C.PERIOD_COVERING_HEALTHCARE_ENCOUNTERS}
            FROM b_patients p JOIN b_people b ON b.nhs_number = CAST(p.nhs_number AS VARCHAR)
            ORDER BY b.person_id
            """
        )
        self.con.execute(
            f"""
            INSERT INTO death (person_id, death_date, death_type_concept_id)
            SELECT b.person_id, p.date_of_death, {C.DEATH_CERTIFICATE}
            FROM b_patients p JOIN b_people b ON b.nhs_number = CAST(p.nhs_number AS VARCHAR)
            WHERE p.date_of_death IS NOT NULL ORDER BY b.person_id
            """
        )
        # The opt-out is a dissent record on the day registration starts.
        self._insert_events(
            "observation",
            f"""SELECT b.person_id, {opt} AS concept_id, p.registered_from AS event_date,
                   NULL AS value, NULL AS unit, NULL AS visit, '{opt_code}' AS source_value,
                   {opt} AS source_concept, NULL AS status, {C.EHR} AS type
            FROM b_patients p JOIN b_people b ON b.nhs_number = CAST(p.nhs_number AS VARCHAR)
            WHERE p.type1_opt_out""",
        )

    def _visits(self) -> None:
        d = f"DATE '{self.extract_date.isoformat()}'"
        start = self.next_id["visit_occurrence"]
        concept = (
            f"CASE a.setting WHEN 'inpatient' THEN {C.INPATIENT_VISIT} WHEN 'ae' THEN "
            f"{C.EMERGENCY_ROOM_VISIT} WHEN 'outpatient' THEN {C.OUTPATIENT_VISIT} WHEN 'gp' "
            f"THEN {C.OFFICE_VISIT} ELSE {C.HOME_VISIT} END"
        )
        hes = " ".join(f"WHEN '{m}' THEN '{c}'" for m, c in _HES.items())
        self.con.execute(
            f"""
            CREATE OR REPLACE TEMP TABLE b_visits AS
            SELECT {start} - 1 + row_number() OVER () AS visit_occurrence_id, b.person_id,
                   a.* EXCLUDE (nhs_number)
            FROM b_activity a JOIN b_people b ON b.nhs_number = CAST(a.nhs_number AS VARCHAR)
            """
        )
        self.con.execute(
            f"""
            INSERT INTO visit_occurrence (visit_occurrence_id, person_id, visit_concept_id,
                visit_start_date, visit_end_date, visit_type_concept_id,
                admitted_from_concept_id, admitted_from_source_value, visit_source_value)
            SELECT visit_occurrence_id, person_id, {concept}, start_date,
                   CASE WHEN setting = 'inpatient' THEN coalesce(end_date, {d})
                        ELSE start_date END,
                   {C.EHR},
                   CASE admission_method WHEN 'emergency' THEN {C.EMERGENCY_ROOM_HOSPITAL}
                        WHEN 'transfer' THEN {C.INPATIENT_HOSPITAL} ELSE 0 END,
                   CASE admission_method {hes} END, setting
            FROM b_visits a ORDER BY visit_occurrence_id
            """
        )
        self.next_id["visit_occurrence"] += self._count("b_visits")
        self._insert_events(
            "condition_occurrence",
            f"""SELECT v.person_id, coalesce(m.concept_id, 0) AS concept_id,
                   v.start_date AS event_date, NULL AS value, NULL AS unit,
                   v.visit_occurrence_id AS visit, v.primary_diagnosis AS source_value,
                   coalesce(i.concept_id, 0) AS source_concept,
                   {C.PRIMARY_DIAGNOSIS} AS status, {C.EHR_ENCOUNTER_DIAGNOSIS} AS type
            FROM b_visits v LEFT JOIN gen_icd10 i ON i.key = v.primary_diagnosis
            LEFT JOIN gen_maps_to m ON m.key = v.primary_diagnosis
            WHERE v.primary_diagnosis IS NOT NULL""",
        )
        dna = self._id("DID_NOT_ATTEND")
        self._insert_events(
            "observation",
            f"""SELECT person_id, {dna} AS concept_id, start_date AS event_date,
                   NULL AS value, NULL AS unit, visit_occurrence_id AS visit,
                   '{self._code("DID_NOT_ATTEND")}' AS source_value, {dna} AS source_concept,
                   NULL AS status, {C.EHR} AS type
            FROM b_visits WHERE attended = false""",
        )

    def _conditions(self) -> None:
        for domain, table in _DOMAIN_TABLE.items():
            self._insert_events(
                table,
                f"""SELECT b.person_id, g.concept_id, c.diagnosed_on AS event_date,
                       NULL AS value, NULL AS unit, NULL AS visit, g.concept_code AS source_value,
                       g.concept_id AS source_concept, NULL AS status,
                       {C.EHR_PROBLEM_LIST} AS type
                FROM b_conditions c JOIN b_people b
                  ON b.nhs_number = CAST(c.nhs_number AS VARCHAR)
                JOIN gen_condition g ON g.key = c.condition AND g.domain_id = '{domain}'""",
            )

    def _observations(self) -> None:
        unit = self._id("unit:BMI")
        for domain, table in _DOMAIN_TABLE.items():
            self._insert_events(
                table,
                f"""SELECT b.person_id, g.concept_id, o.observed_on AS event_date,
                       o.value, CASE WHEN o.code = 'BMI' THEN {unit} END AS unit,
                       NULL AS visit, g.concept_code AS source_value,
                       g.concept_id AS source_concept, NULL AS status, {C.EHR} AS type
                FROM b_observations o JOIN b_people b
                  ON b.nhs_number = CAST(o.nhs_number AS VARCHAR)
                JOIN gen_condition g ON g.key = o.code AND g.domain_id = '{domain}'""",
            )

    def _drugs(self) -> None:
        start = self.next_id["drug_exposure"]
        self.con.execute(
            f"""
            INSERT INTO drug_exposure (drug_exposure_id, person_id, drug_concept_id,
                drug_exposure_start_date, drug_exposure_end_date, drug_type_concept_id,
                drug_source_value, drug_source_concept_id)
            SELECT {start} - 1 + row_number() OVER (), b.person_id, g.concept_id, m.issued_on,
                   m.issued_on, {C.EHR}, m.medicine, 0
            FROM b_medications m JOIN b_people b ON b.nhs_number = CAST(m.nhs_number AS VARCHAR)
            JOIN gen_drug g ON g.medicine = m.medicine
            """
        )
        n = int(
            self.con.execute(
                f"SELECT count(*) FROM drug_exposure WHERE drug_exposure_id >= {start}"
            ).fetchall()[0][0]
        )
        expected = self._count("b_medications")
        if n != expected:
            raise ValueError(f"{expected - n} prescriptions name a medicine with no concept")
        self.next_id["drug_exposure"] += n

    def _insert_events(self, table: str, select: str) -> None:
        """Insert rows of (person_id, concept_id, event_date, value, unit, visit,
        source_value, source_concept, status, type) into an event table."""
        src, status, kind = "source_concept", "status", "type"
        start = self.next_id[table]
        id_col = _EVENT_IDS[table]
        numbered = f"SELECT {start} - 1 + row_number() OVER () AS id, * FROM ({select}) "
        if table == "condition_occurrence":
            sql = f"""INSERT INTO condition_occurrence (condition_occurrence_id, person_id,
                condition_concept_id, condition_start_date, condition_type_concept_id,
                condition_status_concept_id, visit_occurrence_id, condition_source_value,
                condition_source_concept_id)
                SELECT id, person_id, concept_id, event_date, {kind}, {status}, visit,
                       source_value, {src} FROM ({numbered})"""
        elif table == "measurement":
            sql = f"""INSERT INTO measurement (measurement_id, person_id, measurement_concept_id,
                measurement_date, measurement_type_concept_id, value_as_number, unit_concept_id,
                visit_occurrence_id, measurement_source_value, measurement_source_concept_id)
                SELECT id, person_id, concept_id, event_date, {kind}, value, unit, visit,
                       source_value, {src} FROM ({numbered})"""
        elif table == "observation":
            sql = f"""INSERT INTO observation (observation_id, person_id, observation_concept_id,
                observation_date, observation_type_concept_id, value_as_number, unit_concept_id,
                visit_occurrence_id, observation_source_value, observation_source_concept_id)
                SELECT id, person_id, concept_id, event_date, {kind}, value, unit, visit,
                       source_value, {src} FROM ({numbered})"""
        else:
            sql = f"""INSERT INTO procedure_occurrence (procedure_occurrence_id, person_id,
                procedure_concept_id, procedure_date, procedure_type_concept_id,
                visit_occurrence_id, procedure_source_value, procedure_source_concept_id)
                SELECT id, person_id, concept_id, event_date, {kind}, visit, source_value,
                       {src} FROM ({numbered})"""
        self.con.execute(sql)
        self.next_id[table] = int(
            self.con.execute(f"SELECT coalesce(max({id_col}), 0) + 1 FROM {table}").fetchall()[0][0]
        )

    def _count(self, table: str) -> int:
        return int(self.con.execute(f"SELECT count(*) FROM {table}").fetchall()[0][0])

    # ---------------------------------------------------------------------------- finish

    def finish(self, nhs: Sequence[str]) -> None:
        """Write the vocabulary, care sites, locations and CDM source, then the site map,
        IMD lookup and linkage (``nhs``: every NHS number, in person_id order) files; for the
        CSV layout, export every table."""
        con = self.con
        con.execute(
            "INSERT INTO care_site (care_site_id, care_site_name, place_of_service_concept_id, "
            "care_site_source_value) SELECT care_site_id, 'Practice ' || practice_code, 0, "
            "practice_code FROM gen_practices ORDER BY 1"
        )
        con.execute(
            "INSERT INTO location (location_id, location_source_value, country_source_value) "
            "SELECT location_id, lsoa_code, 'England' FROM gen_lsoas ORDER BY 1"
        )
        # One row per concept: a code emitted for two purposes (a register concept that is
        # also an ICD-10 code's target) is listed once.
        con.execute(
            "INSERT INTO concept SELECT concept_id, any_value(concept_name), any_value(domain_id), "
            "any_value(vocabulary_id), any_value(concept_class_id), "
            "NULLIF(any_value(standard_concept), ''), any_value(concept_code), "
            "DATE '1970-01-01', DATE '2099-12-31', NULL FROM gen_vocab GROUP BY concept_id "
            "ORDER BY concept_id"
        )
        con.register("gen_rel", self.vocab.relationships)
        con.execute(
            "INSERT INTO concept_relationship SELECT concept_id_1, concept_id_2, relationship_id, "
            "DATE '1970-01-01', DATE '2099-12-31', NULL FROM gen_rel"
        )
        # Every standard concept is its own ancestor; combination products descend from
        # their ingredients.
        con.execute(
            """
            INSERT INTO concept_ancestor
            SELECT DISTINCT concept_id, concept_id, 0, 0 FROM concept WHERE standard_concept = 'S'
            UNION
            SELECT concept_id_2, concept_id_1, 1, 1 FROM concept_relationship
            WHERE relationship_id = 'RxNorm has ing'
            """
        )
        con.execute(
            f"INSERT INTO cdm_source (cdm_source_name, cdm_source_abbreviation, "
            f"source_description, source_release_date, cdm_release_date, cdm_version, "
            f"vocabulary_version) VALUES (?, 'riskstrat-synth', ?, DATE "
            f"'{self.extract_date.isoformat()}', DATE '{self.extract_date.isoformat()}', "
            f"'v5.4', 'riskstrat generator vocabulary (see omop_vocab/*.csv)')",
            [self.source, "synthetic population; not real patients"],
        )
        self.practices[["care_site_id", "practice_code", "pcn_code"]].to_csv(
            self.folder / SITE_MAP, index=False
        )
        self.lsoas[["lsoa_code", "imd_decile"]].to_csv(self.folder / IMD_LOOKUP, index=False)
        pd.DataFrame(
            {"pseudonym": [str(i + 1) for i in range(len(nhs))], "nhs_number": list(nhs)}
        ).to_csv(self.folder / LINKAGE, index=False)
        self.rows = {t: self._count(t) for t in CDM_DDL}
        if self.layout == "csv":
            out = self.folder / CDM_FOLDER
            out.mkdir()
            for table in CDM_DDL:
                con.execute(
                    f"COPY (SELECT * FROM {table}) TO '{out / (table.upper() + '.csv')}' "
                    "(FORMAT csv, HEADER, DATEFORMAT '%Y-%m-%d')"
                )
        self.close()
        if self.layout == "csv":
            self._db.unlink(missing_ok=True)
            self._db.with_name(self._db.name + ".wal").unlink(missing_ok=True)

    def close(self) -> None:
        with contextlib.suppress(duckdb.Error):
            self.con.close()


def remove_partial(folder: Path) -> None:
    shutil.rmtree(folder, ignore_errors=True)
