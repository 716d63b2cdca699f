"""OGC Styled Layer Descriptor 1.0.0 (``application/vnd.ogc.sld+xml``) of a layer: one
rule per category with an ``ogc:PropertyIsEqualTo`` filter, read by QGIS ("Load style…"),
GeoServer and MapServer alike."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from app.styles.symbology import Category, Symbology

SLD = "http://www.opengis.net/sld"
OGC = "http://www.opengis.net/ogc"
XSI = "http://www.w3.org/2001/XMLSchema-instance"
SCHEMA = "http://www.opengis.net/sld http://schemas.opengis.net/sld/1.0.0/StyledLayerDescriptor.xsd"
MEDIA_TYPE = "application/vnd.ogc.sld+xml"

ET.register_namespace("", SLD)
ET.register_namespace("ogc", OGC)
ET.register_namespace("xsi", XSI)


def _s(tag: str) -> str:
    return f"{{{SLD}}}{tag}"


def _css(parent: ET.Element, name: str, value: str) -> None:
    ET.SubElement(parent, _s("CssParameter"), name=name).text = value


# 1 mm at the OGC standard rendering pixel of 0.28 mm.
_PX_PER_MM = 1 / 0.28


def _symbolizer(rule: ET.Element, sym: Symbology, cat: Category) -> None:
    stroke_px = f"{sym.outline_width_mm * _PX_PER_MM:.2f}"
    if sym.geometry == "point":
        point = ET.SubElement(rule, _s("PointSymbolizer"))
        graphic = ET.SubElement(point, _s("Graphic"))
        mark = ET.SubElement(graphic, _s("Mark"))
        ET.SubElement(mark, _s("WellKnownName")).text = "circle"
        fill = ET.SubElement(mark, _s("Fill"))
        _css(fill, "fill", cat.colour)
        _css(fill, "fill-opacity", f"{cat.opacity:g}")
        stroke = ET.SubElement(mark, _s("Stroke"))
        _css(stroke, "stroke", sym.outline)
        _css(stroke, "stroke-width", stroke_px)
        ET.SubElement(graphic, _s("Size")).text = f"{sym.size_mm * _PX_PER_MM:.1f}"
        return
    polygon = ET.SubElement(rule, _s("PolygonSymbolizer"))
    if cat.opacity > 0:
        fill = ET.SubElement(polygon, _s("Fill"))
        _css(fill, "fill", cat.colour)
        _css(fill, "fill-opacity", f"{cat.opacity:g}")
    stroke = ET.SubElement(polygon, _s("Stroke"))
    _css(stroke, "stroke", sym.outline)
    _css(stroke, "stroke-width", stroke_px)


def _rule(parent: ET.Element, name: str, title: str) -> ET.Element:
    rule = ET.SubElement(parent, _s("Rule"))
    ET.SubElement(rule, _s("Name")).text = name
    ET.SubElement(rule, _s("Title")).text = title
    return rule


def sld_document(layer_id: str, title: str, sym: Symbology) -> bytes:
    """An SLD 1.0.0 document with one named layer and its default user style."""
    root = ET.Element(_s("StyledLayerDescriptor"), version="1.0.0")
    root.set(f"{{{XSI}}}schemaLocation", SCHEMA)
    named = ET.SubElement(root, _s("NamedLayer"))
    ET.SubElement(named, _s("Name")).text = layer_id
    style = ET.SubElement(named, _s("UserStyle"))
    ET.SubElement(style, _s("Name")).text = "default"
    ET.SubElement(style, _s("Title")).text = title
    ET.SubElement(style, _s("IsDefault")).text = "1"
    feature_style = ET.SubElement(style, _s("FeatureTypeStyle"))
    if sym.attribute is None:
        rule = _rule(feature_style, layer_id, sym.default.label or title)
        _symbolizer(rule, sym, sym.default)
    for cat in sym.categories:
        rule = _rule(feature_style, f"{sym.attribute} = {cat.value}", cat.label)
        where = ET.SubElement(rule, f"{{{OGC}}}Filter")
        condition = ET.SubElement(where, f"{{{OGC}}}PropertyIsEqualTo")
        ET.SubElement(condition, f"{{{OGC}}}PropertyName").text = sym.attribute
        ET.SubElement(condition, f"{{{OGC}}}Literal").text = str(cat.value)
        _symbolizer(rule, sym, cat)
    ET.indent(root)
    return ET.tostring(root, encoding="utf-8", xml_declaration=True)
