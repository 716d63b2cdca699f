"""Helpers for tests of what the service publishes for other clients (styles, QGIS
project): a completed hot spot run, and service links as test-client paths."""

from __future__ import annotations

import math
import time
from pathlib import Path

from fastapi.testclient import TestClient

from app.core.settings import Settings
from tests.conftest import auth
from tests.integration.helpers import import_csv, write_incident_csv


def completed_gi_run(
    client: TestClient, settings: Settings, analyst: str, folder: Path, source: str
) -> str:
    """Import 2,000 incidents under ``source``, run Gi* on 10 km cells over non-sensitive
    categories (a run that counts sensitive ones is for analysts only), wait for the run
    to be published as a public collection, and return the collection id."""
    import_csv(settings, write_incident_csv(folder / f"{source}.csv", n=2000, source=source))
    body = {
        "method": "gi_star",
        "units": {"type": "grid", "cell_size_m": 10_000},
        "filters": {"sources": [source], "categories": ["homicide", "robbery", "theft"]},
    }
    response = client.post("/analyses/hotspots", json=body, headers=auth(analyst))
    assert response.status_code in (201, 202), response.text
    run_id, deadline = response.json()["id"], time.monotonic() + 300
    while client.get(f"/analyses/{run_id}", headers=auth(analyst)).status_code == 202:
        assert time.monotonic() < deadline, "the analysis never finished"
        time.sleep(0.2)
    # The catalog follows the data version, bumped by NOTIFY: allow it a moment.
    layer_id = f"hotspots-{run_id}"
    while client.get(f"/collections/{layer_id}").status_code != 200:
        assert time.monotonic() < deadline, f"{layer_id} never became a collection"
        time.sleep(0.2)
    return layer_id


def local(url: str) -> str:
    """A link of the test client's service, as a path the client can request."""
    assert url.startswith("http://testserver/"), url
    return url.removeprefix("http://testserver")


def tile_of(lon: float, lat: float, z: int) -> tuple[int, int]:
    """The XYZ tile (x, y) holding a point at zoom ``z``."""
    n = 2**z
    x = int((lon + 180) / 360 * n)
    y = int((1 - math.asinh(math.tan(math.radians(lat))) / math.pi) / 2 * n)
    return x, y
