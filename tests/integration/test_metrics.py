"""/metrics: the Prometheus text format, requests by route template, the tile cache, the
pool and the data version; and the sum over workers in multiprocess mode."""

from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import auth
from tests.integration.test_faults import uvicorn_process


def scrape(client) -> dict[tuple[str, tuple], float]:
    """Every sample of /metrics as {(name, sorted labels): value}."""
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=")
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(response.text)
        for s in family.samples
    }


def requests_of(samples, route: str, status: str, method: str = "GET") -> float:
    labels = (("method", method), ("route", route), ("status", status))
    return samples.get(("observatory_http_requests_total", labels), 0.0)


def test_requests_are_counted_and_timed_by_route_template(client, keys):
    analyst = auth(keys["analyst"])
    before = scrape(client)
    for incident_id in (987_650, 987_651, 987_652):
        assert client.get(f"/incidents/{incident_id}", headers=analyst).status_code == 404
    assert client.get("/units?level=1").status_code == 200
    assert client.get("/collections/units-1/items?limit=2").status_code == 200  # streamed
    assert client.get("/no/such/path/42").status_code == 404
    after = scrape(client)

    assert (
        requests_of(after, "/incidents/{incident_id}", "404")
        - requests_of(before, "/incidents/{incident_id}", "404")
        == 3
    )
    assert requests_of(after, "/units", "200") - requests_of(before, "/units", "200") == 1
    items = "/collections/{collection_id}/items"
    assert requests_of(after, items, "200") - requests_of(before, items, "200") == 1
    assert requests_of(after, "unmatched", "404") - requests_of(before, "unmatched", "404") == 1
    # One series per route, never per raw path or id.
    routes = {dict(labels).get("route") for _, labels in after}
    assert not any(r and ("987650" in r or "/no/such" in r) for r in routes)

    # The latency histogram: cumulative buckets up to +Inf, one count per request.
    labels = (("method", "GET"), ("route", "/incidents/{incident_id}"))
    count = after[("observatory_http_request_duration_seconds_count", labels)]
    inf = after[("observatory_http_request_duration_seconds_bucket", (("le", "+Inf"), *labels))]
    assert count == inf >= 3
    assert after[("observatory_http_request_duration_seconds_sum", labels)] > 0


def test_tile_cache_pool_and_data_version(client, keys):
    tile = "/tiles/units-1/6/16/28.mvt"
    first = client.get(tile)
    assert first.status_code == 200
    before = scrape(client)
    second = client.get(tile)  # answered from the cache, before routing
    assert second.status_code == 200 and second.content == first.content
    after = scrape(client)
    assert after[("observatory_tile_cache_hits_total", ())] == (
        before[("observatory_tile_cache_hits_total", ())] + 1
    )
    assert after[("observatory_tile_cache_bytes", ())] > 0
    assert (
        after[("observatory_tile_cache_max_bytes", ())]
        >= after[("observatory_tile_cache_bytes", ())]
    )
    assert ("observatory_tile_cache_misses_total", ()) in after
    # Cached tiles carry the tile route's template although no route ran.
    template = "/tiles/{layer_id}/{z}/{x}/{y}.mvt"
    assert requests_of(after, template, "200") == requests_of(before, template, "200") + 1

    assert after[("observatory_db_pool_size", ())] >= 1
    assert after[("observatory_db_pool_checked_out", ())] >= 0
    assert ("observatory_db_pool_overflow", ()) in after

    # A write through this worker moves the data version at once.
    version = after[("observatory_data_version", ())]
    created = client.post(
        "/keys", json={"role": "viewer", "name": "metrics"}, headers=auth(keys["admin"])
    )
    assert created.status_code == 201
    assert scrape(client)[("observatory_data_version", ())] > version

    # Refused writes change nothing and keep the caches: a flood of anonymous or invalid
    # POSTs cannot empty them.
    version = scrape(client)[("observatory_data_version", ())]
    assert client.post("/incidents", json={}).status_code == 401
    assert (
        client.post("/keys", json={"role": "nope"}, headers=auth(keys["admin"])).status_code == 422
    )
    assert scrape(client)[("observatory_data_version", ())] == version


def test_multiprocess_mode_sums_the_workers(base_data, tmp_path):
    """Two uvicorn workers with PROMETHEUS_MULTIPROC_DIR: every scrape, whichever worker
    answers it, counts the requests of both."""
    shared = tmp_path / "metrics"
    shared.mkdir()
    env = {"PROMETHEUS_MULTIPROC_DIR": str(shared)}
    with uvicorn_process(base_data, tmp_path / "uvicorn.log", workers=2, env=env) as (_, base):
        # New connections each time, so the kernel spreads them over both workers.
        for _ in range(40):
            assert httpx.get(f"{base}/units?level=0", timeout=5).status_code == 200
        for _ in range(4):
            samples = scrape(httpx.Client(base_url=base, timeout=5))
            assert requests_of(samples, "/units", "200") == 40
        pids = {p.name.split("_")[-1] for p in shared.glob("*.db")}
        assert len(pids) >= 2, pids  # both workers wrote their numbers
