"""The QGIS project: it unzips to a valid .qgs whose every layer's source answers 200
from the service, read the way QGIS's providers read them (OAPIF spaced URI, XYZ vector
tile encoded URI, ``http-header:`` parameters)."""

from __future__ import annotations

import io
import math
import xml.etree.ElementTree as ET
import zipfile
from urllib.parse import parse_qsl

import pytest
from fastapi.testclient import TestClient

from app.core.settings import ApiSettings
from app.main import create_app
from tests.conftest import auth
from tests.integration.publishing import completed_gi_run, local, tile_of
from tests.integration.risk_zones import live_risk_zones

SOURCE = "qgis-project-test"
HEADER = "http-header:"


@pytest.fixture(scope="module")
def run_layer(client, keys, base_data, tmp_path_factory) -> str:
    folder = tmp_path_factory.mktemp("qgis")
    return completed_gi_run(client, base_data, keys["analyst"], folder, SOURCE)


@pytest.fixture(scope="module")
def zones(client, keys, base_data, tmp_path_factory) -> int:
    """A live non-sensitive risk zone (both risk-zone layers exist); the run's id."""
    folder = tmp_path_factory.mktemp("qgis-zones")
    return live_risk_zones(client, base_data, keys, folder, "qgis-risk-zones", seed=29)


def project(client, headers=None, **params) -> ET.Element:
    response = client.get("/qgis/project.qgz", headers=headers or {}, params=params)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/zip"
    assert response.headers["content-disposition"].endswith('.qgz"')
    with zipfile.ZipFile(io.BytesIO(response.content)) as archive:
        names = archive.namelist()
        assert len(names) == 1 and names[0].endswith(".qgs")
        text = archive.read(names[0]).decode()
    assert text.startswith("<!DOCTYPE qgis")
    return ET.fromstring(text)


def spaced_uri(text: str) -> dict[str, str]:
    """QgsDataSourceUri's parser of ``key='value' key2='value'`` (backslash escapes)."""
    out, i = {}, 0
    while i < len(text):
        while i < len(text) and text[i].isspace():
            i += 1
        start = i
        while text[i] != "=":
            i += 1
        key, i = text[start:i], i + 1
        assert text[i] == "'", text
        i += 1
        value = []
        while text[i] != "'":
            if text[i] == "\\":
                i += 1
            value.append(text[i])
            i += 1
        out[key], i = "".join(value), i + 1
    return out


def layers_of(root: ET.Element) -> dict[str, ET.Element]:
    return {layer.find("id").text: layer for layer in root.iter("maplayer")}


def check_sources_answer(client, root: ET.Element) -> dict[str, dict]:
    """Request what QGIS would for every layer; return the parsed sources by typename."""
    lon, lat = territory_centre(root)
    out = {}
    for layer in layers_of(root).values():
        provider = layer.find("provider").text
        source = layer.find("datasource").text
        if provider == "OAPIF":
            uri = spaced_uri(source)
            headers = {k[len(HEADER) :]: v for k, v in uri.items() if k.startswith(HEADER)}
            landing = local(uri["url"])
            assert landing == "/"
            collection = f"/collections/{uri['typename']}"
            for path in ("/", "/api", "/conformance", collection, f"{collection}/items?limit=1"):
                assert client.get(path, headers=headers).status_code == 200, (path, headers)
            out[uri["typename"]] = uri
        elif provider == "ogr":  # the place names: a GeoJSON file and an OGR subset
            url, subset = source.split("|subset=")
            response = client.get(local(url))
            assert response.status_code == 200, url
            assert subset == "\"kind\" = 'settlement'"
            out["labels"] = {"url": url, "subset": subset}
        else:
            assert provider == "xyzvectortiles" and layer.get("type") == "vector-tile"
            params = dict(parse_qsl(source))
            assert params["type"] == "xyz"
            z = int(params["zmin"]) + 8
            assert z <= int(params["zmax"])
            x, y = tile_of(lon, lat, z)
            template = params["url"]
            tile = template.replace("{z}", str(z)).replace("{x}", str(x)).replace("{y}", str(y))
            response = client.get(local(tile))
            assert response.status_code == 200, tile
            assert response.headers["content-type"] == "application/vnd.mapbox-vector-tile"
            out[template.split("/tiles/")[1].split("/")[0] + ":tiles"] = params
    return out


def territory_centre(root: ET.Element) -> tuple[float, float]:
    box = root.find("mapcanvas/extent")
    x = (float(box.find("xmin").text) + float(box.find("xmax").text)) / 2
    y = (float(box.find("ymin").text) + float(box.find("ymax").text)) / 2
    lon = math.degrees(x / 6378137.0)
    lat = math.degrees(2 * math.atan(math.exp(y / 6378137.0)) - math.pi / 2)
    return lon, lat


def test_public_project_connects_every_public_layer(client, run_layer):
    root = project(client)
    assert root.tag == "qgis" and root.find("projectCrs/spatialrefsys/authid").text == "EPSG:3857"
    lon, lat = territory_centre(root)
    assert -89.5 < lon < -87.5 and 15.5 < lat < 18.8  # zoomed to Belize
    sources = check_sources_answer(client, root)
    assert {"units-0", "units-1", run_layer, "units-1:tiles", f"{run_layer}:tiles"} <= set(sources)
    assert "incidents" not in sources and "labels" in sources
    # Every layer of the tree is a project layer, and the other way round.
    tree = {node.get("id") for node in root.iter("layer-tree-layer")}
    assert tree == set(layers_of(root))


def test_layers_carry_their_styles(client, run_layer):
    layers = layers_of(project(client))
    oapif = layers[f"{run_layer.replace('-', '_')}_oapif"]
    renderer = oapif.find("renderer-v2")
    assert renderer.get("type") == "categorizedSymbol" and renderer.get("attr") == "bin"
    assert len(renderer.findall("categories/category")) == 7
    tiles = layers[f"{run_layer.replace('-', '_')}_tiles"].find("renderer")
    assert tiles.get("type") == "basic"
    styles = tiles.findall("styles/style")
    assert {s.get("layer") for s in styles} == {run_layer}  # the MVT layer name
    assert {s.get("geometry") for s in styles} == {"2"}
    assert '"bin" = 3' in {s.get("expression") for s in styles}
    assert all(s.find("symbols/symbol[@name='0']") is not None for s in styles)


def test_districts_and_towns_are_labelled_by_name(client):
    """Issue 16 point 8: QGIS labels the districts (their OGC API Features layer) and the
    towns and villages (the service's /labels.geojson) by name."""
    layers = layers_of(project(client))
    for qgis_id in ("units_1_oapif", "place_names_ogr"):
        layer = layers[qgis_id]
        assert layer.get("labelsEnabled") == "1", qgis_id
        assert layer.find("labeling").get("type") == "simple"
        text = layer.find("labeling/settings/text-style")
        assert text.get("fieldName") == "name" and text.get("isExpression") == "0"
        assert text.find("text-buffer").get("bufferDraw") == "1"
    assert layers["units_1_oapif"].find("labeling/settings/placement").get("placement") == "1"
    assert layers["place_names_ogr"].find("labeling/settings/placement").get("placement") == "6"
    # The country and the vector tile copy carry no names (tiles would repeat them).
    assert layers["units_0_oapif"].find("labeling") is None
    assert layers["units_1_tiles"].find("labeling") is None


def test_analyst_project_adds_incidents_with_the_callers_key(client, keys, run_layer):
    analyst = keys["analyst"]
    root = project(client, headers=auth(analyst))
    sources = check_sources_answer(client, root)
    incidents = sources["incidents"]
    assert incidents[f"{HEADER}Authorization"] == f"Bearer {analyst}"
    assert incidents["restrictToRequestBBOX"] == "1"
    assert "do not share" in root.find("title").text
    # Without the embedded key the layer is there, and it needs one.
    root = project(client, headers=auth(analyst), embed_key="false")
    layer = layers_of(root)["incidents_oapif"]
    uri = spaced_uri(layer.find("datasource").text)
    assert not any(k.startswith(HEADER) for k in uri)
    assert client.get("/collections/incidents/items?limit=1").status_code == 401


def test_viewer_project_has_no_incidents(client, keys):
    root = project(client, headers=auth(keys["viewer"]))
    assert "incidents_oapif" not in layers_of(root)
    assert "API key" not in root.find("title").text


def test_urls_follow_the_proxy(base_data):
    """Behind one trusted proxy (``api.trusted_proxy_hops``); from anyone else the
    headers change nothing (tests/integration/test_forwarded_links.py)."""
    forwarded = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "observatory.example.org"}
    settings = base_data.model_copy(update={"api": ApiSettings(trusted_proxy_hops=1)})
    with TestClient(create_app(settings)) as client:
        root = project(client, headers=forwarded)
    for layer in layers_of(root).values():
        source = layer.find("datasource").text
        assert "https://observatory.example.org/" in source, source
        assert "testserver" not in source


def test_authcfg_takes_the_place_of_the_key(client, keys, run_layer):
    """``authcfg``: the layers behind a key name the user's QGIS authentication
    configuration (``scripts/verify_qgis.py`` loads such a project in QGIS 3.22 with a
    Basic one); the key itself is written nowhere, and public layers carry none."""
    analyst = keys["analyst"]
    root = project(client, headers=auth(analyst), embed_key="false", authcfg="obs0001")
    assert analyst not in ET.tostring(root, encoding="unicode")
    assert "do not share" not in root.find("title").text
    # Layers behind a key (incidents, hot spot runs that count sensitive categories,
    # alerts of sensitive monitors) name it; public layers carry none.
    public = {c["id"] for c in client.get("/collections").json()["collections"]}
    every = client.get("/collections", headers=auth(analyst)).json()["collections"]
    ids = sorted((c["id"] for c in every), key=len, reverse=True)
    for layer_id, layer in layers_of(root).items():
        source = layer.find("datasource").text
        if layer.find("provider").text not in ("OAPIF", "xyzvectortiles"):
            continue
        cid = next(c for c in ids if layer_id.startswith(c.replace("-", "_") + "_"))
        if cid in public:
            assert "authcfg" not in source, layer_id
        else:
            assert spaced_uri(source)["authcfg"] == "obs0001", layer_id
    # The key is left out even when embedding is not turned off.
    root = project(client, headers=auth(analyst), authcfg="obs0001")
    assert analyst not in ET.tostring(root, encoding="unicode")
    refused = client.get("/qgis/project.qgz", params={"authcfg": "x'; y"}, headers=auth(analyst))
    assert refused.status_code == 422


def tree_layers(root: ET.Element) -> dict[str, tuple[str, str]]:
    """Each layer's (group, checked state) in the layer tree."""
    return {
        node.get("id"): (group.get("name"), node.get("checked"))
        for group in root.iter("layer-tree-group")
        for node in group.findall("layer-tree-layer")
    }


def test_risk_zones_follow_the_callers_access(client, keys, run_layer, zones):
    """The public and viewers get the public risk zones, shown and styled; an analyst also
    the exact zones, shown in their stead (the public squares hidden), with the key."""
    for headers in ({}, auth(keys["viewer"])):
        root = project(client, headers=headers)
        layers = layers_of(root)
        assert "risk_zones_oapif" in layers and "risk_zones_exact_oapif" not in layers
        assert tree_layers(root)["risk_zones_oapif"] == ("Near-repeat risk zones", "Qt::Checked")
        uri = spaced_uri(layers["risk_zones_oapif"].find("datasource").text)
        assert uri["typename"] == "risk_zones"
        assert not any(k.startswith(HEADER) for k in uri)
        renderer = layers["risk_zones_oapif"].find("renderer-v2")
        assert renderer.get("type") == "singleSymbol"
        colour = renderer.find("symbols/symbol/layer/Option/Option[@name='color']").get("value")
        assert colour == "158,154,200,115"  # #9e9ac8 at 45 %
        assert layers["risk_zones_oapif"].get("geometry") == "Polygon"
    analyst = keys["analyst"]
    root = project(client, headers=auth(analyst))
    sources = check_sources_answer(client, root)  # every source answers, the key sent
    assert sources["risk_zones-exact"][f"{HEADER}Authorization"] == f"Bearer {analyst}"
    assert not any(k.startswith(HEADER) for k in sources["risk_zones"])
    tree = tree_layers(root)
    assert tree["risk_zones_exact_oapif"] == ("Near-repeat risk zones", "Qt::Checked")
    assert tree["risk_zones_oapif"] == ("Near-repeat risk zones", "Qt::Unchecked")
    # Drawn above the alerts and hot spots, below the incidents (the tree's first is on top).
    order = [node.get("id") for node in root.iter("layer-tree-layer")]
    assert order.index("incidents_oapif") < order.index("risk_zones_exact_oapif")
    hotspots = next(i for i, layer_id in enumerate(order) if layer_id.startswith("hotspots_"))
    assert order.index("risk_zones_oapif") < hotspots
