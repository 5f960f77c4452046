"""Codelists resolved against a CDM's own vocabulary, in DuckDB.

Creates, in the import's connection:

* ``cl_entry``: every codelist entry (list table, list code, vocabulary, code, ...);
* ``cl_concept``: concept id -> (list table, list code, value) for every concept a list
  covers: listed codes looked up by vocabulary and code in ``concept`` (or by the list's own
  concept id where the CDM lacks the row), ICD-10 codes with their sub-codes, and descendants
  through ``concept_ancestor`` (or, when that table is empty, through ``concept_relationship``
  ``Subsumes`` / ``Is a`` rows; with neither, listed codes only);
* ``cl_value``: normalised source codes for matching ``*_source_value`` directly (exact, or
  by prefix for ICD-10);
* ``drug_map``: drug concept id -> (medicine, drug class), from each drug's ingredients.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

from riskstrat.data.codelist import PREFIX_VOCABULARIES, CodelistSet
from riskstrat.data.contract import DRUG_CLASSES
from riskstrat.data.omop.spark_con import Connection

#: How far descendants are followed through concept_relationship when concept_ancestor is
#: empty (SNOMED's deepest clinical hierarchies are about this deep).
MAX_RELATIONSHIP_DEPTH = 20
_DRUG_VOCABULARIES = ("RxNorm", "RxNorm Extension")


@dataclass
class VocabularyInfo:
    """How the vocabulary was used, for the report."""

    descendants_from: str  # "concept_ancestor", "concept_relationship" or "listed codes only"
    listed_codes: int = 0
    listed_codes_not_in_cdm: dict[str, list[str]] = field(default_factory=dict)
    concepts_per_list: dict[str, int] = field(default_factory=dict)


def resolve_codelists(con: Connection, codelists: CodelistSet) -> VocabularyInfo:
    """Create ``cl_entry``, ``cl_concept`` and ``cl_value`` (see the module docstring)."""
    entries = pd.DataFrame(
        [
            {
                "list_table": cl.table,
                "list_code": cl.code,
                "vocabulary_id": e.vocabulary,
                "concept_code": e.code,
                "norm": e.normalised,
                "listed_id": e.concept_id,
                "descendants": e.descendants,
                "prefix": e.descendants and e.vocabulary in PREFIX_VOCABULARIES,
                "value": e.value,
            }
            for cl, e in codelists.entries()
        ]
    ).astype({"listed_id": "Int64", "value": "Float64"})
    con.register("cl_entry_frame", entries)
    con.execute("CREATE OR REPLACE TEMP TABLE cl_entry AS SELECT * FROM cl_entry_frame")
    con.unregister("cl_entry_frame")
    ancestors = _has_rows(con, "cdm_concept_ancestor")
    relationships = _has_rows(con, "cdm_concept_relationship")
    info = VocabularyInfo(
        descendants_from="concept_ancestor"
        if ancestors
        else ("concept_relationship" if relationships else "listed codes only"),
        listed_codes=len(entries),
    )
    # Listed codes found by vocabulary and code; ICD-10 codes with descendants also match
    # every longer code that starts with them.
    con.execute(
        """
        CREATE OR REPLACE TEMP TABLE cl_listed AS
        WITH concept AS (
            SELECT concept_id, vocabulary_id, concept_code,
                   regexp_replace(upper(concept_code), '[. -]', '', 'g') AS norm
            FROM cdm_concept
        )
        SELECT DISTINCT c.concept_id, e.list_table, e.list_code, e.descendants AND NOT e.prefix
               AS descendants, e.value, e.vocabulary_id, e.concept_code
        FROM cl_entry e JOIN concept c
          ON c.vocabulary_id = e.vocabulary_id AND c.concept_code = e.concept_code
        UNION
        SELECT DISTINCT c.concept_id, e.list_table, e.list_code, false, e.value,
               e.vocabulary_id, e.concept_code
        FROM cl_entry e JOIN concept c
          ON e.prefix AND c.vocabulary_id IN ('ICD10', 'ICD10CM')
         AND left(c.norm, length(e.norm)) = e.norm
        -- A listed concept id stands in for a code the CDM's concept table does not hold.
        UNION ALL
        SELECT DISTINCT e.listed_id, e.list_table, e.list_code, e.descendants AND NOT e.prefix,
               e.value, e.vocabulary_id, e.concept_code
        FROM cl_entry e
        WHERE e.listed_id IS NOT NULL
          AND NOT EXISTS (SELECT 1 FROM cdm_concept c
                          WHERE c.vocabulary_id = e.vocabulary_id
                            AND c.concept_code = e.concept_code)
        """
    )
    missing: dict[str, list[tuple[str, str]]] = {}
    for key, vocabulary, code in con.execute(
        """
        SELECT e.list_table || '/' || e.list_code, e.vocabulary_id, e.concept_code
        FROM cl_entry e
        WHERE NOT EXISTS (SELECT 1 FROM cl_listed l WHERE l.vocabulary_id = e.vocabulary_id
                            AND l.concept_code = e.concept_code AND l.list_code = e.list_code
                            AND l.list_table = e.list_table)
          AND NOT (e.prefix AND EXISTS (SELECT 1 FROM cl_listed l
                    WHERE l.list_code = e.list_code AND l.list_table = e.list_table
                      AND l.vocabulary_id IN ('ICD10', 'ICD10CM')))
        """
    ).fetchall():
        missing.setdefault(str(key), []).append((str(vocabulary), str(code)))
    info.listed_codes_not_in_cdm = {
        k: [f"{v} {c}" for v, c in sorted(missing[k])] for k in sorted(missing)
    }
    _descendants(con, ancestors, relationships)
    con.execute(
        """
        CREATE OR REPLACE TEMP TABLE cl_concept AS
        SELECT DISTINCT concept_id, list_table, list_code, value FROM cl_listed
        UNION
        SELECT DISTINCT d.descendant_id, l.list_table, l.list_code, l.value
        FROM cl_listed l JOIN cl_descendant d ON d.ancestor_id = l.concept_id
        WHERE l.descendants
        """
    )
    con.execute(
        """
        CREATE OR REPLACE TEMP TABLE cl_value AS
        SELECT DISTINCT norm, length(norm) AS len, prefix, list_table, list_code, value,
               vocabulary_id IN ('ICD10', 'ICD10CM') AS icd10
        FROM cl_entry WHERE list_table <> 'medications'
        """
    )
    info.concepts_per_list = {
        f"{t}/{c}": int(n)
        for t, c, n in con.execute(
            "SELECT list_table, list_code, count(DISTINCT concept_id) FROM cl_concept GROUP BY ALL"
        ).fetchall()
    }
    return info


def _descendants(con: Connection, ancestors: bool, relationships: bool) -> None:
    """``cl_descendant(ancestor_id, descendant_id)``: pairs below each listed concept."""
    if ancestors:
        con.execute(
            """
            CREATE OR REPLACE TEMP TABLE cl_descendant AS
            SELECT DISTINCT a.ancestor_concept_id AS ancestor_id,
                   a.descendant_concept_id AS descendant_id
            FROM cdm_concept_ancestor a
            WHERE a.ancestor_concept_id IN (SELECT concept_id FROM cl_listed WHERE descendants)
            """
        )
    elif relationships:
        walk(
            con,
            "cl_descendant",
            start="SELECT concept_id, concept_id FROM cl_listed WHERE descendants",
            edges="""
            SELECT concept_id_1 AS parent, concept_id_2 AS child FROM cdm_concept_relationship
            WHERE relationship_id = 'Subsumes'
            UNION
            SELECT concept_id_2, concept_id_1 FROM cdm_concept_relationship
            WHERE relationship_id = 'Is a'
            UNION
            -- ATC classes reach their RxNorm ingredients through 'ATC - RxNorm' rows
            SELECT concept_id_1, concept_id_2 FROM cdm_concept_relationship
            WHERE relationship_id LIKE 'ATC - RxNorm%'
            """,
            max_depth=MAX_RELATIONSHIP_DEPTH,
        )
    else:
        con.execute(
            "CREATE OR REPLACE TEMP TABLE cl_descendant AS SELECT CAST(NULL AS BIGINT) AS "
            "ancestor_id, CAST(NULL AS BIGINT) AS descendant_id WHERE false"
        )


def walk(con: Connection, name: str, *, start: str, edges: str, max_depth: int) -> None:
    """``name(ancestor_id, descendant_id)``: the pairs ``start`` gives and, for each, every
    concept reachable from its ``descendant_id`` through ``edges(parent, child)`` in at most
    ``max_depth`` steps. A breadth-first walk, one query per step, each step only the pairs
    not reached before: the same pairs as a recursive UNION, in a form Spark also runs (its
    recursive queries take UNION ALL only, which follows every path again)."""
    con.execute(f"CREATE OR REPLACE TEMP TABLE {name}_edge AS {edges}")
    con.execute(
        f"CREATE OR REPLACE TEMP TABLE {name}_0 AS SELECT DISTINCT * FROM ({start}) "
        "s(ancestor_id, descendant_id)"
    )
    levels = [f"{name}_0"]
    for depth in range(1, max_depth + 1):
        seen = " UNION ALL ".join(f"SELECT * FROM {t}" for t in levels)
        con.execute(
            f"""
            CREATE OR REPLACE TEMP TABLE {name}_{depth} AS
            SELECT DISTINCT w.ancestor_id, e.child AS descendant_id
            FROM {levels[-1]} w JOIN {name}_edge e ON e.parent = w.descendant_id
            EXCEPT SELECT * FROM ({seen})
            """
        )
        levels.append(f"{name}_{depth}")
        if not _has_rows(con, levels[-1]):
            break
    con.execute(
        f"CREATE OR REPLACE TEMP TABLE {name} AS "
        + " UNION ALL ".join(f"SELECT * FROM {t}" for t in levels)
    )
    for table in [*levels, f"{name}_edge"]:
        con.execute(f"DROP TABLE IF EXISTS {table}")


def _has_rows(con: Connection, view: str) -> bool:
    return bool(
        con.execute(f"SELECT count(*) > 0 FROM (SELECT 1 FROM {view} LIMIT 1)").fetchall()[0][0]
    )


# --------------------------------------------------------------------------------------
# Drugs


@dataclass
class DrugInfo:
    drug_concepts: int = 0
    with_ingredients: int = 0
    ingredients_from: str = ""
    combinations_used: dict[str, int] = field(default_factory=dict)


def map_drugs(con: Connection, codelists: CodelistSet) -> DrugInfo:
    """Create ``drug_map(drug_concept_id, medicine, drug_class)`` for every drug concept in
    ``cdm_drug_exposure`` that has at least one ingredient.

    A drug's ingredients come from ``concept_ancestor`` (ancestors of class Ingredient), or
    without it from ``concept_relationship`` (``Maps to``, ``Consists of`` and ``RxNorm has
    ing``, followed up to three steps). A combination listed in ``medicines.yaml`` (by its set
    of ingredient codes) takes the name and class given there; otherwise the medicine is its
    ingredients' UK names (``with`` between them) and its class the first of its ingredients'
    classes in the contract's order, or OTHER.
    """
    ancestors = _has_rows(con, "cdm_concept_ancestor")
    con.execute(
        "CREATE OR REPLACE TEMP TABLE drug_concept AS SELECT DISTINCT "
        "CASE WHEN coalesce(drug_concept_id, 0) = 0 THEN drug_source_concept_id "
        "ELSE drug_concept_id END AS drug_concept_id FROM cdm_drug_exposure"
    )
    vocab = ", ".join(f"'{v}'" for v in _DRUG_VOCABULARIES)
    if ancestors:
        pairs = f"""
        SELECT d.drug_concept_id, a.ancestor_concept_id AS ingredient_id
        FROM drug_concept d
        JOIN cdm_concept_ancestor a ON a.descendant_concept_id = d.drug_concept_id
        JOIN cdm_concept i ON i.concept_id = a.ancestor_concept_id
         AND i.concept_class_id = 'Ingredient' AND i.vocabulary_id IN ({vocab})
        """
        source = "concept_ancestor"
    else:
        walk(
            con,
            "drug_walk",
            start="SELECT drug_concept_id, drug_concept_id FROM drug_concept",
            edges="SELECT concept_id_1 AS parent, concept_id_2 AS child "
            "FROM cdm_concept_relationship "
            "WHERE relationship_id IN ('Maps to', 'Consists of', 'RxNorm has ing')",
            max_depth=3,
        )
        pairs = f"""
        SELECT DISTINCT s.ancestor_id AS drug_concept_id, s.descendant_id AS ingredient_id
        FROM drug_walk s JOIN cdm_concept i ON i.concept_id = s.descendant_id
         AND i.concept_class_id = 'Ingredient' AND i.vocabulary_id IN ({vocab})
        """
        source = "concept_relationship"
    ingredients = con.execute(
        f"""
        SELECT DISTINCT p.drug_concept_id, p.ingredient_id, i.concept_code, i.concept_name
        FROM ({pairs}) p JOIN cdm_concept i ON i.concept_id = p.ingredient_id
        """
    ).df()
    classes = _ingredient_classes(con, ancestors)
    names = {n.code: n.uk_name for n in codelists.medicines.ingredients}
    combos = {tuple(sorted(c.ingredients)): c for c in codelists.medicines.combinations}
    order = {c: i for i, c in enumerate(DRUG_CLASSES)}
    info = DrugInfo(
        drug_concepts=int(con.execute("SELECT count(*) FROM drug_concept").fetchall()[0][0]),
        ingredients_from=source,
    )
    rows = []
    for drug, group in ingredients.groupby("drug_concept_id", sort=True):
        codes = tuple(sorted({str(c) for c in group["concept_code"]}))
        combo = combos.get(codes)
        if combo is not None:
            medicine, drug_class = combo.uk_name, combo.drug_class
            info.combinations_used[combo.uk_name] = info.combinations_used.get(combo.uk_name, 0)
            info.combinations_used[combo.uk_name] += 1
        else:
            parts = sorted(
                {
                    names.get(str(code), str(name)).lower()
                    for code, name in zip(group["concept_code"], group["concept_name"], strict=True)
                }
            )
            medicine = " with ".join(parts)
            found = {c for i in group["ingredient_id"] for c in classes.get(int(i), ())}
            drug_class = min(found, key=order.__getitem__) if found else "OTHER"
        rows.append({"drug_concept_id": drug, "medicine": medicine, "drug_class": drug_class})
    info.with_ingredients = len(rows)
    frame = pd.DataFrame(rows, columns=["drug_concept_id", "medicine", "drug_class"])
    con.register("drug_map_frame", frame)
    con.execute(
        "CREATE OR REPLACE TEMP TABLE drug_map AS SELECT CAST(drug_concept_id AS BIGINT) AS "
        "drug_concept_id, medicine, drug_class FROM drug_map_frame"
    )
    con.unregister("drug_map_frame")
    return info


def _ingredient_classes(con: Connection, ancestors: bool) -> dict[int, set[str]]:
    """Ingredient concept id -> the contract classes whose lists cover it. ATC classes cover
    the ingredients below them (ingredients only: never the ingredients of a combination
    product filed under the class)."""
    vocab = ", ".join(f"'{v}'" for v in _DRUG_VOCABULARIES)
    rows = con.execute(
        f"""
        SELECT c.concept_id, m.list_code
        FROM cl_concept m JOIN cdm_concept c ON c.concept_id = m.concept_id
        WHERE m.list_table = 'medications' AND c.concept_class_id = 'Ingredient'
          AND c.vocabulary_id IN ({vocab})
        """
    ).fetchall()
    out: dict[int, set[str]] = {}
    for concept, code in rows:
        out.setdefault(int(concept), set()).add(str(code))
    # Listed ingredients the CDM holds only by the list's own concept id
    for concept, code in con.execute(
        "SELECT l.concept_id, l.list_code FROM cl_listed l WHERE l.list_table = 'medications' "
        f"AND l.vocabulary_id IN ({vocab})"
    ).fetchall():
        out.setdefault(int(concept), set()).add(str(code))
    return out
