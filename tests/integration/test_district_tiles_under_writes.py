"""District tiles while their index values are computed again (issue 22): an incident in
the periods an index reads moves the districts' values; their tiles are answered at once
from the last build while the worker computes the next one in the background, and show
the new values once it is done. Pages wait for the build (they show the write at once)."""

from __future__ import annotations

from tests.conftest import auth
from tests.integration.test_tile_invalidation import (
    HERE,
    SOURCE,
    _units,
    _wait,
    delete_incident,
    fetch,
    run_layer,  # noqa: F401 (a fixture: 2,000 thefts of SOURCE, and a hot spot run)
    tile_of,
    warm,
)


def test_district_tiles_do_not_wait_for_their_next_index_values(client, keys, run_layer):  # noqa: F811
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
