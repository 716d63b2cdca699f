"""QGIS as the real client: Debian's QGIS (3.22 on Debian 12) loads the service's OGC API
Features layers, vector tiles, project and styles, and draws them, headless.

``scripts/verify_qgis.py`` does the work under the system Python that the Debian bindings
are built for (``/usr/bin/python3``); ``scripts/setup.sh`` installs ``python3-qgis`` and
``qgis-providers`` with OBSERVATORY_SETUP_TESTS=1. Without them this test fails: a client
that cannot be run proves nothing, and a skip would hide that.

Incidents are read, tiled and opened in the project the way README tells QGIS users to:
through an authentication configuration of type Basic (the key as its password) that the
script creates in QGIS's own authentication manager, in a profile of its own.
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from tests.integration.publishing import completed_gi_run

ROOT = Path(__file__).parents[2]
SCRIPT = ROOT / "scripts" / "verify_qgis.py"
SYSTEM_PYTHON = "/usr/bin/python3"
SOURCE = "qgis-e2e"


def _system_python() -> str:
    probe = subprocess.run(
        [SYSTEM_PYTHON, "-c", "import qgis.core"], capture_output=True, text=True, timeout=60
    )
    if probe.returncode != 0:
        pytest.fail(
            "PyQGIS not importable by /usr/bin/python3: install python3-qgis and "
            f"qgis-providers (OBSERVATORY_SETUP_TESTS=1 scripts/setup.sh)\n{probe.stderr}"
        )
    return SYSTEM_PYTHON


@pytest.fixture(scope="module")
def server(session_db_service: str) -> str:
    """uvicorn on 127.0.0.1 serving the session's test database, warm-up off (shared by
    the package's modules that use that database)."""
    return session_db_service


@pytest.fixture(scope="module")
def hotspots(client, keys, base_data, server, tmp_path_factory) -> str:
    folder = tmp_path_factory.mktemp("qgis-e2e")
    layer_id = completed_gi_run(client, base_data, keys["analyst"], folder, SOURCE)
    deadline = time.monotonic() + 60  # the server's catalog follows by NOTIFY
    while httpx.get(f"{server}/collections/{layer_id}").status_code != 200:
        assert time.monotonic() < deadline, f"{layer_id} never reached the server"
        time.sleep(0.2)
    return layer_id


def test_qgis_loads_draws_and_opens_the_service(server, hotspots, keys, tmp_path):
    python = _system_python()
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen", "NO_PROXY": "127.0.0.1,localhost"}
    result = subprocess.run(
        [python, str(SCRIPT), f"{server}/", "--key", keys["analyst"], "--out", str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    table = result.stdout
    assert result.returncode == 0, table + result.stderr[-4000:]
    for check in (
        "oapif units-0 feature count",
        "oapif units-1 feature count",
        "oapif units-1 paging",
        "oapif units-1 extent",
        f"oapif {hotspots} feature count",
        f"oapif {hotspots} geometry type",
        f"oapif {hotspots} drawn in place",
        "oapif subset string",
        # README's way on every release: a Basic authentication configuration made in
        # QGIS's auth manager, the key as its password.
        "oapif incidents with Basic auth",
        "oapif incidents all read with Basic auth",
        "oapif incidents bbox read",
        "tiles incidents render",
        "project (analyst, Basic auth) layer incidents oapif valid",
        "project (analyst, Basic auth) incidents read",
        "project (analyst, Basic auth) incidents render",
        "project (analyst, Basic auth) render",
        # Qt answering the 401's Basic challenge with a user and password of the URL.
        "challenge: key as URL password",
        "style units-1.qml",
        "style units-1.sld",
        f"style {hotspots}.qml",
        f"style {hotspots}.sld",
        "tiles units-1 render",
        f"tiles {hotspots} render",
        f"tiles {hotspots} MapLibre style",
        "project (public) read",
        f"project (public) layer {hotspots} oapif renderer",
        f"project (public) layer {hotspots} tiles renderer",
        "project (public) render",
        "project (analyst) render",
    ):
        assert re.search(rf"^PASS\s+{re.escape(check)}\s", table, re.M), f"{check}:\n{table}"
