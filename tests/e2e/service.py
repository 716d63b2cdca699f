"""The service as real processes for end-to-end tests: uvicorn on 127.0.0.1 (a free
port) against a test database and one ``observatory worker`` beside it (the analyses run
there), analysis warm-up off, stopped when the test is done."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from tests.conftest import _free_port, worker_process

ROOT = Path(__file__).parents[2]


@contextmanager
def running_service(database_url: str) -> Iterator[str]:
    """Yield the base URL (``http://127.0.0.1:PORT``) once ``/ready`` answers 200 and the
    worker has registered. Both processes start together (each takes seconds to import
    the app); /ready does not depend on the worker."""
    with (
        tempfile.TemporaryDirectory() as logs,
        _api(database_url) as ready,
        worker_process(database_url, Path(logs) / "worker.log"),
    ):
        yield ready()


@contextmanager
def _api(database_url: str) -> Iterator[Callable[[], str]]:
    """uvicorn, started; yields a function that waits for ``/ready`` and returns the base
    URL."""
    port = _free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("OBSERVATORY_")},
        "OBSERVATORY_ENVIRONMENT": "test",
        "OBSERVATORY_DATABASE_URL": database_url,
        "OBSERVATORY_ANALYSIS__WARM_UP": "false",
    }
    process = subprocess.Popen(
        [
            *(sys.executable, "-m", "uvicorn", "app.main:create_app", "--factory"),
            *("--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"),
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    started = time.monotonic()

    def ready() -> str:
        deadline = started + 60
        while True:
            if process.poll() is not None:
                pytest.fail(f"uvicorn exited:\n{process.stdout.read()}")
            try:
                if httpx.get(f"{base}/ready", timeout=2).status_code == 200:
                    return base
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail("the service never became ready")
            time.sleep(0.1)

    try:
        yield ready
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
