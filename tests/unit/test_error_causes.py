"""Which errors mean "the database is away" or "busy": the walk over causes, contexts and
exception groups (a streamed answer fails inside a task group)."""

from __future__ import annotations

import psycopg
from sqlalchemy.exc import TimeoutError as PoolTimeout

from app.core.errors import database_unavailable, transaction_conflict, unavailable


def _raised_in_group(inner: BaseException) -> BaseExceptionGroup:
    """A group whose member was raised while the group was being handled, as anyio's task
    groups leave them under load: member -> context -> group -> member."""
    group = BaseExceptionGroup("task group", [inner])
    inner.__context__ = group
    return group


def test_a_group_in_its_members_context_ends_the_walk():
    group = _raised_in_group(RuntimeError("response already started"))
    assert database_unavailable(group) is False  # was RecursionError
    assert transaction_conflict(group) is False
    assert b"not reachable" in unavailable(group).body


def test_a_pool_timeout_in_a_group_is_busy_and_a_deadlock_is_not_unavailable():
    busy = _raised_in_group(PoolTimeout("QueuePool limit reached"))
    assert database_unavailable(busy)
    assert b"busy" in unavailable(busy).body
    deadlock = psycopg.errors.DeadlockDetected("deadlock detected")
    assert transaction_conflict(_raised_in_group(deadlock))
    assert not database_unavailable(deadlock)
