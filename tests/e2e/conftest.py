"""Services shared by the end-to-end modules: each start of uvicorn and a worker
(tests/e2e/service.py) takes seconds, so the modules that only read a database share one
per database for the whole package (stopped after its last test)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from app.core.cluster import Cluster
from app.core.settings import Settings
from tests.conftest import demo_database
from tests.e2e.service import running_service


@pytest.fixture(scope="package")
def session_db_service(base_data: Settings, keys: dict[str, str]) -> Iterator[str]:
    """uvicorn and a worker serving the session's test database (warm-up off), the keys
    created first; for test_browser_auth, test_gdal and test_qgis."""
    with running_service(base_data.libpq_url) as base:
        yield base


@pytest.fixture(scope="package")
def demo_service(cluster: Cluster, demo_template: str) -> Iterator[tuple[Settings, str]]:
    """The demo (``demo_template``) in a database of its own, which nobody writes to (other
    tests count incidents in the shared one), and uvicorn and a worker serving it; for
    test_browser and test_rankings_page. Modules that change their demo (test_alerts_panel
    acknowledges alerts) copy one of their own."""
    settings = demo_database(cluster, demo_template, "observatory_e2e_demo")
    with running_service(settings.libpq_url) as base:
        yield settings, base
