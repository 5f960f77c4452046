"""The error every reader of source data raises when a file cannot be used at all."""

from __future__ import annotations

from riskstrat.errors import DataError


class ExtractError(DataError):
    """Source data that cannot be used at all. Names the file and, where they apply, the line
    and the column; never quotes a value (values may be identifiers)."""

    def __init__(
        self,
        message: str,
        *,
        file: str | None = None,
        column: str | None = None,
        line: int | None = None,
        hint: str | None = None,
    ):
        where = ", ".join(
            part
            for part in (
                f"file {file}" if file else "",
                f"line {line:,}" if line is not None else "",
                f"column {column}" if column else "",
            )
            if part
        )
        super().__init__(f"{where}: {message}" if where else message, hint=hint)
        self.file = file
        self.column = column
        self.line = line
