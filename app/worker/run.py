"""``observatory worker``: a process that takes jobs from the queue until it is stopped.

Beside procrastinate's worker (jobs, heartbeat, schedules) runs a watchman: every
heartbeat it hands the jobs of workers silent for ``worker.stalled_s`` (killed,
frozen, cut off) back to the queue, where another worker (or this one) runs them again,
and fails the runs whose job ended without a result. Any worker does this, so a dead
worker's job is recovered as long as one worker lives. If the database goes away, the
worker waits and starts again rather than exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket

from procrastinate import App

from app.core.settings import Settings
from app.sql import jobs as job_sql
from app.worker import tasks
from app.worker.queue import QUEUES, make_app

log = logging.getLogger("observatory")


async def recover_stalled(app: App, settings: Settings) -> list[int]:
    """Send the jobs of silent workers back to the queue; return their ids."""
    stalled = await app.job_manager.get_stalled_jobs(
        seconds_since_heartbeat=settings.worker.stalled_s
    )
    retried = []
    for job in stalled:
        try:
            await app.job_manager.retry_job(job)
        except Exception as exc:  # another worker's watchman took it first
            log.debug("stalled job %s not retried: %s", job.id, exc)
            continue
        log.warning("job %s (%s) of a silent worker queued again", job.id, job.task_name)
        retried.append(job.id)
    return retried


async def _watch(app: App, engine, settings: Settings) -> None:
    while True:
        await asyncio.sleep(settings.worker.heartbeat_s)
        try:
            await recover_stalled(app, settings)
            async with engine.begin() as conn:
                await conn.execute(job_sql.FAIL_ORPHANS)
        except Exception as exc:  # the database restarting: try again next beat
            log.warning("worker watchman: %s", exc)


def _warm_up(settings: Settings) -> None:
    import spatial

    # esda's kernels imported and switched to the disk cache here, once, before jobs
    # (concurrent ones, in threads) do it.
    spatial.enable_numba_cache()
    if not settings.analysis.warm_up:
        return
    seconds = spatial.warm_up()
    log.info("analysis engine warm (numba kernels ready in %.1f s)", seconds)


async def run_worker(
    settings: Settings, *, concurrency: int | None = None, queues: list[str] | None = None
) -> None:
    """Take jobs from ``queues`` (default: the service's, QUEUES), ``concurrency`` at
    once, until SIGINT or SIGTERM (running jobs then get ``shutdown_s`` to finish, or
    are queued again). Anything else that stops procrastinate's worker (it stops when
    it loses the database) starts it again, after a pause that grows to 30 s."""
    from app.core.db import create_engine

    concurrency = concurrency or settings.worker.concurrency
    # Named, not "all": a job sent to a queue of its own waits for a worker that takes it.
    queues = list(queues or QUEUES)
    name = f"{socket.gethostname()}:{os.getpid()}"
    stopping = asyncio.Event()
    current: list[asyncio.Task] = []

    def on_signal() -> None:
        stopping.set()
        for task in current:
            task.cancel()  # procrastinate then stops gracefully (worker.shutdown_s)

    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, on_signal)
    # Compile the statistics kernels before taking a job, as the API did.
    await asyncio.to_thread(_warm_up, settings)
    engine = create_engine(settings)
    pause = 1.0
    try:
        while not stopping.is_set():
            try:
                await _run_once(settings, engine, name, concurrency, queues, current)
            except asyncio.CancelledError:
                if not stopping.is_set():
                    raise
            except Exception as exc:
                log.warning("worker stopped: %s", exc)
            if stopping.is_set():
                return
            log.warning("worker lost the database; starting again in %.0f s", pause)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), pause)
            pause = min(pause * 2, 30.0)
    finally:
        await engine.dispose()


async def _run_once(
    settings: Settings,
    engine,
    name: str,
    concurrency: int,
    queues: list[str],
    current: list[asyncio.Task],
) -> None:
    """One life of procrastinate's worker, with the watchman beside it."""
    app = make_app(settings, min_size=1, max_size=concurrency + 2)
    tasks.schedule(app, settings)
    async with app.open_async():
        watchman = asyncio.create_task(_watch(app, engine, settings))
        log.info("worker %s takes jobs from %s", name, ", ".join(queues))
        worker = asyncio.create_task(
            app.run_worker_async(
                queues=queues,
                concurrency=concurrency,
                name=name,
                additional_context={"engine": engine, "settings": settings},
                fetch_job_polling_interval=settings.worker.poll_s,
                abort_job_polling_interval=settings.worker.poll_s,
                update_heartbeat_interval=settings.worker.heartbeat_s,
                stalled_worker_timeout=settings.worker.stalled_s,
                shutdown_graceful_timeout=settings.worker.shutdown_s,
                install_signal_handlers=False,  # ours: a stop by signal is final
            )
        )
        current[:] = [worker]
        try:
            await worker
        finally:
            current.clear()
            watchman.cancel()
