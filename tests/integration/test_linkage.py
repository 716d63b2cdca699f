"""Deaths from three agencies (issue 21), end to end on the real store and the session's
worker: the demo's SYNTHETIC death records imported losslessly through POST
/deaths/records, linked through POST /linkage/runs (splink in the worker), checked against
the generator's truth; linkers' decisions respected by the next run; identifiers never in
an analyst's answer; the planted disagreements listed; the quality scorecard equal to
hand-computed numbers on a small known import.
"""

from __future__ import annotations

import io
import itertools
import time

import geopandas as gpd
import pandas as pd
import psycopg
import pytest

from app import security
from app.demo.deaths import FILE_COLUMNS, generate_deaths
from app.demo.incidents import generate_incidents
from app.demo.load import DISTRICTS
from tests.conftest import auth

SEED = 11


@pytest.fixture(scope="module")
def linker(db_url: str) -> str:
    """A key with the linker role."""
    key, prefix, key_hash = security.new_key()
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO api_key (name, prefix, hash, role) VALUES (%s, %s, %s, 'linker')",
            ["test-linker", prefix, key_hash],
        )
    return key


@pytest.fixture(scope="module")
def truth() -> pd.DataFrame:
    """The generator's records with the truth (true_death_id, true_manner)."""
    districts = gpd.read_file(DISTRICTS).rename(columns={"iso_3166_2": "code", "district": "name"})
    incidents = generate_incidents(districts, n=20_000, seed=SEED)
    return generate_deaths(incidents, districts, seed=SEED)


def _csv(frame: pd.DataFrame) -> bytes:
    out = io.StringIO()
    frame.to_csv(out, index=False)
    return out.getvalue().encode()


def _import(client, key: str, name: str, data: bytes, **form):
    return client.post(
        "/deaths/records",
        files={"file": (name, data, "text/csv")},
        data=form,
        headers=auth(key),
    )


def _run(client, key: str, body: dict | None = None) -> dict:
    response = client.post("/linkage/runs", json=body or {}, headers=auth(key))
    assert response.status_code in (201, 202), response.text
    run = response.json()
    deadline = time.monotonic() + 180
    while run["status"] == "running":
        assert time.monotonic() < deadline, "the linkage run did not end"
        time.sleep(0.5)
        run = client.get(f"/linkage/runs/{run['id']}", headers=auth(key)).json()
    assert run["status"] == "completed", run
    return run


def _clusters(db_url: str, run_id: int) -> pd.DataFrame:
    with psycopg.connect(db_url) as conn:
        rows = conn.execute(
            "SELECT d.id, d.source, d.source_id, c.cluster_id FROM linkage_cluster c "
            "JOIN death_record d ON d.id = c.record_id WHERE c.run_id = %s",
            [run_id],
        ).fetchall()
    return pd.DataFrame(rows, columns=["id", "source", "source_id", "cluster_id"])


def _pairs_of(groups) -> set[tuple[str, str]]:
    out: set[tuple[str, str]] = set()
    for members in groups:
        out |= set(itertools.combinations(sorted(members), 2))
    return out


@pytest.fixture(scope="module")
def imported(client, keys, linker, truth) -> dict:
    """The three agencies' files imported (the police's with one bad row), then linked."""
    reports = {}
    for source, part in truth.groupby("source"):
        frame = part[list(FILE_COLUMNS)].copy()
        if source == "police":
            bad = frame.iloc[[0]].assign(
                source_id="SYNTHETIC-POL-BAD",
                death_date="2024-02-30",
                manner="Misadventure",
                iccs="",
            )
            frame = pd.concat([frame, bad], ignore_index=True)
        response = _import(client, linker, f"{source}.csv", _csv(frame))
        assert response.status_code == 201, response.text
        reports[source] = (len(frame), response.json())
    run = _run(client, linker)
    return {"reports": reports, "run": run}


def test_import_is_lossless_and_says_what_it_rejected(client, keys, linker, imported, truth):
    for source, (rows, report) in imported["reports"].items():
        assert report["kind"] == "deaths"
        assert report["received"] == rows
        expected_bad = 1 if source == "police" else 0
        assert report["rejected"] == expected_bad
        assert report["inserted"] == rows - expected_bad
    police = imported["reports"]["police"][1]
    (rejection,) = police["rejections"]
    assert rejection["source_id"] == "SYNTHETIC-POL-BAD"
    assert "death_date '2024-02-30' is not a date" in rejection["reason"]
    assert "manner 'Misadventure' is not a known coding" in rejection["reason"]
    # The rejected row holds a name: linker and admin only, never an editor.
    batch = police["id"]
    assert client.get(f"/imports/{batch}", headers=auth(keys["editor"])).status_code == 403
    assert client.get(f"/imports/{batch}", headers=auth(linker)).status_code == 200
    csv = client.get(f"/imports/{batch}/rejections.csv", headers=auth(keys["admin"]))
    assert csv.status_code == 200 and "SYNTHETIC-POL-BAD" in csv.text
    # Importing again changes nothing.
    source, part = next(iter(truth.groupby("source")))
    again = _import(client, linker, f"{source}.csv", _csv(part[list(FILE_COLUMNS)]))
    assert again.json()["inserted"] == 0 and again.json()["unchanged"] == len(part)
    # A file that names no agency is refused before anything is stored.
    nameless = _import(client, linker, "x.csv", b"source_id,death_date\nA,2024-01-01\n")
    assert nameless.status_code == 422 and "no 'source' column" in nameless.json()["detail"]
    # Analysts and editors may not import death records.
    for role in ("analyst", "editor"):
        refused = _import(client, keys[role], "x.csv", b"source,source_id\n")
        assert refused.status_code == 403, refused.text


def test_linkage_finds_the_true_deaths(client, keys, imported, truth, db_url):
    run = imported["run"]
    assert run["counts"]["records"] == len(truth)
    comparisons = run["parameters"]["model"]["comparisons"]
    assert comparisons and all(
        0 <= level["m_probability"] <= 1
        for c in comparisons
        for level in c["levels"]
        if level.get("m_probability") is not None
    )
    clusters = _clusters(db_url, run["id"]).merge(
        truth[["source", "source_id", "true_death_id"]], on=["source", "source_id"]
    )
    assert len(clusters) == len(truth)
    found = _pairs_of(clusters.groupby("cluster_id")["source_id"].agg(list))
    real = _pairs_of(clusters.groupby("true_death_id")["source_id"].agg(list))
    true_positive = len(found & real)
    precision, recall = true_positive / len(found), true_positive / len(real)
    assert precision >= 0.95, precision
    assert recall >= 0.95, recall


def _decide(client, linker: str, pair_id: int, decision: str) -> None:
    response = client.post(
        f"/linkage/pairs/{pair_id}/decision",
        json={"decision": decision, "note": "reviewed in test"},
        headers=auth(linker),
    )
    assert response.status_code == 201, response.text
    assert response.json()["decision"] == decision


def _cluster_of(db_url: str, run_id: int) -> dict[int, int]:
    frame = _clusters(db_url, run_id)
    return dict(zip(frame["id"], frame["cluster_id"], strict=True))


def test_decisions_are_respected_by_the_next_run(client, linker, imported, truth, db_url):
    run = imported["run"]
    before = _cluster_of(db_url, run["id"])
    ids = _clusters(db_url, run["id"]).merge(
        truth[["source", "source_id", "true_death_id"]], on=["source", "source_id"]
    )
    death_of = dict(zip(ids["id"], ids["true_death_id"], strict=True))
    # A linker reviews five uncertain pairs (their truth decides) and rejects one link of
    # a three-agency cluster.
    page = client.get(
        "/linkage/pairs", params={"band": "uncertain", "run": run["id"]}, headers=auth(linker)
    ).json()
    decided = {}
    for pair in page["pairs"][:5]:
        left, right = pair["record_l"]["id"], pair["record_r"]["id"]
        decision = "accept" if death_of[left] == death_of[right] else "reject"
        decided[(left, right)] = decision
    matches = client.get(
        "/linkage/pairs", params={"band": "match", "limit": 1000}, headers=auth(linker)
    ).json()["pairs"]
    sizes = pd.Series(before).value_counts()
    split = next(p for p in matches if sizes[before[p["record_l"]["id"]]] == 3)
    decided[(split["record_l"]["id"], split["record_r"]["id"])] = "reject"
    pair_ids = {
        (p["record_l"]["id"], p["record_r"]["id"]): p["id"] for p in [*page["pairs"], split]
    }
    assert len(decided) >= 4, "too few uncertain pairs to review"
    for (left, right), decision in decided.items():
        _decide(client, linker, pair_ids[(left, right)], decision)
    again = _run(client, linker)
    after = _cluster_of(db_url, again["id"])
    for (left, right), decision in decided.items():
        together = after[left] == after[right]
        assert together == (decision == "accept"), (left, right, decision)
    left, right = split["record_l"]["id"], split["record_r"]["id"]
    assert before[left] == before[right] and after[left] != after[right]
    # The linker changes their mind: the latest decision counts, and the accept joins
    # the two records again.
    _decide(client, linker, split["id"], "accept")
    third = _cluster_of(db_url, _run(client, linker)["id"])
    assert third[left] == third[right]
    decided[(left, right)] = "accept"
    # The review list shows the latest decision on each pair.
    listed = client.get("/linkage/pairs", params={"limit": 1000}, headers=auth(linker)).json()[
        "pairs"
    ]
    seen = {(p["record_l"]["id"], p["record_r"]["id"]): p["decision"] for p in listed}
    for key, decision in decided.items():
        if key in seen:
            assert seen[key] == decision


def test_identifiers_never_reach_an_analyst(client, keys, linker, imported, truth):
    named = truth[truth["given_name"] != ""].head(30)
    secrets = [*named["family_name"], *named["source_id"]]
    run_id = imported["run"]["id"]
    urls = [
        ("/deaths", {"period": "2024"}),
        ("/deaths", {"period": "2024", "format": "csv"}),
        ("/deaths", {}),
        ("/deaths/discrepancies", {"period": "2024"}),
        ("/deaths/discrepancies", {}),
        ("/deaths/discrepancies", {"format": "csv"}),
        ("/deaths/summary", {"period": "2024"}),
        ("/quality", {"period": "2024"}),
        ("/quality", {"period": "2024Q3", "f": "csv"}),
        (f"/linkage/runs/{run_id}", {}),
        ("/analyses", {}),
        (f"/analyses/{run_id}", {"format": "run"}),
    ]
    for role in ("analyst", "editor"):
        for url, params in urls:
            response = client.get(url, params=params, headers=auth(keys[role]))
            assert response.status_code == 200, (url, response.text[:300])
            for secret in secrets:
                assert secret not in response.text, (role, url, secret)
        batch = imported["reports"]["police"][1]["id"]
        for url in ("/linkage/pairs", f"/imports/{batch}", f"/imports/{batch}/rejections.csv"):
            assert client.get(url, headers=auth(keys[role])).status_code == 403, (role, url)
    # The check can fail: the linker's review list holds the names.
    pairs = client.get("/linkage/pairs", params={"limit": 1000}, headers=auth(linker)).text
    assert any(name in pairs for name in named["family_name"])
    for role in (None, "viewer"):
        for url, params in urls[:9]:
            key = keys[role] if role else None
            assert client.get(url, params=params, headers=auth(key)).status_code in (401, 403)


def test_discrepancies_list_the_planted_police_homicides(client, keys, imported, truth, db_url):
    run_id = imported["run"]["id"]
    police = truth[(truth["source"] == "police") & (truth["manner"] == "Murder")]
    forensic = truth[(truth["source"] == "forensic") & (truth["manner"] == "Undetermined")]
    planted = set(police["true_death_id"]) & set(
        forensic.loc[forensic["true_manner"] == "homicide", "true_death_id"]
    )
    assert len(planted) >= 5
    clusters = _clusters(db_url, run_id).merge(
        truth[["source", "source_id", "true_death_id"]], on=["source", "source_id"]
    )
    expected = set()
    for death in planted:
        rows = clusters[clusters["true_death_id"] == death]
        if rows["cluster_id"].nunique() == 1:  # police and forensic records linked
            expected.add(int(rows["cluster_id"].iloc[0]))
    assert len(expected) >= 0.9 * len(planted)
    answer = client.get("/deaths/discrepancies", headers=auth(keys["analyst"])).json()
    lines = {line["cluster_id"]: line for line in answer["manner_differs"]}
    assert expected <= set(lines)
    for cluster in expected:
        line = lines[cluster]
        assert line["manner_police"] == "homicide"
        assert line["manner_forensic"] == "undetermined"
        assert line["manner"] == "undetermined" and line["manner_from"] == "forensic"
        own = {c["source"]: c["manner_raw"] for c in line["codings"]}
        assert own["police"] == "Murder" and own["forensic"] == "Undetermined"
        assert all(c["source_id"] is None for c in line["codings"])
    assert set(answer["single_source"]) <= {"police", "forensic", "health"}
    # The register pages, in date order, and holds every death of the summary.
    register = client.get("/deaths", headers=auth(keys["analyst"])).json()
    page = client.get(
        "/deaths", params={"limit": 10, "offset": 5}, headers=auth(keys["analyst"])
    ).json()
    assert page["numberMatched"] == register["numberMatched"] == len(register["deaths"])
    assert page["deaths"] == register["deaths"][5:15]
    dates = [d["death_date"] for d in register["deaths"]]
    assert dates == sorted(dates)
    # The summary adds up.
    summary = client.get("/deaths/summary", headers=auth(keys["analyst"])).json()
    assert sum(summary["found_by"].values()) == summary["deaths"]
    assert sum(summary["by_manner"].values()) == summary["deaths"]
    latest = client.get(f"/linkage/runs/{summary['run_id']}", headers=auth(keys["analyst"]))
    assert summary["deaths"] == latest.json()["stored"]["deaths"]
    assert summary["deaths"] == register["numberMatched"]
    estimate = summary["estimate"]
    assert estimate["observed"] == summary["deaths"]
    assert estimate["lower"] <= estimate["total"] <= estimate["upper"]
    assert estimate["total"] >= summary["deaths"] and estimate["model"]


QUALITY_POLICE = """\
source,source_id,given_name,family_name,sex,age,death_date,registered_at,\
longitude,latitude,location_precision,unit_code,manner,iccs
police,Q-P1,Zebulon,Quixwell,male,30,2019-07-10,2019-07-10,-88.1962,17.5046,exact,,Murder,0101
police,Q-P2,Yolanda,Brimstoke,female,,2019-08-01,2019-08-03,-88.1970,17.5050,street,,Suicide,
police,Q-P3,,,,45,2019-09-15,2019-09-25,,,,BZ-CY,Undetermined,
police,Q-P4,Xavier,Plumtree,male,60,2019-09-20,,,,,,,
"""
QUALITY_HEALTH = """\
source,source_id,given_name,family_name,sex,age,birth_date,death_date,registered_at,\
unit_code,icd10
health,Q-H1,Zebulon,Quixwell,male,30,1989-03-01,2019-07-10,2019-08-09,BZ-BZ,X95
health,Q-H2,Yolanda,Brimstoke,female,41,,2019-08-01,2019-09-30,BZ-BZ,X70
"""


def test_quality_equals_hand_computed_scores(client, keys, linker, imported):
    for name, text in (("q-police.csv", QUALITY_POLICE), ("q-health.csv", QUALITY_HEALTH)):
        response = _import(client, linker, name, text.encode())
        assert response.status_code == 201 and response.json()["rejected"] == 0, response.text
    run = _run(client, linker)
    answer = client.get("/quality", params={"period": "2019Q3"}, headers=auth(keys["analyst"]))
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["period"] == "2019-Q3" and body["run_id"] == run["id"]
    scores = {s["source"]: s for s in body["sources"]}
    police, health, forensic = scores["police"], scores["health"], scores["forensic"]
    assert police["records"] == 4 and health["records"] == 2 and forensic["records"] == 0
    assert police["completeness"] == {
        "given_name": 0.75, "family_name": 0.75, "person_key": 0.0, "sex": 0.75, "age": 0.75,
        "birth_date": 0.0, "death_date": 1.0, "registered_at": 0.75, "place": 0.75,
        "manner": 0.75, "icd10": 0.0, "iccs": 0.25,
    }  # fmt: skip
    assert police["georeferenced"] == 0.5
    assert police["precision"] == {"exact": 1, "street": 1}
    assert police["unit_known"] == 0.75  # two points in Belize District, one unit given
    # Delays 0, 2 and 10 days: median 2, 90th percentile 2 + 0.8 x 8 = 8.4 (linear).
    assert police["timeliness"] == {
        "records_with_both_dates": 3.0, "median_days": 2.0, "p90_days": pytest.approx(8.4),
        "within_30_days": 1.0,
    }  # fmt: skip
    # Q-P1 and Q-P2 are linked to the health registry's records, with the same manner.
    assert police["coherence"] == {"linked": 0.5, "same_manner": 1.0}
    assert health["completeness"]["birth_date"] == 0.5
    assert health["completeness"]["icd10"] == 1.0 and health["completeness"]["manner"] == 1.0
    assert health["georeferenced"] == 0.0 and health["unit_known"] == 1.0
    # Delays 30 and 60 days: median 45, 90th percentile 30 + 0.9 x 30 = 57.
    assert health["timeliness"] == {
        "records_with_both_dates": 2.0, "median_days": 45.0, "p90_days": pytest.approx(57.0),
        "within_30_days": 0.5,
    }  # fmt: skip
    assert health["coherence"] == {"linked": 1.0, "same_manner": 1.0}
    assert forensic["completeness"]["death_date"] is None
    assert "Bogotá Protocol" in body["criteria"]["coherence"]
    csv = client.get(
        "/quality", params={"period": "2019-Q3", "format": "csv"}, headers=auth(keys["analyst"])
    )
    assert csv.status_code == 200 and "text/csv" in csv.headers["content-type"]
    assert "police,timeliness,median_days,2" in csv.text.replace("\r", "")
    refused = client.get("/quality", params={"period": "2019-Q5"}, headers=auth(keys["analyst"]))
    assert refused.status_code == 422
    chart = client.get(
        "/quality/chart.svg", params={"period": "2019-Q3"}, headers=auth(keys["analyst"])
    )
    assert chart.status_code == 200 and chart.headers["content-type"] == "image/svg+xml"
    svg = chart.text
    assert svg.startswith("<svg") and "police: 4 records, 2019-Q3" in svg
    assert "health: 2 records, 2019-Q3" in svg and "forensic: 0 records" in svg
    assert "75 %" in svg and "Quixwell" not in svg  # police completeness; never a name
    one = client.get(
        "/quality/chart.svg",
        params={"period": "2019-Q3", "source": "health"},
        headers=auth(keys["analyst"]),
    )
    assert "health: 2 records" in one.text and "police:" not in one.text
    assert client.get("/quality/chart.svg", params={"period": "2019-Q3"}).status_code == 401


def test_observatory_imports_deaths_and_links_them(client, keys, settings, imported, tmp_path):
    import json
    import os
    import re
    import subprocess
    import sys

    env = {**os.environ, "OBSERVATORY_DATABASE_URL": settings.libpq_url, "COLUMNS": "200"}
    path = tmp_path / "forensic-2017.csv"
    path.write_text(
        "case_no,fecha,nombre,apellido,manner\n"
        "F-2017-1,2017-04-02,Ulrich,Zamfir,Homicide\n"
        "F-2017-2,2017-04-31,Ulla,Zamfir,Homicide\n"
    )
    mapping = ["source_id=case_no", "death_date=fecha", "given_name=nombre"]
    args = [str(path), "--source", "forensic", "--map", "family_name=apellido"]
    for pair in mapping:
        args += ["--map", pair]
    done = subprocess.run(
        [sys.executable, "-m", "app.cli", "import", "deaths", *args],
        env=env, capture_output=True, text=True,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(done.stdout[: done.stdout.rindex("}") + 1])
    assert (report["received"], report["inserted"], report["rejected"]) == (2, 1, 1)
    assert "rejections.csv" in done.stdout
    done = subprocess.run(
        [sys.executable, "-m", "app.cli", "link"], env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout + done.stderr
    found = re.search(r"linkage run (\d+): (\d+) records", done.stdout)
    assert found, done.stdout
    run = client.get(f"/linkage/runs/{found[1]}", headers=auth(keys["analyst"])).json()
    assert run["status"] == "completed" and run["created_by"] == "cli"
    assert run["counts"]["records"] == int(found[2]) >= len(imported["reports"]) * 300


def test_names_are_hashed_with_the_installation_secret(settings, imported, db_url):
    """With linkage.hash_names the names never reach the store in clear (rejected rows
    included); the run hashes the clear names of other imports with the same secret, so
    hashed and clear records still link."""
    from pydantic import SecretStr

    from app.core.settings import LinkageSettings
    from app.schemas.linkage import LinkageRunRequest
    from app.services.death_imports import import_death_frame
    from app.services.death_rows import hash_name
    from app.services.incident_rows import ReadOptions
    from app.services.linkage import link_here
    from tests.conftest import call_service

    secret = "a-secret-of-this-installation"
    hashed = settings.model_copy(
        update={"linkage": LinkageSettings(hash_names=True, secret=SecretStr(secret))}
    )
    frame = pd.DataFrame(
        {
            "source": ["police", "health", "police"],
            "source_id": ["HASH-P1", "HASH-H1", "HASH-P2"],
            "given_name": ["Ñandú", "Nandu", "Quillon"],
            "family_name": ["Quetzalcoatl Brimble", "Quetzalcoatl  Brimble", "Vexmoor"],
            "sex": ["male", "male", "male"],
            "age": ["33", "33", "40"],
            "death_date": ["2018-05-05", "2018-05-05", "2018-13-01"],
            "unit_code": ["BZ-OW", "BZ-OW", ""],
            "manner": ["Murder", "", ""],
            "icd10": ["", "X95", ""],
        }
    )
    report = call_service(
        hashed,
        lambda e: import_death_frame(
            e, hashed, frame, ReadOptions(), actor="tests", filename="hashed.csv"
        ),
    )
    assert (report.inserted, report.rejected) == (2, 1)
    with psycopg.connect(db_url) as conn:
        stored = conn.execute(
            "SELECT given_name, family_name, names_hashed FROM death_record "
            "WHERE source_id LIKE 'HASH-%' ORDER BY source_id"
        ).fetchall()
        rejected = conn.execute(
            "SELECT raw::text FROM import_rejection WHERE batch_id = %s", [report.batch_id]
        ).fetchone()[0]
    token = hash_name("Nandu", secret.encode())
    assert stored == [
        (token, hash_name("quetzalcoatl brimble", secret.encode()), True),
        (token, hash_name("Quetzalcoatl Brimble", secret.encode()), True),
    ]
    assert len(token) == 64 and "Quetzalcoatl" not in str(stored)
    assert "Vexmoor" not in rejected and hash_name("Vexmoor", secret.encode()) in rejected
    try:
        run_id = call_service(hashed, lambda e: link_here(e, hashed, LinkageRunRequest(), "tests"))
        with psycopg.connect(db_url) as conn:
            clusters = conn.execute(
                "SELECT count(DISTINCT c.cluster_id) FROM linkage_cluster c "
                "JOIN death_record d ON d.id = c.record_id "
                "WHERE c.run_id = %s AND d.source_id IN ('HASH-P1', 'HASH-H1')",
                [run_id],
            ).fetchone()[0]
        assert clusters == 1
    finally:  # later runs of the session's worker have no secret: take them out again
        with psycopg.connect(db_url, autocommit=True) as conn:
            conn.execute("DELETE FROM death_record WHERE source_id LIKE 'HASH-%'")


def test_the_linker_role_is_an_analyst_who_reads_identifiers(client, keys, linker):
    """A linker reads what an analyst reads, and is no editor; below it and beside it
    (editor), nobody reviews pairs; an admin does everything."""
    assert client.get("/incidents", params={"limit": 1}, headers=auth(linker)).status_code == 200
    assert client.get("/analyses", headers=auth(linker)).status_code == 200
    assert client.get("/imports", headers=auth(linker)).status_code == 403
    assert client.get("/keys", headers=auth(linker)).status_code == 403
    refused = client.post("/incidents", json={}, headers=auth(linker))
    assert refused.status_code == 403, refused.text
    for role in ("viewer", "analyst", "editor"):
        response = client.get("/linkage/pairs", headers=auth(keys[role]))
        assert response.status_code == 403
        assert "linker role (or admin)" in response.json()["detail"]
        assert client.post("/linkage/runs", json={}, headers=auth(keys[role])).status_code == 403
    assert client.get("/linkage/pairs", headers=auth(keys["admin"])).status_code in (200, 404)
    anonymous = client.get("/linkage/pairs")
    assert anonymous.status_code == 401 and "linker role (or admin)" in anonymous.json()["detail"]
