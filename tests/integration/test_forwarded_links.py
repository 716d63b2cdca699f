"""Absolute links take forwarded headers only from trusted proxies (issue 16, point 7).

``X-Forwarded-Host: evil.example`` from any client used to put every tile URL of a
TileJSON, every OGC link, the style's sources and the QGIS project's layers on the
attacker's host; a shared cache in front would have served that answer to everyone.
Now (``app.ogc.links``): ``api.public_url`` when set, else the forwarded headers as the
outermost of ``api.trusted_proxy_hops`` proxies wrote them, else the request's own Host.
"""

from __future__ import annotations

import io
import re
import threading
import time
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import pytest
import uvicorn
from fastapi.testclient import TestClient
from pydantic import ValidationError

from app.core.settings import ApiSettings, Settings
from app.main import create_app
from tests.conftest import _free_port, auth

EVIL = {
    "X-Forwarded-Proto": "https",
    "X-Forwarded-Host": "evil.example",
    "X-Forwarded-Prefix": "/phish",
}
PROXY = {
    "X-Forwarded-Proto": "https",
    "X-Forwarded-Host": "maps.example.org",
    "X-Forwarded-Prefix": "/observatory/",
}
PROXIED = "https://maps.example.org/observatory"
PUBLIC = "https://observatory.example.gov/crime"
# Every kind of answer that carries absolute links.
JSON_URLS = (
    "/",
    "/collections",
    "/collections/units-1",
    "/collections/units-1/items?limit=2",
    "/collections/units-1/queryables",
    "/collections/units-1/tiles",
    "/collections/units-1/styles",
    "/tiles/units-1.json",
    "/tiles/units-1.json?level=1",
    "/styles/default.json",
)


def _settings(base_data: Settings, **api) -> Settings:
    """The suite's settings with API settings changed, validated as a deployment's are."""
    changed = ApiSettings.model_validate({**base_data.api.model_dump(), **api})
    return base_data.model_copy(update={"api": changed})


@contextmanager
def _client(base_data: Settings, **api) -> Iterator[TestClient]:
    with TestClient(create_app(_settings(base_data, **api))) as client:
        yield client


def _project_text(client, headers: dict[str, str]) -> str:
    response = client.get("/qgis/project.qgz", headers=headers)
    assert response.status_code == 200, response.text
    with zipfile.ZipFile(io.BytesIO(response.content)) as archive:
        (name,) = archive.namelist()
        return archive.read(name).decode()


def _answers(client, headers: dict[str, str]) -> dict[str, str]:
    """The body of every link-bearing answer, and the QGIS project's text (an analyst's,
    so that the incidents layer is in it too)."""
    out = {}
    for url in JSON_URLS:
        response = client.get(url, headers=headers)
        assert response.status_code == 200, (url, response.text)
        # A page's timeStamp is the time of the request, not part of its links.
        out[url] = re.sub(r'"timeStamp":"[^"]*"', '"timeStamp":""', response.text)
    out["qgis"] = _project_text(client, headers)
    return out


@pytest.fixture(scope="module")
def analyst(keys) -> dict[str, str]:
    return auth(keys["analyst"])


def test_an_untrusted_forwarded_host_changes_no_link(client, analyst):
    """The session's app trusts no proxy (the default): forwarded headers from the
    client change not a byte of any answer."""
    plain = _answers(client, analyst)
    forged = _answers(client, {**EVIL, **analyst})
    assert forged == plain
    assert not [url for url, text in forged.items() if "evil.example" in text or "phish" in text]
    tilejson = client.get("/tiles/units-1.json", headers=EVIL).json()
    assert tilejson["tiles"] == ["http://testserver/tiles/units-1/{z}/{x}/{y}.mvt"]
    assert "http://testserver/tiles/units-1/" in plain["qgis"]
    assert (
        "x-forwarded-host"
        not in client.get("/collections", headers=EVIL).headers.get("vary", "").lower()
    )


def test_a_real_server_ignores_a_forwarded_host(base_data):
    """Through uvicorn: the links name the host the client connected to."""
    app = create_app(base_data)
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    try:
        base = f"http://127.0.0.1:{port}"
        headers = {"X-Forwarded-Host": "evil.example", "X-Forwarded-Prefix": "/phish"}
        tilejson = httpx.get(f"{base}/tiles/units-1.json", headers=headers).json()
        assert tilejson["tiles"] == [f"{base}/tiles/units-1/{{z}}/{{x}}/{{y}}.mvt"]
        landing = httpx.get(f"{base}/", headers=headers).json()
        assert all(link["href"].startswith(f"{base}/") for link in landing["links"])
    finally:
        server.should_exit = True
        thread.join(timeout=20)


def test_trusted_proxies_set_the_links(base_data, analyst):
    """Behind one trusted proxy its headers make every link, and an answer says that it
    varies with them."""
    with _client(base_data, trusted_proxy_hops=1) as client:
        answers = _answers(client, {**PROXY, **analyst})
        for url, text in answers.items():
            assert f"{PROXIED}/" in text, url
            assert "testserver" not in text, url
        tilejson = client.get("/tiles/units-1.json", headers=PROXY)
        assert tilejson.json()["tiles"] == [f"{PROXIED}/tiles/units-1/{{z}}/{{x}}/{{y}}.mvt"]
        vary = {v.strip().lower() for v in tilejson.headers["vary"].split(",")}
        assert {"x-forwarded-proto", "x-forwarded-host", "x-forwarded-prefix"} <= vary
        # Without the headers (a request that did not come through the proxy): the Host.
        assert client.get("/").json()["links"][0]["href"] == "http://testserver/"


@pytest.mark.parametrize(
    ("hops", "host", "expected"),
    [
        # The proxy appends what it saw; what the client wrote before it is forged.
        (1, "evil.example, maps.example.org", "maps.example.org"),
        (2, "evil.example, maps.example.org, inner.internal", "maps.example.org"),
        (2, "maps.example.org", "maps.example.org"),  # a proxy that replaces the header
        (1, "evil.example/phish", "testserver"),  # not a host: ignored
        (1, "evil.example@x", "testserver"),
    ],
)
def test_the_outermost_trusted_proxy_is_read(base_data, hops, host, expected):
    with _client(base_data, trusted_proxy_hops=hops) as client:
        landing = client.get("/", headers={"X-Forwarded-Host": host}).json()
        assert landing["links"][0]["href"] == f"http://{expected}/"


def test_forwarded_proto_and_prefix_are_checked(base_data):
    with _client(base_data, trusted_proxy_hops=1) as client:
        forged = {"X-Forwarded-Proto": "javascript", "X-Forwarded-Prefix": "//evil.example"}
        assert client.get("/", headers=forged).json()["links"][0]["href"] == "http://testserver/"


def test_public_url_wins_over_every_header(base_data, analyst):
    """A configured public address: the links use it, whatever the request says, and
    no answer varies with forwarded headers."""
    for hops in (0, 1):
        with _client(base_data, public_url=PUBLIC + "/", trusted_proxy_hops=hops) as client:
            answers = _answers(client, {**PROXY, **analyst})
            for url, text in answers.items():
                assert f"{PUBLIC}/" in text, url
                assert "maps.example.org" not in text and "testserver" not in text, url
            assert answers == _answers(client, analyst)
            tilejson = client.get("/tiles/units-1.json", headers=EVIL)
            assert tilejson.json()["tiles"] == [f"{PUBLIC}/tiles/units-1/{{z}}/{{x}}/{{y}}.mvt"]
            assert "x-forwarded-host" not in tilejson.headers.get("vary", "").lower()


@pytest.mark.parametrize(
    ("value", "stored"),
    [
        ("https://observatory.example.gov/crime/", "https://observatory.example.gov/crime"),
        ("http://10.0.0.5:8000", "http://10.0.0.5:8000"),
    ],
)
def test_public_url_setting_is_normalised(value, stored):
    assert ApiSettings(public_url=value).public_url == stored


@pytest.mark.parametrize(
    "value",
    [
        "observatory.example.gov",
        "ftp://host/x",
        "https://host/x?y=1",
        "https://u@host/",
        "https://",
    ],
)
def test_public_url_setting_refuses_what_is_no_base_url(value):
    with pytest.raises(ValidationError, match="public_url"):
        ApiSettings(public_url=value)
