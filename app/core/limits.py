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
        """Refuse a declared length beyond the limit at once; count the bytes of any other
        body, and answer 413 in place of the route once they pass it."""
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

        guard = _Guard(receive, send, limit)
        try:
            await self.app(scope, guard.receive, guard.send)
        except BodyTooLarge:
            if guard.started:
                raise
        except Exception:
            if not guard.refused:
                raise
        if guard.refused:
            await _too_large(scope, send, f"The request body exceeds {described}.")


class _Guard:
    """One request's body count: ``receive`` counts the bytes and raises
    :class:`BodyTooLarge` past the limit; ``send`` then holds back the route's own answer.
    The route may turn BodyTooLarge into its own error (FastAPI answers 400 to a body it
    could not read); once the limit was passed, the answer is 413."""

    def __init__(self, receive: Receive, send: Send, limit: int) -> None:
        self._receive = receive
        self._send = send
        self.limit = limit
        self.received = 0
        self.exceeded = False
        self.started = False

    @property
    def refused(self) -> bool:
        """The limit was passed before the route began its answer: the answer is 413."""
        return self.exceeded and not self.started

    async def receive(self) -> Message:
        message = await self._receive()
        if message["type"] == "http.request":
            self.received += len(message.get("body", b""))
            if self.received > self.limit:
                self.exceeded = True
                raise BodyTooLarge
        return message

    async def send(self, message: Message) -> None:
        if self.refused:
            return
        if message["type"] == "http.response.start":
            self.started = True
        await self._send(message)


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
