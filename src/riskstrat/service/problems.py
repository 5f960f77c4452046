"""Errors in the API as RFC 9457 problem details (``application/problem+json``).

One rule, in three handlers: a :class:`~riskstrat.errors.RiskstratError` raised anywhere in a
route answers with its own problem (type, title, status, detail, hint, instance) and status;
under ``/api/`` an ``HTTPException`` and a request validation error answer as problem+json
too, keeping their ``detail`` (and headers such as ``WWW-Authenticate``), so clients that read
``detail`` keep working. Pages, FHIR and ``/health`` keep FastAPI's own answers for those two.
"""

from __future__ import annotations

from collections.abc import Callable
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.encoders import jsonable_encoder
from fastapi.exception_handlers import (
    http_exception_handler,
    request_validation_exception_handler,
)
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.utils import is_body_allowed_for_status_code
from starlette.exceptions import HTTPException

from riskstrat.errors import RiskstratError
from riskstrat.service.schemas import Problem, ValidationProblem

PROBLEM_JSON = "application/problem+json"
#: Where the problem+json rule applies to HTTP errors and validation errors.
API_ROOT = "/api/"
_REF = "#/components/schemas/{model}"


def _in_api(request: Request) -> bool:
    return request.url.path.startswith(API_ROOT)


def _title(status_code: int) -> str:
    """The HTTP reason phrase of ``status_code``: the ``title`` of an about:blank problem."""
    try:
        return HTTPStatus(status_code).phrase
    except ValueError:
        return "Error"


def problem_response(
    body: dict[str, Any], status_code: int, headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse(body, status_code=status_code, headers=headers, media_type=PROBLEM_JSON)


async def riskstrat_error(request: Request, exc: Exception) -> Response:
    """A RiskstratError: its problem, at its status, wherever it was raised."""
    if not isinstance(exc, RiskstratError):  # pragma: no cover - registered for that class
        raise exc
    return problem_response(exc.problem(instance=_route_template(request)), exc.http_status)


def _route_template(request: Request) -> str:
    """The route's template (``/api/v1/patients/{nhs_number}``), never the path as sent: a
    patient's path holds an identifier, and problem bodies may be logged by proxies."""
    route = request.scope.get("route")
    return str(getattr(route, "path", None) or request.scope.get("path", ""))


async def http_error(request: Request, exc: Exception) -> Response:
    """An HTTPException: problem+json under /api/ (detail and headers kept), else FastAPI's."""
    if not isinstance(exc, HTTPException):  # pragma: no cover - registered for that class
        raise exc
    if not _in_api(request) or not is_body_allowed_for_status_code(exc.status_code):
        return await http_exception_handler(request, exc)
    body = {
        "type": "about:blank",
        "title": _title(exc.status_code),
        "status": exc.status_code,
        "detail": exc.detail,
    }
    return problem_response(body, exc.status_code, getattr(exc, "headers", None))


async def validation_error(request: Request, exc: Exception) -> Response:
    """A request that breaks a declared rule (422): problem+json under /api/, else FastAPI's."""
    if not isinstance(exc, RequestValidationError):  # pragma: no cover - registered for that
        raise exc
    if not _in_api(request):
        return await request_validation_exception_handler(request, exc)
    # RFC 9457 lets a problem carry extension members and says little about ``detail``'s
    # shape; we keep FastAPI's list of issues as ``detail`` because clients (and the
    # schemathesis checks) read it.
    body = {
        "type": "about:blank",
        "title": _title(422),
        "status": 422,
        "detail": jsonable_encoder(exc.errors()),
    }
    return problem_response(body, 422)


def install(app: FastAPI) -> None:
    """Register the handlers on ``app`` and document its /api/ errors as problem+json."""
    app.add_exception_handler(RiskstratError, riskstrat_error)
    app.add_exception_handler(HTTPException, http_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.openapi = _documenting_problems(app, app.openapi)  # type: ignore[method-assign]


def _documenting_problems(
    app: FastAPI, build: Callable[[], dict[str, Any]]
) -> Callable[[], dict[str, Any]]:
    """``app.openapi`` with every 4xx and 5xx answer under /api/ documented as problem+json."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = build()  # FastAPI's own, cached on the app; completed here in place
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        for model in (Problem, ValidationProblem):
            definition = model.model_json_schema(ref_template=_REF)
            components.update(definition.pop("$defs", {}))
            components[model.__name__] = definition
        for path, operations in schema.get("paths", {}).items():
            if not path.startswith(API_ROOT):
                continue
            for operation in operations.values():
                for code, response in operation.get("responses", {}).items():
                    if code[:1] in ("4", "5"):
                        model = ValidationProblem if code == "422" else Problem
                        ref = _REF.format(model=model.__name__)
                        response["content"] = {PROBLEM_JSON: {"schema": {"$ref": ref}}}
        return schema

    return openapi
