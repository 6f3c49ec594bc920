"""One JSON shape for every error the service returns, and the handlers that produce it.

    {"error": "video_too_long", "message": "the uploaded video is 75.0 s long; this server accepts at most 60 s",
     "request_id": "3f0c..."}

`error` is a stable code a program can switch on, `message` is for people. Unexpected exceptions become a 500 with
the request id (the traceback goes to the server log under that id, never to the client).
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from mgsv.errors import name_options

log = logging.getLogger("mgsv.serve")

REQUEST_ID_HEADER = "X-Request-ID"


class ErrorBody(BaseModel):
    """The body of every error response."""

    error: str
    message: str
    request_id: str | None = None


class ApiError(Exception):
    """An error with its HTTP status, a stable code and a message for people.

    Library messages name options by key in backquotes (`top`); the API's fields are those keys, so the message
    shows them plainly (`mgsv.errors.name_options`).
    """

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        message = name_options(message)
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}


def request_id(request: Request) -> str:
    """The id of this request (made by the middleware in app.py; made here if a request skipped it)."""
    rid = getattr(request.state, "request_id", None)
    if rid is None:
        rid = request.state.request_id = uuid.uuid4().hex
    return rid


def error_response(request: Request, status: int, code: str, message: str, headers: dict[str, str] | None = None):
    """A JSONResponse in the error shape."""
    rid = request_id(request)
    body = ErrorBody(error=code, message=message, request_id=rid)
    # The id goes in a header too: a 500 is sent from outside the middleware that adds it to other responses.
    return JSONResponse(body.model_dump(), status_code=status, headers={**(headers or {}), REQUEST_ID_HEADER: rid})


# Codes for Starlette's own errors (unknown route, wrong method) by status.
_STATUS_CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found", 405: "method_not_allowed"}


def _describe_validation(errors: list[dict[str, Any]]) -> str:
    parts = []
    for error in errors[:10]:
        where = ".".join(str(p) for p in error.get("loc", ()) if p != "body") or "request"
        parts.append(f"{where}: {error.get('msg', 'invalid')}")
    return "; ".join(parts)


def install_error_handlers(app: FastAPI) -> None:
    """Make ApiError, validation errors, Starlette's HTTP errors and any other exception answer in the error shape."""

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return error_response(request, exc.status, exc.code, exc.message, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(request, 422, "invalid_request", _describe_validation(list(exc.errors())))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _STATUS_CODES.get(exc.status_code, f"http_{exc.status_code}")
        message = exc.detail if isinstance(exc.detail, str) else code.replace("_", " ")
        if exc.status_code == 404 and message == "Not Found":
            message = f"no such endpoint: {request.method} {request.url.path}"
        return error_response(request, exc.status_code, code, message, dict(exc.headers or {}))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        rid = request_id(request)
        log.error("request %s (%s %s) failed", rid, request.method, request.url.path, exc_info=exc)
        return error_response(
            request, 500, "internal_error", f"the server failed to handle this request; see its log for request {rid}"
        )
