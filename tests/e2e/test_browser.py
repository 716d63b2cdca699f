"""The map (/map) and the planners' page (/rankings) in a real browser: Playwright driving
Debian's Chromium (/usr/bin/chromium, installed by ``OBSERVATORY_SETUP_TESTS=1
scripts/setup.sh``) against uvicorn serving the Belize demo (its 60,000 synthetic incidents and
the demo's Gi* run) in a database of its own on the session's cluster.

Screenshots at 1280x800 and at a phone width go to tests/output/ (gitignored).
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import geopandas as gpd
import httpx
import pandas as pd
import pytest
from playwright.sync_api import Browser, ConsoleMessage, Page, sync_playwright

from app.core.settings import Settings
from tests.conftest import BELIZE, call_service

ROOT = Path(__file__).parents[2]
OUTPUT = ROOT / "tests" / "output"
CHROMIUM = Path("/usr/bin/chromium")
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}
INDEX = "territorial-violence"
# The declared age groups of public /stats tables (privacy.age_groups): (age_min, age_max).
AGE_GROUPS = {("0", "14"), (None, "14"), ("15", "29"), ("30", "44"), ("45", "64"), ("65", None)}
ONE_PERIOD = re.compile(r"\d{4}(-Q[1-4]|-\d{2})?")
# Headless Chromium without a GPU draws WebGL with SwiftShader (software).
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--enable-unsafe-swiftshader",
]


@pytest.fixture(scope="module")
def demo(demo_service: tuple[Settings, str]) -> tuple[Settings, str]:
    """The demo (60,000 incidents) in its own database (other tests count incidents in the
    shared one), and an analyst key for it."""
    from app.services.keys import create_key

    settings, _ = demo_service
    key = call_service(
        settings, lambda e: create_key(e, role="analyst", name="browser", actor="tests")
    )
    return settings, key


@pytest.fixture(scope="module")
def server(demo_service: tuple[Settings, str], demo: tuple[Settings, str]) -> str:
    """The demo's service; after the key's creation (``demo``), which, like the demo's
    loading, needs the event loop that Playwright's synchronous API holds once started."""
    return demo_service[1]


@pytest.fixture(scope="module")
def browser(server: str) -> Iterator[Browser]:
    """Chromium; after the server, whose demo loading needs the event loop Playwright's
    synchronous API then holds for the module."""
    if not CHROMIUM.exists():
        pytest.fail("/usr/bin/chromium not found: run OBSERVATORY_SETUP_TESTS=1 scripts/setup.sh")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        yield browser
        browser.close()


class Console:
    """Errors the page logs (console.error, failed resources, uncaught exceptions)."""

    def __init__(self, page: Page) -> None:
        self.errors: list[str] = []
        page.on("console", self._message)
        page.on("pageerror", lambda error: self.errors.append(f"uncaught: {error}"))

    def _message(self, message: ConsoleMessage) -> None:
        if message.type == "error":
            self.errors.append(f"{message.text} at {message.location.get('url')}")


def _open(browser: Browser, url: str, viewport: dict[str, int] = DESKTOP) -> tuple[Page, Console]:
    page = browser.new_page(viewport=viewport, accept_downloads=True)
    console = Console(page)
    page.goto(url)
    page.wait_for_function("() => ['ready', 'error'].includes(document.body.dataset.state)")
    return page, console


def _open_map(browser: Browser, base: str, viewport: dict[str, int] = DESKTOP):
    page, console = _open(browser, f"{base}/map", viewport)
    assert page.evaluate("() => document.body.dataset.state") == "ready", page.inner_text(
        "#map-error"
    )
    _idle(page)
    return page, console


def _arm_idle(page: Page) -> None:
    """Remember the map's next 'idle' (every tile loaded and drawn), armed before a change."""
    page.evaluate(
        "() => { window.__idle = new Promise(r => window.observatoryMap.once('idle', r)); }"
    )


def _wait_idle(page: Page) -> None:
    page.evaluate("() => window.__idle")


def _idle(page: Page) -> None:
    page.evaluate(
        """() => new Promise(resolve => {
            const map = window.observatoryMap;
            if (map.loaded() && map.areTilesLoaded() && !map.isMoving()) resolve();
            else map.once('idle', resolve);
        })"""
    )


def _pixels(page: Page) -> dict[str, int]:
    """Counts of the drawn map's pixels: all, background, and near given colours."""
    return page.evaluate(
        """() => {
            const source = window.observatoryMap.getCanvas();
            const canvas = document.createElement('canvas');
            canvas.width = source.width; canvas.height = source.height;
            const ctx = canvas.getContext('2d');
            ctx.drawImage(source, 0, 0);
            const data = ctx.getImageData(0, 0, canvas.width, canvas.height).data;
            const near = (i, [r, g, b], d) =>
                Math.abs(data[i] - r) <= d && Math.abs(data[i + 1] - g) <= d &&
                Math.abs(data[i + 2] - b) <= d;
            const out = {all: 0, background: 0, hot: 0, dark: 0, hash: 0};
            for (let i = 0; i < data.length; i += 4) {
                out.all++;
                if (near(i, [247, 247, 245], 2)) out.background++;
                if (near(i, [214, 47, 39], 30)) out.hot++;          // Gi_Bin 3, #d62f27
                if (near(i, [37, 37, 37], 40)) out.dark++;          // incidents, #252525
                const v = data[i] + 7 * data[i + 1] + 13 * data[i + 2];
                out.hash = (out.hash * 31 + v) % 1000000007;
            }
            return out;
        }"""
    )


def _ranking(base: str, period: str | None = None) -> dict:
    period = period or httpx.get(f"{base}/indexes/{INDEX}/periods").json()["latest"]
    response = httpx.get(f"{base}/rankings", params={"index": INDEX, "period": period}, timeout=60)
    assert response.status_code == 200, response.text
    return response.json()


def _screenshot(page: Page, name: str) -> None:
    OUTPUT.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=OUTPUT / f"{name}.png", full_page=True)


def _off_lattice(url: str) -> str | None:
    """Why a /stats request is not a public lattice table (app/services/lattice.py), or
    None: one whole period or whole periods by=period, at most one category and one sex,
    an age range only as one declared group, no source and no other age groups."""
    query = parse_qs(urlsplit(url).query)
    one = {k: v[0] for k, v in query.items()}
    if "source" in query or "age_groups" in query:
        return "source or age_groups"
    for name in ("category", "victim_sex"):
        if len(",".join(query.get(name, [])).split(",")) > 1:
            return f"several {name}"
    if (one.get("age_min"), one.get("age_max")) not in AGE_GROUPS | {(None, None)}:
        return "an age range that is not a declared group"
    period = one.get("period", "year")
    by = ",".join(query.get("by", [])).split(",")
    if not ONE_PERIOD.fullmatch(period) and "period" not in by:
        return "not one period and not by=period"
    for name in ("occurred_from", "occurred_to"):
        if name in one and not re.fullmatch(r"\d{4}-\d{2}-01", one[name]):
            return f"{name} not on a period's first day"
    return None


def _watch_stats(page: Page) -> list[tuple[str, int]]:
    """Every /stats request the page makes, with its status, as it is answered."""
    seen: list[tuple[str, int]] = []
    page.on(
        "response",
        lambda r: seen.append((r.url, r.status)) if urlsplit(r.url).path == "/stats" else None,
    )
    return seen


def _panel_ready(page: Page, text: str) -> None:
    """Wait until the district panel is drawn (not "Loading…") and shows ``text``."""
    page.wait_for_function(
        """(text) => {
            const body = document.getElementById('panel-body');
            return body.querySelector('dl') && body.innerText.includes(text);
        }""",
        arg=text,
    )


def _set(page: Page, values: dict[str, str]) -> None:
    """Set filter inputs at once, then announce one change (as a person's last edit)."""
    page.evaluate(
        """(values) => {
            let last;
            for (const [id, v] of Object.entries(values)) {
                last = document.getElementById(id);
                last.value = v;
            }
            last.dispatchEvent(new Event('change'));
        }""",
        values,
    )


def _click_district(page: Page, code: str) -> None:
    """Click the map inside a district (its representative point, on the mainland)."""
    districts = gpd.read_file(BELIZE / "boundaries" / "belize_adm1_districts.geojson")
    point = districts.set_index("iso_3166_2").geometry[code].representative_point()
    xy = page.evaluate(f"() => window.observatoryMap.project([{point.x}, {point.y}])")
    box = page.locator("#map canvas").bounding_box()
    page.mouse.click(box["x"] + xy["x"], box["y"] + xy["y"])


# --- /map ----------------------------------------------------------------------------


def test_map_draws_districts_hot_spots_and_legend_without_errors(browser, server):
    page, console = _open_map(browser, server)
    pixels = _pixels(page)
    # Not blank: most of the canvas is the territory, not the background colour, and
    # the demo's hot spots (Gi_Bin 3 red) are drawn.
    assert pixels["background"] < 0.9 * pixels["all"], pixels
    assert pixels["hot"] > 50, pixels
    ranking = _ranking(server)
    k = len({r["class"] for r in ranking["rows"]})
    legend = page.locator("#legend-index li[data-class]")
    assert legend.count() == 3 >= k
    assert "Class 1 (lowest)" in legend.nth(0).inner_text()
    assert "Class 3 (highest)" in legend.nth(2).inner_text()
    assert page.locator("#legend-hotspots li").count() == 7
    assert "Hot spot - 99% confidence" in page.inner_text("#legend-hotspots")
    # Only this origin was asked for anything (no CDN, basemap or font server).
    assert page.evaluate(
        "() => performance.getEntriesByType('resource')"
        ".every(e => e.name.startsWith(location.origin) || e.name.startsWith('blob:'))"
    )
    _screenshot(page, "map-desktop")
    assert console.errors == []
    page.close()


def _rendered_names(page: Page, layers: list[str]) -> set[str]:
    return set(
        page.evaluate(
            "(layers) => window.observatoryMap.queryRenderedFeatures({layers})"
            ".map(f => f.properties.name)",
            layers,
        )
    )


def test_map_names_districts_and_towns(browser, server):
    """Issue 16 point 8: place names on the map, drawn with the service's own glyphs."""
    page = browser.new_page(viewport=DESKTOP)
    console = Console(page)
    answers: list[tuple[str, int]] = []
    page.on(
        "response",
        lambda r: answers.append((r.url, r.status)) if "/fonts/" in r.url else None,
    )
    page.goto(f"{server}/map")
    page.wait_for_function("() => ['ready', 'error'].includes(document.body.dataset.state)")
    _idle(page)
    style = page.evaluate("() => window.observatoryMap.getStyle()")
    symbols = [layer for layer in style["layers"] if layer["type"] == "symbol"]
    assert symbols and all(layer["layout"]["text-field"] == ["get", "name"] for layer in symbols)
    assert style["glyphs"].startswith(server)
    # MapLibre asked for the glyph ranges of the names, and the service had them.
    assert answers and all(status == 200 for _, status in answers), answers
    assert any("/fonts/DejaVu%20Sans/0-255.pbf" in url for url, _ in answers), answers
    districts = _rendered_names(page, ["labels-units"])
    assert districts == {"Belize", "Cayo", "Corozal", "Orange Walk", "Stann Creek", "Toledo"}
    towns = _rendered_names(page, ["labels-towns"])
    assert {"Belize City", "Belmopan", "Dangriga", "Orange Walk", "Punta Gorda"} <= towns, towns
    _screenshot(page, "map-place-names")
    # Closer in, villages are named too (GeoNames' places of 500 people or more).
    _arm_idle(page)
    page.evaluate("() => window.observatoryMap.jumpTo({center: [-88.85, 17.2], zoom: 10})")
    _wait_idle(page)
    villages = _rendered_names(page, ["labels-villages"])
    assert {"Teakettle Village", "Camelote"} & villages, villages
    _screenshot(page, "map-place-names-cayo")
    # The names can be switched off.
    page.uncheck("#show-labels")
    assert (
        page.evaluate("() => window.observatoryMap.getLayoutProperty('labels-towns', 'visibility')")
        == "none"
    )
    assert console.errors == []
    page.close()


def test_clicking_belize_district_shows_the_api_rank_band_and_indicators(browser, server):
    page, console = _open_map(browser, server)
    _click_district(page, "BZ-BZ")
    page.wait_for_selector("#panel-body dl")
    row = next(r for r in _ranking(server)["rows"] if r["unit_code"] == "BZ-BZ")
    assert "Belize" in page.inner_text("#panel-title")
    assert page.inner_text("[data-field=rank]") == f"{row['rank']} of 6"
    assert (
        page.inner_text("[data-field=band]") == f"{row['rank_q05']:.0f}\u2013{row['rank_q95']:.0f}"
    )
    assert page.inner_text("[data-field=class]") == str(row["class"])
    panel = page.inner_text("#panel")
    for contributor in row["top_indicators"]:
        assert contributor["name"] in panel
    # The TVI has indicators counted from sensitive categories: in public its contributors
    # are named without values (with the score, any value would bound the withheld ones).
    assert row["top_indicators"] and all(c["contribution"] is None for c in row["top_indicators"])
    assert "null" not in panel and "points" not in panel
    assert page.locator("[data-note=contributions]").is_visible()
    assert "Counts by category" in panel and "Counts by victim's sex" in panel
    # Without a key the sensitive categories are withheld; counts by sex need one category.
    assert "withheld" in panel
    assert page.locator("[data-note=sex]").is_visible()
    # The slider spans the index's period: the counts are of that one period.
    assert f"Incidents, {_ranking(server)['period']}" in panel
    assert page.inner_text("[data-field=population]").startswith("1")  # 100,000s
    _screenshot(page, "map-desktop-panel")
    # The panel is reachable without a mouse too.
    page.click("#panel-close")
    page.select_option("#district", "BZ-CY")
    page.wait_for_selector("#panel-body dl")
    assert "Cayo" in page.inner_text("#panel-title")
    assert page.evaluate("() => document.activeElement.id") == "panel"
    assert console.errors == []
    page.close()


def test_without_a_key_the_panel_asks_only_public_lattice_tables(browser, server):
    """/stats without an analyst key answers one whole month, quarter or year, one category
    and one sex at most, and an age range only as a declared group: the panel asks for
    nothing else, and says what it shows instead of a free filter."""
    page, console = _open_map(browser, server)
    stats = _watch_stats(page)
    page.select_option("#district", "BZ-BZ")
    _panel_ready(page, "Choose a category")
    # One category: counts by victim's sex (the demo has robberies of both sexes).
    page.select_option("#category", "robbery")
    _panel_ready(page, "Female")
    assert page.locator("#panel-body table").count() == 2
    assert not page.locator("[data-note=sex]").count()
    # An age range that is no declared group: counts for every age, and a note says so.
    _set(page, {"age-min": "20", "age-max": "25"})
    _panel_ready(page, "not one of the declared age groups")
    # A declared group is asked for as it is.
    _set(page, {"age-min": "15", "age-max": "29"})
    _panel_ready(page, "Victims aged 15-29")
    assert any("age_min=15" in u and "age_max=29" in u for u, _ in stats)
    # Months that are not one period: the last whole quarter inside them, said in the caption.
    last = page.evaluate("() => Number(document.getElementById('to').value)")
    _set(page, {"from": str(last - 10)})
    _panel_ready(page, "the last whole quarter")
    quarter = page.inner_text("#panel-body table caption")
    assert re.search(r"Q4 \d{4}, the last whole quarter of", quarter), quarter
    _set(page, {"from": str(last - 2)})
    _panel_ready(page, "Incidents, Q4")
    _set(page, {"from": str(last), "to": str(last)})
    _panel_ready(page, "Incidents, December")
    assert stats, "the panel asked for no counts"
    off = [(u, why) for u, _ in stats if (why := _off_lattice(u))]
    assert not off, off
    assert all(status == 200 for _, status in stats), [s for s in stats if s[1] != 200]
    assert console.errors == []
    page.close()


def test_an_analyst_key_shows_incidents(browser, server, demo):
    page, console = _open_map(browser, server)
    asked: list[str] = []
    page.on("request", lambda r: asked.append(r.url) if "/tiles/incidents/" in r.url else None)
    before = _pixels(page)
    assert page.evaluate("() => window.observatoryMap.getLayer('incidents-circle') === undefined")
    assert page.is_disabled("#show-incidents")
    page.fill("#key", demo[1])
    _arm_idle(page)
    page.click("#use-key")
    page.wait_for_function("() => document.getElementById('show-incidents').checked")
    _wait_idle(page)
    after = _pixels(page)
    features = page.evaluate(
        "() => window.observatoryMap.queryRenderedFeatures({layers: ['incidents-circle']}).length"
    )
    assert asked and features > 0
    assert after["dark"] > before["dark"], (before, after)
    assert "accepted" in page.inner_text("#key-status")
    _screenshot(page, "map-desktop-incidents")
    # Issue 16 point 6: the demo's incidents are where people live (around the towns and
    # villages, not in the forest), here west of Belmopan, with the places named.
    _arm_idle(page)
    page.evaluate("() => window.observatoryMap.jumpTo({center: [-88.95, 17.2], zoom: 10})")
    _wait_idle(page)
    _screenshot(page, "map-demo-incidents-cayo")
    # With the key the panel lists contributions with their values (points).
    page.select_option("#district", "BZ-BZ")
    _panel_ready(page, "points")
    assert not page.locator("[data-note=contributions]").count()
    assert console.errors == []
    page.close()


def test_the_category_filter_changes_tile_requests_and_pixels(browser, server, demo):
    page, console = _open_map(browser, server)
    page.fill("#key", demo[1])
    _arm_idle(page)
    page.click("#use-key")
    page.wait_for_function("() => document.getElementById('show-incidents').checked")
    _wait_idle(page)
    before = _pixels(page)
    asked: list[str] = []
    page.on("request", lambda r: asked.append(r.url) if "/tiles/incidents/" in r.url else None)
    _arm_idle(page)
    page.select_option("#category", "homicide")
    _wait_idle(page)
    after = _pixels(page)
    assert asked and all("category=homicide" in u for u in asked), asked
    assert after["hash"] != before["hash"]
    # Homicides are a small share of all incidents: far fewer dark pixels.
    assert after["dark"] < before["dark"], (before, after)
    assert console.errors == []
    page.close()


def test_map_at_phone_width(browser, server):
    page, console = _open_map(browser, server, PHONE)
    assert _pixels(page)["background"] < _pixels(page)["all"]
    assert page.evaluate("() => document.documentElement.scrollWidth <= window.innerWidth")
    page.select_option("#district", "BZ-BZ")
    page.wait_for_selector("#panel-body dl")
    _screenshot(page, "map-phone")
    assert console.errors == []
    page.close()


def test_map_shows_the_service_error_instead_of_a_blank_area(browser, server):
    page, _ = _open(browser, f"{server}/map?period=not-a-year")
    _idle(page)
    error = page.locator("#map-error")
    assert error.is_visible()
    assert "422" in error.inner_text() and "period" in error.inner_text()
    page.close()


# --- /rankings -----------------------------------------------------------------------


def test_rankings_page_rows_in_api_order_and_downloads(browser, server):
    page, console = _open(browser, f"{server}/rankings")
    assert page.evaluate("() => document.body.dataset.state") == "ready", page.inner_text("#error")
    api = _ranking(server)
    units = page.eval_on_selector_all("#table tbody tr", "rows => rows.map(r => r.dataset.unit)")
    assert units == [r["unit_code"] for r in api["rows"]] and len(units) == 6
    first = page.locator("#table tbody tr").first.inner_text()
    assert api["rows"][0]["unit_name"] in first and f"{api['rows'][0]['score']:.1f}" in first
    assert page.locator("#chart svg rect").count() == 6
    # The TVI has withheld indicators: contributors named without values, and the note why.
    top = api["rows"][0]["top_indicators"]
    assert top and all(c["contribution"] is None for c in top)
    cell = page.locator("#table tbody tr").first.locator("td").last.inner_text()
    assert cell == "; ".join(c["name"] for c in top)
    assert page.locator("#contributions-note").is_visible()
    assert "without values" in page.inner_text("#table thead")
    assert "indicators" in page.inner_text("#about")
    assert "[object" not in page.inner_text("#about")
    _screenshot(page, "rankings-desktop")

    with page.expect_download() as info:
        page.click("#csv")
    table = pd.read_csv(info.value.path())
    assert list(table["unit_code"]) == [r["unit_code"] for r in api["rows"]]
    assert list(table["rank"]) == [r["rank"] for r in api["rows"]]
    assert list(table["score"].round(9)) == [round(r["score"], 9) for r in api["rows"]]
    assert list(table["rank_q05"]) == [r["rank_q05"] for r in api["rows"]]
    with page.expect_download() as info:
        page.click("#xlsx")
    assert table["top1_contribution"].isna().all()
    assert list(table["top1_indicator"]) == [r["top_indicators"][0]["name"] for r in api["rows"]]
    sheet = pd.read_excel(io.BytesIO(Path(info.value.path()).read_bytes()))
    assert list(sheet["unit_code"]) == [r["unit_code"] for r in api["rows"]]

    # Sortable: by score ascending puts the lowest score first.
    page.click("button[data-sort=score]")
    units = page.eval_on_selector_all("#table tbody tr", "rows => rows.map(r => r.dataset.unit)")
    assert units == [r["unit_code"] for r in sorted(api["rows"], key=lambda r: r["score"])]
    assert page.get_attribute("#table th:nth-child(3)", "aria-sort") == "ascending"
    assert console.errors == []
    page.close()


def test_rankings_page_at_phone_width(browser, server):
    page, console = _open(browser, f"{server}/rankings", PHONE)
    assert page.locator("#table tbody tr").count() == 6
    _screenshot(page, "rankings-phone")
    assert console.errors == []
    page.close()


def test_rankings_page_shows_the_service_error(browser, server):
    page, _ = _open(browser, f"{server}/rankings?index={INDEX}&period=not-a-year")
    assert page.evaluate("() => document.body.dataset.state") == "error"
    assert page.locator("#error").is_visible()
    assert "422" in page.inner_text("#error")
    page.close()
