"""The map's alerts panel (issue 19) in a real browser: Playwright driving Debian's
Chromium against uvicorn serving the Belize demo, whose loading stores the shipped
monitors and evaluates their last periods (app/demo/load.py), so open alerts exist."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, Page, sync_playwright
from shapely.geometry import shape

from app.core.cluster import Cluster
from app.core.settings import Settings
from tests.conftest import call_service, demo_database
from tests.e2e.service import running_service

CHROMIUM = Path("/usr/bin/chromium")
DESKTOP = {"width": 1280, "height": 800}
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--enable-unsafe-swiftshader"]  # fmt: skip


@pytest.fixture(scope="module")
def demo(cluster: Cluster, demo_template: str) -> tuple[Settings, str]:
    """The demo (60,000 incidents) in a database of its own (acknowledging alerts changes
    it), and an analyst key for it."""
    from app.services.keys import create_key

    settings = demo_database(cluster, demo_template, "observatory_alerts_panel")
    key = call_service(
        settings, lambda e: create_key(e, role="analyst", name="alerts-panel", actor="tests")
    )
    return settings, key


@pytest.fixture(scope="module")
def server(demo: tuple[Settings, str]) -> Iterator[str]:
    settings, _ = demo
    with running_service(settings.libpq_url) as base:
        yield base


@pytest.fixture(scope="module")
def browser(server: str) -> Iterator[Browser]:
    """Chromium, started after the server (the demo's loading needs the event loop that
    Playwright's synchronous API then holds)."""
    if not CHROMIUM.exists():
        pytest.fail("/usr/bin/chromium not found: run OBSERVATORY_SETUP_TESTS=1 scripts/setup.sh")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        yield browser
        browser.close()


OPEN = {"state": ["new", "acknowledged"]}
SCREENSHOTS = Path("/tmp")


def _open_alerts(base: str, key: str | None = None) -> list[dict]:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    response = httpx.get(f"{base}/alerts", params=OPEN, headers=headers, timeout=30)
    assert response.status_code == 200, response.text
    return response.json()["items"]


def _alert(base: str, alert_id: int, key: str | None = None) -> dict:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    response = httpx.get(f"{base}/alerts/{alert_id}", headers=headers, timeout=30)
    assert response.status_code == 200, response.text
    return response.json()


def _open_map(browser: Browser, base: str) -> tuple[Page, list[str]]:
    """The map page once ready and its alerts listed; the errors it logs."""
    page = browser.new_page(viewport=DESKTOP)
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(f"uncaught: {e}"))
    page.goto(f"{base}/map")
    page.wait_for_function("() => ['ready', 'error'].includes(document.body.dataset.state)")
    assert page.evaluate("() => document.body.dataset.state") == "ready", page.inner_text(
        "#map-error"
    )
    page.wait_for_function("() => document.getElementById('alerts-title').dataset.count")
    assert page.locator("#alerts-error").is_hidden(), page.inner_text("#alerts-error")
    return page, errors


def _listed(page: Page) -> list[int]:
    return [
        int(v)
        for v in page.eval_on_selector_all(
            "#alerts-list [data-alert]", "(nodes) => nodes.map((n) => n.dataset.alert)"
        )
    ]


def _choose(page: Page, alert_id: int) -> None:
    """Choose an alert in the list with the keyboard; wait until its chart is drawn."""
    page.locator(f'#alerts-list [data-alert="{alert_id}"]').focus()
    page.keyboard.press("Enter")
    page.wait_for_function(
        """(id) => {
            const panel = document.getElementById('alert-panel');
            return !panel.hidden && panel.dataset.alert === String(id) && panel.dataset.ready;
        }""",
        arg=alert_id,
    )
    page.evaluate(
        "() => new Promise((r) => { const m = window.observatoryMap;"
        " m.isMoving() ? m.once('moveend', r) : r(); })"
    )


def _bbox(geometry: dict) -> tuple[float, float, float, float]:
    points: list[list[float]] = []

    def walk(c: list) -> None:
        if isinstance(c[0], (int, float)):
            points.append(c)
        else:
            for part in c:
                walk(part)

    walk(geometry["coordinates"])
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    return min(xs), min(ys), max(xs), max(ys)


def _chart(page: Page) -> dict:
    """What the drawn chart holds: its dots (and alarmed ones, withheld ones), its bands
    and text alternative, and the rows of its table."""
    return page.evaluate(
        """() => {
            const svg = document.querySelector('#alert-panel svg.series-chart');
            const label = svg.getAttribute('aria-labelledby').split(' ')
                .map((id) => document.getElementById(id).textContent).join(' ');
            const periods = (s) => [...svg.querySelectorAll(s)].map((c) => c.dataset.period);
            return {
                points: periods('circle.point'),
                alarms: periods('circle.point.alarm'),
                withheld: svg.querySelectorAll('circle.point.withheld').length,
                bands: svg.querySelectorAll('polygon.band').length,
                expected: svg.querySelectorAll('polyline.expected').length,
                role: svg.getAttribute('role'),
                label,
                rows: document.querySelectorAll('#alert-panel .series-table tbody tr').length,
            };
        }"""
    )


# --- the public page -----------------------------------------------------------------------


def test_the_demo_has_open_alerts_public_and_sensitive(server: str, demo):
    """The demo's loading evaluates the shipped monitors: without open alerts (public
    ones and analysts-only ones) the tests below would prove nothing."""
    _, key = demo
    public = _open_alerts(server)
    everything = _open_alerts(server, key)
    assert public and not any(a["sensitive"] for a in public)
    assert any(a["sensitive"] for a in everything)
    assert {a["id"] for a in public} < {a["id"] for a in everything}


def test_the_public_panel_lists_the_open_public_alerts_only(browser: Browser, server: str, demo):
    _, key = demo
    page, errors = _open_map(browser, server)
    public = _open_alerts(server)
    sensitive = {a["id"] for a in _open_alerts(server, key) if a["sensitive"]}
    assert _listed(page) == [a["id"] for a in public]
    assert not sensitive & set(_listed(page))
    text = page.inner_text("#alerts-list")
    assert "sensitive" not in text.lower()
    for a in public:
        item = page.inner_text(f'#alerts-list [data-alert="{a["id"]}"]')
        assert (a["title"] or a["monitor"]) in item
        assert f"Lasted {a['lasted']} " in item
        if a["place_kind"] == "unit":
            assert f"{a['unit_name']} District" in item
        else:
            assert "H3 cell" in item and " from " in item  # the nearest town
        if a["observed"] is None:
            assert "observed withheld" in item
        else:
            assert f"observed {a['observed']:.0f} vs expected" in item
    assert page.inner_text("#alerts-count") == f"({len(public)})"
    # The outlines: the style's alerts layer, of open alerts, drawn; no sensitive layer.
    layers = page.evaluate(
        "() => window.observatoryMap.getStyle().layers.filter((l) => l.id.includes('alert'))"
        ".map((l) => [l.id, (l.layout || {}).visibility || 'visible'])"
    )
    assert ["alerts-line", "visible"] in layers
    assert not [name for name, _ in layers if "sensitive" in name]
    tiles = page.evaluate(
        "() => window.observatoryMap.queryRenderedFeatures({layers: ['alerts-fill']})"
        ".map((f) => f.id)"
    )
    assert set(tiles) <= {a["id"] for a in public} and tiles
    assert errors == []


def test_choosing_an_alert_draws_its_series_and_flies_there(browser: Browser, server: str):
    page, errors = _open_map(browser, server)
    public = _open_alerts(server)
    # An H3 alert whose count is shown (its outline is in the answer).
    chosen = next(a for a in public if a["place_kind"] == "h3" and a["observed"] is not None)
    detail = _alert(server, chosen["id"])
    series = detail["series"]
    assert len(series) > 50  # two years of weeks
    _choose(page, chosen["id"])
    chart = _chart(page)
    assert chart["points"] == [p["period"] for p in series]
    assert chart["alarms"] == [p["period"] for p in series if p["alarm"]]
    assert chart["alarms"] and chart["alarms"][-1] == detail["period"]
    assert chart["withheld"] == sum(p["observed"] is None for p in series)
    assert chart["rows"] == len(series)
    assert chart["bands"] >= 1 and chart["expected"] == chart["bands"]
    assert chart["role"] == "img"
    assert f"{len(series)} weeks" in chart["label"] and detail["period"] in chart["label"]
    facts = page.inner_text("#alert-body dl")
    assert f"{detail['observed']:.0f}" in facts and f"{detail['expected']:.1f}" in facts
    # The map flew there: the alert's outline is in view and highlighted.
    west, south, east, north = _bbox(detail["outline"])
    bounds = page.evaluate("() => window.observatoryMap.getBounds().toArray()")
    assert bounds[0][0] <= west and east <= bounds[1][0], bounds
    assert bounds[0][1] <= south and north <= bounds[1][1], bounds
    assert page.evaluate("() => window.observatoryMap.getZoom()") > 10
    drawn = page.evaluate(
        "() => window.observatoryMap.getSource('alert-selected').serialize().data.geometry"
    )
    assert drawn == detail["outline"]
    assert (
        page.locator(f'#alerts-list [data-alert="{chosen["id"]}"]').get_attribute("aria-pressed")
        == "true"
    )
    # A visitor may not acknowledge.
    assert page.locator("#alert-ack").is_hidden()
    page.screenshot(path=SCREENSHOTS / "alerts-panel-public.png")
    # Closing returns the focus to the list.
    page.click("#alert-close")
    assert page.locator("#alert-panel").is_hidden()
    assert page.evaluate("() => document.activeElement.dataset.alert") == str(chosen["id"])
    assert errors == []


def test_clicking_an_alert_on_the_map_opens_it(browser: Browser, server: str):
    page, errors = _open_map(browser, server)
    public = _open_alerts(server)
    unit = next(a for a in public if a["place_kind"] == "unit")
    items = httpx.get(f"{server}/collections/alerts/items", params={"limit": 1000}).json()
    geometry = next(f["geometry"] for f in items["features"] if f["id"] == unit["id"])
    point = shape(geometry).representative_point()
    xy = page.evaluate(f"() => window.observatoryMap.project([{point.x}, {point.y}])")
    box = page.locator("#map canvas").bounding_box()
    page.mouse.click(box["x"] + xy["x"], box["y"] + xy["y"])
    page.wait_for_function(
        "(id) => document.getElementById('alert-panel').dataset.alert === String(id)"
        " && document.getElementById('alert-panel').dataset.ready",
        arg=unit["id"],
    )
    assert f"{unit['unit_name']} District" in page.inner_text("#alert-title")
    # The district panel opens too, and keeps the focus (as a click on a district does).
    page.wait_for_selector("#panel-body dl")
    assert unit["unit_name"] in page.inner_text("#panel-title")
    assert page.evaluate("() => document.activeElement.id") == "panel"
    assert _chart(page)["points"] == [p["period"] for p in _alert(server, unit["id"])["series"]]
    # The layer toggle hides the outlines (and the chosen one's).
    page.uncheck("#show-alerts")
    hidden = page.evaluate(
        "() => ['alerts-line', 'alerts-fill', 'alert-selected-line'].map((id) =>"
        " window.observatoryMap.getLayoutProperty(id, 'visibility'))"
    )
    assert hidden == ["none", "none", "none"]
    assert errors == []


# --- with an analyst key ---------------------------------------------------------------------


def test_an_analyst_sees_sensitive_alerts_and_acknowledges_one(browser: Browser, server: str, demo):
    _, key = demo
    page, errors = _open_map(browser, server)
    page.fill("#key", key)
    page.click("#use-key")
    everything = _open_alerts(server, key)
    page.wait_for_function(
        "(n) => document.getElementById('alerts-title').dataset.count === String(n)"
        " && document.getElementById('key-status').textContent.includes('accepted')",
        arg=len(everything),
    )
    assert _listed(page) == [a["id"] for a in everything]
    assert page.evaluate("() => !!window.observatoryMap.getLayer('alerts-sensitive-line')")
    chosen = next(a for a in everything if a["sensitive"] and a["state"] == "new")
    detail = _alert(server, chosen["id"], key)
    assert "(sensitive)" in page.inner_text(f'#alerts-list [data-alert="{chosen["id"]}"]')
    _choose(page, chosen["id"])
    assert _chart(page)["points"] == [p["period"] for p in detail["series"]]
    assert page.locator("#alert-ack").is_visible()
    # Without a note the page asks for one and sends nothing.
    page.click("#alert-ack button[value=acknowledged]")
    assert "note" in page.inner_text("#alert-ack-status")
    assert _alert(server, chosen["id"], key)["state"] == "new"
    note = "Checked with the district's unit: two households, follow-up visits planned."
    page.fill("#alert-note", note)
    page.click("#alert-ack button[value=acknowledged]")
    page.wait_for_function(
        "() => document.getElementById('alert-ack-status').textContent === 'Alert acknowledged.'"
    )
    after = _alert(server, chosen["id"], key)
    assert (after["state"], after["note"]) == ("acknowledged", note)
    assert "acknowledged" in page.inner_text(f'#alerts-list [data-alert="{chosen["id"]}"]')
    assert note in page.inner_text("#alert-body dl")
    page.screenshot(path=SCREENSHOTS / "alerts-panel-analyst.png")
    assert errors == []
