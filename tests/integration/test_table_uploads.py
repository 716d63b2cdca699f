"""POST /population and POST /indicators (admin): the CLI's long-CSV imports over HTTP,
all or nothing, every bad row listed (issue 16, point 5: a territory set up by HTTP)."""

from __future__ import annotations

from tests.conftest import auth

PROBLEM = "application/problem+json"
INDICATOR = "h16_upload_check"


def test_population_upload_is_admin_only_and_lists_every_bad_row(client, keys, db):
    before = db.execute("SELECT count(*) FROM population").fetchone()[0]
    content = (
        b"unit_code,year,sex,value\n"
        b"BZ-CY,1999,total,1000\n"
        b"XX-NOPE,1999,total,10\n"
        b"BZ-OW,99,total,10\n"
        b"BZ-SC,1999,both ways,-5\n"
    )
    for key, status in ((None, 401), (keys["editor"], 403)):
        refused = client.post("/population", files={"file": ("p.csv", content)}, headers=auth(key))
        assert refused.status_code == status, refused.text
    response = client.post(
        "/population", files={"file": ("p.csv", content)}, headers=auth(keys["admin"])
    )
    assert response.status_code == 422 and response.headers["content-type"] == PROBLEM
    body = response.json()
    assert "3 invalid row(s) of 4; nothing was imported" in body["detail"]
    assert [r["row"] for r in body["rows"]] == [2, 3, 4]
    assert "unknown unit code 'XX-NOPE'" in body["rows"][0]["reason"]
    assert db.execute("SELECT count(*) FROM population").fetchone()[0] == before
    wrong_type = client.post(
        "/population", files={"file": ("p.xlsx", b"x")}, headers=auth(keys["admin"])
    )
    assert wrong_type.status_code == 422 and ".csv" in wrong_type.json()["detail"]


def test_indicator_upload_upserts_and_is_audited(client, keys, db):
    content = (
        f"unit_code,period,indicator,value,source\n"
        f"BZ-CY,2024,{INDICATOR},12.5,test\nBZ-OW,2024,{INDICATOR},7,test\n"
    ).encode()
    admin = auth(keys["admin"])
    first = client.post("/indicators", files={"file": ("ind.csv", content)}, headers=admin)
    assert first.status_code == 200, first.text
    assert first.json() == {
        "table": "indicator_value", "filename": "ind.csv", "received": 2,
        "inserted": 2, "updated": 0, "unchanged": 0, "skipped": 0,
    }  # fmt: skip
    again = client.post("/indicators", files={"file": ("ind.csv", content)}, headers=admin)
    assert (again.json()["inserted"], again.json()["unchanged"]) == (0, 2)
    values = db.execute(
        "SELECT u.code, v.value FROM indicator_value v JOIN admin_unit u ON u.id = v.unit_id "
        "WHERE v.indicator = %s ORDER BY 1",
        [INDICATOR],
    ).fetchall()
    assert values == [("BZ-CY", 12.5), ("BZ-OW", 7.0)]
    actor = db.execute(
        "SELECT actor FROM audit_log WHERE entity = 'indicator_value' AND entity_id = 'ind.csv' "
        "ORDER BY id DESC LIMIT 1"
    ).fetchone()[0]
    assert actor.startswith("key:") and actor.endswith("test-admin")
