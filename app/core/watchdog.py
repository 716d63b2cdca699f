"""Where the time goes when the service stalls: slow requests and event loop blocks, logged
above thresholds (``api.slow_request_s``, ``api.loop_block_s``).

A request is slow because it waited (for the database, a pool connection, the event loop)
or because it worked; a blocked event loop stalls every request of the worker at once,
cached tiles included, and its log line carries the stack of the code that held it, taken
while it held it. A load benchmark saw one stall of 5-7 s with an empty server log
(issue 22): the next one names its cause.

A block's end says how much CPU the loop's thread and the whole process used while it
lasted, and the machine's CPU pressure: a loop held by code on it used the CPU itself; one
starved by another thread of the process (holding the GIL: a compilation, a computation in
``asyncio.to_thread``) shows the process busy and the loop's thread not; one starved by the
machine (other processes on the cores) shows neither busy. The watching thread also notes
when it was itself not run for a block's length: the whole process stalled.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
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
        self._loop_native = threading.get_native_id()

    def start(self) -> None:
        """Start beating on the running loop and watching from a daemon thread."""
        if self.threshold_s is None:
            return
        self._loop_thread = threading.get_ident()
        self._loop_native = threading.get_native_id()
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
        tick = self.threshold_s / 4
        blocked_since: float | None = None
        # CPU seconds (loop thread, process) at the last tick the loop was seen beating:
        # what a block used is counted from there.
        cpu_before = (_thread_cpu(self._loop_native), time.process_time())
        woke, woke_cpu = time.monotonic(), time.process_time()
        while not self._stop.wait(tick):
            now, now_cpu = time.monotonic(), time.process_time()
            if now - woke > self.threshold_s + tick:
                log.warning(
                    "the watchdog's own thread was not run for %.2f s (%s)",
                    now - woke,
                    _starved(now - woke, None, now_cpu - woke_cpu),
                )
            woke, woke_cpu = now, now_cpu
            beat = self._beat
            late = now - beat
            if late > self.threshold_s and blocked_since != beat:
                blocked_since = beat
                frame = sys._current_frames().get(self._loop_thread)
                stack = "".join(traceback.format_stack(frame)) if frame else "(no frame)\n"
                log.warning("event loop blocked for %.2f s so far, in:\n%s", late, stack)
            elif blocked_since is not None and beat != blocked_since:
                held = beat - blocked_since
                loop_cpu = _thread_cpu(self._loop_native)
                thread = (
                    None if loop_cpu is None or cpu_before[0] is None else loop_cpu - cpu_before[0]
                )
                process = time.process_time() - cpu_before[1]
                log.warning(
                    "event loop was blocked for %.2f s (%s)",
                    held,
                    _starved(held, thread, process),
                )
                blocked_since = None
            if blocked_since is None:
                cpu_before = (_thread_cpu(self._loop_native), time.process_time())


def _thread_cpu(native_id: int) -> float | None:
    """CPU seconds (user + system) a thread of this process has used, from /proc (None
    where there is no /proc)."""
    try:
        with open(f"/proc/self/task/{native_id}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _cpu_pressure() -> str:
    """The machine's CPU pressure (share of the last 10 s some task waited for a core),
    from Linux's PSI; empty where there is none."""
    try:
        with open("/proc/pressure/cpu") as fh:
            some = fh.readline().split()
    except OSError:
        return ""
    avg10 = next((f.split("=", 1)[1] for f in some if f.startswith("avg10=")), None)
    return f"; machine CPU pressure {avg10} % (avg10)" if avg10 is not None else ""


def _starved(wall: float, thread: float | None, process: float) -> str:
    """What a stall of ``wall`` seconds was, from the CPU the loop's thread and the whole
    process used meanwhile."""
    parts = []
    if thread is not None:
        parts.append(f"the loop's thread used {thread:.2f} s of CPU")
    parts.append(f"the process {process:.2f} s")
    # A quarter, not a half: on a busy machine a computing thread gets a core only part
    # of the time (0.56 s of CPU in 1.26 s was seen with every core contended).
    others = process - (thread or 0.0)
    if thread is not None and thread > wall / 4 and thread >= others:
        verdict = "held by code on the loop"
    elif others > wall / 4:
        verdict = "another thread of the process held the GIL"
    else:
        verdict = "not run: waiting for a core (machine busy) or in a system call"
    return f"{', '.join(parts)}: {verdict}{_cpu_pressure()}"
