"""The file boundary: what a table's file is, and what a CSV holds, before any parser reads it.

DuckDB's CSV reader is fast, but it forgives things that lose data. An opening quote that is
never closed turns every later line into one rejected record; NUL bytes and a last row cut
off mid-way pass as values or as one reject. So every CSV is scanned once here first, with
bytes methods and NumPy a chunk at a time (no Python loop over rows), and the reader's result
is then reconciled with the scan: the rows DuckDB returned plus the rows it rejected must be
every record in the file.

The scan stops at the first of these, naming the file and the line (never quoting a value):

* a NUL byte; text that is not UTF-8 (a byte-order mark at the start is fine);
* a quote that RFC 4180 does not allow (inside an unquoted field, or a closing quote not
  followed by a delimiter or line end), or a quoted field that is never closed;
* a last row with no line break and the wrong number of fields (a file cut off mid-row).

Files must be plain files inside the extract folder: a link that leads outside it is refused,
and a FIFO, device or folder in a table's place is named as such (and never opened).
"""

from __future__ import annotations

import csv
import io
import os
import secrets
import shutil
import stat
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from riskstrat.data.errors import ExtractError

_BOM = b"\xef\xbb\xbf"
_QUOTE, _COMMA, _LF, _CR = 0x22, 0x2C, 0x0A, 0x0D
#: Bytes read at a time; each chunk is extended to the end of its line, so no line (and no
#: UTF-8 sequence) is split between chunks.
CHUNK_BYTES = 1 << 24


def check_plain_file(root: Path, path: Path, *, folder: str = "the extract folder") -> None:
    """Refuse ``path`` unless it is a plain file that lies inside the folder ``root``
    (``folder`` names it in the message).

    Raises:
        ExtractError: a link leading outside ``root``, or a FIFO, socket, device or folder.
    """
    real_root = root.resolve()
    real = path.resolve()
    if not real.is_relative_to(real_root):
        raise ExtractError(
            f"is a link to a file outside {folder}; copy the file in instead",
            file=str(path),
        )
    try:
        mode = os.stat(real).st_mode
    except OSError as exc:
        raise ExtractError(f"cannot be read ({type(exc).__name__})", file=str(path)) from None
    if not stat.S_ISREG(mode):
        raise ExtractError(f"is {_kind(mode)}, not a file", file=str(path))


def file_name(path: Path | str) -> str:
    """A file's own name, from a local path or a URI."""
    return path.name if isinstance(path, Path) else path.rstrip("/").rsplit("/", 1)[-1]


def check_file_at(fs: Any, uri: str) -> None:
    """``check_plain_file`` for a file at a URI, read through the fsspec file system ``fs``:
    object stores hold no links, FIFOs or devices, but a folder may stand in a file's place
    (a table written as a folder of parts)."""
    if fs.isdir(uri):
        raise ExtractError("is a folder, not a file", file=uri)


def replace_folder(tmp: Path, out: Path) -> None:
    """Move the finished folder ``tmp`` to ``out``, replacing what is there, so that ``out``
    is only ever the old folder or the new one, whole (the writers of extracts and CDMs)."""
    if out.exists():
        old = out.parent / f".{out.name}.old-{secrets.token_hex(6)}"
        os.replace(out, old)
        try:
            os.replace(tmp, out)
        except BaseException:
            os.replace(old, out)
            raise
        if old.is_dir():
            shutil.rmtree(old, ignore_errors=True)
        else:
            old.unlink(missing_ok=True)
    else:
        os.replace(tmp, out)


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "not a plain file"


@dataclass(frozen=True)
class CsvScan:
    """What a CSV file holds, by structure alone."""

    header: list[str]
    #: Data records: lines outside quoted fields, less the header (and, where counted, less
    #: blank lines).
    rows: int
    #: Blank lines (counted only when asked: it costs a second look at every line break).
    blank_lines: int | None
    #: Fields in the last record when the file does not end with a line break, else None.
    unterminated_last_row_fields: int | None


class _Scanner:
    """State carried from chunk to chunk."""

    def __init__(self, name: str, *, count_blank: bool, quoting: bool = True) -> None:
        self.name = name
        self.count_blank = count_blank
        self.quoting = quoting
        self.offset = 0  # bytes before the current chunk
        self.lines = 0  # line breaks before the current chunk
        self.inside = False  # inside a quoted field at the start of the chunk
        self.separators = 0  # line breaks outside quoted fields
        self.blank = 0
        self.last_separator = -1  # file position of the last separator (-1: none yet)
        self.last_open_line = 0  # line of the latest opening quote
        self.crlf: bool | None = None  # the file's line ending, from its first line break

    def fail(self, chunk: bytes, at: int, message: str) -> ExtractError:
        line = self.lines + chunk.count(b"\n", 0, at) + 1
        return ExtractError(message, file=self.name, line=line)

    def chunk(self, data: bytes, *, first: bool) -> None:
        start = 3 if first and data.startswith(_BOM) else 0
        nul = data.find(b"\x00")
        if nul >= 0:
            raise self.fail(data, nul, "holds a NUL byte (binary data, not CSV text)")
        if not data.isascii():
            try:
                data[start:].decode("utf-8")
            except UnicodeDecodeError as exc:
                raise self.fail(
                    data, start + exc.start, "is not UTF-8 text (save the file as UTF-8)"
                ) from None
        if not self.quoting or (not self.inside and data.find(b'"') < 0):
            self._plain(data)
        else:
            self._quoted(data, start=start, first=first)
        self.offset += len(data)
        self.lines += data.count(b"\n")

    def _plain(self, data: bytes) -> None:
        """A chunk with no quotes that starts outside a quoted field: every line break ends a
        record."""
        n = data.count(b"\n")
        if n == 0:
            return
        if self.crlf is not False and (self.crlf or b"\r" in data):
            self._check_endings(data, np.flatnonzero(np.frombuffer(data, np.uint8) == _LF))
        elif self.crlf is None:
            self.crlf = False
        if self.count_blank and (
            b"\n\n" in data or b"\n\r\n" in data or self._blank_at_start(data)
        ):
            seps = np.flatnonzero(np.frombuffer(data, np.uint8) == _LF)
            self._count_blank(data, seps)
        self.separators += n
        self.last_separator = self.offset + data.rfind(b"\n")

    def _blank_at_start(self, data: bytes) -> bool:
        return self.last_separator == self.offset - 1 and (
            data.startswith(b"\n") or data.startswith(b"\r\n")
        )

    def _quoted(self, data: bytes, *, start: int, first: bool) -> None:
        arr = np.frombuffer(data, np.uint8)
        quotes = np.flatnonzero(arr == _QUOTE)
        quotes = quotes[quotes >= start]
        parity = np.arange(quotes.size, dtype=np.int64) + int(self.inside)
        opening, closing = quotes[parity % 2 == 0], quotes[parity % 2 == 1]
        # An opening quote starts a field (after a delimiter or a line break), or is the
        # second quote of an escaped pair ("") inside a quoted field.
        before = np.where(opening > 0, arr[np.maximum(opening - 1, 0)], _LF)
        at_start = opening == start if first else np.zeros(opening.size, dtype=bool)
        bad = ~(np.isin(before, (_COMMA, _LF, _QUOTE)) | at_start)
        if bad.any():
            raise self.fail(
                data,
                int(opening[np.argmax(bad)]),
                'has a quote (") inside an unquoted field; RFC 4180 needs the whole field '
                'quoted and the quote doubled ("")',
            )
        # A closing quote is followed by a delimiter, a line end, the end of the file or
        # the other quote of an escaped pair. (Chunks end with a line break, so only the
        # file's last chunk can end with a quote.)
        after = arr[np.minimum(closing + 1, arr.size - 1)]
        at_end = closing == arr.size - 1
        bad = ~(np.isin(after, (_COMMA, _LF, _CR, _QUOTE)) | at_end)
        if bad.any():
            raise self.fail(
                data,
                int(closing[np.argmax(bad)]),
                "has a quoted field followed by more text before the next delimiter",
            )
        breaks = np.flatnonzero(arr == _LF)
        outside = (np.searchsorted(quotes, breaks) + int(self.inside)) % 2 == 0
        seps = breaks[outside]
        self._check_endings(data, seps)
        if self.count_blank:
            self._count_blank(data, seps)
        self.separators += int(seps.size)
        if seps.size:
            self.last_separator = self.offset + int(seps[-1])
        self.inside = (quotes.size + int(self.inside)) % 2 == 1
        if self.inside:
            last_open = int(opening[-1]) if opening.size else -1
            if last_open >= 0:
                self.last_open_line = self.lines + data.count(b"\n", 0, last_open) + 1

    def _check_endings(self, data: bytes, seps: np.ndarray) -> None:
        """Every record must end as the first one does: CRLF, or LF alone."""
        if seps.size == 0:
            return
        cr = np.zeros(seps.size, dtype=bool)
        has_byte = seps >= 1
        cr[has_byte] = np.frombuffer(data, np.uint8)[seps[has_byte] - 1] == _CR
        if self.crlf is None:
            self.crlf = bool(cr[0])
        odd = np.flatnonzero(cr != self.crlf)
        if odd.size:
            raise self.fail(
                data,
                int(seps[odd[0]]),
                "mixes Windows (CRLF) and Unix (LF) line endings; save it with one kind",
            )

    def _count_blank(self, data: bytes, seps: np.ndarray) -> None:
        """Count separators that end an empty line (nothing, or only a carriage return)."""
        if seps.size == 0:
            return
        prev = np.concatenate(([self.last_separator - self.offset], seps[:-1]))
        gap = seps - prev
        cr = np.zeros(seps.size, dtype=bool)
        has_byte = seps >= 1
        cr[has_byte] = np.frombuffer(data, np.uint8)[seps[has_byte] - 1] == _CR
        self.blank += int(np.count_nonzero((gap == 1) | ((gap == 2) & cr)))


def scan_csv(
    path: Path,
    *,
    count_blank: bool = False,
    delimiter: str = ",",
    chunk_bytes: int = CHUNK_BYTES,
    name: str | None = None,
) -> CsvScan:
    """Scan a CSV file's structure (see the module docstring). Blank lines, which readers
    skip, are counted only with ``count_blank`` (otherwise they count as rows). A file with
    another ``delimiter`` (tab-separated vocabulary files) is read without quoting: its quotes
    are text.

    Raises:
        ExtractError: a NUL byte, text that is not UTF-8, a quote RFC 4180 does not allow, a
            quoted field never closed, no header row, a header naming a column twice, or a
            last row cut off mid-way; each with the file and line (``name``, where given:
            the file's own name when ``path`` is a local copy of it).
    """
    name = name or str(path)
    scanner = _Scanner(name, count_blank=count_blank, quoting=delimiter == ",")
    size = 0
    try:
        with path.open("rb") as fh:
            first = True
            while True:
                data = fh.read(chunk_bytes)
                if not data:
                    break
                if not data.endswith(b"\n"):
                    data += fh.readline()
                scanner.chunk(data, first=first)
                first = False
                size += len(data)
            tail = _tail(fh, scanner.last_separator + 1, size)
    except OSError as exc:
        raise ExtractError(f"cannot be read ({type(exc).__name__})", file=name) from None
    if scanner.inside:
        raise ExtractError(
            "has a quoted field that is never closed (a missing closing quote, or the file "
            "was cut off)",
            file=name,
            line=scanner.last_open_line,
        )
    header = _header(path, delimiter, name)
    records = scanner.separators - scanner.blank + (1 if tail.strip(b"\r\n") else 0)
    last_fields: int | None = None
    if tail.strip(b"\r\n"):
        last_fields = _fields(tail, delimiter)
        if records > 1 and last_fields != len(header):
            raise ExtractError(
                f"ends in the middle of a row: the last row has {last_fields} of "
                f"{len(header)} fields and no line break (was the file cut off?)",
                file=name,
                line=scanner.lines + 1,
            )
    return CsvScan(
        header=header,
        rows=max(records - 1, 0),
        blank_lines=scanner.blank if count_blank else None,
        unterminated_last_row_fields=last_fields,
    )


def _tail(fh: io.BufferedReader, start: int, size: int) -> bytes:
    """The bytes after the last record separator: a last row with no line break, if any."""
    if start >= size:
        return b""
    fh.seek(start)
    return fh.read()


def _reader(text: Iterable[str], delimiter: str) -> Iterator[list[str]]:
    if delimiter == ",":
        return csv.reader(text)
    return csv.reader(text, delimiter=delimiter, quoting=csv.QUOTE_NONE)


def _fields(record: bytes, delimiter: str = ",") -> int:
    row = next(_reader(io.StringIO(record.decode("utf-8-sig"), newline=""), delimiter), [])
    return len(row)


def _header(path: Path, delimiter: str = ",", name: str | None = None) -> list[str]:
    """The header row's column names (``name``: the file as messages name it).

    Raises:
        ExtractError: no header row, or a header naming a column twice.
    """
    shown = name or str(path)
    with path.open(encoding="utf-8-sig", newline="") as fh:
        header = next(_reader(fh, delimiter), None)
    if not header or all(not h for h in header):
        raise ExtractError("has no header row", file=shown, line=1)
    seen: set[str] = set()
    for column in header:
        if column in seen:
            raise ExtractError(
                "the header names this column twice", file=shown, line=1, column=column
            )
        seen.add(column)
    return header


def scan_csv_at(fs: Any, uri: str, scratch: Path) -> CsvScan:
    """``scan_csv`` for a CSV at a URI, read through the fsspec file system ``fs``.

    The file is copied once to a private folder under ``scratch`` (by ``fs.get_file``: the
    Spark engine's Hadoop file system copies at the JVM's speed, where reading it through
    Python would move every byte over Py4J), scanned there and deleted at once. Blank lines
    are counted in the same pass (``blank_lines`` is set and ``rows`` still counts them, as
    ``scan_csv`` without ``count_blank``), so that ``reconcile_rows`` never needs the file
    again. Messages name the URI, never the copy.
    """
    folder = Path(tempfile.mkdtemp(prefix="csv-scan-", dir=scratch))
    try:
        os.chmod(folder, 0o700)
        local = folder / "table.csv"
        try:
            fs.get_file(uri, str(local))
        except OSError as exc:
            raise ExtractError(f"cannot be read ({type(exc).__name__})", file=uri) from None
        scan = scan_csv(local, count_blank=True, name=uri)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    blank = scan.blank_lines or 0
    return CsvScan(
        header=scan.header,
        rows=scan.rows + blank,
        blank_lines=blank,
        unterminated_last_row_fields=scan.unterminated_last_row_fields,
    )
