"""The mapping report: every row read, where it went, and why any was left out.

Counts and concept names only, never identifiers or source values (a source value can be free
text). Written as JSON (for tools and the next import's comparison) and Markdown (for people).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from riskstrat.data.errors import ExtractError
from riskstrat.data.files import check_plain_file
from riskstrat.data.omop.mapping import EVENT_TABLES
from riskstrat.data.omop.spark_con import Connection

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


def _rows(con: Connection, sql: str) -> list[tuple[Any, ...]]:
    return con.execute(sql).fetchall()


def _scalars(con: Connection, queries: dict[str, str]) -> dict[str, int]:
    """Each query's single number (NULL is 0), all in one statement: on Spark one job, its
    scalar subqueries run side by side, instead of a job per number."""
    names = list(queries)
    select = ", ".join(f"({queries[n]}) AS c{i}" for i, n in enumerate(names))
    (row,) = _rows(con, f"SELECT {select}")
    return {n: int(v or 0) for n, v in zip(names, row, strict=True)}


def _by_count(pairs: Any) -> dict[str, int]:
    """(key, n) pairs as a dict, most first (ties by key)."""
    return dict(sorted(((str(k), int(n)) for k, n in pairs), key=lambda kv: (-kv[1], kv[0])))


#: Where each contract table's candidates are counted: the big ones from their summaries
#: (``mapping.summarise``), the others row by row.
_COUNTS = {
    "patients": "SELECT drop_reason, 1 AS n FROM cand_patients",
    "activity": "SELECT drop_reason, n FROM sum_activity",
    "conditions": "SELECT drop_reason, 1 AS n FROM cand_conditions",
    "medications": "SELECT drop_reason, n FROM sum_medications",
    "observations": "SELECT drop_reason, 1 AS n FROM cand_observations",
}


def drop_reasons(con: Connection) -> dict[str, dict[str, int]]:
    """For each contract table, the candidates left out by reason (most first), in one
    query."""
    parts = " UNION ALL ".join(
        f"SELECT '{table}' AS t, drop_reason, sum(n) AS n FROM ({sql}) "
        "WHERE drop_reason IS NOT NULL GROUP BY 2"
        for table, sql in _COUNTS.items()
    )
    found: dict[str, list[tuple[str, int]]] = {table: [] for table in _COUNTS}
    for table, reason, n in _rows(con, parts):
        found[str(table)].append((str(reason), int(n)))
    return {table: _by_count(pairs) for table, pairs in found.items()}


def _top_concepts(con: Connection, queries: dict[str, str]) -> dict[str, list[dict[str, Any]]]:
    """Each query gives (concept_id, rows); its ``TOP_N`` concepts, most first, with each
    concept's name and vocabulary (all queries in one statement)."""
    parts = " UNION ALL ".join(
        f"SELECT * FROM (SELECT '{key}' AS k, t.concept_id, t.n, c.concept_name, "
        f"c.vocabulary_id, c.concept_code FROM ({sql}) t(concept_id, n) "
        "LEFT JOIN cdm_concept c ON c.concept_id = t.concept_id "
        f"ORDER BY t.n DESC, t.concept_id LIMIT {TOP_N})"
        for key, sql in queries.items()
    )
    rows = sorted(_rows(con, parts), key=lambda r: (str(r[0]), -int(r[2]), r[1] is None, r[1] or 0))
    out: dict[str, list[dict[str, Any]]] = {key: [] for key in queries}
    for key, cid, n, name, vocab, code in rows:
        out[str(key)].append(
            {
                "concept_id": int(cid) if cid is not None else None,
                "concept_name": name if cid not in (None, 0) else "no matching concept",
                "vocabulary_id": vocab,
                "concept_code": code,
                "rows": int(n),
            }
        )
    return out


def _used_sql(table: str) -> str:
    """The ids of a CDM event table's records the mapping used."""
    used_sql = f"SELECT rid FROM ev_match WHERE src = '{table}'"
    if table == "condition_occurrence":
        used_sql += (
            " UNION SELECT c.condition_occurrence_id FROM cdm_condition_occurrence c "
            "WHERE c.visit_occurrence_id IS NOT NULL "
            "AND (c.condition_status_concept_id = 32902 "
            "OR c.condition_type_concept_id = 44786627)"
        )
    return used_sql


_NO_INGREDIENT = "drop_reason = 'no ingredient found for the drug'"
_OTHER_TABLES = ("location", "care_site", "concept", "concept_ancestor", "concept_relationship")


def source_tables(
    con: Connection, present: dict[str, list[str]], reasons: dict[str, dict[str, int]]
) -> dict[str, Any]:
    """Rows read, mapped and unmapped for every CDM table the mapping reads (``reasons``:
    ``drop_reasons``)."""
    queries = {
        "persons": "SELECT count(*) FROM cdm_person",
        "kept": "SELECT count(*) FROM cand_patients WHERE drop_reason IS NULL",
        "periods": "SELECT count(*) FROM cdm_observation_period",
        "used": "SELECT count(*) FROM kept_person",
        "deaths": "SELECT count(*) FROM cdm_death",
        "used_deaths": "SELECT count(*) FROM cand_patients WHERE drop_reason IS NULL AND "
        "date_of_death IS NOT NULL",
        "after": "SELECT count(*) FROM cand_patients WHERE drop_reason IS NULL AND "
        "death_after_extract",
        "visits": "SELECT sum(n) FROM sum_activity",
        "mapped_visits": "SELECT sum(n) FROM sum_activity WHERE setting IS NOT NULL",
        "drugs": "SELECT sum(n) FROM sum_medications",
        "unmapped_drugs": f"SELECT sum(n) FROM sum_medications WHERE {_NO_INGREDIENT}",
    }
    for table in EVENT_TABLES:
        queries[f"{table}.read"] = f"SELECT count(*) FROM cdm_{table}"
        queries[f"{table}.mapped"] = f"SELECT count(*) FROM ({_used_sql(table)})"
    for table in _OTHER_TABLES:
        queries[f"{table}.read"] = f"SELECT count(*) FROM cdm_{table}"
    n = _scalars(con, queries)
    top = _top_concepts(
        con,
        {
            "visit_occurrence": "SELECT visit_concept_id, sum(n) FROM sum_activity "
            "WHERE setting IS NULL GROUP BY 1",
            **{
                table: f"SELECT {_EVENT_CONCEPT[table]}, count(*) FROM cdm_{table} t "
                f"WHERE {_EVENT_ID[table]} NOT IN ({_used_sql(table)}) GROUP BY 1"
                for table in EVENT_TABLES
            },
            "drug_exposure": "SELECT drug_concept_id, sum(n) FROM sum_medications "
            f"WHERE {_NO_INGREDIENT} GROUP BY 1",
        },
    )
    out: dict[str, Any] = {}
    out["person"] = {"rows_read": n["persons"], "mapped": n["kept"],
                     "unmapped": n["persons"] - n["kept"],
                     "unmapped_by_reason": reasons["patients"]}  # fmt: skip
    out["observation_period"] = {
        "rows_read": n["periods"],
        "mapped": n["used"],
        "unmapped": n["periods"] - n["used"],
        "note": "one period per person is the registration: the latest that starts before "
        "the extract date; earlier periods, later ones and those of people not imported "
        "are not used",
    }
    out["death"] = {"rows_read": n["deaths"], "mapped": n["used_deaths"],
                    "unmapped": n["deaths"] - n["used_deaths"],
                    "after_extract_date": n["after"]}  # fmt: skip
    out["visit_occurrence"] = {
        "rows_read": n["visits"],
        "mapped": n["mapped_visits"],
        "unmapped": n["visits"] - n["mapped_visits"],
        "top_unmapped_concepts": top["visit_occurrence"],
    }
    for table in EVENT_TABLES:
        read, mapped = n[f"{table}.read"], n[f"{table}.mapped"]
        out[table] = {"rows_read": read, "mapped": mapped, "unmapped": read - mapped,
                      "top_unmapped_concepts": top[table]}  # fmt: skip
    out["drug_exposure"] = {
        "rows_read": n["drugs"],
        "mapped": n["drugs"] - n["unmapped_drugs"],
        "unmapped": n["unmapped_drugs"],
        "top_unmapped_concepts": top["drug_exposure"],
    }
    for table in _OTHER_TABLES:
        out[table] = {"rows_read": n[f"{table}.read"]}
    for table, info in out.items():
        info["present"] = table in present
    return out


def contract_tables(
    con: Connection, written: dict[str, int], reasons: dict[str, dict[str, int]]
) -> dict[str, Any]:
    """For each contract table: candidate rows, dropped by reason, rows written."""
    candidates = _scalars(con, {t: f"SELECT sum(n) FROM ({sql})" for t, sql in _COUNTS.items()})
    out: dict[str, Any] = {}
    for table in ("patients", "activity", "conditions", "medications", "observations"):
        out[table] = {
            "candidates": candidates[table],
            "dropped": reasons[table],
            "written": written[table],
        }
    out["conditions"]["note"] = (
        "candidates are matching records; one row is written per person and condition, "
        "dated by the earliest record"
    )
    return out


def persons(
    con: Connection, *, sites: str, imd: bool, reasons: dict[str, dict[str, int]]
) -> dict[str, Any]:
    """The persons read and kept, and the rules their values came from (one query over the
    kept persons, counted here)."""
    read = _scalars(con, {"read": "SELECT count(*) FROM cdm_person"})["read"]
    rows = _rows(
        con,
        """
        SELECT dob_rule, sex, ethnicity_rule,
               coalesce(CAST(type1_opt_out AS VARCHAR), 'not recorded') AS opt_out,
               lsoa_code IS NOT NULL AS lsoa, imd_decile IS NOT NULL AS imd,
               coalesce(periods > 1, false) AS periods, count(*) AS n
        FROM cand_patients WHERE drop_reason IS NULL
        GROUP BY 1, 2, 3, 4, 5, 6, 7
        """,
    )

    def counts(column: int) -> dict[str, int]:
        found: dict[str, int] = {}
        for row in rows:
            found[str(row[column])] = found.get(str(row[column]), 0) + int(row[-1])
        return _by_count(found.items())

    def where(column: int) -> int:
        return sum(int(row[-1]) for row in rows if row[column])

    return {
        "read": read,
        "kept": sum(int(row[-1]) for row in rows),
        "dropped": reasons["patients"],
        "date_of_birth_from": counts(0),
        "sex": counts(1),
        "ethnicity_from": counts(2),
        "with_lsoa": where(4),
        "with_imd_decile": where(5),
        "imd_lookup": imd,
        "practices": sites,
        "more_than_one_observation_period": where(6),
        "type1_opt_out": counts(3),
    }


def activity_rules(con: Connection) -> dict[str, Any]:
    kept = "FROM sum_activity WHERE drop_reason IS NULL"
    n = _scalars(
        con,
        {
            "dx": f"SELECT sum(n) {kept} AND dx_not_icd10",
            "dna": f"SELECT sum(n) {kept} AND not_attended",
        },
    )
    return {
        "settings": {
            str(k): int(n)
            for k, n in _rows(con, f"SELECT setting, sum(n) {kept} GROUP BY 1 ORDER BY 1")
        },
        "admission_method_from": _by_count(
            (f"{m} ({r})", n)
            for m, r, n in _rows(
                con,
                f"SELECT admission_method, method_rule, sum(n) {kept} "
                "AND setting = 'inpatient' GROUP BY 1, 2",
            )
        ),
        "primary_diagnosis_not_icd10": n["dx"],
        "did_not_attend": n["dna"],
    }


def codes(con: Connection) -> dict[str, Any]:
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
