"""District tiles while their index values are computed again (issue 22): an incident in
the periods an index reads moves the districts' values; their tiles are answered at once
from the last build while the worker computes the next one in the background, and show
the new values once it is done. Pages wait for the build (they show the write at once)."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

import pytest

from tests.conftest import auth
from tests.integration.test_tile_invalidation import (
    HERE,
    SOURCE,
    THERE,
    _units,
    _wait,
    delete_incident,
    fetch,
    run_layer,  # noqa: F401 (a fixture: 2,000 thefts of SOURCE, and a hot spot run)
    tile_of,
    warm,
)


@pytest.fixture(scope="module")
def background_index(client, keys, run_layer) -> str:  # noqa: F811
    """An index of the districts that counts the thefts of ``run_layer``: its code."""
    definition = {
        "name": "background-index",
        "title": "Thefts (background build test)",
        "unit_level": 1,
        "period": "year",
        "indicators": [
            {
                "code": "thefts",
                "source": {"incidents": {"categories": ["theft"], "measure": "count"}},
            }
        ],
    }
    created = client.post("/indexes", json=definition, headers=auth(keys["admin"]))
    assert created.status_code in (200, 201), created.text
    _wait(lambda: "background_index_score" in _units(client)["BZ-CY"], "no index values")
    return "background-index"


def test_district_tiles_do_not_wait_for_their_next_index_values(client, keys, background_index):
    latest = client.get("/indexes/background-index/periods").json()["latest"]
    districts = ("units-1", tile_of(*HERE, 6))
    before = _units(client)
    shown = warm(client, *districts)

    body = {
        "source": SOURCE,
        "source_id": "background-1",
        "category": "theft",
        "occurred_at": f"{latest}-06-15T10:00:00-06:00",
        "geometry": {"type": "Point", "coordinates": list(HERE)},
    }
    incident = client.post("/incidents", json=body, headers=auth(keys["editor"]))
    assert incident.status_code == 201, incident.text
    try:
        # The tile right after: the last build's, answered from the cache, not held
        # for the build its new values need (before: a miss, after waiting for it).
        assert fetch(client, *districts) == ("hit", shown)
        after = _units(client)  # a page waits for the build: the new values at once
        assert after != before  # one more theft in Cayo moves the scores
        assert fetch(client, *districts)[0] == "miss"  # the new values' tile
        assert fetch(client, *districts)[0] == "hit"
    finally:
        delete_incident(client, keys, incident.json()["id"])


def test_an_incident_entered_now_computes_no_index_values_again(
    client, keys, background_index, caplog
):
    """A new incident is an INSERT and an UPDATE (its units): after the periods the
    index values read, neither moves them, and no worker computes them again (each
    did, for every POST /incidents, 1-3 s of each worker under one write a second)."""

    def post(source_id: str, where=HERE, when: str | None = None) -> int:
        body = {
            "source": SOURCE,
            "source_id": source_id,
            "category": "theft",
            "occurred_at": when or datetime.now(UTC).isoformat(),
            "geometry": {"type": "Point", "coordinates": list(where)},
        }
        created = client.post("/incidents", json=body, headers=auth(keys["editor"]))
        assert created.status_code == 201, created.text
        return created.json()["id"]

    # Thefts last year (the test data may end earlier), and one now: the latest complete
    # period is last year, with values; the next incidents of now cannot move it.
    last_year = datetime.now(UTC).year - 1
    posted = [
        post(f"background-last-{i}", where, f"{last_year}-0{i + 3}-01T10:00:00-06:00")
        for i, where in enumerate((HERE, HERE, THERE))
    ]
    posted.append(post("background-now-1"))
    try:
        before = _units(client)  # pages wait for the build these writes called for
        districts = ("units-1", tile_of(*HERE, 6))
        shown = warm(client, *districts)
        with caplog.at_level(logging.INFO, logger="observatory"):
            second = post("background-now-2")
            try:
                assert _units(client) == before
                assert fetch(client, *districts) == ("hit", shown)
            finally:
                delete_incident(client, keys, second)
        builds = [r.getMessage() for r in caplog.records if "catalog built" in r.getMessage()]
        assert not [b for b in builds if "index values computed" in b], builds
    finally:
        for incident_id in posted:
            delete_incident(client, keys, incident_id)
