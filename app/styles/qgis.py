"""A QGIS project (.qgz) with the service's layers already connected and styled.

Data sources, as QGIS's providers parse them (checked against ``qgis/QGIS``):

- OGC API Features, provider key ``OAPIF``: the space-separated URI that
  ``QgsDataSourceUri`` parses, ``url='<landing page>' typename='<collection id>'``
  (``QgsWFSDataSourceURI``; QGIS's own tests build it this way). The landing page URL
  is requested as is, so it carries the trailing slash of our ``/``.
- Vector tiles, provider ``xyzvectortiles``: the URL-query form that
  ``QgsVectorTileLayer::loadDataSource`` decodes with ``QgsDataSourceUri::setEncodedUri``,
  ``type=xyz&url=<template with {z}/{x}/{y}>&zmax=..&zmin=..``; the layer's CRS is
  always EPSG:3857.
- HTTP headers: ``QgsDataSourceUri`` keeps parameters prefixed ``http-header:`` as
  ``QgsHttpHeaders`` in both forms (``http-header:Authorization='Bearer …'`` in the
  spaced form). The XYZ vector tile provider of recent releases sends them with every
  tile (``QgsXyzVectorTileDataProviderBase``), and the OAPIF/WFS provider since its
  ``QgsAuthorizationSettings`` carries the URI's headers (sources of December 2024, so
  QGIS 3.42 and later). Older releases ignore them and the incidents layer answers 401:
  there, add an "API Header" authentication configuration to the layer instead (QGIS
  3.24 and later). QGIS 3.22 (Debian 12, Ubuntu 22.04), checked headless with
  ``scripts/verify_qgis.py``, sends the header neither for OAPIF nor for vector tiles and
  has no "API Header" method; its "Basic" method and the OAPIF URI's ``username`` /
  ``password`` send ``Authorization: Basic …`` only.
- An authentication configuration: ``authcfg=<id>`` (7 letters and digits, the id in the
  user's QGIS authentication database), in the spaced form and as a URL-query parameter
  alike; every release since 3.0 applies it to OAPIF requests and vector tiles (a
  "Basic" configuration with the key as the password works on 3.22, checked with
  ``scripts/verify_qgis.py``).
- A ``<spatialrefsys>`` is resolved from its ``authid`` only when ``srsid`` is a QGIS
  system id (``QgsCoordinateReferenceSystem::readXml``): 3857 for EPSG:3857, 3452 for
  EPSG:4326.
- A .qgz is a zip archive holding the project's .qgs file.
- Place names: the districts' OAPIF layers are labelled by ``name`` (QGIS places one label
  per feature; the vector tile copy stays unlabelled, as tiles would repeat it); the towns
  and villages are an OGR layer on the service's ``/labels.geojson``
  (``<url>|subset=<expression>``, ``QgsOgrProvider``'s URI), labelled by ``name``.
"""

from __future__ import annotations

import io
import math
import xml.etree.ElementTree as ET
import zipfile
from dataclasses import dataclass, field
from functools import cache
from typing import Literal
from urllib.parse import quote

from pyproj import CRS

from app.ogc.layers import Layer
from app.styles.qml import (
    DOCTYPE,
    QGIS_VERSION,
    labeling_element,
    renderer_element,
    vector_tile_renderer_element,
)
from app.styles.symbology import Category, Symbology

# QGIS's internal srs_id of the two CRSs we write (its srs.db).
_CRS = {
    "EPSG:3857": (3857, "WGS 84 / Pseudo-Mercator", "merc", "EPSG:7030", False),
    "EPSG:4326": (3452, "WGS 84", "longlat", "EPSG:7030", True),
}
_PROJ = {
    "EPSG:3857": "+proj=merc +a=6378137 +b=6378137 +lat_ts=0 +lon_0=0 +x_0=0 +y_0=0 +k=1 "
    "+units=m +nadgrids=@null +wktext +no_defs",
    "EPSG:4326": "+proj=longlat +datum=WGS84 +no_defs",
}
_EARTH_RADIUS = 6378137.0

_WKB = {"Point": "Point", "Polygon": "Polygon", "MultiPolygon": "MultiPolygon"}
_GEOMETRY = {"Point": "Point", "Polygon": "Polygon", "MultiPolygon": "Polygon"}


@dataclass(frozen=True)
class ProjectLayer:
    """One layer of the project: a catalog layer read through one protocol."""

    layer: Layer
    symbology: Symbology
    kind: Literal["oapif", "tiles"]
    group: str
    visible: bool = True
    # HTTP headers QGIS sends with every request of this layer (``http-header:`` prefix).
    headers: dict[str, str] = field(default_factory=dict)
    # The id of an authentication configuration of the user's QGIS (``authcfg=``).
    authcfg: str | None = None
    tile_maxzoom: int = 22

    @property
    def qgis_id(self) -> str:
        """The layer's id in the project file (letters, digits and ``_``)."""
        return f"{self.layer.id.replace('-', '_')}_{self.kind}"

    @property
    def name(self) -> str:
        """The name the QGIS layer tree shows."""
        return self.layer.title + (" (vector tiles)" if self.kind == "tiles" else "")


def _spaced(value: str) -> str:
    """A quoted value of QgsDataSourceUri's spaced form (backslash escapes)."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def oapif_source(
    base: str, layer: Layer, headers: dict[str, str], authcfg: str | None = None
) -> str:
    """``url='<base>/' typename='<id>'`` (+ headers, authcfg); incidents only load the
    view's bbox."""
    parts = [f"url={_spaced(base + '/')}", f"typename={_spaced(layer.id)}"]
    if authcfg:
        parts.append(f"authcfg={_spaced(authcfg)}")
    if layer.style == "incidents":
        # A million points must not be fetched on project load: only the map's extent.
        parts.append("restrictToRequestBBOX='1'")
    parts += [f"http-header:{name}={_spaced(value)}" for name, value in headers.items()]
    return " ".join(parts)


def tile_template(base: str, layer: Layer) -> str:
    """The layer's XYZ tile URL template under ``base``."""
    return f"{base}/tiles/{layer.id}/{{z}}/{{x}}/{{y}}.mvt"


def vector_tile_source(
    base: str, layer: Layer, headers: dict[str, str], zmax: int, authcfg: str | None = None
) -> str:
    """``type=xyz&url=…&zmax=…&zmin=…`` (+ authcfg, headers) as
    ``QgsDataSourceUri::encodedUri`` writes it."""
    params = [
        ("type", "xyz"),
        ("url", tile_template(base, layer)),
        ("zmax", str(min(layer.tiles.maxzoom, zmax))),
        ("zmin", str(layer.tiles.minzoom)),
        *((("authcfg", authcfg),) if authcfg else ()),
        *((f"http-header:{name}", value) for name, value in headers.items()),
    ]
    # ":" and "/" stay as they are (as QGIS writes them); braces, spaces, "&" and "=" are
    # percent-encoded, which every QGIS release decodes.
    return "&".join(f"{key}={quote(value, safe=':/')}" for key, value in params)


@cache
def _wkt(authid: str) -> str:
    return CRS.from_user_input(authid).to_wkt()


def _srs(parent: ET.Element, authid: str) -> None:
    srsid, description, acronym, ellipsoid, geographic = _CRS[authid]
    srs = ET.SubElement(parent, "spatialrefsys", nativeFormat="Wkt")
    ET.SubElement(srs, "wkt").text = _wkt(authid)
    ET.SubElement(srs, "proj4").text = _PROJ[authid]
    ET.SubElement(srs, "srsid").text = str(srsid)
    ET.SubElement(srs, "srid").text = authid.split(":")[1]
    ET.SubElement(srs, "authid").text = authid
    ET.SubElement(srs, "description").text = description
    ET.SubElement(srs, "projectionacronym").text = acronym
    ET.SubElement(srs, "ellipsoidacronym").text = ellipsoid
    ET.SubElement(srs, "geographicflag").text = "true" if geographic else "false"


def web_mercator(extent: tuple[float, float, float, float]) -> tuple[float, ...]:
    """(west, south, east, north) in degrees to EPSG:3857 metres."""
    west, south, east, north = extent

    def y(lat: float) -> float:
        lat = max(min(lat, 85.0511), -85.0511)
        return _EARTH_RADIUS * math.log(math.tan(math.pi / 4 + math.radians(lat) / 2))

    return (
        _EARTH_RADIUS * math.radians(west),
        y(south),
        _EARTH_RADIUS * math.radians(east),
        y(north),
    )


# The towns and villages of /labels.geojson: small dark dots, named.
PLACES_ID = "place_names_ogr"
PLACES_NAME = "Towns and villages"
PLACES_GROUP = "Place names"
_PLACES_SYMBOL = Symbology(
    "point", None, (), Category("", "#333333", "Town or village"), "long", "#ffffff", 0.2, 1.6
)


def places_source(base: str) -> str:
    """The OGR source of the labelled settlements: ``/labels.geojson`` without the units."""
    return f"{base}/labels.geojson|subset=\"kind\" = 'settlement'"


def _places_layer(base: str) -> ET.Element:
    element = ET.Element(
        "maplayer", type="vector", geometry="Point", wkbType="Point", labelsEnabled="1"
    )
    ET.SubElement(element, "id").text = PLACES_ID
    ET.SubElement(element, "datasource").text = places_source(base)
    ET.SubElement(element, "layername").text = PLACES_NAME
    _srs(ET.SubElement(element, "srs"), "EPSG:4326")
    ET.SubElement(element, "provider", encoding="UTF-8").text = "ogr"
    ET.SubElement(element, "abstract").text = (
        "Towns and villages the territory's settlements file lists, to find places by name "
        "(for Belize: GeoNames' places of 500 people or more, CC BY 4.0)."
    )
    element.append(renderer_element(_PLACES_SYMBOL))
    element.append(labeling_element("name", polygon=False))
    ET.SubElement(element, "blendMode").text = "0"
    ET.SubElement(element, "layerOpacity").text = "1"
    return element


def _labelled(entry: ProjectLayer) -> bool:
    """Units below the country, read through OGC API Features, carry their names."""
    layer = entry.layer
    return entry.kind == "oapif" and layer.style == "units" and not layer.id.endswith("-0")


def _map_layer(entry: ProjectLayer, base: str) -> ET.Element:
    layer = entry.layer
    if entry.kind == "tiles":
        element = ET.Element("maplayer", type="vector-tile")
        source = vector_tile_source(base, layer, entry.headers, entry.tile_maxzoom, entry.authcfg)
    else:
        element = ET.Element(
            "maplayer",
            type="vector",
            geometry=_GEOMETRY[layer.geometry_type],
            wkbType=_WKB[layer.geometry_type],
        )
        source = oapif_source(base, layer, entry.headers, entry.authcfg)
    ET.SubElement(element, "id").text = entry.qgis_id
    ET.SubElement(element, "datasource").text = source
    ET.SubElement(element, "layername").text = entry.name
    _srs(ET.SubElement(element, "srs"), "EPSG:3857" if entry.kind == "tiles" else "EPSG:4326")
    provider = "xyzvectortiles" if entry.kind == "tiles" else "OAPIF"
    ET.SubElement(element, "provider", encoding="UTF-8").text = provider
    ET.SubElement(element, "abstract").text = layer.description
    if entry.kind == "tiles":
        element.append(vector_tile_renderer_element(layer.id, entry.symbology))
    else:
        element.append(renderer_element(entry.symbology))
    if _labelled(entry):
        element.set("labelsEnabled", "1")
        element.append(labeling_element("name", polygon=True, size_pt=10, uppercase=True))
    ET.SubElement(element, "blendMode").text = "0"
    ET.SubElement(element, "layerOpacity").text = "1"
    return element


def _layer_tree(root: ET.Element, layers: list[ProjectLayer], base: str, place_names: bool) -> None:
    tree = ET.SubElement(root, "layer-tree-group")
    ET.SubElement(tree, "customproperties")
    if place_names:
        group = ET.SubElement(
            tree, "layer-tree-group", name=PLACES_GROUP, checked="Qt::Checked", expanded="1"
        )
        ET.SubElement(group, "customproperties")
        ET.SubElement(
            group,
            "layer-tree-layer",
            id=PLACES_ID,
            name=PLACES_NAME,
            source=places_source(base),
            providerKey="ogr",
            checked="Qt::Checked",
            expanded="0",
        )
    groups: dict[str, ET.Element] = {}
    for entry in layers:
        if entry.group not in groups:
            groups[entry.group] = ET.SubElement(
                tree, "layer-tree-group", name=entry.group, checked="Qt::Checked", expanded="1"
            )
            ET.SubElement(groups[entry.group], "customproperties")
        ET.SubElement(
            groups[entry.group],
            "layer-tree-layer",
            id=entry.qgis_id,
            name=entry.name,
            source=_map_layer_source(entry, base),
            providerKey="xyzvectortiles" if entry.kind == "tiles" else "OAPIF",
            checked="Qt::Checked" if entry.visible else "Qt::Unchecked",
            expanded="0",
        )


def _map_layer_source(entry: ProjectLayer, base: str) -> str:
    if entry.kind == "tiles":
        return vector_tile_source(
            base, entry.layer, entry.headers, entry.tile_maxzoom, entry.authcfg
        )
    return oapif_source(base, entry.layer, entry.headers, entry.authcfg)


def project_document(
    title: str,
    base: str,
    layers: list[ProjectLayer],
    extent: tuple[float, float, float, float] | None,
    *,
    place_names: bool = True,
) -> bytes:
    """The .qgs XML: layers in drawing order (the first on top), grouped, on EPSG:3857,
    zoomed to ``extent`` (west, south, east, north in degrees); on top of them, with
    ``place_names``, the towns and villages of ``/labels.geojson``, named."""
    root = ET.Element("qgis", projectname=title, version=QGIS_VERSION)
    ET.SubElement(root, "homePath", path="")
    ET.SubElement(root, "title").text = title
    _srs(ET.SubElement(root, "projectCrs"), "EPSG:3857")
    _layer_tree(root, layers, base, place_names)
    canvas = ET.SubElement(root, "mapcanvas", name="theMapCanvas", annotationsVisible="1")
    ET.SubElement(canvas, "units").text = "meters"
    box = ET.SubElement(canvas, "extent")
    xmin, ymin, xmax, ymax = web_mercator(extent or (-180.0, -85.0, 180.0, 85.0))
    for name, value in zip(("xmin", "ymin", "xmax", "ymax"), (xmin, ymin, xmax, ymax), strict=True):
        ET.SubElement(box, name).text = f"{value:.3f}"
    ET.SubElement(canvas, "rotation").text = "0"
    _srs(ET.SubElement(canvas, "destinationsrs"), "EPSG:3857")
    project_layers = ET.SubElement(root, "projectlayers")
    if place_names:
        project_layers.append(_places_layer(base))
    for entry in layers:
        project_layers.append(_map_layer(entry, base))
    order = ET.SubElement(root, "layerorder")
    if place_names:
        ET.SubElement(order, "layer", id=PLACES_ID)
    for entry in layers:
        ET.SubElement(order, "layer", id=entry.qgis_id)
    ET.indent(root)
    return (DOCTYPE + "\n" + ET.tostring(root, encoding="unicode") + "\n").encode()


def project_archive(name: str, qgs: bytes) -> bytes:
    """A .qgz: a zip archive holding ``<name>.qgs``."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(f"{name}.qgs", qgs)
    return buffer.getvalue()
