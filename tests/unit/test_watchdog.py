"""The stall logging of ``app.core.watchdog``: a blocked event loop is logged with the
code that blocked it, a slow request with its route and status."""

from __future__ import annotations

import asyncio
import logging
import re
import time

from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from app.core.watchdog import LoopWatchdog, SlowRequests


def _hold_the_loop(seconds: float) -> None:
    time.sleep(seconds)  # what a blocking call in a route does


def _compute_on_the_loop(seconds: float) -> None:
    end = time.thread_time() + seconds  # CPU seconds: a computation in a route
    while time.thread_time() < end:
        pass


def _block(hold, seconds: float) -> None:
    """Let ``hold`` hold a watched loop for ``seconds``."""

    async def main() -> None:
        watchdog = LoopWatchdog(0.1)
        watchdog.start()
        await asyncio.sleep(0.2)  # beats: nothing to log
        hold(seconds)
        await asyncio.sleep(0.2)  # beats resume
        watchdog.stop()

    asyncio.run(main())


def test_a_blocked_loop_is_logged_with_the_blocking_stack(caplog):
    async def main() -> None:
        watchdog = LoopWatchdog(0.1)
        watchdog.start()
        await asyncio.sleep(0.2)  # beats: nothing to log
        _hold_the_loop(0.5)
        await asyncio.sleep(0.2)  # beats resume
        watchdog.stop()

    with caplog.at_level(logging.WARNING, logger="observatory"):
        asyncio.run(main())
    messages = [r.getMessage() for r in caplog.records]
    (blocked,) = [m for m in messages if "blocked for" in m and "so far" in m]
    assert "_hold_the_loop" in blocked and "time.sleep" in blocked
    (resumed,) = [m for m in messages if m.startswith("event loop was blocked")]
    assert 0.4 < float(re.match(r"event loop was blocked for ([0-9.]+) s", resumed)[1]) < 1.5
    # A sleep used no CPU: the loop was not held by computing.
    assert "not run: waiting for a core (machine busy) or in a system call" in resumed


def test_a_loop_held_by_computing_is_told_apart(caplog):
    with caplog.at_level(logging.WARNING, logger="observatory"):
        _block(_compute_on_the_loop, 0.6)
    (resumed,) = [
        r.getMessage() for r in caplog.records if r.getMessage().startswith("event loop was")
    ]
    used = float(re.search(r"the loop's thread used ([0-9.]+) s of CPU", resumed)[1])
    assert used >= 0.3  # most of the 0.6 s it computed, counted in clock ticks
    assert "held by code on the loop" in resumed


def test_slow_requests_are_logged_and_quick_ones_not(caplog):
    async def slow(request):
        await asyncio.sleep(0.3)
        return PlainTextResponse("late", status_code=202)

    async def quick(request):
        return PlainTextResponse("ok")

    app = Starlette(routes=[Route("/slow", slow), Route("/quick", quick)])
    app.add_middleware(SlowRequests, threshold_s=0.2)
    with caplog.at_level(logging.WARNING, logger="observatory"), TestClient(app) as client:
        assert client.get("/quick?x=1").status_code == 200
        assert client.get("/slow?secret=1").status_code == 202
    (line,) = [r.getMessage() for r in caplog.records if "slow request" in r.getMessage()]
    assert line.startswith("slow request: GET /slow -> 202 in 0.")
    assert line.endswith("(no pool)")
    assert "secret" not in line
