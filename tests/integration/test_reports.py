"""The periodic report (issue 20) on the Belize demo: every figure of the public report's
bundle is the one /stats, /rankings and /alerts give a caller without a key for the same
question; the analyst report has the sensitive sections and the public one never does;
an empty period says so; a future or malformed period is a 422; asking again returns the
stored report; analyst reports are for analysts only.

The demo (20,000 synthetic incidents, seed 42, 2021-2025; census populations, the
Territorial Violence Index, the demo's hot spot run and the monitors' alerts) is loaded in
a database of its own, with a worker of its own for the report jobs.
"""

from __future__ import annotations

import io
import math
import re
import subprocess
import time
import zipfile
from collections.abc import Iterator

import pandas as pd
import psycopg
import pytest
from fastapi.testclient import TestClient
from psycopg import sql

from app.core.cluster import Cluster
from app.core.migrate import upgrade
from app.core.settings import Settings
from app.main import create_app
from app.schemas.reports import load_report_definition
from app.services.reports import DEFAULTS_DIR
from tests.conftest import auth, call_service, worker_process

DATABASE = "reports_demo"
PERIOD, STATS_PERIOD = "2025Q2", "2025-Q2"
PREVIOUS, YEAR_BEFORE = "2025-Q1", "2024-Q2"
# The trend's 36 months end with the period.
TREND_FROM, TREND_TO = "2022-07-01", "2025-07-01"
PUBLIC_DEF = load_report_definition((DEFAULTS_DIR / "quarterly-public.yaml").read_text())
ANALYST_DEF = load_report_definition((DEFAULTS_DIR / "quarterly-analyst.yaml").read_text())
SENSITIVE = ("domestic_violence", "sexual_violence", "suicide")


@pytest.fixture(scope="module")
def demo(cluster: Cluster) -> Iterator[Settings]:
    """The Belize demo with 20,000 incidents, in its own database."""
    from app.demo.load import load_demo

    admin = cluster.url.rsplit("/", 1)[0] + "/postgres"
    with psycopg.connect(admin, autocommit=True) as conn:
        name = sql.Identifier(DATABASE)
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(name))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(name))
    settings = Settings(
        environment="test",
        database=cluster.settings.model_copy(update={"name": DATABASE}),
        database_url=None,
        analysis={"warm_up": False, "wait_s": 0.5},
    )
    upgrade(settings.sqlalchemy_url)
    call_service(settings, lambda e: load_demo(e, settings, incidents=20_000))
    yield settings


@pytest.fixture(scope="module")
def keys(demo: Settings) -> dict[str, str]:
    from app.services.keys import create_key

    return {
        role: call_service(demo, lambda e, r=role: create_key(e, role=r, name=r, actor="tests"))
        for role in ("viewer", "analyst", "admin")
    }


@pytest.fixture(scope="module")
def client(demo: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    log = tmp_path_factory.mktemp("reports") / "worker.log"
    with (
        worker_process(demo.libpq_url, log, env={"OBSERVATORY_WORKER__SCHEDULES": "{}"}),
        TestClient(create_app(demo)) as c,
    ):
        yield c


def build(client: TestClient, key: str, definition: str, period: str) -> dict:
    """POST /reports and wait for the job; the stored report's metadata."""
    answer = client.post(
        "/reports", json={"definition": definition, "period": period}, headers=auth(key)
    )
    assert answer.status_code in (200, 201, 202), answer.text
    if answer.status_code != 202:
        return answer.json()
    run_url = answer.headers["Location"]
    deadline = time.monotonic() + 180
    while True:
        run = client.get(run_url, headers=auth(key)).json()
        if run["status"] != "running":
            break
        assert time.monotonic() < deadline, run
        time.sleep(0.5)
    assert run["status"] == "completed", run.get("message")
    report_id = run["summary"]["report_id"]
    return client.get(f"/reports/{report_id}", headers=auth(key)).json()


def tables(client: TestClient, report_id: int, key: str | None = None) -> dict[str, pd.DataFrame]:
    """The report's bundle: ``<section>-<table>`` → its CSV as a frame."""
    answer = client.get(f"/reports/{report_id}.zip", headers=auth(key))
    assert answer.status_code == 200, answer.text
    out = {}
    with zipfile.ZipFile(io.BytesIO(answer.content)) as z:
        for name in z.namelist():
            if name.endswith(".csv"):
                # <section>_<table>.csv; section keys have no underscore
                out[name[:-4].replace("_", "-", 1)] = pd.read_csv(z.open(name))
    return out


@pytest.fixture(scope="module")
def public_report(client: TestClient, keys: dict[str, str]) -> dict:
    return build(client, keys["analyst"], "quarterly-public", PERIOD)


@pytest.fixture(scope="module")
def analyst_report(client: TestClient, keys: dict[str, str]) -> dict:
    return build(client, keys["analyst"], "quarterly-analyst", PERIOD)


@pytest.fixture(scope="module")
def public_q4(client: TestClient, keys: dict[str, str]) -> dict:
    """The public report of 2025Q4: the demo's monitors alarm in its last weeks and months
    (2025Q2's report, built later, must not show them)."""
    return build(client, keys["analyst"], "quarterly-public", "2025Q4")


def period_alerts(client: TestClient, period: str, key: str | None = None) -> list[dict]:
    """GET /alerts?period=... for each week and month of a report period (any state)."""
    from app.services.reports import parse_report_period
    from app.services.reports.where import alert_periods

    p = parse_report_period(period, "America/Belize")
    out = []
    for label in alert_periods(p.start.date(), p.end.date()):
        answer = client.get("/alerts", params={"period": label, "limit": 1000}, headers=auth(key))
        assert answer.status_code == 200, answer.text
        out += answer.json()["items"]
    return out


def public_stats(client: TestClient, **params) -> list[dict]:
    """/stats for a caller without a key (rows)."""
    if "extra_by" in params:
        extra = params.pop("extra_by")
        params["by"] = ",".join(b for b in (params.get("by"), extra) if b)
    answer = client.get("/stats", params=params)
    assert answer.status_code == 200, answer.text
    return answer.json()["rows"]


def measure_params(m) -> dict:
    return {"category": m.categories[0]} if m.categories else {"extra_by": "category_group"}


def measure_rows(rows: list[dict], m) -> list[dict]:
    return [r for r in rows if m.category_group is None or r["category_group"] == m.category_group]


def same(report_value, api_value) -> bool:
    """A report cell (CSV: NaN for a withheld value) equals the API's (null)."""
    if api_value is None:
        return report_value is None or (
            isinstance(report_value, float) and math.isnan(report_value)
        )
    return report_value == pytest.approx(api_value, rel=1e-9, abs=1e-9)


def test_every_public_figure_is_the_public_apis(client, public_report):
    t = tables(client, public_report["id"])
    assert public_report["audience"] == "public"
    figures = t["headline-figures"].set_index("measure")
    assert list(figures.index) == [m.code for m in PUBLIC_DEF.measures]
    shown = 0
    for m in PUBLIC_DEF.measures:
        row = figures.loc[m.code]
        (now,) = measure_rows(
            public_stats(client, level=0, period=STATS_PERIOD, **measure_params(m)), m
        )
        (prev,) = measure_rows(
            public_stats(client, level=0, period=PREVIOUS, **measure_params(m)), m
        )
        (last,) = measure_rows(
            public_stats(client, level=0, period=YEAR_BEFORE, **measure_params(m)), m
        )
        assert same(row["period"], now["count"]), m.code
        assert same(row["previous"], prev["count"]), m.code
        assert same(row["year_before"], last["count"]), m.code
        assert same(row["rate_per_100k"], now["rate"]), m.code
        if now["count"] is not None and prev["count"]:
            assert row["change_previous_pct"] == pytest.approx(
                round((now["count"] - prev["count"]) / prev["count"] * 100, 1)
            )
        if now["rate"] is not None:
            # 2025-Q2: 91 days of a 365-day year.
            assert row["projected_annual_rate"] == pytest.approx(now["rate"] * 365 / 91)
            shown += 1
    assert shown >= 3, figures  # most measures are published: the test compares numbers

    trend = t["trend-monthly"]
    for m in PUBLIC_DEF.measures:
        rows = measure_rows(
            public_stats(client, level=0, by="period", period="month", occurred_from=TREND_FROM,
                         occurred_to=TREND_TO, **measure_params(m)),
            m,
        )  # fmt: skip
        mine = trend[trend["group"] == m.code].set_index("month")
        assert sorted(mine.index) == sorted(r["period"] for r in rows), m.code
        for r in rows:
            assert same(mine.loc[r["period"], "count"], r["count"]), (m.code, r["period"])
        assert mine["in_period"].sum() == 3
    m = PUBLIC_DEF.measure(PUBLIC_DEF.districts_measure)
    districts = t["districts-districts"].set_index("unit_code")
    now = measure_rows(public_stats(client, level=1, period=STATS_PERIOD, **measure_params(m)), m)
    prev = measure_rows(public_stats(client, level=1, period=PREVIOUS, **measure_params(m)), m)
    assert sorted(districts.index) == sorted(r["unit_code"] for r in now)
    before = {r["unit_code"]: r["count"] for r in prev}
    for r in now:
        d = districts.loc[r["unit_code"]]
        assert same(d["count"], r["count"]) and same(d["rate_per_100k"], r["rate"])
        assert same(d["eb_rate_per_100k"], r["rate_eb_global"])
        assert same(d["previous"], before[r["unit_code"]])
    assert districts["count"].notna().sum() >= 4

    m = PUBLIC_DEF.measure(PUBLIC_DEF.victims_measure)
    victims = t["victims-by_sex_age"].set_index(["sex", "age_group"])
    # One public table per sex, as a public caller asks (one victim_sex at a time).
    rows = [
        r
        for sex in ("female", "male", "unknown")
        for r in measure_rows(
            public_stats(client, level=0, period=STATS_PERIOD, by="victim_sex,age_group",
                         victim_sex=sex, **measure_params(m)),
            m,
        )
    ]  # fmt: skip
    assert len(victims) == len(rows)
    for r in rows:
        assert same(victims.loc[(r["victim_sex"], r["age_group"]), "count"], r["count"])
    # Both sides of the pyramid have counts (in one table of every sex, the age groups'
    # withheld victims of unknown sex withheld every female count of the demo).
    shown = victims["count"].notna().groupby(level="sex").sum()
    assert shown["female"] >= 2 and shown["male"] >= 2


def test_public_ranking_is_the_public_rankings(client, public_report):
    t = tables(client, public_report["id"])
    ranking = client.get("/rankings", params={"index": "territorial-violence", "period": "2024"})
    assert ranking.status_code == 200, ranking.text
    mine = t["index-ranking"]
    expected = ranking.json()["rows"]
    assert list(mine["unit_code"]) == [r["unit_code"] for r in expected]
    for (_, row), r in zip(mine.iterrows(), expected, strict=True):
        assert row["rank"] == r["rank"] and row["band"] == r["ranks"]
        assert same(row["score"], r["score"])


def test_the_alerts_are_those_of_the_period(client, public_report, public_q4):
    """The where section's alerts are /alerts' answer for each week and month of the
    report's period, in their stored state: the demo alarms in late 2025, so 2025Q2's
    report (built later) has none of them and 2025Q4's has them all."""
    every = client.get("/alerts", params={"limit": 1000}).json()["items"]
    assert every  # the demo's monitors alarm
    for report, period in ((public_report, PERIOD), (public_q4, "2025Q4")):
        mine = tables(client, report["id"])["where-alerts"].set_index("alert_id")
        alerts = period_alerts(client, period)
        assert list(mine.index) == [a["id"] for a in alerts]  # newest period first
        for a in alerts:
            row = mine.loc[a["id"]]
            assert row["monitor"] == a["monitor"] and row["state"] == a["state"]
            assert row["monitor_name"] == a["title"] and row["period"] == a["period"]
            pairs = [("observed", "observed"), ("expected", "expected")]
            pairs += [("threshold", "threshold"), ("periods_lasting", "lasted")]
            for mine_key, api_key in pairs:
                assert same(row[mine_key], a[api_key]), (a["id"], mine_key)
    q2 = tables(client, public_report["id"])["where-alerts"]
    q4 = tables(client, public_q4["id"])["where-alerts"]
    assert len(q4) > 0 and len(q2) < len(every)


def test_public_report_holds_nothing_sensitive(client, keys, public_report, analyst_report):
    t = tables(client, public_report["id"])
    assert "victims-vawg" not in t and "when-weekday_hour" not in t
    text = "\n".join(frame.to_csv(index=False) for frame in t.values())
    for code in (*SENSITIVE, "violence_against_women"):
        assert code not in text
    # No point: the hot spot map of a public run is cells, and the bundle holds no
    # coordinates at all.
    assert "POINT" not in text
    sections = {s["key"]: s["empty"] for s in public_report["summary"]["sections"]}
    assert sections["when"] and "public" in sections["when"]
    # The georeferenced shares carry no count (not a column of dashes either).
    geo = t["quality-georeferenced"]
    assert list(geo.columns) == ["unit_name", "georeferenced_pct"]
    assert geo["georeferenced_pct"].notna().all()
    a = tables(client, analyst_report["id"], keys["analyst"])
    assert {"victims-vawg", "when-weekday_hour"} <= set(a)
    assert a["victims-vawg"]["count"].sum() > 0
    assert a["when-weekday_hour"]["count"].sum() > 0 and len(a["when-weekday_hour"]) == 7 * 24


def test_analyst_figures_are_the_analysts_stats(client, keys, analyst_report):
    t = tables(client, analyst_report["id"], keys["analyst"])
    figures = t["headline-figures"].set_index("measure")
    m = ANALYST_DEF.measure("major_crimes")
    answer = client.get(
        "/stats",
        params={"level": 0, "period": STATS_PERIOD, "category": ",".join(m.categories)},
        headers=auth(keys["analyst"]),
    )
    (row,) = answer.json()["rows"]
    assert figures.loc["major_crimes", "period"] == row["count"] > 0
    weekday = t["when-weekday_hour"]["count"].sum()
    assert weekday == row["count"]  # the chart counts the same incidents
    # Violence against women and girls: its female victims by age group.
    params = {"level": 0, "period": STATS_PERIOD, "victim_sex": "female",
              "by": "category_group,victim_sex,age_group"}  # fmt: skip
    rows = client.get("/stats", params=params, headers=auth(keys["analyst"])).json()["rows"]
    expected = {
        r["age_group"]: r["count"] for r in rows if r["category_group"] == "violence_against_women"
    }
    vawg = t["victims-vawg"]
    assert set(vawg["sex"]) == {"female"}
    assert dict(zip(vawg["age_group"], vawg["count"], strict=True)) == expected
    assert sum(expected.values()) > 0


def test_the_schedule_builds_the_quarter_just_ended(demo, public_report, analyst_report):
    """On 1 July 2025 the schedule builds 2025Q2 of every stored definition: the same data,
    so the stored reports stand (nothing built twice)."""
    from datetime import UTC, datetime

    from app.services.reports import build_scheduled

    now = datetime(2025, 7, 1, 10, tzinfo=UTC)
    built = call_service(demo, lambda e: build_scheduled(e, demo, now))
    assert sorted((b["definition"], b["period"]) for b in built) == [
        ("quarterly-analyst", PERIOD), ("quarterly-public", PERIOD)
    ]  # fmt: skip
    assert all("error" not in b for b in built), built


def test_same_period_and_data_return_the_stored_report(client, keys, public_report):
    again = client.post(
        "/reports", json={"definition": "quarterly-public", "period": PERIOD},
        headers=auth(keys["analyst"]),
    )  # fmt: skip
    assert again.status_code == 200, again.text
    assert again.json()["id"] == public_report["id"]
    assert again.json()["data_version"] == public_report["data_version"]


@pytest.mark.parametrize(
    ("period", "words"),
    [
        ("2024Q5", "not a report period"),
        ("2024-13", "not a report period"),
        ("24Q1", "not a report period"),
        ("2031Q1", "in the future"),
        ("2026Q4", "has not ended"),
        # A public report is made of public tables: no half-year, nothing unpublished.
        ("2025H1", "not a half-year"),
        ("2020Q4", "outside the published window"),
    ],
)
def test_bad_periods_are_422(client, keys, period, words):
    answer = client.post(
        "/reports", json={"definition": "quarterly-public", "period": period},
        headers=auth(keys["analyst"]),
    )  # fmt: skip
    assert answer.status_code == 422, answer.text
    assert answer.headers["content-type"].startswith("application/problem+json")
    assert words in answer.json()["detail"]


def test_a_period_without_incidents_says_so(client, keys):
    report = build(client, keys["analyst"], "quarterly-analyst", "2019Q3")
    sections = {s["key"]: s["empty"] for s in report["summary"]["sections"]}
    assert sections["headline"] == "No incidents were recorded in 2019Q3."
    assert sections["methods"] is None
    assert all(sections[k] for k in sections if k != "methods")


def test_half_year_and_month_periods(client, keys):
    report = build(client, keys["analyst"], "quarterly-analyst", "2025H1")
    assert report["period"] == "2025H1"
    figures = tables(client, report["id"], keys["analyst"])["headline-figures"]
    q1 = client.get("/stats", params={"level": 0, "period": "2025-Q1", "category": "homicide"},
                    headers=auth(keys["analyst"])).json()["rows"][0]["count"]  # fmt: skip
    q2 = client.get("/stats", params={"level": 0, "period": "2025-Q2", "category": "homicide"},
                    headers=auth(keys["analyst"])).json()["rows"][0]["count"]  # fmt: skip
    assert figures.set_index("measure").loc["homicides", "period"] == q1 + q2


def test_public_callers_read_public_reports_only(client, keys, public_report, analyst_report):
    listed = client.get("/reports").json()["items"]
    assert public_report["id"] in [r["id"] for r in listed]
    assert all(r["audience"] == "public" for r in listed)
    for path in ("", ".zip", ".pdf", ".html"):
        answer = client.get(f"/reports/{analyst_report['id']}{path}")
        assert answer.status_code == 404, (path, answer.status_code)
        answer = client.get(f"/reports/{analyst_report['id']}{path}", headers=auth(keys["viewer"]))
        assert answer.status_code == 404, (path, answer.status_code)
    assert client.get(f"/reports/{public_report['id']}").status_code == 200
    answer = client.get(f"/reports/{analyst_report['id']}", headers=auth(keys["analyst"]))
    assert answer.status_code == 200
    # Building needs an analyst key.
    answer = client.post("/reports", json={"definition": "quarterly-public", "period": PERIOD})
    assert answer.status_code == 401
    answer = client.post(
        "/reports", json={"definition": "quarterly-public", "period": PERIOD},
        headers=auth(keys["viewer"]),
    )  # fmt: skip
    assert answer.status_code == 403


def test_the_cli_builds_the_same_report_from_the_database(demo, client, public_report, tmp_path):
    import os
    import sys

    env = {**os.environ, "OBSERVATORY_DATABASE_URL": demo.libpq_url, "COLUMNS": "250"}

    def cli(*args: str, code: int = 0) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "app.cli", "report", *args],
            env=env, capture_output=True, text=True,
        )  # fmt: skip
        assert done.returncode == code, done.stdout + done.stderr
        return done.stdout + done.stderr

    out = tmp_path / "q2.zip"
    cli("quarterly", "--period", PERIOD, "--out", str(out), "--language", "en")
    with zipfile.ZipFile(out) as z:
        mine = {n[:-4].replace("_", "-", 1): pd.read_csv(z.open(n)) for n in z.namelist()
                if n.endswith(".csv")}  # fmt: skip
    stored = tables(client, public_report["id"])
    assert sorted(mine) == sorted(stored)
    for name, frame in stored.items():
        pd.testing.assert_frame_equal(mine[name], frame, obj=name)
    pdf = tmp_path / "q2.pdf"
    cli("quarterly", "--period", PERIOD, "--out", str(pdf), "--language", "es")
    assert pdf.read_bytes().startswith(b"%PDF")
    assert "is a quarter, not a month" in cli(
        "monthly", "--period", PERIOD, "--out", str(pdf), code=1
    )
    assert "not a report period" in cli(
        "quarterly", "--period", "2024Q5", "--out", str(pdf), code=1
    )


def test_definitions_are_versioned_and_spanish_is_a_field(client, keys):
    listed = client.get("/reports/definitions").json()["items"]
    assert [d["code"] for d in listed] == ["quarterly-public"]
    spanish = (
        (DEFAULTS_DIR / "quarterly-public.yaml").read_text().replace("language: en", "language: es")
    )
    answer = client.post(
        "/reports/definitions", content=spanish,
        headers={**auth(keys["admin"]), "Content-Type": "application/yaml"},
    )  # fmt: skip
    assert answer.status_code == 201, answer.text
    assert answer.json()["version"] == 2
    report = build(client, keys["analyst"], "quarterly-public", PERIOD)
    assert report["language"] == "es" and report["definition_version"] == 2
    text = " ".join(pdf_text(client, report["id"]).split())
    assert "Cifras principales" in text and "Anexo de calidad de los datos" in text
    assert "Headline figures" not in text
    bad = client.post(
        "/reports/definitions",
        content=spanish.replace("categories: [homicide]", "categories: [homicide, shooting]"),
        headers={**auth(keys["admin"]), "Content-Type": "application/yaml"},
    )
    assert bad.status_code == 422 and "analyst audience" in bad.json()["detail"]


def pdf_text(client: TestClient, report_id: int, key: str | None = None) -> str:
    """The text of the report's PDF (pypdf), its pages joined."""
    import pypdf

    answer = client.get(f"/reports/{report_id}.pdf", headers=auth(key))
    assert answer.status_code == 200 and answer.content.startswith(b"%PDF"), answer.text[:200]
    reader = pypdf.PdfReader(io.BytesIO(answer.content))
    assert len(reader.pages) >= 3
    return " ".join(" ".join((page.extract_text() or "").split()) for page in reader.pages)


def test_the_pdf_opens_with_its_titles_and_headline_figures(client, public_report):
    from reports.i18n import Lang

    en = Lang("en")
    text = " ".join(pdf_text(client, public_report["id"]).split())
    for key in PUBLIC_DEF.sections:
        assert en(f"section.{key}") in text, key
    figures = tables(client, public_report["id"])["headline-figures"]
    shown = figures["period"].dropna()
    assert len(shown) >= 3
    for value in shown:
        assert en.integer(value) in text, value
    html = client.get(f"/reports/{public_report['id']}.html")
    assert html.status_code == 200 and html.headers["content-type"].startswith("text/html")
    assert en("section.headline") in html.text


def test_the_quality_annex_is_get_quality(client, keys, analyst_report, public_report):
    """The annex's death-records scorecard (issue 21) is GET /quality's for the period:
    for analysts, as /quality is; the public report leaves it out."""
    t = tables(client, analyst_report["id"], keys["analyst"])
    answer = client.get("/quality", params={"period": STATS_PERIOD}, headers=auth(keys["analyst"]))
    assert answer.status_code == 200, answer.text
    sources = answer.json()["sources"]
    mine = t["quality-sources"].set_index("source")
    assert list(mine.index) == [s["source"] for s in sources]
    assert sum(s["records"] for s in sources) > 0  # the demo's agencies have deaths in Q2

    def pct(share):
        return None if share is None else round(share * 100, 1)

    for s in sources:
        row = mine.loc[s["source"]]
        shares = [v for v in s["completeness"].values() if v is not None]
        assert row["records"] == s["records"]
        assert same(row["completeness_pct"], pct(sum(shares) / len(shares)))
        assert same(row["georeferenced_pct"], pct(s["georeferenced"]))
        assert same(row["timely_pct"], pct(s["timeliness"]["within_30_days"]))
        assert same(row["median_delay_days"], s["timeliness"]["median_days"])
        assert same(row["linked_pct"], pct(s["coherence"]["linked"]))
        assert same(row["same_manner_pct"], pct(s["coherence"]["same_manner"]))
    assert "quality-sources" not in tables(client, public_report["id"])
    assert client.get("/quality", params={"period": STATS_PERIOD}).status_code == 401


def test_the_alert_series_are_get_alerts_id(client, keys, analyst_report, public_q4):
    """Each alert's series in the where section is GET /alerts/{id}'s, for the report's
    reader (public: withheld small counts stay withheld)."""
    for report, key in ((public_q4, None), (analyst_report, keys["analyst"])):
        t = tables(client, report["id"], key)
        series = t["where-alert_series"]
        ids = list(t["where-alerts"]["alert_id"])
        assert sorted(set(series["alert_id"])) == sorted(ids)
        assert ids or report is analyst_report  # 2025Q4 alarms; 2025Q2 may not
        for alert_id in ids:
            answer = client.get(f"/alerts/{alert_id}", headers=auth(key))
            assert answer.status_code == 200, answer.text
            expected = answer.json()["series"]
            mine = series[series["alert_id"] == alert_id]
            assert list(mine["period"].astype(str)) == [p["period"] for p in expected]
            for (_, row), p in zip(mine.iterrows(), expected, strict=True):
                for name in ("observed", "expected", "threshold"):
                    assert same(row[name], p[name]), (alert_id, p["period"], name)
                assert bool(row["alarm"]) == p["alarm"]
            assert mine["alarm"].astype(bool).any()  # the alert comes from an alarm


def test_the_spanish_report_has_no_english_note(demo):
    """The service-built Spanish report (analyst: every section, monitors, index and
    quality notes) prints no English sentence; the data version is short."""
    from app.services.reports import build_here
    from reports.i18n import LABELS, VOCABULARY
    from reports.render import render_html
    from tests.unit.reports.test_render import visible_text

    doc = call_service(
        demo, lambda e: build_here(e, demo, "quarterly-analyst", PERIOD, language="es")
    )
    notes = [note for s in doc.sections for note in (*s.notes, s.empty or "")]
    assert len(notes) > 15
    for note in notes:
        # no English function word; codes like property-crime-h3-weekly are names
        words = re.sub(r"\b[\w]+(?:-[\w]+)+\b", " ", note)
        assert re.findall(r"\b(?:the|and|per|by|of|vs|with|from|to|in|at|not|no alert)\b",
                          words) == [], note  # fmt: skip
        assert not re.search(r"[{}]|\bTrue\b|\bFalse\b|\[\d", note), note  # no Python reprs
    text = visible_text(render_html(doc))
    english = {pair[0] for pair in (*LABELS.values(), *VOCABULARY.values()) if pair[0] != pair[1]}
    left = sorted(w for w in english if len(w) > 3 and re.search(rf"\b{re.escape(w)}\b", text))
    assert left == []
    # the index and the monitors by their Spanish titles (the shipped definitions' title_es)
    import yaml

    from app.core.settings import DATA_DIR

    shipped = [DATA_DIR / "indexes" / "territorial_violence.yaml",
               *sorted((DATA_DIR / "monitors").glob("*.yaml"))]  # fmt: skip
    for path in shipped:
        definition = yaml.safe_load(path.read_text())
        assert definition["title_es"] in text, path.name
        assert definition["title"] not in text and definition["name"] not in text, path.name
    assert str(doc.data_version) not in text.replace(f"({doc.data_version})", "")
    assert f"versión de los datos {doc.data_label}" in text and len(doc.data_label) == 7


def test_the_pdf_contents_give_the_right_pages_and_every_page_renders(
    client, keys, analyst_report, tmp_path
):
    """Poppler: each title is on the page the table of contents gives (pdftotext page by
    page), and pdftoppm renders every page."""
    import shutil

    from reports.i18n import Lang

    assert shutil.which("pdftotext") and shutil.which("pdftoppm"), "poppler-utils is missing"
    answer = client.get(f"/reports/{analyst_report['id']}.pdf", headers=auth(keys["analyst"]))
    pdf = tmp_path / "report.pdf"
    pdf.write_bytes(answer.content)
    info = subprocess.run(["pdfinfo", str(pdf)], check=True, capture_output=True, text=True)
    pages = int(re.search(r"^Pages:\s+(\d+)", info.stdout, flags=re.M)[1])

    def page_text(number: int) -> str:
        done = subprocess.run(
            ["pdftotext", "-layout", "-f", str(number), "-l", str(number), str(pdf), "-"],
            check=True, capture_output=True, text=True,
        )  # fmt: skip
        return done.stdout

    contents = page_text(2)
    toc = {
        title.strip(" ."): int(number)
        for title, number in re.findall(
            r"^\s*\d+\.\s+(.+?)\s*\.{2,}\s*(\d+)\s*$", contents, flags=re.M
        )
    }
    en = Lang("en")
    assert list(toc) == [en(f"section.{key}") for key in ANALYST_DEF.sections]
    for title, number in toc.items():
        assert 2 < number <= pages, title
        assert title in page_text(number), (title, number)
        # and not on the page before (a running header repeats it after its start)
        assert title not in page_text(number - 1) or number - 1 == 2, (title, number)
    subprocess.run(["pdftoppm", "-r", "50", "-png", str(pdf), str(tmp_path / "page")], check=True)
    rendered = sorted(tmp_path.glob("page-*.png"))
    assert len(rendered) == pages
    assert all(p.stat().st_size > 1000 for p in rendered)
