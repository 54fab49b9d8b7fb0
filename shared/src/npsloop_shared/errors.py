"""One error base carrying an HTTP status, rendered as RFC 9457 problem+json by one handler."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

PROBLEM_CONTENT_TYPE = "application/problem+json"
INTERNAL_ERROR_DETAIL = "The server failed to answer this request; the error has been logged."


class NpsloopError(Exception):
    """Raised anywhere a request can fail in a way the client should be told about."""

    status: int = 500
    title: str = "Internal Server Error"
    type_slug: str = "about:blank"

    def __init__(
        self,
        detail: str,
        *,
        errors: list[dict[str, Any]] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.errors = errors
        self.headers = dict(headers or {})


class BadRequest(NpsloopError):
    status, title, type_slug = 400, "Bad Request", "bad-request"


class Unauthorized(NpsloopError):
    status, title, type_slug = 401, "Unauthorized", "unauthorized"


class Forbidden(NpsloopError):
    status, title, type_slug = 403, "Forbidden", "forbidden"


class NotFound(NpsloopError):
    status, title, type_slug = 404, "Not Found", "not-found"


class Conflict(NpsloopError):
    status, title, type_slug = 409, "Conflict", "conflict"


class PayloadTooLarge(NpsloopError):
    status, title, type_slug = 413, "Content Too Large", "payload-too-large"


class UnsupportedMediaType(NpsloopError):
    status, title, type_slug = 415, "Unsupported Media Type", "unsupported-media-type"


class ValidationFailed(NpsloopError):
    status, title, type_slug = 422, "Unprocessable Content", "validation-failed"


class ServiceUnavailable(NpsloopError):
    status, title, type_slug = 503, "Service Unavailable", "service-unavailable"


def problem_response(
    status: int,
    title: str,
    detail: str,
    *,
    type_slug: str = "about:blank",
    errors: list[dict[str, Any]] | None = None,
    headers: Mapping[str, str] | None = None,
    instance: str | None = None,
) -> Response:
    body: dict[str, Any] = {
        "type": type_slug
        if type_slug == "about:blank"
        else f"https://npsloop.dev/problems/{type_slug}",
        "title": title,
        "status": status,
        "detail": detail,
    }
    if instance:
        body["instance"] = instance
    if errors is not None:
        body["errors"] = errors
    return Response(
        orjson.dumps(body), status_code=status, media_type=PROBLEM_CONTENT_TYPE, headers=headers
    )


def validation_problems(
    exc: ValidationError, *, prefix: tuple[str | int, ...] = ()
) -> list[dict[str, Any]]:
    """Every invalid field as `{"pointer": "/responses/3/score", "detail": ...}` (RFC 6901)."""
    return _field_problems(exc.errors(include_url=False, include_input=False), prefix=prefix)


def _field_problems(
    errors: Iterable[Mapping[str, Any]], *, prefix: tuple[str | int, ...] = ()
) -> list[dict[str, Any]]:
    """pydantic's error dicts (`loc`, `msg`, `type`) as problem `errors` with JSON pointers."""
    problems = []
    for error in errors:
        location = (*prefix, *error["loc"])
        detail = error["msg"]
        if location and location[-1] == "[key]":
            # pydantic's marker for "the key itself is invalid": point at the member, say so.
            location, detail = location[:-1], f"key: {detail}"
        pointer = "/" + "/".join(
            str(part).replace("~", "~0").replace("/", "~1") for part in location
        )
        problems.append(
            {"pointer": pointer if location else "/", "detail": detail, "type": error["type"]}
        )
    return problems


def error_response(exc: NpsloopError, instance: str | None = None) -> Response:
    return problem_response(
        exc.status,
        exc.title,
        exc.detail,
        type_slug=exc.type_slug,
        errors=exc.errors,
        headers=exc.headers,
        instance=instance,
    )


def install_problem_handlers(app: FastAPI) -> None:
    """Every error a client can cause leaves as problem+json; nothing becomes a bare 500."""

    async def on_npsloop_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, NpsloopError)
        return error_response(exc, instance=request.url.path)

    async def on_request_validation(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        problem = ValidationFailed(
            "The request is not valid.", errors=_field_problems(exc.errors())
        )
        return error_response(problem, instance=request.url.path)

    async def on_http_exception(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        return problem_response(
            exc.status_code,
            _reason(exc.status_code),
            str(exc.detail),
            headers=exc.headers,
            instance=request.url.path,
        )

    async def on_unexpected(request: Request, exc: Exception) -> Response:
        # Our fault, not the client's: nothing about it in the answer. Starlette re-raises the
        # error after this answer is sent, so the server logs it with its traceback.
        return error_response(NpsloopError(INTERNAL_ERROR_DETAIL), instance=request.url.path)

    app.add_exception_handler(NpsloopError, on_npsloop_error)
    app.add_exception_handler(RequestValidationError, on_request_validation)
    app.add_exception_handler(StarletteHTTPException, on_http_exception)
    app.add_exception_handler(Exception, on_unexpected)


def _reason(status: int) -> str:
    from http import HTTPStatus

    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def dumps_problem(body: Mapping[str, Any]) -> bytes:
    return orjson.dumps(body)
