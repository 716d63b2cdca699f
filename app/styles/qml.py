"""QGIS style XML: QML documents and the renderer elements a QGIS project embeds.

Written to what QGIS reads (checked against its source, ``qgis/QGIS``):

- A QML file needs the ``<!DOCTYPE qgis ...>`` line: ``QgsMapLayer::importNamedStyle``
  refuses a document whose doctype is not ``qgis``.
- ``<renderer-v2 type="categorizedSymbol" attr=...>`` holds ``<categories>`` (``value``,
  ``type``, ``symbol``, ``label``, ``render``) and ``<symbols>``
  (``QgsCategorizedSymbolRenderer::create``). ``type="long"`` makes QGIS compare the
  value as a number: under Qt 6 the string "3" no longer equals the integer 3.
- Symbol layer properties go in an ``<Option type="Map">``, which
  ``QgsSymbolLayerUtils::parseProperties`` reads first, and again as ``<prop k v>``, its
  fallback for styles of QGIS 3.16 and older (and what those releases read).
- Vector tile layers use ``<renderer type="basic">`` with one ``<style>`` per rule
  (``name``, ``layer``, ``geometry`` 0 point / 1 line / 2 polygon, ``enabled``,
  ``expression``, ``min-zoom``/``max-zoom`` -1 for none) each with ``<symbols>``
  (``QgsVectorTileBasicRendererStyle::readXml``).
- Labels: ``<labeling type="simple">`` holding one ``<settings>`` with ``<text-style>``
  (``fieldName``, font, ``<text-buffer>``), ``<placement>`` and ``<rendering>``
  (``QgsVectorLayerSimpleLabeling::create``, ``QgsPalLayerSettings::readXml``); the layer
  draws them only with ``labelsEnabled="1"`` on its ``<maplayer>``. ``placement`` 1 is
  "over point" (a polygon's label inside it), 6 "cartographic" (around a point);
  ``fontCapitals`` 1 is all uppercase.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

from app.styles.symbology import Category, Symbology

# The release the files say they were written by: the oldest one checked with a real QGIS
# (scripts/verify_qgis.py; Debian 12's and Ubuntu 22.04's QGIS). Newer releases read them
# as they are; a file naming a newer release than the reader's makes QGIS warn that it
# was "saved with a newer version of qgis" on every open.
QGIS_VERSION = "3.22.0-Białowieża"
DOCTYPE = "<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>"
_GEOMETRY_TYPE = {"point": 0, "polygon": 2}


def qgis_colour(colour: str, opacity: float = 1.0) -> str:
    """``#rrggbb`` and an opacity as QGIS writes colours: ``r,g,b,a``."""
    r, g, b = (int(colour[i : i + 2], 16) for i in (1, 3, 5))
    return f"{r},{g},{b},{round(opacity * 255)}"


def _properties(layer: ET.Element, props: dict[str, str]) -> None:
    options = ET.SubElement(layer, "Option", type="Map")
    for key, value in props.items():
        ET.SubElement(options, "Option", name=key, type="QString", value=value)
    for key, value in props.items():
        ET.SubElement(layer, "prop", k=key, v=value)


def _fill_props(sym: Symbology, cat: Category) -> dict[str, str]:
    return {
        "border_width_map_unit_scale": "3x:0,0,0,0,0,0",
        "color": qgis_colour(cat.colour, cat.opacity),
        "joinstyle": "bevel",
        "offset": "0,0",
        "offset_map_unit_scale": "3x:0,0,0,0,0,0",
        "offset_unit": "MM",
        "outline_color": qgis_colour(sym.outline),
        "outline_style": "solid",
        "outline_width": f"{sym.outline_width_mm:g}",
        "outline_width_unit": "MM",
        "style": "solid" if cat.opacity > 0 else "no",
    }


def _marker_props(sym: Symbology, cat: Category) -> dict[str, str]:
    return {
        "angle": "0",
        "color": qgis_colour(cat.colour, cat.opacity),
        "horizontal_anchor_point": "1",
        "joinstyle": "bevel",
        "name": "circle",
        "offset": "0,0",
        "offset_map_unit_scale": "3x:0,0,0,0,0,0",
        "offset_unit": "MM",
        "outline_color": qgis_colour(sym.outline),
        "outline_style": "solid",
        "outline_width": f"{sym.outline_width_mm:g}",
        "outline_width_unit": "MM",
        "scale_method": "diameter",
        "size": f"{sym.size_mm:g}",
        "size_map_unit_scale": "3x:0,0,0,0,0,0",
        "size_unit": "MM",
        "vertical_anchor_point": "1",
    }


def symbol_element(name: str, sym: Symbology, cat: Category) -> ET.Element:
    """One ``<symbol>``: a simple fill for polygons, a circle marker for points."""
    kind = "marker" if sym.geometry == "point" else "fill"
    symbol = ET.Element(
        "symbol",
        name=name,
        type=kind,
        alpha="1",
        clip_to_extent="1",
        force_rhr="0",
        is_animated="0",
        frame_rate="10",
    )
    layer_class = "SimpleMarker" if kind == "marker" else "SimpleFill"
    # "class" and "pass" are Python keywords: attributes go in a dict.
    attributes = {"class": layer_class, "enabled": "1", "locked": "0", "pass": "0"}
    layer = ET.SubElement(symbol, "layer", attributes)
    _properties(layer, _marker_props(sym, cat) if kind == "marker" else _fill_props(sym, cat))
    return symbol


def _symbols(tag: str, symbols: list[ET.Element]) -> ET.Element:
    element = ET.Element(tag)
    element.extend(symbols)
    return element


def renderer_element(sym: Symbology) -> ET.Element:
    """``<renderer-v2>`` of a vector layer: categorized by ``sym.attribute``, or single."""
    common = {"symbollevels": "0", "forceraster": "0", "enableorderby": "0"}
    common["referencescale"] = "-1"
    if sym.attribute is None:
        renderer = ET.Element("renderer-v2", type="singleSymbol", **common)
        renderer.append(_symbols("symbols", [symbol_element("0", sym, sym.default)]))
    else:
        renderer = ET.Element("renderer-v2", type="categorizedSymbol", attr=sym.attribute)
        renderer.attrib.update(common)
        categories = ET.SubElement(renderer, "categories")
        symbols = []
        for i, cat in enumerate(sym.categories):
            ET.SubElement(
                categories,
                "category",
                value=str(cat.value),
                type=sym.value_type,
                symbol=str(i),
                label=cat.label,
                render="true",
                uuid=f"{sym.attribute}-{i}",
            )
            symbols.append(symbol_element(str(i), sym, cat))
        renderer.append(_symbols("symbols", symbols))
        renderer.append(_symbols("source-symbol", [symbol_element("0", sym, sym.default)]))
    ET.SubElement(renderer, "rotation")
    ET.SubElement(renderer, "sizescale")
    return renderer


def _quoted(value: int | str) -> str:
    if isinstance(value, int):
        return str(value)
    return "'" + value.replace("'", "''") + "'"


def vector_tile_renderer_element(tile_layer: str, sym: Symbology) -> ET.Element:
    """``<renderer type="basic">`` of a vector tile layer: one style per category, each
    filtered by a QGIS expression on the tile feature's property."""
    renderer = ET.Element("renderer", type="basic")
    styles = ET.SubElement(renderer, "styles")
    if sym.attribute is None:
        rules = [(sym.default.label or tile_layer, "", sym.default)]
    else:
        field = '"' + sym.attribute.replace('"', '""') + '"'
        rules = [(c.label, f"{field} = {_quoted(c.value)}", c) for c in sym.categories]
    for name, expression, cat in rules:
        style = ET.SubElement(
            styles,
            "style",
            name=name,
            layer=tile_layer,
            geometry=str(_GEOMETRY_TYPE[sym.geometry]),
            enabled="1",
            expression=expression,
        )
        style.set("min-zoom", "-1")
        style.set("max-zoom", "-1")
        style.append(_symbols("symbols", [symbol_element("0", sym, cat)]))
    return renderer


def labeling_element(
    field: str, *, polygon: bool, size_pt: float = 9.0, uppercase: bool = False
) -> ET.Element:
    """``<labeling type="simple">``: ``field``'s value in DejaVu Sans with a white halo,
    inside a polygon or around a point, never overlapping another label."""
    labeling = ET.Element("labeling", type="simple")
    settings = ET.SubElement(labeling, "settings", calloutType="simple")
    text = ET.SubElement(
        settings,
        "text-style",
        fieldName=field,
        isExpression="0",
        fontFamily="DejaVu Sans",
        namedStyle="Book",
        fontSize=f"{size_pt:g}",
        fontSizeUnit="Point",
        fontWeight="50",
        fontItalic="0",
        fontCapitals="1" if uppercase else "0",
        fontLetterSpacing="1" if uppercase else "0",
        textColor=qgis_colour("#4d4d4d" if polygon else "#1f1f1f"),
        textOpacity="1",
        multilineHeight="1",
    )
    ET.SubElement(
        text,
        "text-buffer",
        bufferDraw="1",
        bufferSize="1",
        bufferSizeUnits="MM",
        bufferColor=qgis_colour("#ffffff"),
        bufferOpacity="1",
        bufferNoFill="1",
        bufferJoinStyle="128",
    )
    ET.SubElement(settings, "text-format", wrapChar="", multilineAlign="3")
    placement = {"placement": "1", "centroidInside": "1", "centroidWhole": "1"}
    if not polygon:
        placement = {"placement": "6", "dist": "1", "distUnits": "MM"}
    ET.SubElement(settings, "placement", placement, priority="5")
    ET.SubElement(
        settings, "rendering", obstacle="1", displayAll="0", upsidedownLabels="0", drawLabels="1"
    )
    return labeling


def qml_document(sym: Symbology) -> bytes:
    """A QML style file of a vector layer (symbology only)."""
    root = ET.Element("qgis", version=QGIS_VERSION, styleCategories="Symbology")
    root.append(renderer_element(sym))
    ET.SubElement(root, "blendMode").text = "0"
    ET.SubElement(root, "featureBlendMode").text = "0"
    ET.SubElement(root, "layerGeometryType").text = "0" if sym.geometry == "point" else "2"
    ET.indent(root)
    return (DOCTYPE + "\n" + ET.tostring(root, encoding="unicode") + "\n").encode()
