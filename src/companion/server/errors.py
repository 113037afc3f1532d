"""Errors as OpenAI-style bodies: `{"error": {"message", "type", "param", "code"}}`.

Library errors (`models.errors`) are translated here, at the edge, and nowhere else:

    AccessDenied                       403 permission_error
    UnknownModelError / not found      404 invalid_request_error, code model_not_found
    ChatNotFoundError                  404 invalid_request_error, code chat_not_found
    bad input (ValueError family)      400 invalid_request_error
    VersionError, UpdateError          409 invalid_request_error
    QueueFullError                     429 rate_limit_error, code queue_full (Retry-After: 1)
    anything else from the library     500 server_error (message kept: it names the problem)
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from models.errors import (
    AccessDenied,
    ChatNotFoundError,
    CompanionError,
    ModelNotFoundError,
    QueueFullError,
    UnknownModelError,
    UpdateError,
    VersionError,
)

__all__ = ["APIError", "error_body", "install_error_handlers", "status_of"]

log = logging.getLogger(__name__)

_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "invalid_request_error",
    405: "invalid_request_error",
    409: "invalid_request_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
}


class APIError(Exception):
    """An error the server answers with `status` and an OpenAI-style body."""

    def __init__(self, status: int, message: str, *, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code


def error_body(status: int, message: str, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": _TYPES.get(status, "server_error"), "param": param, "code": code}}


def status_of(exc: CompanionError) -> tuple[int, str | None]:
    """HTTP status and error code for a library error."""
    if isinstance(exc, AccessDenied):
        return 403, "access_denied"
    if isinstance(exc, ModelNotFoundError):
        return 404, "model_not_found"
    if isinstance(exc, ChatNotFoundError):
        return 404, "chat_not_found"
    if isinstance(exc, VersionError | UpdateError):
        return 409, None
    if isinstance(exc, QueueFullError):
        return 429, "queue_full"
    if isinstance(exc, ValueError):  # DataError, UnknownContextError, FeedbackError, PreferenceError, ...
        return 400, None
    return 500, None


def _json(status: int, message: str, param: str | None = None, code: str | None = None) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else {"Retry-After": "1"} if status == 429 else None
    return JSONResponse(error_body(status, message, param, code), status_code=status, headers=headers)


def _param(loc: tuple[Any, ...]) -> str | None:
    parts = [str(p) for p in loc if p not in ("body", "query", "path")]
    return ".".join(parts) or None


def install_error_handlers(app: Any) -> None:
    """Every error the app raises leaves as an OpenAI-style body with the right status."""

    @app.exception_handler(APIError)
    async def _api(_: Request, exc: APIError) -> JSONResponse:
        return _json(exc.status, exc.message, exc.param, exc.code)

    @app.exception_handler(CompanionError)
    async def _library(_: Request, exc: CompanionError) -> JSONResponse:
        status, code = status_of(exc)
        if status >= 500:
            log.error("request failed: %s", exc)
        message = str(exc)
        if isinstance(exc, UnknownModelError):  # the library's message lists every model: not for every caller
            message = (
                f"The model {exc.name!r} does not exist or you do not have access to it (GET /v1/models lists yours)."
            )
        return _json(status, message, None, code)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        first = errors[0] if errors else {}
        param = _param(tuple(first.get("loc", ())))
        detail = "; ".join(
            f"{_param(tuple(e.get('loc', ()))) or 'body'}: {e.get('msg', 'invalid')}" for e in errors[:5]
        )
        return _json(400, detail or "invalid request", param, "invalid_value")

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = exc.detail if isinstance(exc.detail, str) else "request failed"
        return _json(exc.status_code, message, None, None)

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected server error")
        return _json(500, f"internal error: {type(exc).__name__}", None, None)
