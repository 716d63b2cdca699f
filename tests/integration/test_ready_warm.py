"""``/ready`` says yes only once the worker is warm (issue 22): a request it then takes
waits for no first build. Before, a freshly started service answered /ready while its
first layer catalog, FastAPI's routes and its pool were still to be built by the first
requests (17 s for the first district tile of a benchmark, more than 5 s for requests of
test_first_run right after /ready)."""

from __future__ import annotations

import time

from fastapi.testclient import TestClient

from app.main import create_app


def test_ready_means_the_first_requests_wait_for_no_build(base_data):
    app = create_app(base_data)
    with TestClient(app) as client:
        deadline = time.monotonic() + 120
        while (ready := client.get("/ready")).status_code == 503:  # as a probe polls
            assert "warming up" in ready.json()["detail"]
            assert time.monotonic() < deadline, "never ready"
        assert ready.status_code == 200, ready.text
        state = app.state
        # What the first requests would otherwise build, already built:
        assert state.catalog._built_at == state.data_version.value  # the layer catalog
        assert "units-1" in state.catalog.current()  # with the districts' index values
        assert app.openapi_schema is not None  # every router's routes
        pool = state.engine.sync_engine.pool
        assert pool.checkedin() == base_data.database.pool_size  # the pool's connections

        # So the first district tile and page are answered like any other.
        started = time.perf_counter()
        assert client.get("/tiles/units-1/7/32/57.mvt").status_code == 200
        assert client.get("/collections/units-1/items?limit=2").status_code == 200
        assert time.perf_counter() - started < 2.0
