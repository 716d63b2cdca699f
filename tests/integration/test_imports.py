"""Bulk imports: idempotency, every rejection reason, one transaction per batch, formats."""

from __future__ import annotations

import csv
import io
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import geopandas as gpd
import pandas as pd
import pytest
import shapely

from tests.conftest import auth
from tests.integration.helpers import import_csv, write_incident_csv

BAD_ROWS = {
    # source_id: (overrides, expected reason)
    "bad-cat": ({"category": "jaywalking"}, "unknown category 'jaywalking'"),
    "bad-date": ({"occurred_at": "31/31/2024"}, "occurred_at '31/31/2024' is not a date"),
    "future": ({"occurred_at": "2099-01-01"}, "occurred_at is in the future"),
    "no-date": ({"occurred_at": ""}, "missing occurred_at"),
    "bad-lon": ({"longitude": "east"}, "coordinates are not numbers"),
    "no-coords": ({"longitude": "", "latitude": ""}, "missing coordinates"),
    "range": ({"latitude": "97.5"}, "coordinates out of range"),
    "outside": ({"longitude": "-74.0", "latitude": "40.7"}, "outside the territory"),
    "bad-sex": ({"victim_sex": "robot"}, "victim_sex 'robot' is not female, male or unknown"),
    "bad-age": ({"victim_age": "230"}, "victim_age must be between 0 and 120"),
}


def _with_bad_rows(path, n_good: int, source: str):
    """A CSV of ``n_good`` valid rows with the BAD_ROWS spread through it."""
    write_incident_csv(path, n=n_good, source=source, seed=11)
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    template = frame.iloc[0].to_dict()
    bad = [{**template, "source_id": sid, **overrides} for sid, (overrides, _) in BAD_ROWS.items()]
    step = n_good // len(bad)
    parts = []
    for i, row in enumerate(bad):
        parts += [frame.iloc[i * step : (i + 1) * step], pd.DataFrame([row])]
    parts.append(frame.iloc[len(bad) * step :])
    pd.concat(parts).to_csv(path, index=False)
    return path


def test_thousand_rows_ten_bad_then_reimport_inserts_nothing(client, keys, tmp_path, db):
    path = _with_bad_rows(tmp_path / "thousand.csv", 990, "thousand")
    editor = keys["editor"]
    with path.open("rb") as fh:
        response = client.post(
            "/imports", files={"file": ("thousand.csv", fh, "text/csv")}, headers=auth(editor)
        )
    assert response.status_code == 201, response.text
    report = response.json()
    assert (report["received"], report["inserted"], report["rejected"]) == (1000, 990, 10)
    assert report["status"] == "completed"
    reasons = {r["source_id"]: r["reason"] for r in report["rejections"]}
    for sid, (_, reason) in BAD_ROWS.items():
        assert reason in reasons[sid], (sid, reasons[sid])
    # Rejected rows keep their original values.
    bad_cat = next(r for r in report["rejections"] if r["source_id"] == "bad-cat")
    assert bad_cat["raw"]["category"] == "jaywalking"
    assert (
        db.execute("SELECT count(*) FROM incident WHERE source = 'thousand'").fetchone()[0] == 990
    )

    # The detail and the CSV download list the same ten rows.
    detail = client.get(response.headers["location"], headers=auth(editor)).json()
    assert len(detail["rejections"]) == 10
    download = client.get(f"/imports/{report['id']}/rejections.csv", headers=auth(editor))
    assert download.status_code == 200 and download.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(download.text)))
    assert {r["source_id"] for r in rows} == set(BAD_ROWS)
    assert all(r["reason"] and r["row_number"] for r in rows)

    with path.open("rb") as fh:
        again = client.post(
            "/imports", files={"file": ("thousand.csv", fh, "text/csv")}, headers=auth(editor)
        ).json()
    assert (again["inserted"], again["updated"], again["unchanged"], again["rejected"]) == (
        0,
        0,
        990,
        10,
    )
    assert (
        db.execute("SELECT count(*) FROM incident WHERE source = 'thousand'").fetchone()[0] == 990
    )


def test_changed_rows_are_updated(settings, tmp_path, db):
    path = write_incident_csv(tmp_path / "v1.csv", n=50, source="changes", seed=5)
    assert import_csv(settings, path).inserted == 50
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    frame.loc[3, "category"] = "homicide"
    frame.loc[7, "victim_age"] = "77"
    frame.to_csv(path, index=False)
    report = import_csv(settings, path)
    assert (report.inserted, report.updated, report.unchanged) == (0, 2, 48)
    row = db.execute(
        "SELECT category FROM incident WHERE source = 'changes' AND source_id = %s",
        [frame.loc[3, "source_id"]],
    ).fetchone()
    assert row[0] == "homicide"


def test_duplicates_in_one_file_keep_the_first_valid_row(settings, tmp_path, db):
    path = write_incident_csv(tmp_path / "dups.csv", n=5, source="dups", seed=1)
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    invalid_first = {**frame.iloc[0].to_dict(), "source_id": "X", "category": "nope"}
    valid_second = {**frame.iloc[1].to_dict(), "source_id": "X"}
    repeat = {**frame.iloc[2].to_dict()}
    frame = pd.concat([frame, pd.DataFrame([invalid_first, valid_second, repeat])])
    frame.to_csv(path, index=False)
    report = import_csv(settings, path)
    assert (report.received, report.inserted, report.rejected) == (8, 6, 2)
    reasons = dict(
        db.execute(
            "SELECT row_number, reason FROM import_rejection WHERE batch_id = %s", [report.batch_id]
        ).fetchall()
    )
    assert reasons == {
        6: "unknown category 'nope'",
        8: "duplicate of row 3 (same source and source_id)",
    }


def test_column_mapping_crs_and_wkt(settings, tmp_path, db):
    """A foreign layout: Spanish headers, UTM 16N coordinates as WKT, semicolons, latin-1."""
    utm = gpd.GeoSeries([shapely.Point(-88.1962, 17.5046)], crs=4326).to_crs(32616).iloc[0]
    text = (
        "id;tipo;fecha;geometria;sexo;edad;barrio\n"
        f"A1;Homicide;2024-02-03 04:05;POINT ({utm.x:.2f} {utm.y:.2f});mujer;40;Caña\n"
    )
    path = tmp_path / "policia.csv"
    path.write_bytes(text.encode("latin-1"))
    options = dict(
        source="policia",
        columns={
            "source_id": "id",
            "category": "tipo",
            "occurred_at": "fecha",
            "wkt": "geometria",
            "victim_sex": "sexo",
            "victim_age": "edad",
        },
        crs="EPSG:32616",
        delimiter=";",
        encoding="latin-1",
    )
    report = import_csv(settings, path, **options)
    assert (report.inserted, report.rejected) == (1, 0)
    row = db.execute(
        "SELECT category, victim_sex, ST_X(geom), ST_Y(geom), attributes FROM incident "
        "WHERE source = 'policia'"
    ).fetchone()
    assert row[:2] == ("homicide", "female")
    assert row[2] == pytest.approx(-88.1962, abs=1e-6) and row[3] == pytest.approx(
        17.5046, abs=1e-6
    )
    assert row[4] == {"barrio": "Caña"}


def test_geojson_and_geopackage_imports(settings, tmp_path, db):
    frame = pd.read_csv(
        write_incident_csv(tmp_path / "src.csv", n=40, source="vector", seed=2), dtype=str
    )
    gdf = gpd.GeoDataFrame(
        frame.drop(columns=["longitude", "latitude"]),
        geometry=gpd.points_from_xy(frame.longitude.astype(float), frame.latitude.astype(float)),
        crs=4326,
    )
    gdf.to_file(tmp_path / "incidents.geojson", driver="GeoJSON")
    report = import_csv(settings, tmp_path / "incidents.geojson")
    assert (report.inserted, report.rejected) == (40, 0)
    # The same incidents as a GeoPackage in UTM: the file's own CRS is honoured, and
    # since nothing changed, nothing is written.
    gdf.to_crs(32616).to_file(tmp_path / "incidents.gpkg", driver="GPKG", layer="hechos")
    report = import_csv(settings, tmp_path / "incidents.gpkg")
    assert (report.inserted, report.updated, report.unchanged) == (0, 0, 40)


def test_malformed_files_are_422_and_change_nothing(client, keys, tmp_path, db):
    editor = keys["editor"]
    before = db.execute("SELECT count(*) FROM incident").fetchone()[0]
    cases = [
        ("broken.geojson", b'{"type": "FeatureCollection", "features": [', "cannot read"),
        ("latin.csv", "source,source_id,category\nx,1,Caña\n".encode("latin-1"), "not valid utf-8"),
        (
            "nocoords.csv",
            b"source,source_id,category,occurred_at\nx,1,theft,2024-01-01\n",
            "no coordinates",
        ),
        ("table.xlsx", b"PK\x03\x04", "unsupported file type"),
    ]
    for name, content, fragment in cases:
        response = client.post("/imports", files={"file": (name, content)}, headers=auth(editor))
        assert response.status_code == 422, (name, response.text)
        assert response.headers["content-type"] == "application/problem+json"
        assert fragment in response.json()["detail"], (name, response.json())
    assert db.execute("SELECT count(*) FROM incident").fetchone()[0] == before


def test_missing_source_is_a_clear_error(client, keys, tmp_path):
    content = b"source_id,category,occurred_at,longitude,latitude\n1,theft,2024-01-01,-88.19,17.5\n"
    response = client.post(
        "/imports", files={"file": ("x.csv", content)}, headers=auth(keys["editor"])
    )
    assert response.status_code == 422 and "source" in response.json()["detail"]
    ok = client.post(
        "/imports",
        files={"file": ("x.csv", content)},
        data={"source": "form-source"},
        headers=auth(keys["editor"]),
    )
    assert ok.status_code == 201 and ok.json()["inserted"] == 1


def _cli_env(settings) -> dict[str, str]:
    return {**os.environ, "OBSERVATORY_DATABASE_URL": settings.libpq_url}


@pytest.fixture
def removed_afterwards(db) -> Iterator[list[str]]:
    """Sources whose incidents are deleted once the test is done. This module's large
    batches (2 x 150,000 and 10,000 rows) left in the session's database slowed every
    later module that reads all incidents: a boundary upload in test_units reassigns
    every incident (39 s with them, 0.3 s without)."""
    sources: list[str] = []
    yield sources
    for source in sources:
        db.execute("DELETE FROM incident WHERE source = %s", [source])


def _wait_for(db, sql: str, process: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not db.execute(sql).fetchone()[0]:
        if process.poll() is not None:
            pytest.fail(f"the import ended too early:\n{process.communicate()[0].decode()}")
        assert time.monotonic() < deadline, f"timed out waiting for: {sql}"
        time.sleep(0.02)


@pytest.mark.parametrize("how", ["kill the importer", "terminate its database session"])
def test_a_batch_killed_midway_leaves_nothing_and_rerun_completes(
    base_data, settings, tmp_path, db, how, removed_afterwards
):
    source = "killed-" + how.split()[0]
    removed_afterwards.append(source)
    path = write_incident_csv(tmp_path / "big.csv", n=150_000, source=source, seed=9)
    command = [sys.executable, "-m", "app.cli", "import", "incidents", str(path)]
    process = subprocess.Popen(
        command, env=_cli_env(settings), stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    # Strike while the batch's rows are being written (COPY or upsert in progress).
    _wait_for(
        db,
        "SELECT count(*) > 0 FROM pg_stat_activity WHERE query ILIKE '%incident_staging%' "
        "AND state = 'active' AND pid <> pg_backend_pid()",
        process,
    )
    if how == "kill the importer":
        process.send_signal(signal.SIGKILL)
    else:
        db.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE query ILIKE '%incident_staging%' AND pid <> pg_backend_pid()"
        )
    output = process.communicate(timeout=120)[0].decode()
    assert process.returncode != 0, output
    assert (
        db.execute("SELECT count(*) FROM incident WHERE source = %s", [source]).fetchone()[0] == 0
    )
    batch = db.execute(
        "SELECT id, status, inserted FROM import_batch WHERE filename = 'big.csv' ORDER BY id DESC"
    ).fetchone()
    assert batch[2] == 0 and batch[1] in ("running", "failed")
    assert not db.execute(
        "SELECT count(*) FROM import_rejection WHERE batch_id = %s", [batch[0]]
    ).fetchone()[0]

    rerun = subprocess.run(command, env=_cli_env(settings), capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert (
        db.execute("SELECT count(*) FROM incident WHERE source = %s", [source]).fetchone()[0]
        == 150_000
    )


def test_chunks_keep_file_row_numbers_and_catch_repeats_across_chunks(
    base_data, settings, tmp_path, db, monkeypatch
):
    """Large files are written in chunks; what is rejected must not depend on where a
    chunk boundary falls."""
    import app.services.imports as imports

    monkeypatch.setattr(imports, "CHUNK_ROWS", 3)
    path = write_incident_csv(tmp_path / "chunks.csv", n=8, source="chunks", seed=4)
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    frame.loc[1, "category"] = "nope"  # row 2: invalid
    frame.loc[6, "source_id"] = frame.loc[0, "source_id"]  # row 7 repeats row 1 (chunk 1)
    frame.loc[4, "source_id"] = frame.loc[1, "source_id"]  # row 5 repeats invalid row 2
    frame.to_csv(path, index=False)
    report = import_csv(settings, path)
    assert (report.received, report.inserted, report.rejected) == (8, 6, 2)
    reasons = dict(
        db.execute(
            "SELECT row_number, reason FROM import_rejection WHERE batch_id = %s",
            [report.batch_id],
        ).fetchall()
    )
    assert reasons == {
        2: "unknown category 'nope'",
        7: "duplicate of row 1 (same source and source_id)",
    }


def test_constants_fill_columns_the_file_lacks(client, keys, db):
    """A file of shootings without category or source columns: the constants give every
    row both; a row with its own category keeps it, and the batch says so."""
    content = (
        b"source_id,occurred_at,longitude,latitude,category\n"
        b"k1,2024-03-01 10:00,-88.1962,17.5046,\n"
        b"k2,2024-03-02 11:00,-88.1970,17.5050,\n"
        b"k3,2024-03-03 12:00,-88.1980,17.5060,robbery\n"
    )
    response = client.post(
        "/imports",
        files={"file": ("shootings.csv", content)},
        data={"constants": '{"category": "shooting", "source": "constants-test"}'},
        headers=auth(keys["editor"]),
    )
    assert response.status_code == 201, response.text
    report = response.json()
    assert (report["inserted"], report["rejected"]) == (3, 0)
    assert report["options"]["constants"] == {"category": "shooting", "source": "constants-test"}
    assert any("category (constant 'shooting')" in w for w in report["warnings"])
    rows = db.execute(
        "SELECT source_id, category FROM incident WHERE source = 'constants-test' ORDER BY 1"
    ).fetchall()
    assert rows == [("k1", "shooting"), ("k2", "shooting"), ("k3", "robbery")]


def test_constants_in_rejected_rows_and_bad_constants(client, keys):
    """A constant is validated like a file value (an unknown category rejects every row
    it fills; the rejected row is reported as the file has it); a misspelt column name, a
    constant source_id and a source given twice are refused before anything is read."""
    content = b"source_id,occurred_at,longitude,latitude\nz1,2024-03-01 10:00,-88.1962,17.5046\n"
    editor = auth(keys["editor"])
    response = client.post(
        "/imports",
        files={"file": ("z.csv", content)},
        data={"constants": '{"category": "jaywalking", "source": "constants-bad"}'},
        headers=editor,
    )
    assert response.status_code == 201, response.text
    (rejection,) = response.json()["rejections"]
    assert rejection["reason"] == "unknown category 'jaywalking'"
    assert "category" not in rejection["raw"]
    for constants, fragment in (
        ('{"catgory": "shooting"}', "did you mean 'category'?"),
        ('{"source_id": "x"}', "source_id is each row's own key"),
        ('{"category": ""}', "must be non-empty text"),
        ('{"category": true}', "constants must be a JSON object"),
        ('["category"]', "constants must be a JSON object"),
    ):
        refused = client.post(
            "/imports",
            files={"file": ("z.csv", content)},
            data={"constants": constants, "source": "constants-bad"},
            headers=editor,
        )
        assert refused.status_code == 422, (constants, refused.text)
        assert refused.headers["content-type"] == "application/problem+json"
        assert fragment in refused.json()["detail"], (constants, refused.json())
    twice = client.post(
        "/imports",
        files={"file": ("z.csv", content)},
        data={"constants": '{"source": "a"}', "source": "b"},
        headers=editor,
    )
    assert twice.status_code == 422 and "differ" in twice.json()["detail"]


def test_cli_set_gives_constants(base_data, settings, tmp_path, db):
    path = tmp_path / "thefts.csv"
    path.write_text(
        "source_id,occurred_at,longitude,latitude\n"
        "c1,2024-05-01 10:00,-88.1962,17.5046\n"
        "c2,2024-05-01 11:00,-88.1963,17.5047\n"
    )
    command = [sys.executable, "-m", "app.cli", "import", "incidents", str(path)]
    sets = ["--set", "category=theft", "--set", "source=cli-constants"]
    done = subprocess.run([*command, *sets], env=_cli_env(settings), capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    rows = db.execute(
        "SELECT source_id, category FROM incident WHERE source = 'cli-constants' ORDER BY 1"
    ).fetchall()
    assert rows == [("c1", "theft"), ("c2", "theft")]
    typo = subprocess.run(
        [*command, "--set", "categroy=theft", "--source", "cli-constants"],
        env=_cli_env(settings),
        capture_output=True,
        text=True,
    )
    assert typo.returncode == 1 and "did you mean 'category'?" in typo.stdout


def test_a_large_batch_refreshes_the_planner_statistics(
    base_data, settings, tmp_path, db, removed_afterwards
):
    """After a batch of LARGE_BATCH_ROWS rows the incidents are analysed at once (the
    evaluation queued after an import would otherwise be planned without statistics) and
    the tile cells compacted; a small batch leaves that to autovacuum and the night."""
    from app.services.imports import LARGE_BATCH_ROWS

    def last_analyze():
        row = db.execute(
            "SELECT last_analyze FROM pg_stat_user_tables WHERE relname = 'incident'"
        ).fetchone()
        return row[0]

    removed_afterwards.append("stats-large")
    small = write_incident_csv(tmp_path / "small.csv", n=20, source="stats-small", seed=3)
    before = last_analyze()
    assert import_csv(settings, small).inserted == 20
    time.sleep(1.5)  # statistics reach other sessions within a second
    assert last_analyze() == before
    large = write_incident_csv(
        tmp_path / "large.csv", n=LARGE_BATCH_ROWS, source="stats-large", seed=4
    )
    assert import_csv(settings, large).inserted == LARGE_BATCH_ROWS
    deadline = time.monotonic() + 10
    while last_analyze() == before and time.monotonic() < deadline:
        time.sleep(0.2)
    assert last_analyze() is not None and last_analyze() != before
    # ... and the low-zoom tile cells are folded into one row a key (migration 0019).
    for table in ("incident_tile_cell", "incident_tile_month"):
        keys = "z, cx, cy, category" + (", month" if table.endswith("month") else "")
        repeated = db.execute(
            f"SELECT count(*) FROM (SELECT FROM {table} GROUP BY {keys} HAVING count(*) > 1) k"
        ).fetchone()[0]
        assert repeated == 0, table
