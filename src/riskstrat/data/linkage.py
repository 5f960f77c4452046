"""Re-identification for direct care: a practice's linkage file, pseudonym -> NHS number.

A pseudonymous run identifies people by pseudonyms (e.g. OMOP ``person_id``). A practice
that holds the linkage may put NHS numbers back on an export for direct care. The file is
read here and only here, once per export: it is never copied into the serving store, the
logs or MLflow, and no error quotes what it holds (values are identifiers): errors name the
file and the line.

The file is CSV, UTF-8, with the header ``pseudonym,nhs_number``; each pseudonym once, each
NHS number once, every NHS number valid (10 digits, Modulus 11; spaces, as in the display
format ``999 833 6376``, are ignored).
"""

from __future__ import annotations

import csv
import io
import os
import re
import stat
from collections.abc import Mapping, Sequence
from pathlib import Path

from riskstrat.data.contract import PSEUDONYM_PATTERN
from riskstrat.data.errors import ExtractError
from riskstrat.data.files import check_plain_file
from riskstrat.errors import DataError
from riskstrat.nhs_number import is_valid_nhs_number

LINKAGE_HEADER = ("pseudonym", "nhs_number")
#: The only purpose re-identification serves.
DIRECT_CARE = "direct care"
_PSEUDONYM = re.compile(PSEUDONYM_PATTERN)


class LinkageError(DataError, ValueError):
    """A linkage file that cannot be used, or does not cover the people asked for. Names the
    file and, where it applies, the line; never quotes a value."""

    def __init__(self, message: str, *, file: Path, line: int | None = None):
        where = f"linkage file {file}" + (f", line {line:,}" if line is not None else "")
        super().__init__(f"{where}: {message}")
        self.file = file
        self.line = line


def is_direct_care(purpose: str | None) -> bool:
    """True when ``purpose`` says direct care (in any case, spaces around ignored)."""
    return purpose is not None and " ".join(purpose.split()).lower() == DIRECT_CARE


def read_linkage(path: Path) -> dict[str, str]:
    """The linkage file's mapping, pseudonym -> NHS number (ten digits, no spaces).

    The file must be a plain file: a link that leads out of its folder, a FIFO, a device or
    a folder is refused, before anything is opened.

    Raises:
        LinkageError: the file is refused or unreadable, its header is not
            ``pseudonym,nhs_number``, or a row is malformed, names an invalid NHS number or
            repeats a pseudonym or an NHS number (with the line).
    """
    try:
        check_plain_file(path.parent, path, folder="the linkage file's folder")
    except ExtractError as exc:
        raise LinkageError(
            f"must be a plain file in its folder, not a link to another folder, a FIFO, a "
            f"device or a folder ({exc})",
            file=path,
        ) from None
    try:
        # O_NONBLOCK: should a FIFO take the file's place after the check, opening it does
        # not hang; the descriptor's own type is checked again.
        fd = os.open(path.resolve(), os.O_RDONLY | os.O_NONBLOCK)
        with os.fdopen(fd, "rb") as fh:
            if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode):
                raise LinkageError("is not a plain file", file=path)
            data = fh.read()
    except OSError as exc:
        raise LinkageError(f"cannot be read ({type(exc).__name__})", file=path) from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise LinkageError("is not UTF-8 text", file=path, line=line) from None
    return parse_linkage(text, file=path)


def parse_linkage(text: str, *, file: Path) -> dict[str, str]:
    """``read_linkage``'s checks on the file's text (``file`` names it in errors)."""
    reader = csv.reader(io.StringIO(text.removeprefix("\ufeff"), newline=""), strict=True)
    try:
        header = next(reader, None)
        if header is None or tuple(h.strip() for h in header) != LINKAGE_HEADER:
            raise LinkageError(
                "the header must be exactly: " + ",".join(LINKAGE_HEADER), file=file, line=1
            )
        mapping: dict[str, str] = {}
        pseudonym_line: dict[str, int] = {}
        nhs_line: dict[str, int] = {}
        for row in reader:
            line = reader.line_num
            if not row or all(not field.strip() for field in row):
                continue  # a blank line
            if len(row) != len(LINKAGE_HEADER):
                raise LinkageError(
                    f"has {len(row)} fields; expected {len(LINKAGE_HEADER)} (pseudonym, "
                    "nhs_number)",
                    file=file,
                    line=line,
                )
            pseudonym, nhs_number = row[0].strip(), row[1].replace(" ", "").strip()
            if _PSEUDONYM.fullmatch(pseudonym) is None:
                raise LinkageError(
                    "the pseudonym is not 1-64 letters, digits, '.', '_' or '-' (starting "
                    "with a letter or digit)",
                    file=file,
                    line=line,
                )
            if not is_valid_nhs_number(nhs_number):
                raise LinkageError(
                    "the nhs_number is not a valid NHS number (10 digits, Modulus 11)",
                    file=file,
                    line=line,
                )
            if pseudonym in pseudonym_line:
                raise LinkageError(
                    f"the pseudonym is also on line {pseudonym_line[pseudonym]:,}: each person "
                    "must be listed once",
                    file=file,
                    line=line,
                )
            if nhs_number in nhs_line:
                raise LinkageError(
                    f"the NHS number is also on line {nhs_line[nhs_number]:,}, for another "
                    "pseudonym: two people cannot share one",
                    file=file,
                    line=line,
                )
            pseudonym_line[pseudonym] = line
            nhs_line[nhs_number] = line
            mapping[pseudonym] = nhs_number
    except csv.Error as exc:
        # csv's messages describe the structure (a stray quote, a NUL), never the values.
        raise LinkageError(f"is not valid CSV ({exc})", file=file, line=reader.line_num) from None
    return mapping


def reidentify(pseudonyms: Sequence[str], linkage: Mapping[str, str], *, file: Path) -> list[str]:
    """The NHS numbers of ``pseudonyms``, in their order.

    Raises:
        LinkageError: someone has no row in the linkage file (named by position in
            ``pseudonyms``, 1 first, and counted; never by pseudonym).
    """
    missing = [i for i, p in enumerate(pseudonyms, start=1) if p not in linkage]
    if missing:
        raise LinkageError(
            f"has no NHS number for {len(missing):,} of the {len(pseudonyms):,} people in this "
            f"export (the first is row {missing[0]:,} of the export); nobody was re-identified",
            file=file,
        )
    return [linkage[p] for p in pseudonyms]
