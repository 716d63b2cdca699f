"""The role matrix (each endpoint x each role), key handling, health, and error format."""

from __future__ import annotations

import time

import pytest

from tests.conftest import ROLES, auth

# endpoint -> the lowest role that may call it (None: public)
MATRIX = [
    ("GET", "/health", None),
    ("GET", "/ready", None),
    ("GET", "/units?level=1", None),
    ("GET", "/units/BZ-CY", None),
    ("GET", "/incidents", "analyst"),
    ("GET", "/incidents/{id}", "analyst"),
    ("POST", "/incidents", "editor"),
    ("PATCH", "/incidents/{id}", "editor"),
    ("DELETE", "/incidents/{id}", "editor"),
    ("GET", "/imports", "editor"),
    ("POST", "/imports", "editor"),
    ("GET", "/imports/{batch}", "editor"),
    ("GET", "/imports/{batch}/rejections.csv", "editor"),
    ("POST", "/boundaries", "admin"),
    ("GET", "/keys", "admin"),
    ("POST", "/keys", "admin"),
]
LADDER = (None, *ROLES)
# The realm of every 401's challenges: the territory's name (app.core.errors.challenges).
REALM = "Belize crime observatory"


@pytest.fixture(scope="module")
def targets(client, keys, settings, tmp_path_factory):
    from tests.integration.helpers import import_csv, write_incident_csv

    path = write_incident_csv(
        tmp_path_factory.mktemp("access") / "a.csv", n=20, source="access", seed=3
    )
    batch = import_csv(settings, path).batch_id
    page = client.get("/incidents?source=access", headers=auth(keys["analyst"])).json()
    ids = [f["id"] for f in page["features"]]
    return {"batch": batch, "ids": ids}


def _request(client, method, path, key, targets, role_index):
    incident_id = targets["ids"][role_index]  # each role touches its own incident
    url = path.format(id=incident_id, batch=targets["batch"])
    kwargs = {}
    if method == "POST" and path == "/incidents":
        kwargs["json"] = {
            "source": "access-post",
            "source_id": f"r{role_index}",
            "category": "theft",
            "occurred_at": "2024-01-01T10:00:00",
            "geometry": {"type": "Point", "coordinates": [-88.19, 17.5]},
        }
    elif method == "PATCH":
        kwargs["json"] = {"victim_age": 40 + role_index}
    elif method == "POST" and path == "/imports":
        kwargs["files"] = {
            "file": (
                "one.csv",
                b"source,source_id,category,occurred_at,longitude,latitude\n"
                + f"access-import,{role_index},theft,2024-01-01,-88.19,17.5\n".encode(),
            )
        }
    elif path == "/keys":
        kwargs["json"] = {"role": "viewer", "name": f"matrix-{role_index}"}
    elif path == "/boundaries":
        kwargs["files"] = {"file": ("nothing.geojson", b"{}")}
        kwargs["data"] = {"level": "5", "code_field": "code", "name_field": "name"}
    return client.request(method, url, headers=auth(key), **kwargs)


@pytest.mark.parametrize(("method", "path", "needs"), MATRIX)
def test_role_matrix(client, keys, targets, method, path, needs):
    for role_index, role in enumerate(LADDER):
        key = keys[role] if role else None
        response = _request(client, method, path, key, targets, role_index)
        allowed = needs is None or (role is not None and ROLES.index(role) >= ROLES.index(needs))
        if allowed:
            # Allowed callers get past the gate (the /boundaries body is deliberately bad: 422).
            assert response.status_code < 400 or (
                path == "/boundaries" and response.status_code == 422
            ), (
                role,
                response.status_code,
                response.text,
            )
        else:
            expected = 401 if role is None else 403
            assert response.status_code == expected, (role, method, path, response.text)
            assert response.headers["content-type"] == "application/problem+json"
            assert response.json()["status"] == expected


def test_bad_and_revoked_keys(client, keys, db):
    assert client.get("/incidents", headers=auth("not-a-key")).status_code == 401
    forged = keys["admin"][:-4] + "AAAA"
    assert client.get("/incidents", headers=auth(forged)).status_code == 401
    from app import security

    key, prefix, key_hash = security.new_key()
    db.execute(
        "INSERT INTO api_key (name, prefix, hash, role) VALUES ('temp', %s, %s, 'analyst')",
        [prefix, key_hash],
    )
    assert client.get("/incidents?limit=1", headers=auth(key)).status_code == 200
    assert db.execute(
        "SELECT last_used_at IS NOT NULL FROM api_key WHERE prefix = %s", [prefix]
    ).fetchone()[0]
    # Revoked in plain SQL: the workers hear of it by NOTIFY (valid keys are cached), so
    # it takes effect within moments rather than on the very next request.
    db.execute("UPDATE api_key SET revoked_at = now() WHERE prefix = %s", [prefix])
    deadline = time.monotonic() + 2
    while (response := client.get("/incidents?limit=1", headers=auth(key))).status_code == 200:
        assert time.monotonic() < deadline, "a key revoked in SQL still works after 2 s"
        time.sleep(0.02)
    assert response.status_code == 401 and "revoked" in response.json()["detail"]
    # A caller that sent a Bearer key knows the scheme: no Basic (a browser would pop up
    # its login dialog over the page whose script sent it).
    assert response.headers.get_list("www-authenticate") == [f'Bearer realm="{REALM}"']


def test_admin_manages_keys_over_http(client, keys, db):
    admin = auth(keys["admin"])
    created = client.post("/keys", json={"role": "analyst", "name": "ana"}, headers=admin)
    assert created.status_code == 201
    body = created.json()
    assert body["role"] == "analyst" and body["key"].startswith("obs_")
    assert client.get("/incidents?limit=1", headers=auth(body["key"])).status_code == 200
    listed = client.get("/keys", headers=admin).json()
    assert "key" not in listed[0] and any(k["id"] == body["id"] for k in listed)
    assert client.delete(f"/keys/{body['id']}", headers=admin).status_code == 204
    assert client.get("/incidents?limit=1", headers=auth(body["key"])).status_code == 401
    assert client.delete(f"/keys/{body['id']}", headers=admin).status_code == 404
    bad = client.post("/keys", json={"role": "god", "name": "x"}, headers=admin)
    assert bad.status_code == 422
    actions = db.execute(
        "SELECT action FROM audit_log WHERE entity = 'api_key' AND entity_id = %s ORDER BY id",
        [str(body["id"])],
    ).fetchall()
    assert actions == [("create",), ("revoke",)]


def test_keys_are_stored_hashed(keys, db):
    stored = [r[0] for r in db.execute("SELECT hash FROM api_key").fetchall()]
    assert not any(key in stored for key in keys.values())


def test_health_and_ready(client, settings):
    from alembic.script import ScriptDirectory

    from app.core.migrate import alembic_config

    head = ScriptDirectory.from_config(alembic_config(settings.sqlalchemy_url)).get_current_head()
    assert client.get("/health").json() == {"status": "ok"}
    ready = client.get("/ready").json()
    assert ready["status"] == "ready" and ready["migration"] == head
    assert ready["postgis"].startswith("3.")


def test_errors_are_problem_json(client, keys):
    for method, url, status in [
        ("GET", "/nowhere", 404),
        ("DELETE", "/health", 405),
        ("GET", "/incidents/999999999", 404),
        ("GET", "/incidents/abc", 422),
    ]:
        response = client.request(method, url, headers=auth(keys["admin"]))
        assert response.status_code == status, url
        assert response.headers["content-type"] == "application/problem+json"
        body = response.json()
        assert body["status"] == status and body["title"]
        assert "Traceback" not in response.text


def test_writes_are_audited(client, keys, db, targets):
    rows = db.execute(
        "SELECT actor, action FROM audit_log WHERE entity = 'import_batch' AND entity_id = %s",
        [str(targets["batch"])],
    ).fetchall()
    assert rows == [("tests", "import")]
    incident_id = targets["ids"][-1]
    response = client.patch(
        f"/incidents/{incident_id}", json={"weapon": "knife"}, headers=auth(keys["editor"])
    )
    assert response.status_code == 200
    actor, before, after = db.execute(
        "SELECT actor, before, after FROM audit_log WHERE entity = 'incident' "
        "AND action = 'update' AND entity_id = %s ORDER BY id DESC LIMIT 1",
        [str(incident_id)],
    ).fetchone()
    assert actor.endswith(":test-editor")
    assert (before["weapon"], after["weapon"]) == (None, "knife")


def test_basic_authentication_carries_the_key_as_password(client, keys):
    """QGIS 3.22/3.23 can send only HTTP Basic: the key as the password, any user name."""
    import base64

    def basic(user: str, password: str) -> dict[str, str]:
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        return {"Authorization": f"Basic {token}"}

    assert (
        client.get("/incidents?limit=1", headers=basic("qgis", keys["analyst"])).status_code == 200
    )
    assert client.get("/incidents?limit=1", headers=basic("", keys["viewer"])).status_code == 403
    for headers in (
        basic("qgis", "wrong"),
        {"Authorization": "Basic not-base64!"},
        {"Authorization": f"Digest {keys['analyst']}"},
    ):
        response = client.get("/incidents?limit=1", headers=headers)
        assert response.status_code == 401, headers
        assert response.headers["content-type"] == "application/problem+json"
    # Tiles answered from the cache read the same header.
    url = "/tiles/incidents/14/4178/7382.mvt"
    assert client.get(url, headers=basic("qgis", keys["analyst"])).status_code == 200
    assert client.get(url, headers=basic("qgis", keys["analyst"])).status_code == 200
    assert client.get(url, headers=basic("qgis", keys["viewer"])).status_code == 403


@pytest.mark.parametrize(
    "path",
    [
        "/incidents?limit=1",
        "/collections/incidents/items?limit=1",
        # twice: the second would be the tile fast path's (app.ogc.tilecache), had a key
        # been known
        "/tiles/incidents/14/4178/7382.mvt",
        "/tiles/incidents/14/4178/7382.mvt",
        "/collections/incidents/tiles/WebMercatorQuad/14/7382/4178",
        "/keys",
    ],
)
def test_a_401_offers_basic_beside_bearer(client, keys, path):
    """Clients that send credentials only once challenged (Qt with a user and password in
    the URL, curl --anyauth, a browser opening the URL) get a Basic challenge beside
    Bearer, in a header field of its own (Chromium and Qt 5 read one scheme a field), and
    then send the key as the Basic password."""
    import base64

    nobody = client.get(path)
    assert nobody.status_code == 401, path
    assert nobody.headers.get_list("www-authenticate") == [
        f'Bearer realm="{REALM}"',
        f'Basic realm="{REALM}"',
    ]
    # What such a client sends next.
    token = base64.b64encode(f"anyone:{keys['admin']}".encode()).decode()
    assert client.get(path, headers={"Authorization": f"Basic {token}"}).status_code == 200
    # A wrong Basic password is challenged again, with both.
    wrong = base64.b64encode(b"anyone:obs_00000000_wrong").decode()
    again = client.get(path, headers={"Authorization": f"Basic {wrong}"})
    assert again.status_code == 401
    assert len(again.headers.get_list("www-authenticate")) == 2


@pytest.mark.parametrize(
    ("headers", "schemes"),
    [
        ({}, ["Bearer", "Basic"]),
        ({"Sec-Fetch-Mode": "navigate"}, ["Bearer", "Basic"]),  # a browser opening the URL
        ({"Sec-Fetch-Mode": "cors"}, ["Bearer"]),  # fetch() or XHR, in a page or a worker
        ({"Sec-Fetch-Mode": "no-cors"}, ["Bearer"]),  # an <img>
        ({"Sec-Fetch-Mode": "same-origin"}, ["Bearer"]),
        ({"Authorization": "Bearer obs_00000000_wrong"}, ["Bearer"]),
        ({"Authorization": "Digest x"}, ["Bearer", "Basic"]),
    ],
)
def test_no_basic_challenge_where_a_browser_would_prompt_over_a_page(client, headers, schemes):
    """A Basic challenge to a browser's script makes the browser ask for a user name and
    password in a dialog over the page (Chromium asks for fetch(), XHR and workers alike):
    scripts get Bearer only, as does a caller that sent a Bearer key."""
    response = client.get("/collections/incidents/items?limit=1", headers=headers)
    assert response.status_code == 401
    got = [value.split(" ", 1)[0] for value in response.headers.get_list("www-authenticate")]
    assert got == schemes
