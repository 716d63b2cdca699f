"""Public rankings bound nothing that is withheld (issue 13, point 4).

Below the analyst role the contributions of indicators counted from sensitive categories are
withheld. Contributions are non-negative and add up to the score, so any contribution shown
beside them bounds the withheld ones: the score minus the listed ones is an upper bound on
their sum, and an exact 0 when the listed ones already add up to the score (in 2024 the
public ranking showed that violence against women contributed exactly 0 in Corozal). A
public ranking of an index with a withheld indicator therefore shows no contribution value
at all, in JSON, CSV and XLSX: the released indicators are named, largest first, without
values. An index without a sensitive indicator keeps its values, and analysts see every one.

The data: synthetic incidents under this module's own source, the demo census, the shipped
definitions and one index of non-sensitive indicators defined here. Other modules' incidents
share the database, so the checks are invariants, not exact values.
"""

from __future__ import annotations

import csv
import io
import json
import re
import time

import geopandas as gpd
import pytest
from fastapi.testclient import TestClient
from openpyxl import load_workbook

from app.demo.incidents import generate_incidents
from app.main import create_app
from app.routers.rankings import PUBLISHER
from app.security import PUBLIC, Principal
from app.services.imports import import_frame
from app.services.incident_rows import ReadOptions
from app.services.indexes import load_default_definitions
from app.services.rankings import compute_ranking
from app.services.tables import load_demo_population
from tests.conftest import BELIZE, auth, call_service

SOURCE = "public-rankings"
PERIOD = "2024"
SENSITIVE = {"domestic_violence", "sexual_violence", "suicide"}
WITH_WITHHELD = ("territorial-violence", "violence-against-women")
OPEN_INDEX = "public-rankings-open"
ROLES_BELOW_ANALYST = ("none", "viewer")
FORMATS = ("json", "csv", "xlsx")
# An index of non-sensitive indicators only: nothing is withheld, values stay public.
OPEN_DEFINITION = {
    "name": OPEN_INDEX,
    "title": "Robbery and theft (public rankings test)",
    "unit_level": 1,
    "period": "year",
    "indicators": [
        {
            "code": "robbery_rate",
            "name": "Robberies per 100,000",
            "source": {"incidents": {"categories": ["robbery"], "measure": "rate"}},
        },
        {
            "code": "theft_rate",
            "name": "Thefts per 100,000",
            "source": {"incidents": {"categories": ["theft"], "measure": "rate"}},
        },
    ],
}


@pytest.fixture(scope="module")
def world(base_data, client, keys):
    """6,000 synthetic incidents in 2023-2024 under this module's source (sensitive
    categories among them), the demo census, the shipped definitions and the open index."""
    call_service(base_data, lambda e: load_demo_population(e, actor="tests"))
    call_service(base_data, lambda e: load_default_definitions(e, actor="tests"))
    districts = gpd.read_file(BELIZE / "boundaries" / "belize_adm1_districts.geojson").rename(
        columns={"iso_3166_2": "code", "district": "name"}
    )
    frame = generate_incidents(districts, n=6_000, years=2, end_year=2024, seed=131)
    assert SENSITIVE & set(frame["category"])
    frame = frame.assign(source=SOURCE).astype(object).where(frame.notna(), "").astype(str)
    frame = frame.replace({"nan": "", "<NA>": "", "None": ""})
    report = call_service(
        base_data,
        lambda e: import_frame(
            e, base_data, frame, ReadOptions(), actor="tests", filename="pr.csv", fmt="csv"
        ),
    )
    assert report.inserted == 6_000
    posted = client.post(
        "/indexes",
        content=json.dumps(OPEN_DEFINITION),
        headers={**auth(keys["admin"]), "Content-Type": "application/json"},
    )
    assert posted.status_code == 201, posted.text
    return base_data


def _key(keys, role):
    return None if role == "none" else keys[role]


def _withheld(client, code: str) -> set[str]:
    """The indicators a public ranking must not give a value for: counted from a sensitive
    category, or a share of all incidents (whose denominator counts the sensitive ones)."""
    definition = client.get(f"/indexes/{code}").json()["definition"]
    out = set()
    for i in definition["indicators"]:
        source = i["source"].get("incidents") or {}
        if set(source.get("categories") or ()) & SENSITIVE or source.get("measure") == "share":
            out.add(i["code"])
    return out


def _get(client, key, code: str, fmt: str = "json", **params):
    response = client.get(
        "/rankings",
        params={"index": code, "period": PERIOD, "format": fmt, **params},
        headers=auth(key),
    )
    assert response.status_code == 200, (code, fmt, response.text[:300])
    return response


def _rows(client, key, code: str, fmt: str) -> list[dict]:
    """Each unit as {unit_code, score, top: [(name, contribution or None)]}, in any format."""
    response = _get(client, key, code, fmt)
    if fmt == "json":
        return [
            {
                "unit_code": r["unit_code"],
                "score": r["score"],
                "top": [(t["name"], t["contribution"]) for t in r["top_indicators"]],
            }
            for r in response.json()["rows"]
        ]
    if fmt == "csv":
        lines = list(csv.DictReader(io.StringIO(response.text)))
        cell = lambda v: None if v == "" else float(v)  # noqa: E731
    else:
        sheet = list(load_workbook(io.BytesIO(response.content)).worksheets[0].values)
        lines = [dict(zip(sheet[0], values, strict=True)) for values in sheet[1:]]
        cell = lambda v: None if v is None or v == "" else float(v)  # noqa: E731
    out = []
    for line in lines:
        top, n = [], 1
        while f"top{n}_indicator" in line:
            name = line[f"top{n}_indicator"]
            value = line[f"top{n}_contribution"]
            if name not in (None, ""):
                top.append((name, cell(value)))
            else:
                assert value in (None, ""), f"a contribution without an indicator: {line}"
            n += 1
        out.append({"unit_code": line["unit_code"], "score": float(line["score"]), "top": top})
    return out


def _attack(score: float, listed: list[float | None]) -> tuple[float, float]:
    """The tightest interval an attacker gets for the withheld contributions' sum from one
    row: contributions are non-negative and add up to the score, so the sum lies in
    [0, score - the listed values] (the unlisted released ones can be 0)."""
    known = sum(v for v in listed if v is not None)
    return 0.0, score - known


def _results(client, keys, code: str) -> dict[str, dict]:
    response = client.get(
        f"/indexes/{code}/results", params={"period": PERIOD}, headers=auth(keys["analyst"])
    )
    assert response.status_code == 200, response.text
    return {r["unit_code"]: r for r in response.json()["rows"]}


# --- an index with a withheld indicator ---------------------------------------------


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("role", ROLES_BELOW_ANALYST)
@pytest.mark.parametrize("code", WITH_WITHHELD)
def test_no_contribution_value_of_an_index_with_a_withheld_indicator(
    client, keys, world, code, role, fmt
):
    withheld = _withheld(client, code)
    assert withheld
    definition = client.get(f"/indexes/{code}").json()["definition"]
    names = {i["code"]: i["name"] for i in definition["indicators"]}
    withheld_names = {names[c] for c in withheld}
    rows = _rows(client, _key(keys, role), code, fmt)
    assert len(rows) == 6
    shown = [(r["unit_code"], n, v) for r in rows for n, v in r["top"] if v is not None]
    assert not shown, f"{code} {fmt} [{role}] shows contributions: {shown[:6]}"
    named = [(r["unit_code"], n) for r in rows for n, _ in r["top"] if n in withheld_names]
    assert not named, f"{code} {fmt} [{role}] names withheld indicators: {named[:6]}"


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("role", ROLES_BELOW_ANALYST)
def test_the_sum_and_bound_attack_gives_nothing_tighter_than_the_score(
    client, keys, world, role, fmt
):
    for code in WITH_WITHHELD:
        for r in _rows(client, _key(keys, role), code, fmt):
            low, high = _attack(r["score"], [v for _, v in r["top"]])
            assert (low, high) == (0.0, r["score"]), (code, fmt, role, r)


def test_the_attack_pins_withheld_contributions_when_values_are_listed(client, keys, world):
    """The attack works: on the analyst's values of the released indicators (what the old
    public view listed) it bounds the withheld contributions tighter than [0, score] in
    some unit, and pins them exactly where the released ones add up to the score."""
    code = "territorial-violence"
    withheld = _withheld(client, code)
    tighter = 0
    for unit, r in _results(client, keys, code).items():
        released = [v for c, v in r["contributions"].items() if c not in withheld]
        low, high = _attack(r["score"], released)
        true = sum(v for c, v in r["contributions"].items() if c in withheld)
        assert low - 1e-9 <= true <= high + 1e-9, unit
        assert high == pytest.approx(true, abs=1e-9), unit  # every released one listed
        tighter += high < r["score"] - 1e-9
    assert tighter > 0


@pytest.mark.parametrize("role", ROLES_BELOW_ANALYST)
def test_released_indicators_named_in_order_of_contribution(client, keys, world, role):
    """The names follow the analyst's order of the released contributions (an order the
    released indicators alone decide), up to 3; the note says what is shown and why."""
    for code in WITH_WITHHELD:
        withheld = _withheld(client, code)
        results = _results(client, keys, code)
        public = _get(client, _key(keys, role), code).json()
        for row in public["rows"]:
            contributions = results[row["unit_code"]]["contributions"]
            # Released ones above 0: a 0 (lowest unit on the indicator) is never listed.
            released = [(c, v) for c, v in contributions.items() if c not in withheld and v > 0]
            expected = [c for c, _ in sorted(released, key=lambda item: -item[1])][:3]
            assert [t["code"] for t in row["top_indicators"]] == expected
            assert all(t["contribution"] is None for t in row["top_indicators"])
        note = next(n for n in public["notes"] if n.startswith("Public view:"))
        assert "withheld" in note and "none is shown" in note
        for c in withheld:
            assert c in note


@pytest.mark.parametrize("role", ROLES_BELOW_ANALYST)
def test_public_notes_say_nothing_computed_from_a_withheld_indicator(client, keys, world, role):
    """Imputed values, outlier treatment (which units were winsorised, skew and kurtosis)
    and the reason the previous index is not computable are computed from the indicator's
    values: a public ranking leaves out those of withheld indicators."""
    for code in WITH_WITHHELD:
        withheld = _withheld(client, code)
        notes = _get(client, _key(keys, role), code).json()["notes"]
        for note in notes:
            if note.startswith("Public view:"):
                continue
            named = [c for c in withheld if re.search(rf"(?<![\w-]){re.escape(c)}(?![\w-])", note)]
            if named:
                # Only the census denominator of an indicator may be described.
                assert re.match(r"[\w-]+: no \w+ population of age group ", note), note
        analyst = _get(client, keys["analyst"], code).json()["notes"]
        assert not any(n.startswith("Public view:") for n in analyst)


def test_an_error_names_no_indicator_of_an_index_with_withheld_ones_in_public(client, keys, world):
    """Which indicator is constant or missing says something about its values: for an index
    with withheld indicators a public error names none (the same words for every one)."""
    # No incidents at all in 1990: every indicator is constant or undefined.
    for code in WITH_WITHHELD:
        definition = client.get(f"/indexes/{code}").json()["definition"]
        codes = {i["code"] for i in definition["indicators"]}
        params = {"index": code, "period": "1990"}
        analyst = client.get("/rankings", params=params, headers=auth(keys["analyst"]))
        assert analyst.status_code == 422
        assert any(c in analyst.json()["detail"] for c in codes)
        for key in (None, keys["viewer"]):
            response = client.get("/rankings", params=params, headers=auth(key))
            assert response.status_code == 422
            detail = response.json()["detail"]
            assert not any(c in detail for c in codes), detail
            assert "analyst" in detail


@pytest.mark.parametrize("role", ROLES_BELOW_ANALYST)
def test_public_rank_bands_are_the_published_ones(client, keys, world, role):
    """Bands over chosen seeds are ranks under weights anyone can redraw; enough of them
    would pin the withheld indicators. Below analyst, runs and seed are fixed."""
    key = _key(keys, role)
    code = "territorial-violence"
    for params in ({"runs": 1}, {"seed": 7}, {"runs": 50, "seed": 2}):
        response = client.get(
            "/rankings", params={"index": code, "period": PERIOD, **params}, headers=auth(key)
        )
        assert response.status_code == 422, (params, response.text)
        assert "analyst" in response.json()["detail"]
    # The published band: the definition's runs and seed (1,000 and 1), also when named.
    spec = client.get(f"/indexes/{code}").json()["definition"]["sensitivity"]
    explicit = {"runs": spec["runs"], "seed": spec["seed"]}
    assert explicit == {"runs": 1000, "seed": 1}
    published = _get(client, key, code, **explicit).json()
    assert published == _get(client, key, code).json()
    assert (published["runs"], published["seed"]) == (1000, 1)
    analyst = client.get(
        "/rankings",
        params={"index": code, "period": PERIOD, "runs": 50, "seed": 2},
        headers=auth(keys["analyst"]),
    )
    assert analyst.status_code == 200 and analyst.json()["runs"] == 50


# --- what stays -----------------------------------------------------------------------


@pytest.mark.parametrize("fmt", FORMATS)
def test_an_analyst_sees_every_contribution(client, keys, world, fmt):
    for code in WITH_WITHHELD:
        results = _results(client, keys, code)
        definition = client.get(f"/indexes/{code}").json()["definition"]
        names = {i["code"]: i["name"] for i in definition["indicators"]}
        rows = _rows(client, keys["analyst"], code, fmt)
        listed_withheld = 0
        for r in rows:
            contributions = results[r["unit_code"]]["contributions"]
            positive = [(c, v) for c, v in contributions.items() if v > 0]
            expected = sorted(positive, key=lambda item: -item[1])[:3]
            assert [n for n, _ in r["top"]] == [names[c] for c, _ in expected]
            for (_, value), (c, true) in zip(r["top"], expected, strict=True):
                assert value == pytest.approx(true, rel=1e-12, abs=1e-12)
                listed_withheld += c in _withheld(client, code)
            # Every contribution, withheld ones included, is in the analyst's results.
            assert all(v is not None for v in contributions.values())
            assert sum(contributions.values()) == pytest.approx(r["score"], rel=1e-9)
        if code == "violence-against-women":  # every indicator is withheld in public
            assert listed_withheld == sum(len(r["top"]) for r in rows) > 0


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("role", ROLES_BELOW_ANALYST)
def test_an_index_without_a_sensitive_indicator_keeps_its_values(client, keys, world, role, fmt):
    assert not _withheld(client, OPEN_INDEX)
    public = _rows(client, _key(keys, role), OPEN_INDEX, fmt)
    analyst = _rows(client, keys["analyst"], OPEN_INDEX, fmt)
    assert public == analyst
    values = [v for r in public for _, v in r["top"]]
    assert values and all(v is not None for v in values)
    for r in public:
        # Both indicators unless one is 0 (the lowest unit on it): zeros are not listed,
        # and the listed ones still add up to the score.
        assert 1 <= len(r["top"]) <= 2 or r["score"] == 0
        assert all(v > 0 for _, v in r["top"])
        assert sum(v for _, v in r["top"]) == pytest.approx(r["score"], rel=1e-9, abs=1e-9)
    assert any(len(r["top"]) == 2 for r in public)
    if fmt == "json":
        notes = _get(client, _key(keys, role), OPEN_INDEX).json()["notes"]
        assert not any(n.startswith("Public view:") for n in notes)


# --- the rank bands come from a sensitivity run (issue 18) -------------------------------


def _band_runs(db, code: str, runs: int, seed: int) -> list[int]:
    """The stored sensitivity runs of ``code`` for 2024 with these runs and seed."""
    rows = db.execute(
        "SELECT id FROM analysis_run WHERE kind = 'sensitivity' AND parameters->>'code' = %s "
        "AND parameters->>'period' = %s AND (parameters->>'runs')::int = %s "
        "AND (parameters->>'seed')::int = %s ORDER BY id",
        [code, PERIOD, runs, seed],
    ).fetchall()
    return [r[0] for r in rows]


def _bands(ranking: dict) -> dict[str, tuple]:
    return {
        r["unit_code"]: (r["median_rank"], r["rank_q05"], r["rank_q95"], r["ranks"])
        for r in ranking["rows"]
    }


async def _in_process(engine, settings, code: str, reader: Principal, **params):
    """The ranking computed in this process, bands included (what a report does)."""
    async with engine.connect() as conn:
        ranking = await compute_ranking(
            conn, settings, PUBLISHER, code, PERIOD, reader=reader, **params
        )
    return ranking.model_dump(mode="json", by_alias=True)


def test_the_bands_come_from_one_sensitivity_run_shared_with_the_analysts(client, keys, world, db):
    """No Monte Carlo run in the API worker: the ranking's bands are those of the stored
    sensitivity run ``/indexes/{code}/sensitivity`` serves, one run for every reader on the
    same data, and the same bands the in-process computation of a report gives."""
    code = "territorial-violence"
    assert _band_runs(db, code, 130, 5) == []
    analyst = _get(client, keys["analyst"], code, runs=130, seed=5).json()
    assert (analyst["runs"], analyst["seed"]) == (130, 5)
    runs = _band_runs(db, code, 130, 5)
    assert len(runs) == 1
    sensitivity = client.get(
        f"/indexes/{code}/sensitivity",
        params={"period": PERIOD, "runs": 130, "seed": 5},
        headers=auth(keys["analyst"]),
    )
    assert sensitivity.status_code == 200, sensitivity.text
    assert f"/analyses/{runs[-1]}?format=run" in sensitivity.headers["link"]
    by_unit = {r["unit_code"]: r for r in sensitivity.json()["rows"]}
    assert len(by_unit) == len(analyst["rows"]) == 6
    for r in analyst["rows"]:
        band = by_unit[r["unit_code"]]
        assert (r["median_rank"], r["rank_q05"], r["rank_q95"]) == (
            band["median_rank"], band["rank_q05"], band["rank_q95"],
        )  # fmt: skip
    assert _band_runs(db, code, 130, 5) == runs  # served from the stored run
    # The run itself: its parameters and a link to its bands (it stores no cells).
    run = client.get(f"/analyses/{runs[-1]}", headers=auth(keys["analyst"]))
    assert run.status_code == 200 and run.headers["content-type"] == "application/json"
    assert run.json()["parameters"]["runs"] == 130 and run.json()["kind"] == "sensitivity"
    bands = next(link for link in run.json()["links"] if link.get("title") == "rank bands")
    assert client.get(bands["href"], headers=auth(keys["analyst"])).json() == sensitivity.json()
    reference = call_service(
        world, lambda e: _in_process(e, world, code, Principal(role="analyst"), runs=130, seed=5)
    )
    assert _bands(analyst) == _bands(reference)
    # The published bands: the public and an analyst share one run.
    public = _get(client, None, code).json()
    published = _band_runs(db, code, 1000, 1)
    assert published and _get(client, keys["analyst"], code).status_code == 200
    assert _band_runs(db, code, 1000, 1) == published
    reference = call_service(world, lambda e: _in_process(e, world, code, PUBLIC))
    assert _bands(public) == _bands(reference)
    assert public["rows"] == reference["rows"]


def test_a_ranking_still_computing_answers_202_with_no_run_in_public(
    base_data, client, keys, world, db
):
    """After ``analysis.read_wait_s`` the public gets 202 with this same URL to ask again,
    and nothing of the run (its id, who asked for it) until the bands are there."""
    code = "violence-against-women"
    # A new data version: the published run of the data before is not reused.
    db.execute(
        "UPDATE incident SET attributes = attributes "
        "WHERE id = (SELECT min(id) FROM incident WHERE source = %s)",
        [SOURCE],
    )
    hasty = base_data.model_copy(
        update={"analysis": base_data.analysis.model_copy(update={"read_wait_s": 0})}
    )
    with TestClient(create_app(hasty)) as impatient:
        response = impatient.get("/rankings", params={"index": code, "period": PERIOD})
        assert response.status_code == 202, response.text
        assert response.headers["location"] == str(response.request.url)
        assert int(response.headers["retry-after"]) >= 1
        assert "link" not in response.headers
        body = response.json()
        assert body["status"] == "running" and "1,000 Monte Carlo runs" in body["detail"]
        assert not {"id", "created_by", "parameters"} & set(body)
        deadline = time.monotonic() + 120
        while (polled := impatient.get(response.headers["location"])).status_code == 202:
            assert time.monotonic() < deadline, "the rank bands were never computed"
            time.sleep(0.2)
        assert polled.status_code == 200, polled.text
        # Unchanged data (the write rewrote a row as it was): the same ranking.
        assert polled.json() == _get(client, None, code).json()
        # An analyst waiting too is told which run to follow.
        waiting = impatient.get(
            "/rankings",
            params={"index": code, "period": PERIOD, "runs": 1700, "seed": 11},
            headers=auth(keys["analyst"]),
        )
        assert waiting.status_code == 202, waiting.text
        run = re.search(r"/analyses/(\d+)\?format=run", waiting.headers["link"]).group(1)
        assert int(run) in _band_runs(db, code, 1700, 11)


def test_refused_before_a_run_is_stored(client, keys, world, db):
    count = "SELECT count(*) FROM analysis_run WHERE kind = 'sensitivity'"
    before = db.execute(count).fetchone()[0]
    for key, params, status in (
        (None, {"index": "territorial-violence", "period": PERIOD, "runs": 7}, 422),
        (keys["analyst"], {"index": "territorial-violence", "period": "2024-Q1"}, 422),
        (keys["analyst"], {"index": "territorial-violence", "period": "1990"}, 422),
        (keys["analyst"], {"index": "no-such-index", "period": PERIOD}, 404),
        (keys["analyst"], {"index": "territorial-violence", "period": PERIOD, "version": 99}, 404),
    ):
        response = client.get("/rankings", params=params, headers=auth(key))
        assert response.status_code == status, (params, response.text)
        assert response.headers["content-type"] == "application/problem+json"
    assert db.execute(count).fetchone()[0] == before
