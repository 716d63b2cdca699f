"""``app.core.cache.once``: concurrent requests of one answer compute it once (issue 22:
after a data change each concurrent request of a ranking computed it again, and the pool
ran dry)."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest

from app.core.cache import once


def test_concurrent_callers_of_one_key_compute_once():
    calls: list[str] = []

    async def compute(key: str) -> str:
        calls.append(key)
        await asyncio.sleep(0.05)
        return f"answer {key}"

    async def main() -> list[str]:
        state = SimpleNamespace()
        asks = [once(state, "t", k, lambda k=k: compute(k)) for k in ("a", "a", "a", "b")]
        answers = await asyncio.gather(*asks)
        assert state.t_flights == {}  # nothing left in flight
        return answers

    assert asyncio.run(main()) == ["answer a", "answer a", "answer a", "answer b"]
    assert sorted(calls) == ["a", "b"]


def test_a_failure_is_the_first_callers_only():
    calls = 0

    async def compute() -> str:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.05)
        if calls == 1:
            raise ValueError("the first computation failed")
        return "answer"

    async def main() -> list:
        state = SimpleNamespace()
        return await asyncio.gather(
            once(state, "t", "k", compute), once(state, "t", "k", compute), return_exceptions=True
        )

    first, second = asyncio.run(main())
    assert isinstance(first, ValueError)
    assert second == "answer" and calls == 2


def test_a_cancelled_first_caller_leaves_the_others_their_answer():
    async def compute() -> str:
        await asyncio.sleep(0.05)
        return "answer"

    async def main() -> str:
        state = SimpleNamespace()
        first = asyncio.create_task(once(state, "t", "k", compute))
        await asyncio.sleep(0)
        second = asyncio.create_task(once(state, "t", "k", compute))
        await asyncio.sleep(0.01)
        first.cancel()
        with pytest.raises(asyncio.CancelledError):
            await first
        return await second

    assert asyncio.run(main()) == "answer"
