"""The planners' page (/rankings) says what the ranking means (issue 17), in a real browser:
Playwright driving Debian's Chromium against uvicorn serving the Belize demo in a database
of its own. On the 2024 Territorial Violence Index: the outlier rule that applied (none, on
six districts), the indicators with their denominators, census year and smoothing, what a
contribution is and no zero among the largest, Corozal and Toledo sharing ranks 5-6, and
the bands' runs and seed.

A full-page screenshot goes to tests/output/rankings-issue17.png (gitignored); set
``RANKINGS_SCREENSHOT`` to write one elsewhere too.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, sync_playwright

from app.core.settings import Settings

ROOT = Path(__file__).parents[2]
OUTPUT = ROOT / "tests" / "output"
CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]
INDEX = "territorial-violence"
PERIOD = "2024"
DASH = "\u2013"


@pytest.fixture(scope="module")
def server(demo_service: tuple[Settings, str]) -> str:
    """uvicorn serving the demo, in a database of its own (which nobody writes to)."""
    return demo_service[1]


@pytest.fixture(scope="module")
def browser(server: str) -> Iterator[Browser]:
    if not CHROMIUM.exists():
        pytest.fail("/usr/bin/chromium not found: run OBSERVATORY_SETUP_TESTS=1 scripts/setup.sh")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        yield browser
        browser.close()


def test_the_page_says_what_the_ranking_means(browser, server):
    api = httpx.get(
        f"{server}/rankings", params={"index": INDEX, "period": PERIOD}, timeout=60
    ).json()
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.goto(f"{server}/rankings?index={INDEX}&period={PERIOD}")
    page.wait_for_function("() => ['ready', 'error'].includes(document.body.dataset.state)")
    assert page.evaluate("() => document.body.dataset.state") == "ready", page.inner_text("#error")

    # 1. The rule that applied, and no treated value.
    rule = page.inner_text("#treatment-rule")
    assert rule == api["treatment"]["rule"] and rule.startswith("No outlier treatment")
    assert "6 units, fewer than the 20" in rule
    assert not page.locator("#treated-box").is_visible()
    # 2. Each indicator with what it counts per whom, the census year and the smoothing.
    indicators = page.inner_text("#indicators")
    assert (
        f"Violence against people aged 15{DASH}29, per 100,000 residents of all ages" in indicators
    )
    assert "per 100,000 residents of all ages; 2022 census" in indicators
    assert "EB-smoothed toward the national rate" in indicators
    assert "per 100,000 female residents of all ages; 2022 census" in indicators
    # 3. What a contribution is, beside the column; no zero listed (Stann Creek is the
    # lowest district on shootings: shootings are not among its largest contributions).
    heading = page.inner_text("#contributions-heading")
    assert heading.startswith("Largest contributions (points above the lowest district")
    assert "0 means the lowest of the 6" in page.inner_text("#contribution-meaning")
    rows = {r.get_attribute("data-unit"): r for r in page.locator("#table tbody tr").all()}
    stann_creek = rows["BZ-SC"].locator("td").last.inner_text()
    assert "Homicides" in stann_creek and "Shootings" not in stann_creek
    # 4. Corozal and Toledo share ranks 5-6, and the page says the data cannot order them.
    for code, other in (("BZ-CZL", "Toledo"), ("BZ-TOL", "Corozal")):
        assert rows[code].locator("td").first.inner_text() == f"5{DASH}6"
        name = rows[code].locator("th").inner_text()
        assert f"shares ranks 5{DASH}6 with {other}: the data cannot order them" in name
    assert rows["BZ-BZ"].locator("td").first.inner_text() == "1"
    ties = page.inner_text("#ties")
    assert f"Corozal and Toledo share ranks 5{DASH}6" in ties and "cannot order them" in ties
    assert f"5{DASH}6. Corozal" in page.inner_text("#chart")
    # 5. The bands' runs and seed: the definition's.
    assert "1,000 Monte Carlo runs with seed 1" in page.inner_text("#caption")

    OUTPUT.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=OUTPUT / "rankings-issue17.png", full_page=True)
    if extra := os.environ.get("RANKINGS_SCREENSHOT"):
        page.screenshot(path=extra, full_page=True)
    assert errors == []
    page.close()
