"""One error model: every failure a user can act on is a :class:`RiskstratError`.

Each error carries a message (what went wrong, in the user's words, never a patient
identifier) and a hint (what to do next). Its class decides the rest, once: the ``riskstrat``
command's exit code and, in the API, the HTTP status and the RFC 9457 problem type.

============================  ====  ====  ==========================================
class                         exit  HTTP  when
============================  ====  ====  ==========================================
``UsageError``                2     400   an option, argument or request value is malformed
``InvalidValueError``         1     422   a well-formed value this operation cannot use
``ConfigError``               1     500   a model spec, cohort file or setting is invalid
``DataError``                 1     422   input data breaks the data contract
``NotFoundError``             1     404   no such model version, run, month, user or person
``MissingFileError``          1     404   a file or folder named in the request is missing
``ConflictError``             1     409   the state forbids it now (a run in progress, ...)
``AlreadyExistsError``        1     409   the output file or folder exists already
``RefusedError``              1     409   a gate or rule refused the action (promotion)
``StoreError``                1     503   the serving store is unreachable or out of date
``AccessDenied``              1     403   the caller may not do or see this
============================  ====  ====  ==========================================

Exit code 1 stays "the operation failed" and 2 "the command was called wrongly", as before
the model existed, so scripts keep working. Subclasses also derive from the built-in they
replaced (``ValueError``, ``LookupError``, ``RuntimeError``, ``FileNotFoundError``,
``FileExistsError``) so callers that caught those still catch them.
"""

from __future__ import annotations

from typing import Any, ClassVar

#: Problem types (RFC 9457 ``type``) are relative URIs under this base.
PROBLEM_BASE = "https://riskstrat.invalid/problems/"


class RiskstratError(Exception):
    """Base of every failure riskstrat reports to a user.

    Args:
        message: what went wrong, in words a user can act on.
        hint: what to do next; the class's ``default_hint`` when not given.
    """

    exit_code: ClassVar[int] = 1
    http_status: ClassVar[int] = 500
    title: ClassVar[str] = "riskstrat could not do that"
    slug: ClassVar[str] = "error"
    default_hint: ClassVar[str | None] = None

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint if hint is not None else self.default_hint

    def __str__(self) -> str:
        return self.message

    @property
    def problem_type(self) -> str:
        """The RFC 9457 ``type`` URI of this kind of failure."""
        return PROBLEM_BASE + self.slug

    def problem(self, *, instance: str | None = None) -> dict[str, Any]:
        """This failure as an RFC 9457 problem details object (``application/problem+json``)."""
        body: dict[str, Any] = {
            "type": self.problem_type,
            "title": self.title,
            "status": self.http_status,
            "detail": self.message,
        }
        if self.hint:
            body["hint"] = self.hint
        if instance:
            body["instance"] = instance
        return body


class UsageError(RiskstratError, ValueError):
    """An option, argument or request value is malformed."""

    exit_code = 2
    http_status = 400
    title = "Invalid request"
    slug = "invalid-request"
    default_hint = "run the command with --help to see what it accepts"


class InvalidValueError(RiskstratError, ValueError):
    """A well-formed value this operation cannot use (``--force`` without ``--reason``, a
    linkage file for a run that needs none); unlike :class:`UsageError` the command was
    called correctly, so it exits 1."""

    http_status = 422
    title = "Value not accepted"
    slug = "invalid-value"


class ConfigError(RiskstratError, ValueError):
    """A model spec, cohort definition or setting is invalid."""

    http_status = 500
    title = "Invalid configuration"
    slug = "invalid-configuration"
    default_hint = "fix the file or setting named above; docs/operations.md lists every setting"


class DataError(RiskstratError):
    """Input data breaks the data contract (file, line, column and rule in the message)."""

    http_status = 422
    title = "Input data breaks the data contract"
    slug = "invalid-data"
    default_hint = "fix the source file named above; docs/data-contract.md has every rule"


class NotFoundError(RiskstratError, LookupError):
    """No such model version, run, month, user or person."""

    http_status = 404
    title = "Not found"
    slug = "not-found"


class MissingFileError(NotFoundError, FileNotFoundError):
    """A file or folder the request names does not exist."""

    title = "File not found"
    slug = "file-not-found"
    default_hint = "check the path (relative paths start from the current folder)"


class ConflictError(RiskstratError, RuntimeError):
    """The current state forbids the action (for example, another run is in progress)."""

    http_status = 409
    title = "Conflict"
    slug = "conflict"


class AlreadyExistsError(ConflictError, FileExistsError):
    """The file or folder to write exists already (and replacing it was not asked for)."""

    title = "Already exists"
    slug = "already-exists"
    default_hint = "pass --overwrite to replace it, or choose another path"


class RefusedError(RiskstratError):
    """A gate or rule refused the action (for example, promoting a version that failed)."""

    http_status = 409
    title = "Refused"
    slug = "refused"


class StoreError(RiskstratError, RuntimeError):
    """The serving store is unreachable or its schema is out of date."""

    http_status = 503
    title = "Serving store unavailable"
    slug = "store-unavailable"
    default_hint = "check RISKSTRAT_DATABASE_URL and that the database server is reachable"


class AccessDenied(RiskstratError):
    """The caller may not do or see this."""

    http_status = 403
    title = "Forbidden"
    slug = "forbidden"


#: Packages whose errors can quote a row's values after their first line: PostgreSQL's
#: DETAIL and CONTEXT lines (a duplicate key names it: an NHS number), through psycopg or
#: ADBC's driver manager (the bulk copy), and SQLAlchemy's ``[SQL: ...]`` and
#: ``[parameters: ...]``.
_QUOTING_ERRORS = ("psycopg", "psycopg2", "sqlalchemy", "sqlite3", "adbc_driver_manager")


def failure_message(exc: BaseException) -> str:
    """``exc``'s message as a person sees it or a failed run records it: a database error
    cut to its first line, which names the failure without quoting values."""
    text = str(exc).strip()
    if type(exc).__module__.split(".")[0] in _QUOTING_ERRORS and text:
        text = text.splitlines()[0].rstrip()
    return text
