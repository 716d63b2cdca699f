"""Optional per-key rate limiting (issue 7, hardened inputs): token buckets per API key
and per client address, 429 problem+json with Retry-After, cached tiles counted, and
X-Forwarded-For honoured only behind a trusted proxy.

Each test builds its own app (fresh buckets) from the suite's settings with a small limit;
the rest of the suite runs with the limiter off, the default.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import pytest
import uvicorn
from fastapi.testclient import TestClient

from app.core.ratelimit import TokenBuckets, client_address
from app.core.settings import Settings
from app.main import create_app
from tests.conftest import _free_port, auth

PROBLEM = "application/problem+json"
UNIT = "/units/BZ-CY"
# A z6 tile over central Belize on the public layer of districts.
TILE = "/tiles/units-1/6/16/28.mvt"
# Few enough that no token comes back during a test on a loaded machine (one every 10 s).
PER_MINUTE = 6


def _with_limit(base_data: Settings, **api) -> Settings:
    api = {"rate_limit_per_minute": PER_MINUTE, **api}
    return base_data.model_copy(update={"api": base_data.api.model_copy(update=api)})


@contextmanager
def limited(base_data: Settings, **api) -> Iterator[TestClient]:
    settings = _with_limit(base_data, **api)
    with TestClient(create_app(settings)) as client:
        yield client


@contextmanager
def served(base_data: Settings, **api) -> Iterator[str]:
    """The limited app behind a real uvicorn server on 127.0.0.1; yields its base URL."""
    settings = _with_limit(base_data, **api)
    port = _free_port()
    config = uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def _too_many(response) -> dict:
    assert response.status_code == 429, response.text
    assert response.headers["content-type"] == PROBLEM
    assert response.headers["ratelimit-remaining"] == "0"
    assert int(response.headers["retry-after"]) >= 1
    return response.json()


def test_off_by_default(client):
    for _ in range(30):
        response = client.get(UNIT)
        assert response.status_code == 200
    assert "ratelimit-limit" not in response.headers
    assert "retry-after" not in response.headers


def test_anonymous_callers_are_limited_by_address(base_data):
    # Six a minute is one token every 10 s (slow enough that no token comes back while a
    # loaded machine runs the test); three at once.
    with limited(base_data, rate_limit_burst=3) as client:
        remaining = []
        for _ in range(3):
            response = client.get(UNIT)
            assert response.status_code == 200, response.text
            assert response.headers["ratelimit-limit"] == "3"
            remaining.append(response.headers["ratelimit-remaining"])
        assert remaining == ["2", "1", "0"]
        refused = client.get(UNIT, headers={"Origin": "https://dashboard.example"})
        problem = _too_many(refused)
        wait = int(refused.headers["retry-after"])
        assert 1 <= wait <= 10
        assert problem["status"] == 429 and problem["title"] == "Too many requests"
        assert problem["detail"] == (
            "Too many requests from this client address: at most 6 a minute, 3 at once; "
            f"retry in {wait} s."
        )
        assert problem["retry_after_s"] == wait and problem["instance"] == UNIT
        # A browser may read the refusal and its Retry-After (CORS).
        assert refused.headers["access-control-allow-origin"] == "*"
        assert "retry-after" in refused.headers["access-control-expose-headers"].lower()
        # Waiting as long as Retry-After says is enough.
        time.sleep(int(refused.headers["retry-after"]))
        assert client.get(UNIT).status_code == 200


def test_a_real_server_answers_429_over_http(base_data):
    with served(base_data, rate_limit_burst=2) as base, httpx.Client(base_url=base) as http:
        assert [http.get(UNIT).status_code for _ in range(2)] == [200, 200]
        refused = http.get(UNIT)
        problem = _too_many(refused)
        assert problem["detail"].startswith("Too many requests from this client address")
        assert refused.headers["ratelimit-limit"] == "2"
        # A complete answer: the kept-alive connection serves the next request.
        time.sleep(int(refused.headers["retry-after"]))
        assert http.get(UNIT).status_code == 200


def test_each_key_has_its_own_bucket(base_data, keys):
    analyst, editor = auth(keys["analyst"]), auth(keys["editor"])
    with limited(base_data, rate_limit_burst=3) as client:
        # A key counts as a key once this worker has checked it: its first request
        # counts against the address (3 -> 2 tokens), the next three against the key.
        for _ in range(4):
            assert client.get("/analyses?limit=1", headers=analyst).status_code == 200
        problem = _too_many(client.get("/analyses?limit=1", headers=analyst))
        assert problem["detail"].startswith("Too many requests from this API key:")
        # Another key, and the anonymous caller, still have their own tokens.
        for _ in range(4):  # one from the address (2 -> 1), three from the key
            assert client.get("/analyses?limit=1", headers=editor).status_code == 200
        assert client.get(UNIT).status_code == 200  # the address's last token
        _too_many(client.get(UNIT))
        _too_many(client.get("/analyses?limit=1", headers=editor))


def test_unknown_keys_count_against_the_address(base_data):
    # Fresh random keys must not buy fresh buckets.
    with limited(base_data, rate_limit_burst=2) as client:
        for _ in range(2):
            fake = f"obs_{secrets.token_hex(4)}_{secrets.token_urlsafe(24)}"
            assert client.get("/analyses", headers=auth(fake)).status_code == 401
        fake = f"obs_{secrets.token_hex(4)}_{secrets.token_urlsafe(24)}"
        problem = _too_many(client.get("/analyses", headers=auth(fake)))
        assert "this client address" in problem["detail"]


def test_cached_tiles_count(base_data):
    # The session's worker may finish an earlier test's run while this one counts: the
    # write is announced (NOTIFY), bumps the data version and empties the cache. Then the
    # count proves nothing, and the test starts again on a fresh app (and rate limit).
    for _attempt in range(5):
        with limited(base_data, rate_limit_burst=3) as client:
            state = client.app.state
            version = None  # the app's first version comes with its change listener
            while version != state.data_version.value:
                version = state.data_version.value
                time.sleep(0.5)
            first = client.get(TILE)
            assert first.status_code == 200, first.text
            assert first.headers["content-type"] == "application/vnd.mapbox-vector-tile"
            hits = state.tile_cache.hits
            for _ in range(2):
                again = client.get(TILE)
                assert again.status_code == 200 and again.content == first.content
                assert again.headers["ratelimit-limit"] == "3"
            if state.data_version.value != version:
                time.sleep(1)
                continue
            assert state.tile_cache.hits == hits + 2  # served from the cache
            _too_many(client.get(TILE))
            return
    pytest.fail("the data changed during each of 5 attempts")


def test_probes_and_scrapes_are_never_limited(base_data):
    with limited(base_data, rate_limit_burst=1) as client:
        for _ in range(5):
            response = client.get("/health")
            assert response.status_code == 200
            assert "ratelimit-limit" not in response.headers


def test_forwarded_for_is_ignored_without_a_trusted_proxy(base_data):
    with limited(base_data, rate_limit_burst=2) as client:
        for address in ("203.0.113.1", "203.0.113.2"):
            assert client.get(UNIT, headers={"X-Forwarded-For": address}).status_code == 200
        # A third "address" is the same peer: refused.
        _too_many(client.get(UNIT, headers={"X-Forwarded-For": "203.0.113.3"}))


def test_forwarded_for_behind_a_trusted_proxy(base_data):
    with limited(base_data, rate_limit_burst=1, trusted_proxy_hops=1) as client:

        def get(forwarded: str):
            return client.get(UNIT, headers={"X-Forwarded-For": forwarded})

        assert get("203.0.113.1").status_code == 200
        _too_many(get("203.0.113.1"))
        assert get("203.0.113.2").status_code == 200
        # The proxy appends the address it saw; what the client wrote before it is forged.
        _too_many(get("198.51.100.7, 203.0.113.1"))


@pytest.mark.parametrize(
    ("forwarded", "hops", "expected"),
    [
        (None, 0, "192.0.2.9"),
        ("203.0.113.1", 0, "192.0.2.9"),
        (None, 1, "192.0.2.9"),
        ("203.0.113.1", 1, "203.0.113.1"),
        ("198.51.100.7, 203.0.113.1", 1, "203.0.113.1"),
        ("198.51.100.7, 203.0.113.1 , 10.0.0.2", 2, "203.0.113.1"),
        ("203.0.113.1", 3, "203.0.113.1"),  # fewer entries than proxies: the left-most
    ],
)
def test_client_address(forwarded, hops, expected):
    headers = [(b"x-forwarded-for", forwarded.encode())] if forwarded else []
    scope = {"type": "http", "headers": headers, "client": ("192.0.2.9", 50000)}
    assert client_address(scope, hops) == expected


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_token_bucket_refills_at_the_rate():
    clock = Clock()
    buckets = TokenBuckets(per_minute=30, burst=2, clock=clock)  # a token every 2 s
    assert buckets.take("a") == (True, 1, 2)  # full again in 2 s
    assert buckets.take("a") == (True, 0, 4)
    assert buckets.take("a") == (False, 0, 2)  # the next token comes in 2 s
    clock.now += 1.0
    assert buckets.take("a") == (False, 0, 1)  # half a token: 1 s more
    assert buckets.take("b") == (True, 1, 2)  # another caller, another bucket
    clock.now += 1.0
    assert buckets.take("a") == (True, 0, 4)
    clock.now += 3600
    assert buckets.take("a") == (True, 1, 2)  # never more than the burst


def test_token_buckets_are_bounded():
    clock = Clock()
    buckets = TokenBuckets(per_minute=60, burst=1, clock=clock, max_buckets=10)
    for caller in range(10):
        assert buckets.take(caller)[0]
    assert len(buckets) == 10
    clock.now += 0.5  # every bucket half full
    assert not buckets.take(0)[0]
    # An eleventh caller: no bucket is full again, so the oldest tenth ("0") is forgotten.
    assert buckets.take("new")[0]
    assert len(buckets) == 10 and buckets.take(0)[0]  # "0" comes back with a full bucket
    clock.now += 1.0  # every bucket full again: all forgotten at the next newcomer
    assert buckets.take("newer")[0]
    assert len(buckets) == 1
