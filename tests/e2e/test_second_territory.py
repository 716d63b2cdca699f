"""Another territory set up through HTTP alone (issue 16, point 5), as the README's
"Another territory" section does it: a config file (name, projected CRS, time zone,
bounding box, its own data directory and port), `observatory db start`, `migrate`, one
admin key and `observatory serve --host --port`; then, over HTTP only, boundaries,
categories, populations and incidents with constants, and the results checked against
values computed here: `/stats` counts and rates per unit in the territory's local time,
and a Gi* hot spot run against esda on the same cells.

The territory is made up (nothing is downloaded): three 3 km squares side by side in UTM
zone 18N near New York, time zone America/New_York. Shootings come in New York State
Plane feet (EPSG:2263) with NYPD-like column names and no category or source column;
assaults in degrees with a category column that is mostly empty.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import esda
import geopandas as gpd
import httpx
import libpysal
import numpy as np
import pandas as pd
import pytest
import shapely
from numpy.testing import assert_allclose
from pyproj import Transformer

from tests.conftest import _free_port

ROOT = Path(__file__).parents[2]
UTM = "EPSG:32618"
STATE_PLANE = "EPSG:2263"  # NAD83 / New York Long Island (ftUS), as NYPD publishes
TIMEZONE = "America/New_York"
X0, Y0, SIDE = 583_000, 4_509_000, 3_000  # south-west corner and side of the squares, m
UNITS = {"HT-W": "West", "HT-C": "Centre", "HT-E": "East"}
POPULATION = {"HT-W": 150_000, "HT-C": 210_000, "HT-E": 90_000}
CELL = 500
VOCABULARY = [
    {"code": "shooting", "name": "Shooting", "category_group": "firearm", "sensitive": False},
    {"code": "assault", "name": "Assault", "category_group": "violent", "sensitive": False},
    {
        "code": "sexual_violence",
        "name": "Sexual violence",
        "category_group": "violence_against_women",
        "sensitive": True,
        "description": "withheld from public tables",
    },
]


def _squares() -> dict[str, shapely.Polygon]:
    return {
        code: shapely.box(X0 + i * SIDE, Y0, X0 + (i + 1) * SIDE, Y0 + SIDE)
        for i, code in enumerate(UNITS)
    }


def _unit_of(x: float, y: float) -> str:
    return next(code for code, square in _squares().items() if square.contains(shapely.Point(x, y)))


def _inside(rng: np.random.Generator, n: int) -> np.ndarray:
    """``n`` points spread over the three squares, at least 5 m from any unit border."""
    points = []
    while len(points) < n:
        x, y = rng.uniform(X0 + 5, X0 + 3 * SIDE - 5), rng.uniform(Y0 + 5, Y0 + SIDE - 5)
        if min(abs(x - (X0 + SIDE)), abs(x - (X0 + 2 * SIDE))) > 5:
            points.append((x, y))
    return np.array(points)


def _local_times(rng: np.random.Generator, n: int) -> list[str]:
    """Naive local times in 2024 (the territory's time zone), between 08:00 and 20:59:
    never in the hour that daylight saving time skips or repeats."""
    days = pd.to_timedelta(rng.integers(0, 366, n), "D")
    minutes = pd.to_timedelta(rng.integers(8 * 60, 21 * 60, n), "min")
    times = pd.Timestamp("2024-01-01") + days + minutes
    return list(times.strftime("%Y-%m-%dT%H:%M:%S"))


def _shootings() -> pd.DataFrame:
    """A cluster of 60 around the Centre square's middle, 45 spread everywhere, and two
    near New Year: 22:30 on 31 December 2024 is 2025 in UTC but 2024 here, 21:00 on
    31 December 2023 is 2024 in UTC but 2023 here."""
    rng = np.random.default_rng(16)
    centre = np.array([X0 + 1.5 * SIDE + 40, Y0 + SIDE / 2 + 60])
    cluster = np.clip(
        centre + rng.normal(0, 110, (60, 2)),
        [X0 + SIDE + 10, Y0 + 10],
        [X0 + 2 * SIDE - 10, Y0 + SIDE - 10],
    )
    xy = np.vstack([cluster, _inside(rng, 45), [[X0 + 500, Y0 + 700], [X0 + 7_700, Y0 + 2_100]]])
    when = [*_local_times(rng, 105), "2024-12-31T22:30:00", "2023-12-31T21:00:00"]
    feet_x, feet_y = Transformer.from_crs(UTM, STATE_PLANE, always_xy=True).transform(*xy.T)
    return pd.DataFrame(
        {
            "INCIDENT_KEY": [f"S{i:05d}" for i in range(len(xy))],
            "OCCUR_DATE": when,
            "X_COORD_CD": np.round(feet_x, 2),
            "Y_COORD_CD": np.round(feet_y, 2),
            "utm_x": xy[:, 0],
            "utm_y": xy[:, 1],
        }
    )


def _assaults() -> pd.DataFrame:
    """30 assaults with no category of their own, and 6 sexual violence cases in the West
    square whose category the file gives (the constant fills only empty cells)."""
    rng = np.random.default_rng(5)
    xy = np.vstack([_inside(rng, 30), [[X0 + 800 + 150 * i, Y0 + 1_200] for i in range(6)]])
    lon, lat = Transformer.from_crs(UTM, "EPSG:4326", always_xy=True).transform(*xy.T)
    return pd.DataFrame(
        {
            "id": [f"A{i:04d}" for i in range(len(xy))],
            "category": [""] * 30 + ["sexual_violence"] * 6,
            "occurred_at": _local_times(rng, len(xy)),
            "lon": np.round(lon, 7),
            "lat": np.round(lat, 7),
            "utm_x": xy[:, 0],
            "utm_y": xy[:, 1],
        }
    )


def _config(tmp_path: Path, db_port: int) -> Path:
    corners = Transformer.from_crs(UTM, "EPSG:4326", always_xy=True).transform(
        [X0, X0 + 3 * SIDE], [Y0, Y0 + SIDE]
    )
    west, east = (round(v, 3) for v in corners[0])
    south, north = (round(v, 3) for v in corners[1])
    path = tmp_path / "hudson.toml"
    path.write_text(
        f"""# A second territory: its own CRS, time zone, bounding box and database.
[database]
data_dir = "{tmp_path / "hudson-postgres"}"
port = {db_port}

[territory]
name = "Hudson (synthetic)"
projected_crs = "{UTM}"
timezone = "{TIMEZONE}"
tolerance_m = 500
bbox = [{west - 0.05}, {south - 0.05}, {east + 0.05}, {north + 0.05}]

[analysis]
warm_up = false
"""
    )
    return path


def _open_for_postgres(path: Path) -> None:
    for p in (path, *path.parents):
        if p in (Path("/tmp"), Path("/")):
            break
        p.chmod(p.stat().st_mode | 0o005)


def _cli(env: dict[str, str], *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "app.cli", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, f"observatory {' '.join(args)}:\n{done.stdout}{done.stderr}"
    return done.stdout


def _serve(env: dict[str, str], port: int) -> tuple[subprocess.Popen, str]:
    process = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "serve", "--host", "127.0.0.1", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"observatory serve exited:\n{process.stdout.read()}")
        try:
            if httpx.get(f"{base}/ready", timeout=2).status_code == 200:
                return process, base
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    process.kill()
    pytest.fail("the service never became ready")


def _stop(process: subprocess.Popen) -> None:
    process.send_signal(signal.SIGINT)
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()


def test_a_second_territory_is_set_up_and_analysed_over_http(tmp_path):
    _open_for_postgres(tmp_path)
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("OBSERVATORY_")},
        "OBSERVATORY_CONFIG_FILE": str(_config(tmp_path, _free_port())),
    }
    _cli(env, "db", "start")
    try:
        _cli(env, "migrate")
        created = _cli(env, "keys", "create", "--role", "admin", "--name", "setup")
        key = created.strip().splitlines()[-1]
        assert re.fullmatch(r"obs_\S+", key), created
        process, base = _serve(env, _free_port())
        # The analyses run in a worker of the same configuration (the job queue).
        worker = subprocess.Popen(
            [sys.executable, "-m", "app.cli", "worker"],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            with httpx.Client(base_url=base, timeout=120) as http:
                _set_up(http, {"Authorization": f"Bearer {key}"}, tmp_path)
                _check(http, {"Authorization": f"Bearer {key}"})
        finally:
            _stop(worker)
            _stop(process)
    finally:
        subprocess.run([sys.executable, "-m", "app.cli", "db", "stop"], cwd=ROOT, env=env)


def _set_up(http: httpx.Client, admin: dict[str, str], tmp_path: Path) -> None:
    # Boundaries: a GeoPackage in UTM 18N (the service stores EPSG:4326).
    frame = gpd.GeoDataFrame(
        {"code": list(UNITS), "name": list(UNITS.values())},
        geometry=list(_squares().values()),
        crs=UTM,
    )
    gpkg = tmp_path / "hudson_units.gpkg"
    frame.to_file(gpkg, driver="GPKG")
    with gpkg.open("rb") as fh:
        units = http.post(
            "/boundaries",
            files={"file": ("hudson_units.gpkg", fh)},
            data={"level": "1", "code_field": "code", "name_field": "name"},
            headers=admin,
        )
    assert units.status_code == 200, units.text
    assert units.json()["inserted"] == 3

    # Categories: none yet, so an import says where to save them.
    shootings = _shootings()
    csv_bytes = shootings.drop(columns=["utm_x", "utm_y"]).to_csv(index=False).encode()
    form = {
        "crs": STATE_PLANE,
        "columns": json.dumps(
            {
                "source_id": "INCIDENT_KEY",
                "occurred_at": "OCCUR_DATE",
                "longitude": "X_COORD_CD",
                "latitude": "Y_COORD_CD",
            }
        ),
        "constants": json.dumps({"category": "shooting", "source": "hudson-pd"}),
    }
    early = http.post(
        "/imports", files={"file": ("shootings.csv", csv_bytes)}, data=form, headers=admin
    )
    assert early.status_code == 422 and "POST /categories" in early.json()["detail"]
    saved = http.post("/categories", json=VOCABULARY, headers=admin)
    assert saved.status_code == 200, saved.text
    assert (saved.json()["version"], saved.json()["inserted"]) == (
        1,
        ["assault", "sexual_violence", "shooting"],
    )

    population = "unit_code,year,value,source\n" + "".join(
        f"{code},2024,{value},synthetic census\n" for code, value in POPULATION.items()
    )
    tables = http.post(
        "/population", files={"file": ("population.csv", population.encode())}, headers=admin
    )
    assert tables.status_code == 200, tables.text
    assert tables.json()["inserted"] == 3

    batch = http.post(
        "/imports", files={"file": ("shootings.csv", csv_bytes)}, data=form, headers=admin
    )
    assert batch.status_code == 201, batch.text
    assert (batch.json()["inserted"], batch.json()["rejected"]) == (len(shootings), 0)
    assaults = _assaults().drop(columns=["utm_x", "utm_y"]).to_csv(index=False).encode()
    batch = http.post(
        "/imports",
        files={"file": ("assaults.csv", assaults)},
        data={
            "columns": json.dumps({"source_id": "id", "longitude": "lon", "latitude": "lat"}),
            "constants": json.dumps({"category": "assault", "source": "hudson-pd"}),
        },
        headers=admin,
    )
    assert batch.status_code == 201, batch.text
    assert (batch.json()["inserted"], batch.json()["rejected"]) == (36, 0)
    assert any("constant 'assault'" in w for w in batch.json()["warnings"])


def _expected_counts() -> Counter:
    """(unit, category) → incidents of 2024 in local time, from the files' own values."""
    counts: Counter = Counter()
    for r in _shootings().itertuples():
        if r.OCCUR_DATE.startswith("2024"):
            counts[(_unit_of(r.utm_x, r.utm_y), "shooting")] += 1
    for r in _assaults().itertuples():
        if r.occurred_at.startswith("2024"):
            counts[(_unit_of(r.utm_x, r.utm_y), r.category or "assault")] += 1
    return counts


def _check(http: httpx.Client, admin: dict[str, str]) -> None:
    # The vocabulary is public, sensitive flag included (as /stats names them).
    vocabulary = http.get("/categories").json()
    assert vocabulary["version"] == 1
    assert {c["code"]: c["sensitive"] for c in vocabulary["categories"]} == {
        "assault": False, "sexual_violence": True, "shooting": False,
    }  # fmt: skip

    # /stats: exact counts for an admin, per unit and category, in the local year.
    params = {"level": 1, "by": "category", "period": "2024"}
    table = http.get("/stats", params=params, headers=admin)
    assert table.status_code == 200, table.text
    rows = table.json()["rows"]
    got = {(r["unit_code"], r["category"]): r["count"] for r in rows if r["count"]}
    expected = _expected_counts()
    assert got == dict(expected)
    assert sum(n for (_, c), n in expected.items() if c == "shooting") == 106  # not the 2023 one
    for r in rows:
        assert r["population"] == POPULATION[r["unit_code"]]
        assert r["rate"] == pytest.approx(r["count"] / POPULATION[r["unit_code"]] * 1e5)
    public = http.get("/stats", params=params)
    assert public.status_code == 200, public.text
    assert public.json()["parameters"]["sensitive_categories"] == ["sexual_violence"]
    assert all(
        r["suppressed"] and r["count"] is None
        for r in public.json()["rows"]
        if r["category"] == "sexual_violence"
    )

    # Gi* on 500 m squares of the territory's own projected CRS, every shooting.
    body = {
        "method": "gi_star",
        "units": {"type": "grid", "cell_size_m": CELL},
        "filters": {"categories": ["shooting"]},
    }
    run = http.post("/analyses/hotspots", json=body, headers=admin)
    assert run.status_code in (201, 202), run.text
    deadline = time.monotonic() + 300
    while (layer := http.get(run.headers["location"], headers=admin)).status_code == 202:
        assert time.monotonic() < deadline, "the analysis never finished"
        time.sleep(0.5)
    assert layer.status_code == 200, layer.text
    features = layer.json()["features"]
    counts = np.array([f["properties"]["count"] for f in features], dtype=float)
    assert counts.sum() == len(_shootings()) == 107
    polygons = shapely.from_geojson([json.dumps(f["geometry"]) for f in features])
    to_utm = Transformer.from_crs("EPSG:4326", UTM, always_xy=True)
    centroids = shapely.centroid(polygons)
    x, y = to_utm.transform(shapely.get_x(centroids), shapely.get_y(centroids))
    sides = np.sqrt(
        shapely.area(shapely.transform(polygons, lambda c: np.column_stack(to_utm.transform(*c.T))))
    )
    # Squares of the projected CRS (GeoJSON keeps 7 decimals: about a centimetre).
    assert_allclose(sides, CELL, rtol=1e-4)
    # Reference: esda's Gi* with binary queen neighbours (centroids up to 1.5 cells
    # apart on a square grid) and the cell itself, as ArcGIS Pro computes it.
    weights = libpysal.weights.DistanceBand(
        np.column_stack([x, y]), threshold=1.5 * CELL, binary=True, silence_warnings=True
    )
    reference = esda.G_Local(counts, weights, transform="B", star=True, permutations=0)
    z = np.array([f["properties"]["z"] for f in features], dtype=float)
    assert_allclose(z, reference.Zs, rtol=1e-9, atol=1e-9)
    hottest = features[int(np.argmax(z))]
    cluster_centre = shapely.Point(
        *Transformer.from_crs(UTM, "EPSG:4326", always_xy=True).transform(
            X0 + 1.5 * SIDE + 40, Y0 + SIDE / 2 + 60
        )
    )
    assert hottest["properties"]["bin"] == 3
    assert (
        shapely.distance(shapely.from_geojson(json.dumps(hottest["geometry"])), cluster_centre)
        < 0.01
    )
