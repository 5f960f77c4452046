"""The mapping report: every row read, where it went, and why any was left out.

Counts and concept names only, never identifiers or source values (a source value can be free
text). Written as JSON (for tools and the next import's comparison) and Markdown (for people).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import duckdb

from riskstrat.data.errors import ExtractError
from riskstrat.data.files import check_plain_file
from riskstrat.data.omop.mapping import EVENT_TABLES

#: How many unmapped concepts, and matched concepts per contract code, the report lists.
TOP_N = 15
_EVENT_ID = {
    "condition_occurrence": "condition_occurrence_id",
    "observation": "observation_id",
    "measurement": "measurement_id",
    "procedure_occurrence": "procedure_occurrence_id",
}
_EVENT_CONCEPT = {
    "condition_occurrence": "condition_concept_id",
    "observation": "observation_concept_id",
    "measurement": "measurement_concept_id",
    "procedure_occurrence": "procedure_concept_id",
}


def _rows(con: duckdb.DuckDBPyConnection, sql: str) -> list[tuple[Any, ...]]:
    return con.execute(sql).fetchall()


def _one(con: duckdb.DuckDBPyConnection, sql: str) -> int:
    return int(_rows(con, sql)[0][0] or 0)


#: Where each contract table's candidates are counted: the big ones from their summaries
#: (``mapping.summarise``), the others row by row.
_COUNTS = {
    "patients": "SELECT drop_reason, 1 AS n FROM cand_patients",
    "activity": "SELECT drop_reason, n FROM sum_activity",
    "conditions": "SELECT drop_reason, 1 AS n FROM cand_conditions",
    "medications": "SELECT drop_reason, n FROM sum_medications",
    "observations": "SELECT drop_reason, 1 AS n FROM cand_observations",
}


def _reasons(con: duckdb.DuckDBPyConnection, table: str) -> dict[str, int]:
    return {
        str(r): int(n)
        for r, n in _rows(
            con,
            f"SELECT drop_reason, sum(n) FROM ({_COUNTS[table]}) WHERE drop_reason IS NOT NULL "
            "GROUP BY 1 ORDER BY 2 DESC, 1",
        )
    }


def _top_concepts(con: duckdb.DuckDBPyConnection, sql: str) -> list[dict[str, Any]]:
    """``sql`` gives (concept_id, rows); adds each concept's name and vocabulary."""
    return [
        {
            "concept_id": int(cid) if cid is not None else None,
            "concept_name": name if cid not in (None, 0) else "no matching concept",
            "vocabulary_id": vocab,
            "concept_code": code,
            "rows": int(n),
        }
        for cid, n, name, vocab, code in _rows(
            con,
            f"SELECT t.concept_id, t.n, c.concept_name, c.vocabulary_id, c.concept_code "
            f"FROM ({sql}) t(concept_id, n) LEFT JOIN cdm_concept c ON c.concept_id = t.concept_id "
            f"ORDER BY t.n DESC, t.concept_id LIMIT {TOP_N}",
        )
    ]


def source_tables(con: duckdb.DuckDBPyConnection, present: dict[str, list[str]]) -> dict[str, Any]:
    """Rows read, mapped and unmapped for every CDM table the mapping reads."""
    out: dict[str, Any] = {}
    persons = _one(con, "SELECT count(*) FROM cdm_person")
    kept = _one(con, "SELECT count(*) FROM cand_patients WHERE drop_reason IS NULL")
    out["person"] = {"rows_read": persons, "mapped": kept, "unmapped": persons - kept,
                     "unmapped_by_reason": _reasons(con, "patients")}  # fmt: skip
    periods = _one(con, "SELECT count(*) FROM cdm_observation_period")
    used = _one(con, "SELECT count(*) FROM kept_person")
    out["observation_period"] = {
        "rows_read": periods,
        "mapped": used,
        "unmapped": periods - used,
        "note": "one period per person is the registration: the latest that starts before "
        "the extract date; earlier periods, later ones and those of people not imported "
        "are not used",
    }
    deaths = _one(con, "SELECT count(*) FROM cdm_death")
    used_deaths = _one(
        con,
        "SELECT count(*) FROM cand_patients WHERE drop_reason IS NULL AND date_of_death "
        "IS NOT NULL",
    )
    after = _one(
        con,
        "SELECT count(*) FROM cand_patients WHERE drop_reason IS NULL AND death_after_extract",
    )
    out["death"] = {"rows_read": deaths, "mapped": used_deaths, "unmapped": deaths - used_deaths,
                    "after_extract_date": after}  # fmt: skip
    visits = _one(con, "SELECT sum(n) FROM sum_activity")
    mapped_visits = _one(con, "SELECT sum(n) FROM sum_activity WHERE setting IS NOT NULL")
    out["visit_occurrence"] = {
        "rows_read": visits,
        "mapped": mapped_visits,
        "unmapped": visits - mapped_visits,
        "top_unmapped_concepts": _top_concepts(
            con,
            "SELECT visit_concept_id, sum(n) FROM sum_activity WHERE setting IS NULL GROUP BY 1",
        ),
    }
    for table in EVENT_TABLES:
        read = _one(con, f"SELECT count(*) FROM cdm_{table}")
        used_sql = f"SELECT rid FROM ev_match WHERE src = '{table}'"
        if table == "condition_occurrence":
            used_sql += (
                " UNION SELECT c.condition_occurrence_id FROM cdm_condition_occurrence c "
                "WHERE c.visit_occurrence_id IS NOT NULL "
                "AND (c.condition_status_concept_id = 32902 "
                "OR c.condition_type_concept_id = 44786627)"
            )
        mapped = _one(con, f"SELECT count(*) FROM ({used_sql})")
        out[table] = {
            "rows_read": read,
            "mapped": mapped,
            "unmapped": read - mapped,
            "top_unmapped_concepts": _top_concepts(
                con,
                f"SELECT {_EVENT_CONCEPT[table]}, count(*) FROM cdm_{table} t "
                f"WHERE {_EVENT_ID[table]} NOT IN ({used_sql}) GROUP BY 1",
            ),
        }
    drugs = _one(con, "SELECT sum(n) FROM sum_medications")
    unmapped_drugs = _one(
        con,
        "SELECT sum(n) FROM sum_medications WHERE drop_reason = 'no ingredient found for the drug'",
    )
    out["drug_exposure"] = {
        "rows_read": drugs,
        "mapped": drugs - unmapped_drugs,
        "unmapped": unmapped_drugs,
        "top_unmapped_concepts": _top_concepts(
            con,
            "SELECT drug_concept_id, sum(n) FROM sum_medications "
            "WHERE drop_reason = 'no ingredient found for the drug' GROUP BY 1",
        ),
    }
    for table in ("location", "care_site", "concept", "concept_ancestor", "concept_relationship"):
        out[table] = {"rows_read": _one(con, f"SELECT count(*) FROM cdm_{table}")}
    for table, info in out.items():
        info["present"] = table in present
    return out


def contract_tables(con: duckdb.DuckDBPyConnection, written: dict[str, int]) -> dict[str, Any]:
    """For each contract table: candidate rows, dropped by reason, rows written."""
    out: dict[str, Any] = {}
    for table in ("patients", "activity", "conditions", "medications", "observations"):
        out[table] = {
            "candidates": _one(con, f"SELECT sum(n) FROM ({_COUNTS[table]})"),
            "dropped": _reasons(con, table),
            "written": written[table],
        }
    out["conditions"]["note"] = (
        "candidates are matching records; one row is written per person and condition, "
        "dated by the earliest record"
    )
    return out


def persons(con: duckdb.DuckDBPyConnection, *, sites: str, imd: bool) -> dict[str, Any]:
    kept = "FROM cand_patients WHERE drop_reason IS NULL"

    def counts(column: str) -> dict[str, int]:
        return {
            str(k): int(n)
            for k, n in _rows(con, f"SELECT {column}, count(*) {kept} GROUP BY 1 ORDER BY 2 DESC")
        }

    return {
        "read": _one(con, "SELECT count(*) FROM cdm_person"),
        "kept": _one(con, f"SELECT count(*) {kept}"),
        "dropped": _reasons(con, "patients"),
        "date_of_birth_from": counts("dob_rule"),
        "sex": counts("sex"),
        "ethnicity_from": counts("ethnicity_rule"),
        "with_lsoa": _one(con, f"SELECT count(lsoa_code) {kept}"),
        "with_imd_decile": _one(con, f"SELECT count(imd_decile) {kept}"),
        "imd_lookup": imd,
        "practices": sites,
        "more_than_one_observation_period": _one(con, f"SELECT count(*) {kept} AND periods > 1"),
        "type1_opt_out": counts("coalesce(CAST(type1_opt_out AS VARCHAR), 'not recorded')"),
    }


def activity_rules(con: duckdb.DuckDBPyConnection) -> dict[str, Any]:
    kept = "FROM sum_activity WHERE drop_reason IS NULL"
    return {
        "settings": {
            str(k): int(n)
            for k, n in _rows(con, f"SELECT setting, sum(n) {kept} GROUP BY 1 ORDER BY 1")
        },
        "admission_method_from": {
            f"{m} ({r})": int(n)
            for m, r, n in _rows(
                con,
                f"SELECT admission_method, method_rule, sum(n) {kept} "
                "AND setting = 'inpatient' GROUP BY 1, 2 ORDER BY 3 DESC",
            )
        },
        "primary_diagnosis_not_icd10": _one(con, f"SELECT sum(n) {kept} AND dx_not_icd10"),
        "did_not_attend": _one(con, f"SELECT sum(n) {kept} AND not_attended"),
    }


def codes(con: duckdb.DuckDBPyConnection) -> dict[str, Any]:
    """For every contract code: records kept, and the concepts that matched, most first (one
    grouped query per table, not one per code)."""
    out: dict[str, Any] = {}
    sources = {
        "conditions": "SELECT condition, concept_id FROM cand_conditions",
        "observations": "SELECT code, concept_id FROM cand_observations",
        "medications": "SELECT drug_class, drug_concept_id, n FROM sum_medications",
    }
    for table, select in sources.items():
        if "sum_" not in select:
            select = select.replace(" FROM", ", 1 AS n FROM")
        rows = _rows(
            con,
            f"""
            SELECT t.code, t.concept_id, t.n, c.concept_name, c.vocabulary_id, c.concept_code
            FROM (SELECT code, concept_id, sum(n) AS n
                  FROM ({select} WHERE drop_reason IS NULL) s(code, concept_id, n)
                  GROUP BY 1, 2) t
            LEFT JOIN cdm_concept c ON c.concept_id = t.concept_id
            ORDER BY t.code, t.n DESC, t.concept_id
            """,
        )
        for code, cid, n, name, vocab, concept_code in rows:
            entry = out.setdefault(f"{table}/{code}", {"records": 0, "concepts": []})
            entry["records"] += int(n)
            if len(entry["concepts"]) < TOP_N:
                entry["concepts"].append(
                    {
                        "concept_id": int(cid) if cid is not None else None,
                        "concept_name": name if cid not in (None, 0) else "no matching concept",
                        "vocabulary_id": vocab,
                        "concept_code": concept_code,
                        "rows": int(n),
                    }
                )
    for table, code, n in _rows(
        con,
        "SELECT list_table, list_code, count(*) FROM ev_match "
        "WHERE list_table IN ('ethnicity', 'patients', 'activity') GROUP BY 1, 2 ORDER BY 1, 2",
    ):
        out[f"{table}/{code}"] = {"records": int(n)}
    return dict(sorted(out.items()))


# --------------------------------------------------------------------------------------
# Mapping coverage (for monitoring)

#: The source tables whose rows are mapped to the contract, in the report's order. The
#: observation periods are left out: one period per person is used by design, so the share
#: used says nothing about the mapping.
COVERAGE_TABLES = ("person", "death", "visit_occurrence", *EVENT_TABLES, "drug_exposure")
#: What the importer writes as the manifest's ``provenance.adapter``.
OMOP_ADAPTER = "riskstrat import omop"
#: The report's file in the extract folder (the importer's ``REPORT_JSON``).
REPORT_FILE = "mapping-report.json"


def is_omop_import(provenance: Mapping[str, Any]) -> bool:
    """True when an extract's manifest provenance says it was imported from an OMOP CDM."""
    return provenance.get("adapter") == OMOP_ADAPTER or "omop" in provenance


def mapping_coverage(report: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Share of each source table's rows mapped to the contract, from a mapping report.

    Returns ``{table: {"rows_read", "mapped", "coverage"}}`` for the tables of
    :data:`COVERAGE_TABLES` the report holds; ``coverage`` is ``mapped / rows_read``, None
    when the table had no rows. For the event tables "mapped" means matched to a contract
    code, so the share is small by nature (most records are not in any codelist): what
    matters is its change between extracts of the same source.
    """
    tables: Mapping[str, Any] = report.get("source_tables", {})
    out: dict[str, dict[str, Any]] = {}
    for table in COVERAGE_TABLES:
        info = tables.get(table)
        if not isinstance(info, Mapping) or "mapped" not in info:
            continue
        read, mapped = int(info.get("rows_read") or 0), int(info.get("mapped") or 0)
        out[table] = {
            "rows_read": read,
            "mapped": mapped,
            "coverage": mapped / read if read else None,
        }
    return out


def read_mapping_coverage(extract_dir: Path) -> dict[str, dict[str, Any]] | None:
    """:func:`mapping_coverage` of the mapping report an OMOP import left in
    ``extract_dir``; None when there is no report (not an OMOP import).

    Raises:
        ExtractError: the report is a link out of the folder, not a file, or not JSON.
    """
    path = extract_dir / REPORT_FILE
    if not path.exists() and not path.is_symlink():
        return None
    check_plain_file(extract_dir, path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ExtractError(
            f"mapping report is not valid JSON ({type(exc).__name__})", file=str(path)
        ) from None
    if not isinstance(data, dict):
        raise ExtractError("mapping report must be a JSON object", file=str(path))
    return mapping_coverage(data)


# --------------------------------------------------------------------------------------
# Markdown


def to_markdown(report: dict[str, Any]) -> str:
    """The report for people: what was read, what was kept, what was left out and why."""
    lines = [
        "# OMOP import: mapping report",
        "",
        f"- Source: {report['source']['description']} (CDM {report['source']['cdm_version']}, "
        f"version from {report['source']['cdm_version_from']})",
        f"- Extract: `{report['extract']['path']}`, extract date "
        f"{report['extract']['extract_date']} ({report['extract']['extract_date_from']}); "
        "identifiers are pseudonyms (the CDM's person_id)",
        f"- Codelists: {report['codelists']['location']}, digest "
        f"`{report['codelists']['digest'][:16]}`; descendants from "
        f"{report['vocabulary']['descendants_from']}",
        f"- Imported {report['created_at']} by riskstrat {report['riskstrat_version']}",
        "",
    ]
    changed = report["codelists"].get("changed_since_previous_import")
    if changed is not None:
        lines += ["## Codelists changed since the previous import", ""]
        lines += [f"- {c}" for c in changed] or ["- none"]
        lines.append("")
    if report["warnings"]:
        lines += ["## Warnings", ""] + [f"- {w}" for w in report["warnings"]] + [""]
    p = report["persons"]
    lines += ["## Persons", "", f"{p['read']:,} read, {p['kept']:,} kept.", ""]
    lines += _table(["left out because", "persons"], p["dropped"].items())
    lines += ["", "Date of birth from:", ""]
    lines += _table(["rule", "persons"], p["date_of_birth_from"].items())
    lines += ["", "Ethnicity from:", ""]
    lines += _table(["rule", "persons"], p["ethnicity_from"].items())
    lines += [
        "",
        f"- Practices: {p['practices']}",
        f"- LSOA recorded for {p['with_lsoa']:,}; IMD decile for {p['with_imd_decile']:,}"
        + ("" if p["imd_lookup"] else " (no IMD lookup file given)"),
        f"- People with more than one observation period (the latest is used): "
        f"{p['more_than_one_observation_period']:,}",
        "",
        "## Source tables",
        "",
    ]
    lines += _table(
        ["table", "present", "rows read", "mapped", "unmapped"],
        [
            (t, "yes" if v["present"] else "no", f"{v['rows_read']:,}",
             f"{v['mapped']:,}" if "mapped" in v else "", f"{v['unmapped']:,}" if "unmapped" in v
             else "")
            for t, v in report["source_tables"].items()
        ],
    )  # fmt: skip
    for t, v in report["source_tables"].items():
        if v.get("top_unmapped_concepts"):
            lines += ["", f"Most frequent unmapped concepts in {t}:", ""]
            lines += _table(
                ["concept_id", "name", "vocabulary", "code", "rows"],
                [
                    (c["concept_id"], c["concept_name"], c["vocabulary_id"] or "",
                     c["concept_code"] or "", f"{c['rows']:,}")
                    for c in v["top_unmapped_concepts"]
                ],
            )  # fmt: skip
    lines += ["", "## Contract tables", ""]
    lines += _table(
        ["table", "candidates", "written", "left out"],
        [
            (t, f"{v['candidates']:,}", f"{v['written']:,}",
             "; ".join(f"{r}: {n:,}" for r, n in v["dropped"].items()) or "none")
            for t, v in report["contract_tables"].items()
        ],
    )  # fmt: skip
    a = report["activity"]
    lines += ["", "Inpatient admission method from:", ""]
    lines += _table(["method (rule)", "stays"], a["admission_method_from"].items())
    lines += [
        "",
        f"- Primary diagnoses that are not ICD-10 codes (left empty): "
        f"{a['primary_diagnosis_not_icd10']:,}",
        f"- Visits not attended: {a['did_not_attend']:,}",
        "",
        "## Contract codes and the concepts that matched",
        "",
    ]
    for code, v in report["codes"].items():
        top = ", ".join(
            f"{c['concept_name']} ({c['vocabulary_id']} {c['concept_code']}): {c['rows']:,}"
            for c in v.get("concepts", [])[:5]
        )
        lines.append(f"- **{code}**: {v['records']:,} records" + (f"; {top}" if top else ""))
    missing = report["vocabulary"]["listed_codes_not_in_cdm"]
    if missing:
        lines += ["", "## Listed codes this CDM's vocabulary does not hold", ""]
        lines += [f"- {k}: {', '.join(v)}" for k, v in missing.items()]
    lines += ["", "## Rules", ""] + [f"- {r}" for r in report["rules"]]
    v = report["validation"]
    lines += [
        "",
        "## Validation of the written extract",
        "",
        f"Rows read {v['rows_read']}, rejected {v['rows_rejected']}.",
        "",
    ]
    return "\n".join(lines)


def _table(header: list[str], rows: Any) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        cells = [str(c).replace("|", "\\|") for c in row]
        out.append("| " + " | ".join(cells) + " |")
    if len(out) == 2:
        out.append("| " + " | ".join(["none"] + [""] * (len(header) - 1)) + " |")
    return out
