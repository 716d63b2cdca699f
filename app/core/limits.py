"""Request body limits: a pure ASGI middleware that answers 413 problem+json.

Uploads (multipart bodies on the upload routes) may reach ``api.max_upload_mb``; every
other body (JSON for incidents, indexes, analyses …) only ``api.max_body_kb``. The
declared ``Content-Length`` is refused before anything is read, and the bytes actually
received are counted too, so a chunked body (no length) or a lying length cannot get
past the limit. This sits in front of the routes because Starlette parses a multipart
form, spooling the whole file, before the handler (and ``app.files.uploads``) sees it.
"""

from __future__ import annotations

from collections.abc import Iterable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.core.errors import problem
from app.core.settings import ApiSettings

__all__ = ["UPLOAD_PATHS", "BodyLimit"]

#: Routes that take file uploads (multipart/form-data) and get the upload limit.
UPLOAD_PATHS = ("/boundaries", "/imports", "/population", "/indicators")
# Form fields and multipart boundaries around the file itself.
MULTIPART_OVERHEAD = 1 << 20


class BodyTooLarge(Exception):
    """Raised from ``receive`` once a body passes its limit (never leaves the middleware)."""


class BodyLimit:
    """Refuse request bodies beyond their limit with 413 problem+json."""

    def __init__(
        self, app: ASGIApp, *, api: ApiSettings, upload_paths: Iterable[str] = UPLOAD_PATHS
    ) -> None:
        self.app = app
        self.upload_limit = api.max_upload_mb * (1 << 20) + MULTIPART_OVERHEAD
        self.body_limit = api.max_body_kb * 1024
        self.max_upload_mb = api.max_upload_mb
        self.max_body_kb = api.max_body_kb
        self.upload_paths = frozenset(p.rstrip("/") for p in upload_paths)

    def _limit(self, scope: Scope) -> tuple[int, str]:
        content_type = ""
        for name, value in scope["headers"]:
            if name == b"content-type":
                content_type = value.decode("latin-1").lower()
        is_upload = content_type.startswith("multipart/form-data") and (
            scope["path"].rstrip("/") in self.upload_paths
        )
        if is_upload:
            return self.upload_limit, f"the {self.max_upload_mb} MB upload limit"
        return self.body_limit, f"the {self.max_body_kb} KB request body limit"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit, described = self._limit(scope)
        declared = _content_length(scope)
        if declared is not None and declared > limit:
            await _too_large(
                scope, send, f"The request body ({declared} bytes) exceeds {described}."
            )
            return

        received = 0
        exceeded = False
        started = False

        async def counted_receive() -> Message:
            nonlocal received, exceeded
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    exceeded = True
                    raise BodyTooLarge
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            # The route may turn BodyTooLarge into its own error (FastAPI answers 400 to a
            # body it could not read); once the limit was passed, the answer is 413.
            if exceeded and not started:
                return
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        detail = f"The request body exceeds {described}."
        try:
            await self.app(scope, counted_receive, guarded_send)
        except BodyTooLarge:
            if started:
                raise
        except Exception:
            if not (exceeded and not started):
                raise
        if exceeded and not started:
            await _too_large(scope, send, detail)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


async def _too_large(scope: Scope, send: Send, detail: str) -> None:
    response = problem(413, "Payload too large", detail, instance=scope["path"])
    # The rest of the body is never read; close the connection rather than drain it.
    response.headers["Connection"] = "close"
    await response(scope, _no_receive, send)


async def _no_receive() -> Message:
    return {"type": "http.disconnect"}
