"""Tiny hand-built OMOP CDMs for the importer's tests, written as a DuckDB file, a folder of
CSV files (Eunomia's layout) or a PostgreSQL schema, in CDM 5.4 or 5.3 column names.

The vocabulary is the generator's (real codes; real concept ids where verified), so a test
names concepts by vocabulary and code: ``cdm.cid("SNOMED", "84114007")``.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd

from riskstrat.synth.omop import CDM_DDL, load_vocabulary

EXTRACT_DATE = dt.date(2026, 11, 1)
#: v5.3 names of the columns v5.4 renamed, in the tables riskstrat reads.
V53_RENAMES = {
    "visit_occurrence": {
        "admitted_from_concept_id": "admitting_source_concept_id",
        "admitted_from_source_value": "admitting_source_value",
        "discharged_to_concept_id": "discharge_to_concept_id",
        "discharged_to_source_value": "discharge_to_source_value",
    }
}


class Cdm:
    """Rows per CDM table; ``write_*`` creates a CDM from them."""

    def __init__(self) -> None:
        self.rows: dict[str, list[dict[str, Any]]] = {t: [] for t in CDM_DDL}
        vocab = load_vocabulary()
        concepts = vocab.concepts.drop_duplicates("concept_id")
        self.concepts = concepts
        self._ids = {
            (v, c): int(i)
            for v, c, i in zip(
                concepts["vocabulary_id"], concepts["concept_code"], concepts["concept_id"],
                strict=True,
            )
        }  # fmt: skip
        for row in concepts.itertuples():
            self.rows["concept"].append(
                {"concept_id": row.concept_id, "concept_name": row.concept_name,
                 "domain_id": row.domain_id, "vocabulary_id": row.vocabulary_id,
                 "concept_class_id": row.concept_class_id,
                 "standard_concept": row.standard_concept or None,
                 "concept_code": row.concept_code}
            )  # fmt: skip
        for row in vocab.relationships.itertuples():
            self.rows["concept_relationship"].append(
                {"concept_id_1": row.concept_id_1, "concept_id_2": row.concept_id_2,
                 "relationship_id": row.relationship_id}
            )  # fmt: skip
        for c in self.rows["concept"]:
            if c["standard_concept"] == "S":
                self.ancestor(c["concept_id"], c["concept_id"])
        for r in self.rows["concept_relationship"]:
            if r["relationship_id"] == "RxNorm has ing":
                self.ancestor(r["concept_id_2"], r["concept_id_1"])
        self.rows["cdm_source"].append({"cdm_source_name": "tests", "cdm_version": "v5.4"})
        self._next = 1

    def cid(self, vocabulary: str, code: str) -> int:
        return self._ids[(vocabulary, code)]

    def concept(self, concept_id: int, name: str, vocabulary: str, code: str, *,
                domain: str = "Condition", cls: str = "Clinical Finding",
                standard: str | None = "S") -> int:  # fmt: skip
        self.rows["concept"].append(
            {"concept_id": concept_id, "concept_name": name, "domain_id": domain,
             "vocabulary_id": vocabulary, "concept_class_id": cls, "standard_concept": standard,
             "concept_code": code}
        )  # fmt: skip
        self._ids[(vocabulary, code)] = concept_id
        if standard == "S":
            self.ancestor(concept_id, concept_id)
        return concept_id

    def ancestor(self, ancestor: int, descendant: int) -> None:
        self.rows["concept_ancestor"].append(
            {"ancestor_concept_id": ancestor, "descendant_concept_id": descendant,
             "min_levels_of_separation": 0 if ancestor == descendant else 1,
             "max_levels_of_separation": 0 if ancestor == descendant else 1}
        )  # fmt: skip

    def relationship(self, one: int, two: int, relationship: str) -> None:
        self.rows["concept_relationship"].append(
            {"concept_id_1": one, "concept_id_2": two, "relationship_id": relationship}
        )

    def next_id(self) -> int:
        self._next += 1
        return self._next

    def person(self, pid: int, *, born: dt.date | None = dt.date(1950, 6, 1),
               year: int | None = None, month: int | None = None, day: int | None = None,
               gender: int = 8532, race: int = 0, ethnicity: int = 0,
               location: int | None = None, care_site: int | None = 1,
               period: tuple[dt.date, dt.date] | None = (dt.date(2010, 1, 1),
                                                         dt.date(2026, 10, 31))) -> None:  # fmt: skip
        if born is not None:
            year, month, day = born.year, born.month, born.day
        self.rows["person"].append(
            {"person_id": pid, "gender_concept_id": gender, "year_of_birth": year,
             "month_of_birth": month, "day_of_birth": day,
             "birth_datetime": dt.datetime.combine(born, dt.time()) if born else None,
             "race_concept_id": race, "ethnicity_concept_id": ethnicity,
             "location_id": location, "care_site_id": care_site}
        )  # fmt: skip
        if period is not None:
            self.period(pid, *period)

    def period(self, pid: int, start: dt.date, end: dt.date) -> None:
        self.rows["observation_period"].append(
            {"observation_period_id": self.next_id(), "person_id": pid,
             "observation_period_start_date": start, "observation_period_end_date": end,
             "period_type_concept_id": 44814724}
        )  # fmt: skip

    def visit(self, pid: int, concept: int, start: dt.date, end: dt.date | None = None, *,
              admitted_from: int | None = None, hes: str | None = None) -> int:  # fmt: skip
        vid = self.next_id()
        self.rows["visit_occurrence"].append(
            {"visit_occurrence_id": vid, "person_id": pid, "visit_concept_id": concept,
             "visit_start_date": start, "visit_end_date": end or start,
             "visit_type_concept_id": 32817, "admitted_from_concept_id": admitted_from,
             "admitted_from_source_value": hes}
        )  # fmt: skip
        return vid

    def event(self, table: str, pid: int, concept: int, day: dt.date, *,
              visit: int | None = None, value: float | None = None,
              source_value: str | None = None, source_concept: int = 0,
              status: int | None = None) -> int:  # fmt: skip
        rid = self.next_id()
        prefix = {
            "condition_occurrence": "condition",
            "observation": "observation",
            "measurement": "measurement",
            "procedure_occurrence": "procedure",
        }[table]
        date_col = "condition_start_date" if table == "condition_occurrence" else f"{prefix}_date"
        row: dict[str, Any] = {
            f"{table}_id" if table != "condition_occurrence" else "condition_occurrence_id": rid,
            "person_id": pid, f"{prefix}_concept_id": concept, date_col: day,
            f"{prefix}_type_concept_id": 32817, "visit_occurrence_id": visit,
            f"{prefix}_source_value": source_value,
            f"{prefix}_source_concept_id": source_concept,
        }  # fmt: skip
        if table in ("observation", "measurement"):
            row["value_as_number"] = value
        if table == "condition_occurrence":
            row["condition_status_concept_id"] = status
        self.rows[table].append(row)
        return rid

    def drug(self, pid: int, concept: int, day: dt.date) -> None:
        self.rows["drug_exposure"].append(
            {"drug_exposure_id": self.next_id(), "person_id": pid, "drug_concept_id": concept,
             "drug_exposure_start_date": day, "drug_exposure_end_date": day,
             "drug_type_concept_id": 32817, "drug_source_concept_id": 0}
        )  # fmt: skip

    def death(self, pid: int, day: dt.date) -> None:
        self.rows["death"].append(
            {"person_id": pid, "death_date": day, "death_type_concept_id": 32815}
        )

    # ------------------------------------------------------------------ writing

    def _build(self, con: duckdb.DuckDBPyConnection, version: str) -> None:
        for table, ddl in CDM_DDL.items():
            con.execute(f"CREATE TABLE {table} ({ddl})")
            rows = self.rows[table]
            if rows:
                frame = pd.DataFrame(rows)
                con.register("frame", frame)
                cols = ", ".join(frame.columns)
                con.execute(f"INSERT INTO {table} ({cols}) SELECT {cols} FROM frame")
                con.unregister("frame")
        if version == "5.3":
            for table, renames in V53_RENAMES.items():
                for new, old in renames.items():
                    con.execute(f"ALTER TABLE {table} RENAME COLUMN {new} TO {old}")
            con.execute("UPDATE cdm_source SET cdm_version = 'v5.3.1'")

    def write_duckdb(self, path: Path, *, version: str = "5.4") -> Path:
        con = duckdb.connect(str(path))
        try:
            self._build(con, version)
        finally:
            con.close()
        return path

    def write_csv(self, folder: Path, *, version: str = "5.4", tab_vocabulary: bool = False
                  ) -> Path:  # fmt: skip
        """Eunomia's layout: one upper-case CSV per table; the vocabulary tab-separated and
        unquoted as Athena ships it, with ``tab_vocabulary``."""
        folder.mkdir(parents=True, exist_ok=True)
        con = duckdb.connect()
        try:
            self._build(con, version)
            for table in CDM_DDL:
                vocab = table.startswith("concept")
                opts = (
                    "DELIMITER '\t', QUOTE '', DATEFORMAT '%Y%m%d'"
                    if tab_vocabulary and vocab
                    else "DATEFORMAT '%Y-%m-%d'"
                )
                con.execute(
                    f"COPY {table} TO '{folder / (table.upper() + '.csv')}' "
                    f"(FORMAT csv, HEADER, {opts})"
                )
        finally:
            con.close()
        return folder

    def write_parquet(self, folder: Path) -> Path:
        """One lower-case Parquet file per table (``person.parquet``, ...)."""
        folder.mkdir(parents=True, exist_ok=True)
        con = duckdb.connect()
        try:
            self._build(con, "5.4")
            for table in CDM_DDL:
                con.execute(f"COPY {table} TO '{folder / (table + '.parquet')}' (FORMAT parquet)")
        finally:
            con.close()
        return folder

    def to_postgres(self, pg: Any, schema: str, *, version: str = "5.4") -> None:
        """Create the tables in ``schema`` of the psycopg connection ``pg`` and copy the rows."""
        con = duckdb.connect()
        try:
            self._build(con, version)
            for table in CDM_DDL:
                columns = con.execute(f"DESCRIBE {table}").fetchall()
                ddl = ", ".join(
                    f"{name} {'DOUBLE PRECISION' if kind == 'DOUBLE' else kind}"
                    for name, kind, *_ in columns
                )
                pg.execute(f'CREATE TABLE "{schema}".{table} ({ddl})')
                data = con.execute(f"SELECT * FROM {table}").fetchall()
                with pg.cursor().copy(f'COPY "{schema}".{table} FROM STDIN') as copy:
                    for row in data:
                        copy.write_row(row)
        finally:
            con.close()


def extract_rows(folder: Path) -> dict[str, list[tuple[str, ...]]]:
    """Every row of an extract's Parquet tables, as text, sorted: two extracts with the same
    rows compare equal whatever order their files hold them in."""
    with duckdb.connect() as con:
        return {
            t: sorted(
                tuple(map(str, r))
                for r in con.execute(
                    f"SELECT * FROM read_parquet('{folder / t}.parquet')"
                ).fetchall()
            )
            for t in ("patients", "activity", "conditions", "medications", "observations")
        }
