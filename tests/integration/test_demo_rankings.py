"""Rankings a planner reads right (issue 17), pinned on the demo: the 2024 Territorial
Violence Index of Belize's six districts, from the Belize demo (60,000 synthetic incidents,
seed 42, and the demo census) in a database of its own on the session's cluster.

1. The JRC outlier rule does not run on six districts (it needs 20 units): Belize
   District's homicide rate counts as measured, the answer says which rule applied, and the
   sensitivity view shows what the rule would have made of the scores. A definition that
   asks for the rule on six districts gets it, and every treated value is shown with its
   value before (numbers for analysts; names only in public, a raw rate gives the count).
2. Each indicator is named and described for what it counts, per whom (residents of ALL
   ages: no age-specific population is loaded), from which census (2022 for every period)
   and how it is smoothed (toward the national rate), in JSON, CSV and XLSX.
3. A contribution is explained where it is shown, and no zero is listed among the largest.
4. Corozal and Toledo, whose rank bands overlap, share ranks 5-6, in JSON, CSV and XLSX.
5. One default for the Monte Carlo bands: the definition's 1,000 runs and seed 1, in
   ``/sensitivity`` and ``/rankings``, public and analyst alike.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from openpyxl import load_workbook

from app.core.cluster import Cluster
from app.core.settings import Settings
from app.main import create_app
from tests.conftest import auth, call_service, demo_database, worker_process

DATABASE = "demo_rankings"
TVI = "territorial-violence"
PERIOD = "2024"
DASH = "\u2013"
ORDER = ["BZ-BZ", "BZ-CY", "BZ-OW", "BZ-SC", "BZ-CZL", "BZ-TOL"]


@pytest.fixture(scope="module")
def demo(
    cluster: Cluster, demo_template: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Settings]:
    """The Belize demo, as ``observatory demo`` loads it, in its own database."""
    settings = demo_database(cluster, demo_template, DATABASE)
    # The sensitivity view is a run a worker computes (issue 18): one on this database.
    log = tmp_path_factory.mktemp("demo-rankings") / "worker.log"
    with worker_process(settings.libpq_url, log, env={"OBSERVATORY_WORKER__SCHEDULES": "{}"}):
        yield settings


@pytest.fixture(scope="module")
def keys(demo: Settings) -> dict[str, str]:
    from app.services.keys import create_key

    return {
        role: call_service(demo, lambda e, r=role: create_key(e, role=r, name=r, actor="tests"))
        for role in ("analyst", "admin")
    }


@pytest.fixture(scope="module")
def client(demo: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(demo)) as c:
        yield c


def _get(client: TestClient, path: str, key: str | None = None, **params):
    response = client.get(path, params=params, headers=auth(key))
    assert response.status_code == 200, (path, params, response.text[:300])
    return response


def _ranking(client: TestClient, key: str | None = None, fmt: str = "json", index: str = TVI):
    return _get(client, "/rankings", key, index=index, period=PERIOD, format=fmt)


def _csv(response) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(response.text)))


def _xlsx(response) -> tuple[list[dict], dict[str, list]]:
    book = load_workbook(io.BytesIO(response.content))
    header, *lines = list(book["rows"].values)
    about: dict[str, list] = {}
    for name, value in book["about"].values:
        about.setdefault(name, []).append(value)
    return [dict(zip(header, line, strict=True)) for line in lines], about


# --- 1. the outlier rule fits six districts ----------------------------------------------


def test_the_outlier_rule_does_not_run_on_six_districts(client, keys):
    results = _get(client, f"/indexes/{TVI}/results", keys["analyst"], period=PERIOD).json()
    assert [r["unit_code"] for r in results["rows"]] == ORDER
    treatment = results["treatment"]
    assert (treatment["method"], treatment["min_units"], treatment["units"]) == ("jrc", 20, 6)
    assert treatment["applied"] is False
    assert treatment["rule"].startswith("No outlier treatment: the JRC rule")
    assert "6 units, fewer than the 20" in treatment["rule"]
    assert results["notes"][0] == treatment["rule"]
    assert not any(n.startswith("Outlier treatment of") for n in results["notes"])
    belize = results["rows"][0]
    # Belize District's homicide rate counts as measured: 55.3 per 100,000 (EB-smoothed),
    # more than three times the runner-up's (the JRC rule made it the runner-up's 16.9).
    assert belize["raw"]["homicide_rate"] == pytest.approx(55.3, abs=0.05)
    runner_up = max(r["raw"]["homicide_rate"] for r in results["rows"][1:])
    assert runner_up == pytest.approx(16.9, abs=0.05)
    for r in results["rows"]:
        assert r["treated"] == r["raw"] and r["treated_values"] == []
    # The scores as measured: Belize District far ahead, the others close together.
    scores = [round(r["score"], 1) for r in results["rows"]]
    assert scores == [100.0, 18.8, 14.5, 13.3, 4.8, 4.1]


def test_the_sensitivity_view_shows_scores_with_and_without_the_treatment(client, keys):
    view = _get(client, f"/indexes/{TVI}/sensitivity", keys["analyst"], period=PERIOD).json()
    assert view["treatment"]["applied"] is False
    rows = {r["unit_code"]: r for r in view["rows"]}
    for r in rows.values():
        assert r["score_untreated"] == r["score"] and r["rank_untreated"] == r["nominal_rank"]
    # Under the JRC rule (forced), Belize District's four or five extreme rates would count as
    # the runner-up's and Cayo would score 91.9 instead of 18.8, nearly level with it.
    assert rows["BZ-CY"]["score"] == pytest.approx(18.8, abs=0.05)
    assert rows["BZ-CY"]["score_jrc"] == pytest.approx(91.9, abs=0.05)
    assert rows["BZ-BZ"]["score_jrc"] == pytest.approx(100.0)
    # The analyst's ranking shows the same comparison; the public one none (the TVI has
    # withheld indicators, and other scores would bound them).
    compared = _ranking(client, keys["analyst"]).json()["treatment_comparison"]
    assert {c["unit_code"]: c["score_jrc"] for c in compared} == {
        u: r["score_jrc"] for u, r in rows.items()
    }
    assert _ranking(client).json()["treatment_comparison"] is None


def test_a_definition_can_ask_for_the_treatment_and_sees_every_treated_value(client, keys):
    definition = _get(client, f"/indexes/{TVI}").json()["definition"]
    forced = {
        **definition,
        "name": "tvi-forced-treatment",
        "treatment": {**definition["treatment"], "min_units": 6},
    }
    posted = client.post(
        "/indexes",
        content=json.dumps(forced),
        headers={**auth(keys["admin"]), "Content-Type": "application/json"},
    )
    assert posted.status_code == 201, posted.text
    code = "tvi-forced-treatment"
    results = _get(client, f"/indexes/{code}/results", keys["analyst"], period=PERIOD).json()
    assert results["treatment"]["applied"] is True
    assert results["treatment"]["rule"].startswith("Outlier treatment by the JRC rule")
    belize = next(r for r in results["rows"] if r["unit_code"] == "BZ-BZ")
    treated = {t["indicator"]: t for t in belize["treated_values"]}
    homicide = treated["homicide_rate"]
    assert homicide["action"] == "winsorised"
    assert homicide["original"] == pytest.approx(55.3, abs=0.05)
    assert homicide["treated"] == pytest.approx(16.9, abs=0.05)
    assert len(treated) >= 4  # Belize District in four or five of the five indicators
    for t in treated.values():
        assert t["original"] == belize["raw"][t["indicator"]]
        assert t["treated"] == belize["treated"][t["indicator"]] < t["original"]
    # Analysts see the values in the ranking and its exports; the public sees which values
    # were treated (released indicators only), without numbers.
    analyst = _ranking(client, keys["analyst"], index=code).json()
    row = next(r for r in analyst["rows"] if r["unit_code"] == "BZ-BZ")
    assert row["treated_values"] == belize["treated_values"]
    line = next(
        x for x in _csv(_ranking(client, keys["analyst"], "csv", code)) if x["unit_code"] == "BZ-BZ"
    )
    expected = f"winsorised, {homicide['original']:.1f} counted as {homicide['treated']:.1f}"
    assert (
        f"Homicides per 100,000 residents (EB-smoothed toward the national rate): {expected}"
        in (line["treated_values"])
    )
    public = _ranking(client, index=code).json()
    shown = next(r for r in public["rows"] if r["unit_code"] == "BZ-BZ")["treated_values"]
    assert {t["indicator"] for t in shown} == set(treated) - {
        "vaw_rate", "youth_violence_per_100k_residents"
    }  # fmt: skip
    assert all(t["original"] is None and t["treated"] is None for t in shown)


# --- 2. names that say what is counted -----------------------------------------------------


def test_indicators_say_what_is_counted_per_whom_from_which_census(client, keys):
    ranking = _ranking(client).json()
    described = {i["code"]: i for i in ranking["indicators"]}
    youth = described["youth_violence_per_100k_residents"]
    assert (
        youth["name"]
        == f"Violence against people aged 15{DASH}29, per 100,000 residents of all ages"
    )
    assert youth["per"] == "100,000 residents of all ages"
    assert youth["census_years"] == [2022] and youth["smoothing"] is None
    assert "not a rate among young people" in youth["description"]
    vaw = described["vaw_rate"]
    assert vaw["per"] == "100,000 female residents of all ages"
    assert vaw["census_sources"] and "toward the national rate" in vaw["smoothing"]
    for code in ("homicide_rate", "shooting_rate", "vaw_rate"):
        assert "EB-smoothed toward the national rate" in described[code]["name"]
    # Every period divides by the 2022 census: 2021 too (before, its totals came from 2010
    # and its female population from 2022).
    for period in ("2021", "2024"):
        results = _get(client, f"/indexes/{TVI}/results", keys["analyst"], period=period).json()
        assert {y for i in results["indicators"] for y in i["census_years"]} == {2022}
    # The exports carry it: every CSV line names the census, the XLSX "about" sheet each
    # indicator's statement.
    lines = _csv(_ranking(client, fmt="csv"))
    assert {line["census_years"] for line in lines} == {"2022"}
    _, about = _xlsx(_ranking(client, fmt="xlsx"))
    assert f"Indicator {youth['statement']}" in about["note"]
    assert any("toward the national rate" in n for n in about["note"])


# --- 3. contributions ----------------------------------------------------------------------


def test_no_zero_among_the_largest_contributions(client, keys):
    results = {
        r["unit_code"]: r
        for r in _get(client, f"/indexes/{TVI}/results", keys["analyst"], period=PERIOD).json()[
            "rows"
        ]
    }
    # Toledo is the lowest district on youth violence and on violence against women (0.0
    # points each): neither is among its largest contributions, which were listed before.
    toledo = results["BZ-TOL"]["contributions"]
    assert toledo["youth_violence_per_100k_residents"] == 0 and toledo["vaw_rate"] == 0
    for key in (keys["analyst"], None):
        ranking = _ranking(client, key).json()
        assert "points one indicator adds" in ranking["contributions"]
        assert "0 means the lowest of the 6" in ranking["contributions"]
        for row in ranking["rows"]:
            contributions = results[row["unit_code"]]["contributions"]
            for top in row["top_indicators"]:
                assert contributions[top["code"]] > 0, (row["unit_code"], top)
    analyst = _ranking(client, keys["analyst"]).json()
    toledo_top = next(r for r in analyst["rows"] if r["unit_code"] == "BZ-TOL")["top_indicators"]
    assert [t["code"] for t in toledo_top] == ["homicide_rate", "robbery_rate", "shooting_rate"]
    lines = _csv(_ranking(client, keys["analyst"], "csv"))
    assert all(float(x["top1_contribution"]) > 0 for x in lines)
    assert {x["contribution_means"] for x in lines} == {analyst["contributions"]}


# --- 4. ties shown as ties ------------------------------------------------------------------


def test_districts_whose_bands_overlap_share_their_ranks(client, keys):
    for key in (None, keys["analyst"]):
        ranking = _ranking(client, key).json()
        rows = {r["unit_code"]: r for r in ranking["rows"]}
        assert [r["unit_code"] for r in ranking["rows"]] == ORDER
        assert {c: r["ranks"] for c, r in rows.items()} == {
            "BZ-BZ": "1", "BZ-CY": "2", "BZ-OW": "3", "BZ-SC": "4",
            "BZ-CZL": f"5{DASH}6", "BZ-TOL": f"5{DASH}6",
        }  # fmt: skip
        assert rows["BZ-CZL"]["shares_ranks_with"] == ["Toledo"]
        assert rows["BZ-TOL"]["shares_ranks_with"] == ["Corozal"]
        assert (rows["BZ-TOL"]["rank_q05"], rows["BZ-CZL"]["rank_q95"]) == (5.0, 6.0)
        assert ranking["ties"] == [
            f"Corozal and Toledo share ranks 5{DASH}6: their rank bands (5{DASH}95 %) overlap, "
            "so the data cannot order them."
        ]
        for fmt in ("csv", "xlsx"):
            response = _ranking(client, key, fmt)
            lines = _csv(response) if fmt == "csv" else _xlsx(response)[0]
            shared = {x["unit_code"]: (str(x["ranks"]), x["shares_ranks_with"]) for x in lines}
            assert shared["BZ-CZL"] == (f"5{DASH}6", "Toledo")
            assert shared["BZ-TOL"] == (f"5{DASH}6", "Corozal")
            assert shared["BZ-BZ"][0] == "1" and shared["BZ-BZ"][1] in ("", None)


# --- 5. one default for runs and seed ----------------------------------------------------


def test_one_default_for_the_monte_carlo_bands(client, keys):
    spec = _get(client, f"/indexes/{TVI}").json()["definition"]["sensitivity"]
    assert (spec["runs"], spec["seed"]) == (1000, 1)
    view = _get(client, f"/indexes/{TVI}/sensitivity", keys["analyst"], period=PERIOD).json()
    bands = {r["unit_code"]: (r["rank_q05"], r["rank_q95"]) for r in view["rows"]}
    assert (view["runs"], view["seed"]) == (1000, 1)
    for key in (None, keys["analyst"]):
        ranking = _ranking(client, key).json()
        assert (ranking["runs"], ranking["seed"]) == (1000, 1)
        assert {r["unit_code"]: (r["rank_q05"], r["rank_q95"]) for r in ranking["rows"]} == bands
        line = _csv(_ranking(client, key, "csv"))[0]
        assert (line["runs"], line["seed"]) == ("1000", "1")
    # Without an analyst key no other band can be asked for.
    other = client.get("/rankings", params={"index": TVI, "period": PERIOD, "runs": 500})
    assert other.status_code == 422 and "runs=1000 and seed=1" in other.json()["detail"]
