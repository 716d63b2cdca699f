"""Styles over HTTP: the MapLibre style resolves against the service's own TileJSON and
tiles; QML and SLD parse as XML with the ArcGIS hot/cold rules; OGC API Styles lists
them; incidents' styles follow the layer's access rule."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from tests.conftest import auth
from tests.integration.publishing import completed_gi_run, local, tile_of
from tests.integration.risk_zones import live_risk_zones

SOURCE = "styles-test"
# ArcGIS Pro's Gi_Bin renderer (Hot Spot Analysis output).
ARCGIS_GI_BIN = {
    -3: "#4575b5",
    -2: "#849eba",
    -1: "#c0ccbe",
    0: "#ffffbf",
    1: "#fab984",
    2: "#ed7551",
    3: "#d62f27",
}
# Near-repeat risk zones: ColorBrewer Purples, translucent, with a dark purple outline.
RISK_ZONE_FILL, RISK_ZONE_OUTLINE = "#9e9ac8", "#54278f"
SLD = "{http://www.opengis.net/sld}"
OGC = "{http://www.opengis.net/ogc}"


@pytest.fixture(scope="module")
def run_layer(client, keys, base_data, tmp_path_factory) -> str:
    folder = tmp_path_factory.mktemp("styles")
    return completed_gi_run(client, base_data, keys["analyst"], folder, SOURCE)


@pytest.fixture(scope="module")
def zones(client, keys, base_data, tmp_path_factory) -> int:
    """A live non-sensitive risk zone (both risk-zone layers exist); the run's id."""
    folder = tmp_path_factory.mktemp("styles-zones")
    return live_risk_zones(client, base_data, keys, folder, "styles-risk-zones", seed=23)


def test_maplibre_style_resolves_against_the_service(client, keys, run_layer):
    response = client.get("/styles/default.json")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/vnd.mapbox.style+json")
    style = response.json()
    assert style["version"] == 8 and isinstance(style["name"], str)
    assert "sprite" not in style  # no internet at run time: glyphs are the service's own
    assert style["glyphs"] == "http://testserver/fonts/{fontstack}/{range}.pbf"
    sources, layers = style["sources"], style["layers"]
    assert {"units-0", "units-1", run_layer, "incidents", "labels"} <= set(sources)
    assert len({layer["id"] for layer in layers}) == len(layers)
    for layer in layers:
        assert layer["type"] in {"background", "fill", "line", "circle", "symbol"}, layer
        if layer["type"] != "background":
            assert layer["source"] in sources, layer["id"]
        if sources.get(layer.get("source"), {}).get("type") == "vector":
            assert layer["source-layer"] == layer["source"]
    lon, lat = style["center"]
    for name, source in sources.items():
        if name == "labels":
            continue  # GeoJSON: test_maplibre_style_names_districts_and_towns
        assert source["type"] == "vector"
        if name == "incidents":
            # Inline template: a map without a key loads the style; only these tiles fail.
            template = source["tiles"][0]
        else:
            tilejson = client.get(local(source["url"]))
            assert tilejson.status_code == 200, name
            assert name in [v["id"] for v in tilejson.json()["vector_layers"]]
            template = tilejson.json()["tiles"][0]
        x, y = tile_of(lon, lat, 8)
        path = local(template.replace("{z}", "8").replace("{x}", str(x)).replace("{y}", str(y)))
        headers = auth(keys["analyst"]) if name == "incidents" else {}
        assert client.get(path, headers=headers).status_code == 200, path
        if name == "incidents":
            assert client.get(path).status_code == 401


def test_maplibre_style_names_districts_and_towns(client):
    """Issue 16 point 8: symbol layers write the districts' and towns' names with glyphs the
    service serves itself, from points it serves (nothing from the internet)."""
    style = client.get("/styles/default.json").json()
    labels = style["sources"]["labels"]
    assert labels["type"] == "geojson" and "GeoNames" in labels["attribution"]
    symbols = {layer["id"]: layer for layer in style["layers"] if layer["type"] == "symbol"}
    assert {"labels-units", "labels-towns", "labels-villages"} <= set(symbols)
    for layer in symbols.values():
        assert layer["source"] == "labels"
        assert layer["layout"]["text-field"] == ["get", "name"]
        assert layer["layout"]["text-font"] == ["DejaVu Sans"]
    # On top of every other layer: names stay readable over districts, hot spots, incidents.
    types = [layer.get("source") == "labels" for layer in style["layers"]]
    assert types == sorted(types)
    # Every font stack the style names has glyphs for the Latin ranges, as MapLibre asks.
    for stack in {tuple(layer["layout"]["text-font"]) for layer in symbols.values()}:
        for glyph_range in ("0-255", "256-511", "8192-8447"):
            url = style["glyphs"].replace("{fontstack}", ",".join(stack))
            response = client.get(local(url.replace("{range}", glyph_range)))
            assert response.status_code == 200, (stack, glyph_range)
            assert response.headers["content-type"] == "application/x-protobuf"
            assert len(response.content) > 10_000  # DejaVu Sans has every one of these
    response = client.get(local(labels["data"]))
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/geo+json"
    features = response.json()["features"]
    units = {f["properties"]["name"] for f in features if f["properties"]["kind"] == "unit"}
    assert units == {"Belize", "Cayo", "Corozal", "Orange Walk", "Stann Creek", "Toledo"}
    towns = [f["properties"] for f in features if f["properties"]["kind"] == "settlement"]
    assert len(towns) == 138 and towns[0]["name"] == "Belize City" and towns[0]["rank"] == 1
    assert {"Dangriga", "Belmopan", "San Ignacio", "Punta Gorda"} <= {t["name"] for t in towns}
    # Towns are labelled at every zoom, villages from zoom 9 on.
    assert "minzoom" not in symbols["labels-towns"] or symbols["labels-towns"]["minzoom"] == 0
    assert symbols["labels-villages"]["minzoom"] == 9


def test_maplibre_hot_spots_use_the_arcgis_ramp(client, run_layer):
    layers = {layer["id"]: layer for layer in client.get("/styles/default.json").json()["layers"]}
    fill = layers[f"{run_layer}-fill"]
    assert fill["layout"]["visibility"] == "visible"  # the newest run
    kind, (_, attribute), *pairs, _fallback = fill["paint"]["fill-color"]
    assert kind == "match" and attribute == "bin"
    # Labels as one-value arrays: QGIS 3.22's style converter reads no bare label.
    assert all(isinstance(label, list) and len(label) == 1 for label in pairs[::2])
    assert {label[0]: colour for label, colour in zip(pairs[::2], pairs[1::2], strict=True)} == (
        ARCGIS_GI_BIN
    )
    circles = layers["incidents-circle"]["paint"]["circle-radius"]
    assert "count" in str(circles)  # clusters grow with their count
    assert layers["units-1-line"]["type"] == "line" and layers["units-0-line"]


def test_qml_of_a_hot_spot_run(client, run_layer):
    response = client.get(f"/styles/{run_layer}.qml")
    assert response.status_code == 200
    assert response.text.startswith("<!DOCTYPE qgis")  # QGIS refuses other doctypes
    renderer = ET.fromstring(response.content).find("renderer-v2")
    assert renderer.get("type") == "categorizedSymbol" and renderer.get("attr") == "bin"
    categories = renderer.findall("categories/category")
    assert [int(c.get("value")) for c in categories] == [-3, -2, -1, 0, 1, 2, 3]
    assert {c.get("type") for c in categories} == {"long"}
    labels = {int(c.get("value")): c.get("label") for c in categories}
    assert labels[3] == "Hot spot - 99% confidence"
    assert labels[-2] == "Cold spot - 95% confidence"
    assert labels[0] == "Not significant"
    symbols = {s.get("name"): s for s in renderer.findall("symbols/symbol")}
    for category in categories:
        symbol = symbols[category.get("symbol")]
        assert symbol.get("type") == "fill"
        layer = symbol.find("layer")
        assert layer.get("class") == "SimpleFill"
        colour = layer.find("Option/Option[@name='color']").get("value")
        assert layer.find("prop[@k='color']").get("v") == colour  # QGIS <= 3.16 reads these
        r, g, b, _ = (int(v) for v in colour.split(","))
        assert f"#{r:02x}{g:02x}{b:02x}" == ARCGIS_GI_BIN[int(category.get("value"))]


def test_qml_of_units_and_incidents(client, keys):
    units = ET.fromstring(client.get("/styles/units-1.qml").content).find("renderer-v2")
    assert units.get("type") in {"singleSymbol", "categorizedSymbol"}
    assert units.find("symbols/symbol").get("type") == "fill"
    assert client.get("/styles/incidents.qml").status_code == 401
    assert client.get("/styles/incidents.qml", headers=auth(keys["viewer"])).status_code == 403
    response = client.get("/styles/incidents.qml", headers=auth(keys["analyst"]))
    assert response.status_code == 200
    renderer = ET.fromstring(response.content).find("renderer-v2")
    assert renderer.get("type") == "singleSymbol"
    marker = renderer.find("symbols/symbol")
    assert marker.get("type") == "marker"
    assert marker.find("layer").get("class") == "SimpleMarker"


def test_sld_of_a_hot_spot_run(client, run_layer):
    response = client.get(f"/styles/{run_layer}.sld")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/vnd.ogc.sld+xml")
    root = ET.fromstring(response.content)
    assert root.tag == f"{SLD}StyledLayerDescriptor" and root.get("version") == "1.0.0"
    assert root.find(f"{SLD}NamedLayer/{SLD}Name").text == run_layer
    rules = root.findall(f".//{SLD}FeatureTypeStyle/{SLD}Rule")
    found = {}
    for rule in rules:
        condition = rule.find(f"{OGC}Filter/{OGC}PropertyIsEqualTo")
        assert condition.find(f"{OGC}PropertyName").text == "bin"
        fill = rule.find(f"{SLD}PolygonSymbolizer/{SLD}Fill/{SLD}CssParameter[@name='fill']")
        found[int(condition.find(f"{OGC}Literal").text)] = fill.text
        assert rule.find(f"{SLD}Title").text
    assert found == ARCGIS_GI_BIN


def test_sld_of_units_and_incidents(client, keys):
    root = ET.fromstring(client.get("/styles/units-0.sld").content)
    assert root.find(f".//{SLD}Rule/{SLD}PolygonSymbolizer/{SLD}Stroke") is not None
    assert client.get("/styles/incidents.sld").status_code == 401
    body = client.get("/styles/incidents.sld", headers=auth(keys["analyst"])).content
    mark = ET.fromstring(body).find(f".//{SLD}PointSymbolizer/{SLD}Graphic/{SLD}Mark")
    assert mark.find(f"{SLD}WellKnownName").text == "circle"


def test_collection_styles_list_every_encoding(client, run_layer):
    collection = client.get(f"/collections/{run_layer}").json()
    styles_link = next(
        link["href"]
        for link in collection["links"]
        if link["rel"] == "http://www.opengis.net/def/rel/ogc/1.0/styles"
    )
    body = client.get(local(styles_link)).json()
    assert body["default"] == "default"
    (style,) = body["styles"]
    types = {}
    for link in style["links"]:
        assert link["rel"] == "stylesheet"
        response = client.get(local(link["href"]))
        assert response.status_code == 200, link
        types[link["type"].split(";")[0]] = response
    assert set(types) == {
        "text/xml",
        "application/vnd.ogc.sld+xml",
        "application/vnd.mapbox.style+json",
    }
    # The collection's describedby links are the same documents.
    for link in collection["links"]:
        if link["rel"] == "describedby":
            assert client.get(local(link["href"])).status_code == 200


def test_unknown_layers_are_problem_404(client):
    for path in ("/styles/nope.qml", "/styles/nope.sld", "/collections/nope/styles"):
        response = client.get(path)
        assert response.status_code == 404, path
        assert response.headers["content-type"] == "application/problem+json"


def test_glyphs_are_cached_and_refuse_what_is_not_served(client):
    first = client.get("/fonts/DejaVu%20Sans/0-255.pbf")
    assert first.status_code == 200
    assert first.headers["cache-control"].startswith("public")
    again = client.get(
        "/fonts/DejaVu%20Sans/0-255.pbf", headers={"If-None-Match": first.headers["etag"]}
    )
    assert again.status_code == 304 and again.content == b""
    # A stack is served by its first font that is here; a range not shipped holds no glyph
    # (an empty range, as MapLibre reads it; a 404 would be an error on every label).
    stacked = client.get("/fonts/Open%20Sans%20Regular,DejaVu%20Sans/0-255.pbf")
    assert stacked.content == first.content
    empty = client.get("/fonts/DejaVu%20Sans/19968-20223.pbf")
    assert empty.status_code == 200
    assert empty.content == b"\n\x1a\n\x0bDejaVu Sans\x12\x0b19968-20223"
    unknown = client.get("/fonts/Comic%20Sans/0-255.pbf")
    assert unknown.status_code == 404
    assert unknown.headers["content-type"] == "application/problem+json"
    assert "DejaVu Sans" in unknown.json()["detail"]
    for bad in ("0-254", "1-256", "65536-65791"):
        assert client.get(f"/fonts/DejaVu%20Sans/{bad}.pbf").status_code == 404, bad


def test_district_label_points_lie_inside_their_districts(client):
    import geopandas as gpd
    import shapely

    from tests.conftest import BELIZE

    districts = gpd.read_file(BELIZE / "boundaries" / "belize_adm1_districts.geojson")
    shapes = dict(zip(districts["iso_3166_2"], districts.geometry, strict=True))
    units = [
        f for f in client.get("/labels.geojson").json()["features"]
        if f["properties"]["kind"] == "unit"
    ]  # fmt: skip
    assert len(units) == 6
    for feature in units:
        point = shapely.geometry.shape(feature["geometry"])
        shape = shapes[feature["properties"]["code"]]
        assert shape.contains(point), feature
        # The pole of inaccessibility: well inside, not on an edge (> 5 km here).
        assert shape.boundary.distance(point) * 111 > 5, feature


def test_risk_zones_are_styled_in_every_format(client, keys, run_layer, zones):
    """The public risk zones: one translucent purple symbol in QML, SLD and the MapLibre
    style, drawn over the hot spots; the exact zones are in no public style."""
    response = client.get("/styles/default.json")
    style = response.json()
    assert style["sources"]["risk_zones"] == {
        "type": "vector",
        "url": "http://testserver/tiles/risk_zones.json",
    }
    assert "risk_zones-exact" not in style["sources"]
    ids = [layer["id"] for layer in style["layers"]]
    layers = dict(zip(ids, style["layers"], strict=True))
    fill, line = layers["risk_zones-fill"], layers["risk_zones-line"]
    assert fill["layout"]["visibility"] == "visible" and fill["source-layer"] == "risk_zones"
    assert fill["paint"] == {"fill-color": RISK_ZONE_FILL, "fill-opacity": 0.45}
    assert line["paint"]["line-color"] == RISK_ZONE_OUTLINE
    assert fill["metadata"]["observatory:legend"] == [
        {"label": "Near-repeat risk zone", "colour": RISK_ZONE_FILL}
    ]
    assert ids.index(f"{run_layer}-fill") < ids.index("risk_zones-fill")
    assert ids.index("risk_zones-fill") < ids.index("incidents-circle")
    # The tiles the style points at hold the zone (Belize City, zoom 12).
    tilejson = client.get(local(style["sources"]["risk_zones"]["url"])).json()
    x, y = tile_of(-88.2, 17.5, 12)
    path = local(tilejson["tiles"][0].format(z=12, x=x, y=y))
    tile = client.get(path)
    assert tile.status_code == 200 and b"risk_zones" in tile.content

    renderer = ET.fromstring(client.get("/styles/risk_zones.qml").content).find("renderer-v2")
    assert renderer.get("type") == "singleSymbol"
    symbol = renderer.find("symbols/symbol")
    assert symbol.get("type") == "fill"
    options = symbol.find("layer/Option")
    colour = options.find("Option[@name='color']").get("value")
    assert colour == "158,154,200,115"  # #9e9ac8 at 45 %
    assert options.find("Option[@name='outline_color']").get("value") == "84,39,143,255"

    root = ET.fromstring(client.get("/styles/risk_zones.sld").content)
    assert root.find(f"{SLD}NamedLayer/{SLD}Name").text == "risk_zones"
    (rule,) = root.findall(f".//{SLD}FeatureTypeStyle/{SLD}Rule")
    assert rule.find(f"{SLD}Title").text == "Near-repeat risk zone"
    polygon = rule.find(f"{SLD}PolygonSymbolizer")
    css = {c.get("name"): c.text for c in polygon.iter(f"{SLD}CssParameter")}
    assert css["fill"] == RISK_ZONE_FILL and css["fill-opacity"] == "0.45"
    assert css["stroke"] == RISK_ZONE_OUTLINE


@pytest.mark.parametrize("layer_id", ["risk_zones", "risk_zones-exact"])
def test_collection_styles_of_risk_zones_follow_the_layers_access(client, keys, zones, layer_id):
    """GET /collections/{id}/styles and every stylesheet it lists answer for the callers
    who may read the layer: anyone for ``risk_zones``, analysts only for the exact zones
    (401 without a key, 403 for a viewer)."""
    analyst = auth(keys["analyst"])
    public = layer_id == "risk_zones"
    for path in (f"/collections/{layer_id}/styles", f"/styles/{layer_id}.qml",
                 f"/styles/{layer_id}.sld"):  # fmt: skip
        assert client.get(path).status_code == (200 if public else 401), path
        viewer = client.get(path, headers=auth(keys["viewer"]))
        assert viewer.status_code == (200 if public else 403), path
        if not public:
            assert viewer.headers["content-type"] == "application/problem+json"
    (style,) = client.get(f"/collections/{layer_id}/styles", headers=analyst).json()["styles"]
    types = set()
    for link in style["links"]:
        response = client.get(local(link["href"]), headers=analyst)
        assert response.status_code == 200, link
        types.add(link["type"].split(";")[0])
    assert types == {"text/xml", "application/vnd.ogc.sld+xml", "application/vnd.mapbox.style+json"}
    # The exact zones are drawn like the public ones (one symbol; the disc is the shape).
    qml = ET.fromstring(client.get(f"/styles/{layer_id}.qml", headers=analyst).content)
    fill = qml.find("renderer-v2/symbols/symbol/layer/Option/Option[@name='color']")
    assert fill.get("value") == "158,154,200,115"
