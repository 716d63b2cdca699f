"""Where the time goes when the service stalls: slow requests and event loop blocks, logged
above thresholds (``api.slow_request_s``, ``api.loop_block_s``).

A request is slow because it waited (for the database, a pool connection, the event loop)
or because it worked; a blocked event loop stalls every request of the worker at once,
cached tiles included, and its log line carries the stack of the code that held it, taken
while it held it. A load benchmark saw one stall of 5-7 s with an empty server log
(issue 22): the next one names its cause.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import sys
import threading
import time
import traceback

from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger("observatory")


class SlowRequests:
    """ASGI middleware: log every HTTP request that took longer than ``threshold_s``
    (method, path, status, seconds; the query string is left out, it may hold filters
    on personal data)."""

    def __init__(self, app: ASGIApp, threshold_s: float) -> None:
        self.app, self.threshold_s = app, threshold_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve the request and log it if it was slow."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status: int | None = None

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            elapsed = time.perf_counter() - started
            if elapsed > self.threshold_s:
                log.warning(
                    "slow request: %s %s -> %s in %.2f s (%s)",
                    scope["method"],
                    scope["path"],
                    status if status is not None else "no response",
                    elapsed,
                    _pool(scope),
                )


def _pool(scope: Scope) -> str:
    """The database pool's state when a slow request ends: a request that waited for a
    connection finds it full."""
    engine = getattr(scope["app"].state, "engine", None)
    if engine is None:
        return "no pool"
    pool = engine.sync_engine.pool
    try:
        return f"pool: {pool.checkedout()} of {pool.size()} connections checked out"
    except AttributeError:  # a pool without a size (NullPool)
        return type(pool).__name__


class LoopWatchdog:
    """Watch an event loop from a thread: a task on the loop beats every
    ``threshold_s / 4``; when no beat came for ``threshold_s``, the thread logs the loop
    thread's stack (what holds it), and when beats resume, how long it was held. A
    threshold of None watches nothing."""

    def __init__(self, threshold_s: float | None) -> None:
        self.threshold_s = threshold_s
        self._beat = time.monotonic()
        self._stop = threading.Event()
        self._task: asyncio.Task[None] | None = None
        self._thread: threading.Thread | None = None
        self._loop_thread = threading.get_ident()

    def start(self) -> None:
        """Start beating on the running loop and watching from a daemon thread."""
        if self.threshold_s is None:
            return
        self._loop_thread = threading.get_ident()
        self._beat = time.monotonic()
        self._task = asyncio.get_running_loop().create_task(self._beating())
        self._thread = threading.Thread(target=self._watch, name="loop-watchdog", daemon=True)
        self._thread.start()
        gc.callbacks.append(self._collected)

    def stop(self) -> None:
        """Stop beating and watching."""
        self._stop.set()
        if self._task is not None:
            self._task.cancel()
        if self._collected in gc.callbacks:
            gc.callbacks.remove(self._collected)

    def _collected(self, phase: str, info: dict) -> None:
        """Log garbage collections that hold every thread for a quarter of the threshold
        or more (a full collection of a large heap is one cause of a blocked loop)."""
        if phase == "start":
            self._gc_started = time.perf_counter()
            return
        took = time.perf_counter() - getattr(self, "_gc_started", time.perf_counter())
        if self.threshold_s is not None and took > self.threshold_s / 4:
            log.warning(
                "garbage collection of generation %s took %.2f s (%s collected, %s objects "
                "tracked)",
                info.get("generation"),
                took,
                info.get("collected"),
                len(gc.get_objects(info.get("generation", 2))),
            )

    async def _beating(self) -> None:
        assert self.threshold_s is not None
        while True:
            self._beat = time.monotonic()
            await asyncio.sleep(self.threshold_s / 4)

    def _watch(self) -> None:
        assert self.threshold_s is not None
        blocked_since: float | None = None
        while not self._stop.wait(self.threshold_s / 4):
            beat = self._beat
            late = time.monotonic() - beat
            if late > self.threshold_s and blocked_since != beat:
                blocked_since = beat
                frame = sys._current_frames().get(self._loop_thread)
                stack = "".join(traceback.format_stack(frame)) if frame else "(no frame)\n"
                log.warning("event loop blocked for %.2f s so far, in:\n%s", late, stack)
            elif blocked_since is not None and beat != blocked_since:
                log.warning("event loop was blocked for %.2f s", beat - blocked_since)
                blocked_since = None
