"""Codelists: which source codes mean each contract code, as reviewed, versioned data.

One YAML file per contract code lives under ``riskstrat/data/codelists/<table>/<CODE>.yaml``
(shipped in the wheel; a folder of the same shape can replace them). Each lists codes in an
OMOP vocabulary (SNOMED, ICD10, RxNorm, ATC, LOINC, ...) with the concept id where it was
verified, whether descendants count, and where the list comes from. ``medicines.yaml`` beside
them gives UK names for RxNorm ingredients and the class of combination products.

The set's ``digest`` and per-list versions travel into the imported extract's manifest, the
mapping report and the model card, so a codelist change shows wherever its data goes.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from riskstrat.data.contract import CONDITIONS, DRUG_CLASSES, ETHNIC_CATEGORIES, OBSERVATION_CODES
from riskstrat.data.errors import ExtractError

CodelistTable = Literal["conditions", "observations", "medications", "ethnicity", "patients",
                        "activity"]  # fmt: skip
#: Codes each codelist table must define, one file each.
TABLE_CODES: dict[str, tuple[str, ...]] = {
    "conditions": CONDITIONS,
    "observations": OBSERVATION_CODES,
    "medications": DRUG_CLASSES,
    "ethnicity": ETHNIC_CATEGORIES,
    "patients": ("TYPE1_OPT_OUT", "TYPE1_OPT_OUT_WITHDRAWN"),
    "activity": ("DID_NOT_ATTEND",),
}
VOCABULARIES = ("SNOMED", "ICD10", "ICD10CM", "LOINC", "RxNorm", "RxNorm Extension", "ATC",
                "dm+d", "Read", "OPCS4")  # fmt: skip
#: Vocabularies whose codes nest by prefix: a code with descendants matches its sub-codes.
PREFIX_VOCABULARIES = ("ICD10", "ICD10CM", "OPCS4")


_M = TypeVar("_M", bound=BaseModel)


class CodeEntry(BaseModel):
    """One code in a list."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    vocabulary: str
    code: str = Field(min_length=1)
    concept_id: int | None = None
    description: str
    #: The concept and its descendants (ICD-10: the code and every sub-code).
    descendants: bool = False
    #: Where the concept id was checked against its code.
    verified: str | None = None
    #: A measurement value the code itself carries (e.g. Rockwood frailty level codes).
    value: float | None = None

    @field_validator("vocabulary")
    @classmethod
    def _known_vocabulary(cls, v: str) -> str:
        if v not in VOCABULARIES:
            raise ValueError(f"vocabulary must be one of {', '.join(VOCABULARIES)}")
        return v

    @property
    def normalised(self) -> str:
        """The code as source values are compared: upper case, no dots or spaces."""
        return normalise_code(self.code)


class Codelist(BaseModel):
    """The codes that mean one contract code."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    code: str
    table: CodelistTable
    version: str = Field(pattern=r"^[0-9]+\.[0-9]+\.[0-9]+$")
    title: str
    sources: list[str] = Field(min_length=1)
    notes: str = ""
    codes: list[CodeEntry]


class IngredientName(BaseModel):
    """A RxNorm ingredient's UK approved name."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    vocabulary: str = "RxNorm"
    code: str
    concept_id: int | None = None
    rxnorm_name: str
    uk_name: str
    verified: str | None = None


class Combination(BaseModel):
    """A multi-ingredient product: its UK name and the class it takes."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    uk_name: str
    ingredients: list[str] = Field(min_length=2)  # RxNorm concept codes
    drug_class: str

    @field_validator("drug_class")
    @classmethod
    def _contract_class(cls, v: str) -> str:
        if v not in DRUG_CLASSES:
            raise ValueError("drug_class must be a contract drug class")
        return v


class MedicineNames(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    version: str = Field(pattern=r"^[0-9]+\.[0-9]+\.[0-9]+$")
    sources: list[str] = Field(min_length=1)
    notes: str = ""
    ingredients: list[IngredientName]
    combinations: list[Combination]


@dataclass(frozen=True)
class CodelistSet:
    """Every codelist, checked complete, with a digest of their content."""

    lists: dict[tuple[str, str], Codelist]  # (table, code) -> list
    medicines: MedicineNames
    digest: str
    location: str

    def table(self, table: str) -> list[Codelist]:
        return [cl for (t, _), cl in sorted(self.lists.items()) if t == table]

    def get(self, table: str, code: str) -> Codelist:
        return self.lists[(table, code)]

    @property
    def versions(self) -> dict[str, str]:
        """``table/CODE -> version`` for every list, and ``medicines`` for the names file."""
        out = {f"{t}/{c}": cl.version for (t, c), cl in sorted(self.lists.items())}
        out["medicines"] = self.medicines.version
        return out

    def entries(self) -> Iterable[tuple[Codelist, CodeEntry]]:
        for _, cl in sorted(self.lists.items()):
            for entry in cl.codes:
                yield cl, entry


def normalise_code(code: str) -> str:
    """Codes compared as source values: upper case with dots, spaces and dashes removed."""
    return "".join(ch for ch in code.upper() if ch not in ". -")


def shipped_codelists() -> Traversable:
    """The folder of codelists that ships with riskstrat."""
    return resources.files("riskstrat.data").joinpath("codelists")


def load_codelists(folder: Path | Traversable | None = None) -> CodelistSet:
    """Load and check every codelist.

    Args:
        folder: a folder laid out as the shipped one (``<table>/<CODE>.yaml`` and
            ``medicines.yaml``); the shipped lists by default.

    Raises:
        ExtractError: a file that is not valid YAML or breaks the schema (naming it and the
            field), a list missing for a contract code, or a file for an unknown code.
    """
    root: Path | Traversable = folder if folder is not None else shipped_codelists()
    location = str(root) if folder is not None else "riskstrat (shipped)"
    lists: dict[tuple[str, str], Codelist] = {}
    hasher = hashlib.sha256()
    for table, codes in TABLE_CODES.items():
        sub = root.joinpath(table)
        present = (
            sorted(p.name for p in sub.iterdir() if p.name.endswith(".yaml"))
            if sub.is_dir()
            else []
        )
        unknown = sorted({p.removesuffix(".yaml") for p in present} - set(codes))
        if unknown:
            raise ExtractError(
                f"codelist for an unknown {table} code {unknown[0]!r}",
                file=f"{location}/{table}/{unknown[0]}.yaml",
            )
        for code in codes:
            name = f"{table}/{code}.yaml"
            path = sub.joinpath(f"{code}.yaml")
            if not path.is_file():
                raise ExtractError(
                    f"no codelist for {table} code {code}", file=f"{location}/{name}"
                )
            text = path.read_text(encoding="utf-8")
            cl = _parse(Codelist, text, f"{location}/{name}")
            if cl.code != code or cl.table != table:
                raise ExtractError(
                    f"file is for {cl.table} code {cl.code}, not {code}",
                    file=f"{location}/{name}",
                    column="code",
                )
            lists[(table, code)] = cl
            hasher.update(name.encode() + b"\0" + _canonical(cl) + b"\0")
    medicines_path = root.joinpath("medicines.yaml")
    if not medicines_path.is_file():
        raise ExtractError("medicine names are missing", file=f"{location}/medicines.yaml")
    medicines = _parse(
        MedicineNames, medicines_path.read_text(encoding="utf-8"), f"{location}/medicines.yaml"
    )
    hasher.update(b"medicines.yaml\0" + _canonical(medicines))
    return CodelistSet(lists=lists, medicines=medicines, digest=hasher.hexdigest(),
                       location=location)  # fmt: skip


def _canonical(model: BaseModel) -> bytes:
    """The content that matters, independent of comments and layout."""
    return json.dumps(model.model_dump(mode="json"), sort_keys=True).encode()


def _parse(model: type[_M], text: str, where: str) -> _M:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise ExtractError(
            "is not valid YAML", file=where, line=None if mark is None else mark.line + 1
        ) from None
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"])
        raise ExtractError(f"{first['msg']}", file=where, column=field or None) from None
