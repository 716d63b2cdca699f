"""Pure style builders: every hot spot method gets its property and ramp, and the QML,
vector tile renderer and SLD of each parse as XML with one rule per category."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from datetime import UTC, datetime

import pytest

from app.ogc.layers import IndexColumn, hotspot_layer, incidents_layer, units_layer
from app.styles.qml import qml_document, vector_tile_renderer_element
from app.styles.sld import sld_document
from app.styles.symbology import GI_BINS, sequential, symbology


def _run(method: str, kind: str = "hotspots"):
    return hotspot_layer(7, kind, method, datetime(2024, 1, 1, tzinfo=UTC), {})


@pytest.mark.parametrize(
    ("method", "kind", "attribute", "n"),
    [
        ("gi_star", "hotspots", "bin", 7),
        ("optimized_gi_star", "hotspots", "bin", 7),
        ("local_moran", "hotspots", "label", 6),
        ("space_time_gi_star", "emerging", "category", 17),
    ],
)
def test_each_method_has_its_categories(method, kind, attribute, n):
    sym = symbology(_run(method, kind))
    assert sym.attribute == attribute and len(sym.categories) == n
    renderer = ET.fromstring(qml_document(sym).split(b"\n", 1)[1]).find("renderer-v2")
    assert renderer.get("attr") == attribute
    assert len(renderer.findall("categories/category")) == n
    tiles = vector_tile_renderer_element("hotspots-7", sym)
    assert len(tiles.findall("styles/style")) == n
    sld = ET.fromstring(sld_document("hotspots-7", "Run 7", sym))
    assert len(sld.findall(".//{http://www.opengis.net/sld}Rule")) == n


def test_string_values_are_quoted_in_tile_expressions():
    sym = symbology(_run("local_moran"))
    expressions = {
        s.get("expression") for s in vector_tile_renderer_element("hotspots-7", sym).iter("style")
    }
    assert "\"label\" = 'HH'" in expressions


def test_gi_bins_are_arcgis_pro_colours():
    # ArcGIS Pro, Hot Spot Analysis (Getis-Ord Gi*) output renderer.
    assert [c.colour for c in GI_BINS] == [
        "#4575b5", "#849eba", "#c0ccbe", "#ffffbf", "#fab984", "#ed7551", "#d62f27",
    ]  # fmt: skip


def test_sequential_ramp_spans_ylorrd():
    assert sequential(2) == ["#ffffcc", "#800026"]
    assert len(sequential(12)) == 12 and sequential(12)[0] == "#ffffcc"


def test_units_and_incidents():
    assert symbology(units_layer(0)).default.opacity == 0  # outline only
    assert symbology(units_layer(1)).attribute is None  # no index: no classes
    assert symbology(incidents_layer()).geometry == "point"


def test_units_with_an_index_are_classed():
    values = {"BZ-BZ": (50.0, 1, 3)}
    index = IndexColumn("territorial-violence", "Territorial Violence Index", "2024", 1, values)
    sym = symbology(units_layer(1, (index,)), classes=3)
    assert sym.attribute == "territorial_violence_class"
    assert [c.value for c in sym.categories] == [1, 2, 3]
    assert sym.categories[2].label == "Territorial Violence Index: class 3 (highest)"
