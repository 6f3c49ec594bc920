"""Bearer tokens: the API token opens every endpoint but health; the admin token also opens the admin ones.

With no API token configured (allowed on a loopback address only, see `ServeSettings.check`), the API is open to
whoever can reach it, which is this machine. Tokens are compared in constant time. They travel only in the
Authorization header, never in URLs (which end up in logs and browser history).
"""

from __future__ import annotations

import hmac

from fastapi import Request

from mgsv.serve.http_errors import ApiError
from mgsv.serve.runtime import Runtime


def get_runtime(request: Request) -> Runtime:
    """The server's Runtime (a FastAPI dependency)."""
    return request.app.state.runtime


def _bearer(request: Request) -> str | None:
    header = request.headers.get("authorization")
    if header is None:
        return None
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise ApiError(
            401,
            "unauthorized",
            "the Authorization header must be 'Bearer <token>'",
            {"WWW-Authenticate": 'Bearer realm="mgsv", error="invalid_request"'},
        )
    return token.strip()


def _same(given: str, expected: str | None) -> bool:
    return expected is not None and hmac.compare_digest(given.encode(), expected.encode())


def _missing() -> ApiError:
    return ApiError(
        401,
        "missing_token",
        "this server needs an API token: send the header 'Authorization: Bearer <token>'",
        {"WWW-Authenticate": 'Bearer realm="mgsv"'},
    )


def _invalid() -> ApiError:
    return ApiError(
        401, "invalid_token", "the token is not valid", {"WWW-Authenticate": 'Bearer error="invalid_token"'}
    )


def require_user(request: Request) -> None:
    """Dependency: the API token (or the admin token) when an API token is configured."""
    settings = get_runtime(request).settings
    if settings.api_token is None:
        return
    token = _bearer(request)
    if token is None:
        raise _missing()
    if not (_same(token, settings.api_token) or _same(token, settings.admin_token)):
        raise _invalid()


def require_admin(request: Request) -> None:
    """Dependency: the admin token; admin endpoints are off when none is configured."""
    settings = get_runtime(request).settings
    if settings.admin_token is None:
        raise ApiError(
            403, "admin_disabled", "admin endpoints are off on this server: start it with MGSV_ADMIN_TOKEN set"
        )
    token = _bearer(request)
    if token is None:
        raise _missing()
    if _same(token, settings.api_token):
        raise ApiError(403, "forbidden", "the API token cannot change the library; use the admin token")
    if not _same(token, settings.admin_token):
        raise _invalid()
