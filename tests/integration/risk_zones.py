"""A live near-repeat risk zone for tests of what the service publishes (styles, QGIS
project): a planted near-repeat pattern of burglaries, one recent burglary, and a
near-repeat run armed with ``risk_zones`` that draws the recent one's zone."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
from fastapi.testclient import TestClient
from pyproj import Transformer

from tests.conftest import auth
from tests.integration.helpers import import_csv

# Belize City, and metres around it (UTM 16N).
CENTRE = (-88.2000, 17.5000)
_TO_UTM = Transformer.from_crs(4326, 32616, always_xy=True)
_TO_LONLAT = Transformer.from_crs(32616, 4326, always_xy=True)


def _planted(source: str, seed: int) -> pd.DataFrame:
    """200 burglaries over 2024 in a 3 km square, and 40 more each within 40 m and 5 days
    after one of them: far more close pairs than chance gives (Knox: significant within
    100 m and 7 days)."""
    rng = np.random.default_rng(seed)
    cx, cy = _TO_UTM.transform(*CENTRE)
    xy = rng.uniform(-1500, 1500, (200, 2)) + np.array([cx, cy])
    days = rng.uniform(0, 360, 200)
    src = rng.integers(0, 200, 40)
    xy = np.vstack([xy, xy[src] + rng.uniform(-28, 28, (40, 2))])
    days = np.concatenate([days, days[src] + rng.uniform(0, 5, 40)])
    lon, lat = _TO_LONLAT.transform(xy[:, 0], xy[:, 1])
    when = pd.Timestamp("2024-01-01") + pd.to_timedelta(days, "D")
    return pd.DataFrame(
        {
            "source": source,
            "source_id": [f"{source}-{i}" for i in range(len(days))],
            "category": "burglary",
            "occurred_at": when.strftime("%Y-%m-%d %H:%M:%S"),
            "longitude": np.round(lon, 7),
            "latitude": np.round(lat, 7),
        }
    )


def live_risk_zones(
    client: TestClient, settings, keys: dict[str, str], folder: Path, source: str, seed: int
) -> int:
    """Import the planted pattern under ``source`` with one burglary of yesterday, run a
    near repeat over them with ``risk_zones``, wait until both risk-zone layers are
    collections, and return the run's id. The zone is a non-sensitive one: the public
    ``risk_zones`` shows it, ``risk_zones-exact`` too (analysts)."""
    path = folder / f"{source}.csv"
    _planted(source, seed).to_csv(path, index=False)
    import_csv(settings, path)
    yesterday = datetime.now(UTC) - timedelta(days=1)
    answer = client.post(
        "/incidents",
        json={
            "source": source, "source_id": f"{source}-recent", "category": "burglary",
            "occurred_at": yesterday.isoformat(),
            "geometry": {"type": "Point", "coordinates": list(CENTRE)},
        },
        headers=auth(keys["editor"]),
    )  # fmt: skip
    assert answer.status_code == 201, answer.text
    body = {
        "filters": {"sources": [source], "categories": ["burglary"]},
        "distance_bands_m": [100, 500, 1000], "time_bands_days": [7, 14, 28],
        "permutations": 99, "seed": 7, "risk_zones": True,
    }  # fmt: skip
    answer = client.post("/analyses/near-repeat", json=body, headers=auth(keys["analyst"]))
    assert answer.status_code in (201, 202), answer.text
    run_id, deadline = answer.json()["id"], time.monotonic() + 300
    while True:
        run = client.get(
            f"/analyses/{run_id}", params={"format": "run"}, headers=auth(keys["analyst"])
        ).json()
        if run["status"] != "running":
            break
        assert time.monotonic() < deadline, "the near-repeat run never finished"
        time.sleep(0.2)
    assert run["status"] == "completed", run
    # Yesterday's burglary only: the windows of 2024's closed long ago.
    assert run["summary"]["risk_zones_made"] == 1, run["summary"]
    # The catalog follows the data version, bumped by NOTIFY: allow it a moment.
    for layer_id, key in (("risk_zones", None), ("risk_zones-exact", keys["analyst"])):
        while client.get(f"/collections/{layer_id}", headers=auth(key)).status_code != 200:
            assert time.monotonic() < deadline, f"{layer_id} never became a collection"
            time.sleep(0.2)
    return run_id
