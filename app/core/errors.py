"""One error format for every failure: RFC 9457 ``application/problem+json``."""

from __future__ import annotations

import logging
import unicodedata
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import psycopg
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException

from boundaries import BoundaryError
from indexes import IndexDataError, IndexDefinitionError
from spatial import AnalysisError

log = logging.getLogger("observatory")

PROBLEM_JSON = "application/problem+json"


class ProblemError(Exception):
    """Base of every error the API returns on purpose."""

    status: int = 400
    title: str = "Bad request"
    type: str = "about:blank"

    def __init__(self, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.extra = extra


class InvalidParameter(ProblemError):
    """A query parameter or body field the API cannot use (422)."""

    status, title = 422, "Invalid parameter"


class InvalidFile(ProblemError):
    """An uploaded file the API cannot read or accept (422)."""

    status, title = 422, "Invalid file"


class NotFound(ProblemError):
    """No such resource (404)."""

    status, title = 404, "Not found"


class Conflict(ProblemError):
    """The request collides with what is stored (409)."""

    status, title = 409, "Conflict"


class PayloadTooLarge(ProblemError):
    """A body or upload beyond its limit (413)."""

    status, title = 413, "Payload too large"


class Unauthorized(ProblemError):
    """No key, or a key that is not valid, where one is needed (401)."""

    status, title = 401, "Unauthorized"


class Forbidden(ProblemError):
    """A valid key whose role is not enough (403)."""

    status, title = 403, "Forbidden"


class ServiceUnavailable(ProblemError):
    """The service cannot answer now; retry later (503)."""

    status, title = 503, "Service unavailable"


# Errors raised by the pure packages, and the status each one maps to.
PURE_ERROR_STATUS: dict[type[Exception], int] = {
    BoundaryError: 422,
    AnalysisError: 422,
    IndexDefinitionError: 422,
    IndexDataError: 422,
}


# How long a client should wait before retrying while the database is away: the pool
# reconnects on the next request after it is back (app.core.db checks each checkout), so a
# few seconds.
RETRY_AFTER_S = 5


def problem(
    status: int,
    title: str,
    detail: str | None = None,
    *,
    request: Request | None = None,
    **extra: Any,
) -> JSONResponse:
    """An ``application/problem+json`` response; a 401 carries the challenges of
    :func:`challenges` for ``request``, a 503 a ``Retry-After``."""
    body: dict[str, Any] = {"type": "about:blank", "title": title, "status": status}
    if detail:
        body["detail"] = detail
    body.update(extra)
    headers = {"Retry-After": str(RETRY_AFTER_S)} if status == 503 else None
    response = JSONResponse(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)
    if status == 401:
        for challenge in challenges(request):
            response.headers.append("WWW-Authenticate", challenge)
    return response


def challenges(request: Request | None) -> list[str]:
    """The ``WWW-Authenticate`` challenges of a 401, one header field each.

    ``Bearer``, and ``Basic`` (the key as the password, any user name) for clients that
    send credentials only once challenged: Qt with a user and password in the URL, a
    browser opening a URL (it asks for them). One field each although RFC 9110 (11.6.1)
    allows a comma-separated list: Chromium and Qt 5 read only the first scheme of a field.
    Basic is left out where it would only make a browser pop up its login dialog over a
    page: for a request that sent a Bearer key (a web page's script, which knows the
    scheme), and for a browser's script (``Sec-Fetch-Mode`` other than ``navigate``; sent
    to https and localhost origins). 401s are not stored by caches (no freshness given),
    so the answer may differ by these headers without a ``Vary``."""
    realm = _realm(request)
    offered = [f'Bearer realm="{realm}"']
    headers = request.headers if request is not None else {}
    sent_bearer = headers.get("authorization", "").strip().lower().startswith("bearer")
    script = headers.get("sec-fetch-mode", "navigate") not in ("navigate", "nested-navigate")
    if not (sent_bearer or script):
        offered.append(f'Basic realm="{realm}"')
    return offered


def _realm(request: Request | None) -> str:
    """``<territory> crime observatory`` in printable ASCII without quotes or backslashes
    (a quoted-string in a header Starlette encodes as Latin-1; accents dropped)."""
    name = "Crime observatory"
    if request is not None:
        name = f"{request.app.state.settings.territory.name} crime observatory"
    plain = unicodedata.normalize("NFKD", name)
    return " ".join("".join(c for c in plain if " " <= c <= "~" and c not in '"\\').split())


# The transaction was rolled back because it collided with a concurrent one (a deadlock, or
# a serialization failure): nothing of it was stored, and running it again succeeds. psycopg
# files both under OperationalError, like a lost connection; they are not that.
CONFLICT_DETAIL = (
    "This write collided with a concurrent write to the same records (a deadlock) and was "
    "cancelled; nothing of it was stored. Send it again."
)


def transaction_conflict(exc: BaseException) -> bool:
    """Whether an error, or one it was raised from, is a deadlock (SQLSTATE 40P01) or a
    serialization failure (40001): the database is fine, the transaction lost a race."""
    lost = (psycopg.errors.DeadlockDetected, psycopg.errors.SerializationFailure)
    return _caused_by(exc, lambda e: isinstance(e, lost))


def database_unavailable(exc: BaseException) -> bool:
    """Whether an error, or one it was raised from, means the database cannot be reached
    (stopped, restarting, connection lost, or every pooled connection busy past the
    pool timeout) rather than a fault in a query. A deadlock is not that
    (``transaction_conflict``), though psycopg files it as an OperationalError too."""
    return not transaction_conflict(exc) and _caused_by(exc, _unreachable)


def _unreachable(exc: BaseException) -> bool:
    if isinstance(exc, OperationalError | PoolTimeout | psycopg.OperationalError):
        return True
    return isinstance(exc, DBAPIError) and exc.connection_invalidated


def unavailable(exc: BaseException | None = None) -> JSONResponse:
    """The 503 for a database that is away, or busy when ``exc`` is a pool timeout."""
    if exc is not None and _caused_by(exc, lambda e: isinstance(e, PoolTimeout)):
        # Not down, busy: every pooled connection stayed in use for the pool timeout.
        detail = "The service is busy: no database connection became free in time; retry."
    else:
        detail = "The database is not reachable; retry later."
    return problem(503, "Service unavailable", detail)


def _caused_by(
    exc: BaseException, matches: Callable[[BaseException], bool], seen: set[int] | None = None
) -> bool:
    """Whether ``exc``, an error it was raised from or during, or a member of an exception
    group among them (task groups: streaming, anyio) ``matches``."""
    # One ``seen`` for the whole walk: a group's member can have the group itself in its
    # context (a streamed answer failing in a task group), which recursed without end.
    seen = set() if seen is None else seen
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if matches(current):
            return True
        if isinstance(current, BaseExceptionGroup):
            return any(_caused_by(e, matches, seen) for e in current.exceptions)
        # SQLAlchemy's wrapper carries the driver's error as ``orig`` (and as its cause
        # when raised; not when built with ``DBAPIError.instance``).
        orig = current.orig if isinstance(current, DBAPIError) else None
        current = orig or current.__cause__ or current.__context__
    return False


def safe_reason(exc: BaseException) -> str:
    """Why something failed, in words that may be stored where a caller reads them (an
    import batch's error): a ProblemError's own message; for a database error never its
    SQL text, parameters or backend process ids, only a short reason, with a log id
    under which the full error is logged when the reason alone does not say enough."""
    if isinstance(exc, ProblemError):
        return exc.detail
    if transaction_conflict(exc):
        return "deadlock with a concurrent write to the same records; run it again"
    if database_unavailable(exc):
        return "the database connection was lost; nothing was stored; run it again"
    if not isinstance(exc, Exception):  # cancelled, interrupted
        return f"stopped before it finished ({exc.__class__.__name__}); run it again"
    log_id = uuid.uuid4().hex[:12]
    log.error("error %s", log_id, exc_info=exc)
    if _caused_by(exc, (DBAPIError, psycopg.Error)):
        return f"database error (log id {log_id})"
    return f"internal error (log id {log_id})"


def install_error_handlers(app: FastAPI) -> None:
    """Answer every failure as problem+json: the API's own errors with their status, bad
    parameters 422, the pure packages' errors by :data:`PURE_ERROR_STATUS`, a database
    that is away 503 (a lost race 409), anything else 500 with a log id."""
    app.add_exception_handler(ProblemError, _problem_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    for error_type, status in PURE_ERROR_STATUS.items():
        app.add_exception_handler(error_type, _pure_error(status))
    # psycopg's own error reaches here from code that uses the raw driver (COPY).
    for error_type in (OperationalError, PoolTimeout, psycopg.OperationalError):
        app.add_exception_handler(error_type, _database_down)
    app.add_exception_handler(DBAPIError, _database_error)
    app.add_exception_handler(Exception, _unexpected)


async def _problem_error(request: Request, exc: ProblemError) -> JSONResponse:
    return problem(
        exc.status,
        exc.title,
        exc.detail,
        request=request,
        instance=request.url.path,
        **exc.extra,
    )


async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    errors = [
        {"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
        for e in exc.errors()
    ]
    detail = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in errors)
    return problem(422, "Invalid request", detail, instance=request.url.path, errors=errors)


async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    title = {404: "Not found", 405: "Method not allowed"}.get(exc.status_code, "Error")
    return problem(
        exc.status_code, title, str(exc.detail), request=request, instance=request.url.path
    )


def _pure_error(status: int) -> Callable[[Request, Exception], Awaitable[JSONResponse]]:
    async def _pure(request: Request, exc: Exception) -> JSONResponse:
        return problem(status, "Invalid input", str(exc), instance=request.url.path)

    return _pure


async def _database_down(request: Request, exc: Exception) -> JSONResponse:
    if transaction_conflict(exc):  # an OperationalError, but the database is fine
        log.warning("transaction conflict on %s %s", request.method, request.url.path)
        return problem(409, "Conflict", CONFLICT_DETAIL, instance=request.url.path)
    log.warning("database unavailable: %s", exc.__class__.__name__)
    return unavailable(exc)


async def _database_error(request: Request, exc: DBAPIError) -> JSONResponse:
    if database_unavailable(exc) or transaction_conflict(exc):
        # e.g. a connection closed under a running query; or a deadlock
        return await _database_down(request, exc)
    if isinstance(exc.orig, psycopg.errors.NumericValueOutOfRange):
        # A bound integer beyond PostgreSQL's bigint (ids, levels, years from the
        # URL; found by fuzzing): a client's number, not a server fault.
        return problem(
            422,
            "Invalid parameter",
            "A number in the request is out of range.",
            instance=request.url.path,
        )
    return _internal(request, exc)


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    # wrapped on its way out, e.g. by a task group
    if database_unavailable(exc) or transaction_conflict(exc):
        return await _database_down(request, exc)
    return _internal(request, exc)


def _internal(request: Request, exc: Exception) -> JSONResponse:
    log_id = uuid.uuid4().hex[:12]
    log.exception("unhandled error %s on %s %s", log_id, request.method, request.url.path)
    return problem(
        500, "Internal server error", f"Something went wrong; quote log id {log_id}.", log_id=log_id
    )
