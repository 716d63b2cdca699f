"""A 401's Basic challenge in a real browser (Debian's Chromium, driven by Playwright).

A browser answers a Basic challenge by asking its user for a name and a password, in a
dialog over the page, and sends the request again with them. Playwright's
``http_credentials`` stands in for the user here: it answers every such dialog with the
analyst key as the password. So a request that comes back 200 although it carried no
valid key is one for which a person would have been asked. Opening a URL must ask (the
way a browser can use the key at all); the pages' scripts must not (the map would pop up
a login dialog over itself for a wrong or revoked key, and in workers for its tiles).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, sync_playwright

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]
WRONG = "obs_00000000_not-a-key-of-this-service"


@pytest.fixture(scope="module")
def server(session_db_service: str) -> str:
    """uvicorn on 127.0.0.1 serving the session's test database, warm-up off (shared by
    the package's modules that use that database)."""
    return session_db_service


@pytest.fixture(scope="module")
def browser(server: str) -> Iterator[Browser]:
    if not CHROMIUM.exists():
        pytest.fail("/usr/bin/chromium not found: run OBSERVATORY_SETUP_TESTS=1 scripts/setup.sh")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser: Browser, server: str, keys: dict[str, str]) -> Iterator[Page]:
    """A page of a browser whose "user" gives the analyst key whenever the browser asks;
    a context of its own, as a browser keeps the credentials it was given for the
    origin and sends them unasked to the same paths afterwards."""
    credentials = {"username": "analyst", "password": keys["analyst"]}
    context = browser.new_context(http_credentials=credentials)
    page = context.new_page()
    page.goto(f"{server}/map")
    yield page
    context.close()


def test_opening_a_url_asks_and_the_key_as_password_opens_it(page: Page, server: str):
    response = page.goto(f"{server}/collections/incidents/items?limit=1&f=json")
    assert response is not None and response.status == 200, "the browser was never asked"
    assert page.evaluate("() => JSON.parse(document.body.innerText).numberMatched") >= 0


class Asked:
    """The requests for which the browser would ask its user for a name and a password:
    Chromium tells DevTools of each (``Fetch.authRequired``, what the login dialog is
    made from); each is answered "cancel", and every other request continues."""

    def __init__(self, page: Page) -> None:
        self.urls: list[str] = []
        self.cdp = page.context.new_cdp_session(page)
        self.cdp.on("Fetch.requestPaused", self._go_on)
        self.cdp.on("Fetch.authRequired", self._cancel)
        self.cdp.send("Fetch.enable", {"handleAuthRequests": True, "patterns": [{}]})

    def _go_on(self, event: dict) -> None:
        self.cdp.send("Fetch.continueRequest", {"requestId": event["requestId"]})

    def _cancel(self, event: dict) -> None:
        self.urls.append(event["request"]["url"])
        answer = {"response": "CancelAuth"}
        self.cdp.send(
            "Fetch.continueWithAuth",
            {"requestId": event["requestId"], "authChallengeResponse": answer},
        )


def test_the_pages_scripts_are_never_asked_for(browser: Browser, server: str):
    page = browser.new_page()
    asked = Asked(page)
    page.goto(f"{server}/map")
    # The pages' own helper (static/js/api.js), with a wrong key, as the map's key field
    # sends it; with no key; and fetch() from a worker, where MapLibre fetches tiles.
    statuses = page.evaluate(
        """async (wrong) => {
            const api = await import(new URL('static/js/api.js', document.baseURI));
            const status = (p) => p.then(() => 200, (e) => e.status);
            const tile = new URL('tiles/incidents/6/16/28.mvt', document.baseURI);
            const worker = new Worker(URL.createObjectURL(new Blob([
                `fetch('${tile}').then(r => postMessage(r.status), e => postMessage(String(e)))`,
            ], {type: 'text/javascript'})));
            const fromWorker = new Promise((done) => {
                worker.onmessage = (e) => done(e.data);
                worker.onerror = (e) => done(`worker failed: ${e.message}`);
            });
            return {
                wrongKey: await status(api.getJSON('collections/incidents', {}, wrong)),
                noKey: await status(api.getJSON('collections/incidents/items', {limit: 1})),
                tileNoKey: (await fetch(tile)).status,
                worker: await fromWorker,
            };
        }""",
        WRONG,
    )
    assert statuses == {"wrongKey": 401, "noKey": 401, "tileNoKey": 401, "worker": 401}
    assert asked.urls == []
    # Opening a URL does ask (this is how the browser uses the key at all), so the
    # silence above is not a browser that never asks.
    url = f"{server}/collections/incidents/items?limit=1&f=json"
    assert page.goto(url).status == 401  # cancelled
    assert asked.urls == [url]
    asked.cdp.detach()
    page.close()
