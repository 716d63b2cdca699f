#!/usr/bin/python3
"""Check the service with a real QGIS, headless: OGC API Features layers, vector tiles,
the ready-made project and the QML/SLD styles, as QGIS itself loads and draws them.

Run it with the system Python that Debian's QGIS bindings are built for (``apt-get install
python3-qgis qgis-providers``), not the project's virtualenv::

    /usr/bin/python3 scripts/verify_qgis.py http://127.0.0.1:8000/ [--key obs_…] [--out DIR]

With an analyst ``--key`` the incidents are checked too. It prints one line per check
(PASS, FAIL, or LIMIT: a documented limitation of this QGIS release, with what works
instead), writes the rendered maps as PNG files to ``--out`` and exits 1 on any FAIL.
The expected values come from the service itself (``numberMatched``, collection extents,
the legends of ``/styles/default.json``), so the script works on any data set.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import traceback
import urllib.parse
import urllib.request
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("XDG_RUNTIME_DIR", tempfile.mkdtemp(prefix="qgis-runtime-"))

from qgis.core import (
    Qgis,
    QgsApplication,
    QgsAuthMethodConfig,
    QgsCoordinateReferenceSystem,
    QgsCoordinateTransform,
    QgsFeatureRequest,
    QgsMapRendererParallelJob,
    QgsMapSettings,
    QgsNetworkAccessManager,
    QgsNetworkReplyContent,
    QgsNetworkRequestParameters,
    QgsPointXY,
    QgsProject,
    QgsRectangle,
    QgsSymbolLayer,
    QgsVectorLayer,
    QgsVectorTileLayer,
    QgsWkbTypes,
)
from qgis.PyQt.QtCore import QSize, QUrl
from qgis.PyQt.QtGui import QColor
from qgis.PyQt.QtNetwork import QNetworkRequest

WGS84 = QgsCoordinateReferenceSystem("EPSG:4326")
MERCATOR = QgsCoordinateReferenceSystem("EPSG:3857")
VERSION = Qgis.QGIS_VERSION_INT  # 32216 for 3.22.16


class Report:
    def __init__(self) -> None:
        self.rows: list[tuple[str, str, str]] = []

    def add(self, status: str, name: str, detail: str = "") -> None:
        self.rows.append((status, name, detail))
        print(f"{status:5} {name}: {detail}", flush=True)

    def check(self, ok: bool, name: str, detail: str = "") -> bool:
        self.add("PASS" if ok else "FAIL", name, detail)
        return ok

    def table(self) -> str:
        width = max(len(name) for _, name, _ in self.rows)
        lines = [f"{'result':6} {'check':{width}}  detail", "-" * (width + 40)]
        lines += [f"{s:6} {n:{width}}  {d}" for s, n, d in self.rows]
        counts = {s: sum(1 for r in self.rows if r[0] == s) for s in ("PASS", "FAIL", "LIMIT")}
        lines.append(f"{counts['PASS']} passed, {counts['FAIL']} failed, {counts['LIMIT']} limits")
        return "\n".join(lines)


class Requests:
    """Every HTTP request QGIS makes (any thread), with its status and auth header."""

    def __init__(self, app: QgsApplication) -> None:
        self.app = app
        self.sent: list[tuple[str, bool]] = []
        self.status: dict[str, int] = {}
        nam = QgsNetworkAccessManager.instance()
        nam.requestAboutToBeCreated[QgsNetworkRequestParameters].connect(self._sent)
        nam.finished[QgsNetworkReplyContent].connect(self._finished)

    def _sent(self, params: QgsNetworkRequestParameters) -> None:
        request = params.request()
        self.sent.append((request.url().toString(), request.hasRawHeader(b"Authorization")))

    def _finished(self, reply: QgsNetworkReplyContent) -> None:
        code = reply.attribute(QNetworkRequest.HttpStatusCodeAttribute)
        self.status[reply.request().url().toString()] = int(code or 0)

    def take(self) -> list[tuple[str, bool, int]]:
        for _ in range(20):  # signals from provider threads arrive queued
            self.app.processEvents()
            time.sleep(0.01)
        out = [(url, auth, self.status.get(url, 0)) for url, auth in self.sent]
        self.sent.clear()
        self.status.clear()
        return out


def http_json(url: str, key: str | None = None) -> dict:
    headers = {"Accept": "application/json"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=60) as r:
        return json.load(r)


def download(url: str, path: Path, key: str | None = None) -> None:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=60) as r:
        path.write_bytes(r.read())


def paths(reqs: list[tuple[str, bool, int]], base: str) -> list[str]:
    return [url.removeprefix(base.rstrip("/")) for url, _, _ in reqs]


def summary(reqs: list[tuple[str, bool, int]], base: str, limit: int = 6) -> str:
    shown = [f"{p} {s}" for p, (_, _, s) in zip(paths(reqs, base), reqs, strict=True)]
    more = f" … +{len(shown) - limit}" if len(shown) > limit else ""
    return "; ".join(shown[:limit]) + more


def oapif_uri(base: str, collection: str, extra: str = "") -> str:
    return f"url='{base}' typename='{collection}'" + (f" {extra}" if extra else "")


def tiles_uri(
    base: str,
    collection: str,
    headers: dict[str, str] | None = None,
    authcfg: str | None = None,
) -> str:
    """The XYZ vector tile source of README's "Connecting", style URL included."""
    template = f"{base.rstrip('/')}/tiles/{collection}/{{z}}/{{x}}/{{y}}.mvt"
    params = [("type", "xyz"), ("url", template), ("zmax", "16"), ("zmin", "0")]
    params.append(("styleUrl", f"{base}styles/default.json"))
    if authcfg:
        params.append(("authcfg", authcfg))
    params += [(f"http-header:{k}", v) for k, v in (headers or {}).items()]
    return "&".join(f"{k}={urllib.parse.quote(v, safe=':/')}" for k, v in params)


# --- rendering ------------------------------------------------------------------------


def render(layers: list, extent_wgs84: QgsRectangle, path: Path, size: int = 800):
    settings = QgsMapSettings()
    settings.setLayers(layers)
    settings.setDestinationCrs(MERCATOR)
    settings.setOutputSize(QSize(size, size))
    settings.setBackgroundColor(QColor(255, 255, 255))
    transform = QgsCoordinateTransform(WGS84, MERCATOR, QgsProject.instance())
    settings.setExtent(transform.transformBoundingBox(extent_wgs84))
    job = QgsMapRendererParallelJob(settings)
    job.start()
    job.waitForFinished()
    image = job.renderedImage()
    image.save(str(path), "PNG")
    return image, settings


def painted(image, step: int = 4) -> float:
    """Share of sampled pixels that are neither the white map background nor the MapLibre
    style's background layer (#f7f7f5)."""
    total = drawn = 0
    for y in range(0, image.height(), step):
        for x in range(0, image.width(), step):
            total += 1
            if image.pixel(x, y) & 0xFFFFFF not in (0xFFFFFF, 0xF7F7F5):
                drawn += 1
    return drawn / total


def blend(colour: str, opacity: float) -> tuple[int, int, int]:
    """The colour drawn at ``opacity`` over white."""
    c = QColor(colour)
    return tuple(round(v * opacity + 255 * (1 - opacity)) for v in (c.red(), c.green(), c.blue()))


def pixel_at(image, settings: QgsMapSettings, lon: float, lat: float) -> tuple[int, int, int]:
    transform = QgsCoordinateTransform(WGS84, MERCATOR, QgsProject.instance())
    point = settings.mapToPixel().transform(transform.transform(QgsPointXY(lon, lat)))
    c = QColor(image.pixel(round(point.x()), round(point.y())))
    return c.red(), c.green(), c.blue()


def inked_near(image, settings: QgsMapSettings, lon: float, lat: float, radius: int = 3) -> bool:
    """Whether anything but the white background is drawn within ``radius`` pixels of a
    point (a point symbol is drawn around its position, antialiased)."""
    transform = QgsCoordinateTransform(WGS84, MERCATOR, QgsProject.instance())
    point = settings.mapToPixel().transform(transform.transform(QgsPointXY(lon, lat)))
    cx, cy = round(point.x()), round(point.y())
    for y in range(max(cy - radius, 0), min(cy + radius + 1, image.height())):
        for x in range(max(cx - radius, 0), min(cx + radius + 1, image.width())):
            if image.pixel(x, y) & 0xFFFFFF != 0xFFFFFF:
                return True
    return False


def close(a: tuple[int, ...], b: tuple[int, ...], tolerance: int = 12) -> bool:
    return all(abs(x - y) <= tolerance for x, y in zip(a, b, strict=True))


# --- renderers against the service's legends ------------------------------------------


def legend_of(style: dict) -> dict[str, tuple[str | None, list[tuple]]]:
    """Per layer id of ``/styles/default.json``: (attribute, [(value, colour, opacity)])."""
    out: dict[str, tuple[str | None, list[tuple]]] = {}
    for layer in style["layers"]:
        legend = layer.get("metadata", {}).get("observatory:legend")
        if not legend or any("value" not in entry for entry in legend):
            continue  # a single symbol
        paint = layer["paint"]
        colour = paint.get("fill-color") or paint.get("circle-color")
        attribute = colour[1][1] if isinstance(colour, list) else None
        opacity = paint.get("fill-opacity") or paint.get("circle-opacity")
        opacities = {}
        if isinstance(opacity, list):
            pairs = opacity[2:-1]
            labels = [label[0] if isinstance(label, list) else label for label in pairs[::2]]
            opacities = dict(zip(labels, pairs[1::2], strict=True))
        entries = [
            (e["value"], e["colour"].lower(), float(opacities.get(e["value"], 1.0))) for e in legend
        ]
        out[layer["source"]] = (attribute, entries)
    return out


def categorized_matches(renderer, expected: tuple[str | None, list[tuple]]) -> tuple[bool, str]:
    attribute, entries = expected
    if renderer is None or renderer.type() != "categorizedSymbol":
        return False, f"renderer {renderer.type() if renderer else None}, not categorized"
    got = [
        (c.value(), c.symbol().color().name(), round(c.symbol().color().alphaF(), 2))
        for c in renderer.categories()
    ]
    want = [(v, colour, round(o, 2)) for v, colour, o in entries]
    same_values = [str(g[0]) for g in got] == [str(w[0]) for w in want]
    same_colours = [g[1:] for g in got] == [w[1:] for w in want]
    ok = renderer.classAttribute() == attribute and same_values and same_colours
    detail = f"by {renderer.classAttribute()!r}, {len(got)} categories"
    if not ok:
        detail += f"; got {got} want {want} (attribute {attribute!r})"
    return ok, detail


def tile_styles_match(renderer, expected: tuple[str | None, list[tuple]]) -> tuple[bool, str]:
    attribute, entries = expected
    if renderer is None or renderer.type() != "basic":
        return False, f"renderer {renderer.type() if renderer else None}"
    styles = renderer.styles()
    got = [s.symbol().color().name() for s in styles]
    want = [colour for _, colour, _ in entries]
    exprs = [s.filterExpression() for s in styles]
    ok = got == want and all(attribute in e for e in exprs if attribute)
    return ok, f"{len(styles)} styles, e.g. {exprs[0]!r}" + ("" if ok else f"; {got} != {want}")


# --- the checks -------------------------------------------------------------------------


def check_oapif(report, reqs, base, key, collections, out) -> dict[str, QgsVectorLayer]:
    layers: dict[str, QgsVectorLayer] = {}
    api = http_json(base + "api")
    page = api["components"]["parameters"]["limit"]["schema"]["default"]
    for collection in collections:
        cid = collection["id"]
        if cid == "incidents":
            continue
        t0 = time.monotonic()
        layer = QgsVectorLayer(oapif_uri(base, cid), cid, "OAPIF")
        first = http_json(f"{base}collections/{cid}/items?limit=1")
        if not report.check(layer.isValid(), f"oapif {cid} valid", summary(reqs.take(), base)):
            continue
        layers[cid] = layer
        n = sum(1 for _ in layer.getFeatures())
        sent = reqs.take()
        pages = [p for p in paths(sent, base) if "/items?" in p]
        report.check(
            n == first["numberMatched"] == layer.featureCount(),
            f"oapif {cid} feature count",
            f"{n} read, featureCount {layer.featureCount()}, numberMatched "
            f"{first['numberMatched']}; {len(pages)} pages in {time.monotonic() - t0:.1f} s",
        )
        report.check(
            bool(pages) and all(f"limit={page}" in p for p in pages),
            f"oapif {cid} paging",
            f"limit={page} from /api: {summary(sent, base, 3)}",
        )
        server_type = first["features"][0]["geometry"]["type"]
        qgis_type = QgsWkbTypes.displayString(layer.wkbType())
        report.check(
            qgis_type in (server_type, "Multi" + server_type),
            f"oapif {cid} geometry type",
            f"QGIS {qgis_type}, service {server_type}",
        )
        names = set(layer.fields().names())
        missing = set(first["features"][0]["properties"]) - names
        report.check(not missing, f"oapif {cid} fields", f"{len(names)} fields, missing {missing}")
        bbox = collection["extent"]["spatial"]["bbox"][0]
        e = layer.extent()
        got = (e.xMinimum(), e.yMinimum(), e.xMaximum(), e.yMaximum())
        report.check(
            all(abs(a - b) < 1e-3 for a, b in zip(got, bbox, strict=True)),
            f"oapif {cid} extent",
            ", ".join(f"{v:.4f}" for v in got),
        )
    # A subset string: QGIS 3.32 and later send it as filter= (Part 3) or name=value
    # (Part 1); older releases filter the downloaded features themselves.
    if "units-1" in layers:
        names = [f["name"] for f in layers["units-1"].getFeatures()]
        layer = QgsVectorLayer(oapif_uri(base, "units-1"), "subset", "OAPIF")
        reqs.take()
        ok = layer.setSubsetString(f"\"name\" = '{names[0]}'")
        n = sum(1 for _ in layer.getFeatures())
        sent = paths(reqs.take(), base)
        server_side = any("filter=" in p or "name=" in p for p in sent)
        report.check(ok and n == 1, "oapif subset string", f"{n} feature; requests {sent}")
        if server_side:
            report.add("PASS", "oapif server-side filter", "sent to the service")
        else:
            report.add(
                "LIMIT",
                "oapif server-side filter",
                f"QGIS {Qgis.QGIS_VERSION} filters client-side after downloading every "
                "feature (server-side Part 1/Part 3 filters came with QGIS 3.32)",
            )
    return layers


def basic_authcfg(key: str) -> str:
    """What README's "Connecting" tells a QGIS user to make: an authentication
    configuration of type Basic, any user name, the key as the password. Made through
    QGIS's own authentication manager, in this run's profile (its master password set
    first, as QGIS asks for one before it stores the first configuration)."""
    manager = QgsApplication.authManager()
    manager.setMasterPassword("verify-qgis", True)
    config = QgsAuthMethodConfig("Basic")
    config.setName("observatory (Basic, key as password)")
    config.setConfig("username", "qgis")
    config.setConfig("password", key)
    stored, config = manager.storeAuthenticationConfig(config)
    if not stored or not config.id():
        raise RuntimeError("QGIS's authentication manager did not store the configuration")
    return config.id()


def api_header_authcfg(key: str) -> str | None:
    """An "API Header" authentication configuration (QGIS 3.24 and later), or None."""
    manager = QgsApplication.authManager()
    if "APIHeader" not in manager.authMethodsKeys():
        return None
    manager.setMasterPassword("verify-qgis", True)
    config = QgsAuthMethodConfig("APIHeader")
    config.setName("observatory analyst")
    config.setConfig("Authorization", f"Bearer {key}")
    manager.storeAuthenticationConfig(config)
    return config.id()


def all_sent_with_key(sent: list[tuple[str, bool, int]]) -> bool:
    """Whether QGIS made requests, each with an Authorization header, each answered 200."""
    return bool(sent) and all(auth and status == 200 for _, auth, status in sent)


def check_challenge(report, base, key) -> None:
    """Qt with a user name and the key as the password in the URL: it sends them only
    when a 401 challenges it with a scheme it knows (Basic)."""
    host = base.split("://", 1)[1]
    password = urllib.parse.quote(key, safe="")
    url = QUrl(f"{base.split('://', 1)[0]}://qgis:{password}@{host}collections/incidents")
    reply = QgsNetworkAccessManager.instance().blockingGet(QNetworkRequest(url))
    status = reply.attribute(QNetworkRequest.HttpStatusCodeAttribute)
    report.check(
        status == 200,
        "challenge: key as URL password",
        f"/collections/incidents answered {status} to Qt's QNetworkAccessManager with "
        "qgis:<key>@ in the URL (it answers the 401's Basic challenge)",
    )


def check_incidents(report, reqs, base, key, authcfg) -> None:
    """The incidents collection through the Basic configuration: every incident, then a
    box of them as the project's layer reads them; then the other ways of sending the
    key, which depend on the QGIS release."""
    expected = http_json(f"{base}collections/incidents/items?limit=1", key)["numberMatched"]
    page = http_json(base + "api")["components"]["parameters"]["limit"]["schema"]["default"]
    reqs.take()
    layer = QgsVectorLayer(oapif_uri(base, "incidents", f"authcfg={authcfg}"), "i", "OAPIF")
    if not report.check(
        layer.isValid(), "oapif incidents with Basic auth", summary(reqs.take(), base, 3)
    ):
        return
    t0 = time.monotonic()
    n = sum(1 for _ in layer.getFeatures())
    sent = reqs.take()
    pages = [p for p in paths(sent, base) if "/items?" in p]
    report.check(
        0 < n == expected and len(pages) >= -(-expected // page) and all_sent_with_key(sent),
        "oapif incidents all read with Basic auth",
        f"{n} of {expected} (numberMatched) in {len(pages)} pages "
        f"({time.monotonic() - t0:.1f} s), every request with the key and 200: "
        f"{all_sent_with_key(sent)}; {summary(sent, base, 2)}",
    )
    # Only the features of a box, as the project's incidents layer (and the "Only request
    # features overlapping the view extent" box of QGIS's dialog): a box of at most a few
    # thousand incidents, which QGIS must page through.
    box_only = "restrictToRequestBBOX='1'"
    layer = QgsVectorLayer(
        oapif_uri(base, "incidents", f"{box_only} authcfg={authcfg}"), "i", "OAPIF"
    )
    collection = http_json(f"{base}collections/incidents", key)
    west, south, east, north = collection["extent"]["spatial"]["bbox"][0][:4]
    for share in (1.0, 0.5, 0.25, 0.12, 0.06, 0.03):
        cx, cy = (west + east) / 2, (south + north) / 2
        w, h = (east - west) * share / 2, (north - south) * share / 2
        box = (cx - w, cy - h, cx + w, cy + h)
        in_box = http_json(
            f"{base}collections/incidents/items?limit=1&bbox={','.join(map(str, box))}", key
        )["numberMatched"]
        if 0 < in_box <= 5000:
            break
    reqs.take()
    t0 = time.monotonic()
    request = QgsFeatureRequest().setFilterRect(QgsRectangle(*box))
    ids = {f.id() for f in layer.getFeatures(request)}
    sent = reqs.take()
    pages = [p for p in paths(sent, base) if "/items?" in p and "bbox=" in p]
    report.check(
        0 < len(ids) == in_box and len(pages) >= -(-in_box // page) and all_sent_with_key(sent),
        "oapif incidents bbox read",
        f"{len(ids)} of {in_box} in {len(pages)} pages ({time.monotonic() - t0:.1f} s), "
        f"every request with the key and 200: {all_sent_with_key(sent)}; "
        f"{summary(sent, base, 2)}",
    )
    check_other_auth(report, reqs, base, key)


def check_other_auth(report, reqs, base, key) -> None:
    """The key as an HTTP header: in the URI (QGIS 3.42 and later for OAPIF, 3.24 for
    vector tiles) or as an "API Header" configuration (3.24 and later)."""
    header = f"Bearer {key}"
    reqs.take()
    layer = QgsVectorLayer(
        oapif_uri(base, "incidents", f"http-header:Authorization='{header}'"), "i", "OAPIF"
    )
    sent = reqs.take()
    if layer.isValid():
        report.add("PASS", "oapif incidents with http-header", summary(sent, base, 3))
    else:
        report.add(
            "LIMIT" if VERSION < 34200 else "FAIL",
            "oapif incidents with http-header",
            f"invalid: the OAPIF provider of QGIS {Qgis.QGIS_VERSION} does not send "
            f"http-header: (from 3.42); {summary(sent, base, 3)}",
        )
    authcfg = api_header_authcfg(key)
    if authcfg is None:
        report.add(
            "LIMIT",
            "oapif incidents with API Header auth",
            f"QGIS {Qgis.QGIS_VERSION} has no API Header authentication method (from 3.24); "
            f"methods: {QgsApplication.authManager().authMethodsKeys()}",
        )
    else:
        layer = QgsVectorLayer(oapif_uri(base, "incidents", f"authcfg={authcfg}"), "i", "OAPIF")
        report.check(
            layer.isValid(), "oapif incidents with API Header auth", summary(reqs.take(), base, 3)
        )


def check_tiles(report, reqs, base, authcfg, collections, legends, extent, out) -> None:
    """Each collection as vector tiles, styled by /styles/default.json and drawn; the
    incidents through the Basic authentication configuration ``authcfg``."""
    for collection in collections:
        cid = collection["id"]
        if cid == "units-0":
            continue
        auth = authcfg if cid == "incidents" else None
        layer = QgsVectorTileLayer(tiles_uri(base, cid, authcfg=auth), cid)
        if not report.check(layer.isValid(), f"tiles {cid} valid", layer.source()[:90]):
            continue
        message, styled = layer.loadDefaultStyle()  # the MapLibre style of the styleUrl
        if cid in legends:
            # QGIS turns the style's "match" into a CASE WHEN "bin" IN (...) expression.
            expressions = [
                s.symbol()
                .symbolLayer(0)
                .dataDefinedProperties()
                .property(QgsSymbolLayer.PropertyFillColor)
                for s in layer.renderer().styles()
                if s.layerName() == cid and s.symbol() is not None
            ]
            texts = [e.expressionString() for e in expressions if e.isActive()]
            good = styled and texts and all("IN ()" not in t for t in texts)
            report.check(
                bool(good),
                f"tiles {cid} MapLibre style",
                f"{message or 'loaded'}; {texts[0][:90] if texts else 'no data-defined colour'}",
            )
        png = out / f"tiles-{cid}.png"
        image, _ = render([layer], extent, png)
        sent = [r for r in reqs.take() if ".mvt" in r[0]]
        codes = sorted({s for _, _, s in sent})
        share = painted(image)
        # Incidents come as points (clustered at low zoom): a few dots draw well under 1 %.
        least = 0.001 if cid == "incidents" else 0.01
        report.check(
            share > least and codes == [200] and (not auth or all_sent_with_key(sent)),
            f"tiles {cid} render",
            f"{share:.1%} of the map drawn ({png}); {len(sent)} tiles, status {codes}, "
            f"key sent: {any(a for _, a, _ in sent)}" + (" (Basic auth)" if auth else ""),
        )


def collection_of(layer) -> str:
    """The collection a layer of the service reads; the layer's name for any other."""
    source = layer.source()
    if "typename=" in source:
        return source.split("typename='")[1].split("'")[0]
    if "/tiles/" in source:
        return source.split("/tiles/")[1].split("/")[0]
    return layer.name()


def check_project(report, reqs, base, key, authcfg, legends, extent, out) -> None:
    """The handed-out project, as the public gets it, as an analyst gets it (the key
    embedded) and as README tells QGIS 3.22 users to get it (``embed_key=false`` and the
    id of their Basic authentication configuration)."""
    variants = [("public", None, "")]
    if key:
        variants.append(("analyst", key, ""))
        variants.append(("analyst, Basic auth", key, f"?embed_key=false&authcfg={authcfg}"))
    for who, k, query in variants:
        path = out / f"project-{who.replace(', ', '-').replace(' ', '-')}.qgz"
        download(base + "qgis/project.qgz" + query, path, k)
        project = QgsProject.instance()
        project.clear()
        reqs.take()
        ok = project.read(str(path))
        report.check(ok, f"project ({who}) read", f"{path}: {project.title()}")
        for layer in project.mapLayers().values():
            cid = collection_of(layer)
            if isinstance(layer, QgsVectorTileLayer):
                kind = "tiles"
            else:  # OAPIF, or e.g. the place names' ogr layer
                kind = layer.providerType().lower()
            valid = layer.isValid()
            if not valid and cid == "incidents" and VERSION < 34200 and not query:
                report.add(
                    "LIMIT",
                    f"project ({who}) layer {cid} {kind} valid",
                    "the embedded key is sent by QGIS 3.42 and later only",
                )
                continue
            report.check(valid, f"project ({who}) layer {cid} {kind} valid", layer.name())
            if cid in legends and valid:
                if kind == "tiles":
                    good, detail = tile_styles_match(layer.renderer(), legends[cid])
                else:
                    good, detail = categorized_matches(layer.renderer(), legends[cid])
                report.check(good, f"project ({who}) layer {cid} {kind} renderer", detail)
        reqs.take()
        checked = [layer for layer in project.layerTreeRoot().checkedLayers() if layer.isValid()]
        png = out / f"project-{who.replace(', ', '-').replace(' ', '-')}.png"
        image, _ = render(checked, extent, png)
        report.check(
            painted(image) > 0.2,
            f"project ({who}) render",
            f"{painted(image):.0%} drawn, layers {[collection_of(x) for x in checked]} ({png})",
        )
        if query:
            check_project_incidents(report, reqs, base, key, project, extent, out)
    QgsProject.instance().clear()


def check_project_incidents(report, reqs, base, key, project, extent, out) -> None:
    """The project's incidents layer alone, through the authentication configuration its
    source names: the incidents of the map's extent read (it asks for the view's box
    only), and drawn."""
    layer = next((x for x in project.mapLayers().values() if collection_of(x) == "incidents"), None)
    if not report.check(
        layer is not None and "authcfg=" in layer.source() and "Bearer" not in layer.source(),
        "project (analyst, Basic auth) incidents source",
        layer.source() if layer is not None else "no incidents layer",
    ):
        return
    box = ",".join(
        str(v) for v in (extent.xMinimum(), extent.yMinimum(), extent.xMaximum(), extent.yMaximum())
    )
    expected = http_json(f"{base}collections/incidents/items?limit=1&bbox={box}", key)[
        "numberMatched"
    ]
    reqs.take()
    points = [
        f.geometry().asPoint() for f in layer.getFeatures(QgsFeatureRequest().setFilterRect(extent))
    ]
    sent = reqs.take()
    report.check(
        0 < len(points) == expected and all_sent_with_key(sent),
        "project (analyst, Basic auth) incidents read",
        f"{len(points)} of {expected} in the map's extent; every request with the key and "
        f"200: {all_sent_with_key(sent)}; {summary(sent, base, 2)}",
    )
    # Drawn from the features just read (the provider keeps them): each incident's place
    # inked with the project's symbol.
    png = out / "project-incidents-basic-auth.png"
    image, settings = render([layer], extent, png)
    sample = points[:: max(1, len(points) // 300)]
    inked = sum(inked_near(image, settings, p.x(), p.y()) for p in sample)
    report.check(
        bool(sample) and inked == len(sample),
        "project (analyst, Basic auth) incidents render",
        f"{inked} of {len(sample)} sampled incidents drawn at their place, "
        f"{painted(image):.2%} of the map ({png})",
    )


def check_styles(report, base, key, legends, layers, extent, out) -> None:
    for cid, layer in layers.items():
        for fmt in ("qml", "sld"):
            path = out / f"{cid}.{fmt}"
            download(f"{base}styles/{cid}.{fmt}", path, key)
            copy = layer.clone()
            if fmt == "qml":
                message, ok = copy.loadNamedStyle(str(path))
            else:
                message, ok = copy.loadSldStyle(str(path))
            renderer = copy.renderer()
            detail = f"{message}; renderer {renderer.type()}"
            if ok and cid in legends:
                good, more = categorized_matches(renderer, legends[cid])
                if fmt == "sld" and not good and renderer.type() == "RuleRenderer":
                    good = len(renderer.rootRule().children()) == len(legends[cid][1])
                    more = f"{len(renderer.rootRule().children())} rules"
                ok, detail = good, detail + "; " + more
            report.check(ok, f"style {cid}.{fmt}", detail)


def check_positions(report, base, legends, layers, extent, out) -> None:
    """Each district's centre drawn in its class colour; hot spot cells in theirs."""
    runs = sorted((c for c in layers if c.startswith("hotspots-")), key=lambda c: int(c[9:]))
    for cid in ("units-1", *runs[-1:]):  # the newest run
        if cid not in layers or cid not in legends:
            continue
        layer = layers[cid].clone()
        qml = out / f"{cid}.qml"
        download(f"{base}styles/{cid}.qml", qml)
        layer.loadNamedStyle(str(qml))
        attribute, entries = legends[cid]
        view = extent
        if cid.startswith("hotspots-"):
            # Cells are a few pixels wide over a whole country: zoom on the hottest one.
            hottest = max(layer.getFeatures(), key=lambda f: f[attribute] or -99)
            centre = hottest.geometry().pointOnSurface().asPoint()
            view = QgsRectangle(
                centre.x() - 0.06, centre.y() - 0.06, centre.x() + 0.06, centre.y() + 0.06
            )
        png = out / f"oapif-{cid}.png"
        image, settings = render([layer], view, png)
        colours = {str(v): blend(c, o) for v, c, o in entries}
        checked = wrong = 0
        for feature in layer.getFeatures():
            value = feature[attribute]
            if value is None or str(value) not in colours:
                continue
            point = feature.geometry().pointOnSurface().asPoint()
            if not settings.visibleExtent().contains(
                QgsCoordinateTransform(WGS84, MERCATOR, QgsProject.instance()).transform(point)
            ):
                continue
            checked += 1
            if not close(pixel_at(image, settings, point.x(), point.y()), colours[str(value)]):
                wrong += 1
            if checked >= 300:
                break
        report.check(
            checked > 0 and wrong <= checked * 0.05,
            f"oapif {cid} drawn in place",
            f"{checked - wrong} of {checked} features show their class colour at their "
            f"point on surface ({png})",
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("base", help="the service's base URL, e.g. http://127.0.0.1:8000/")
    parser.add_argument("--key", help="an analyst API key: checks the incidents too")
    parser.add_argument("--out", type=Path, default=Path(tempfile.mkdtemp(prefix="qgis-")))
    args = parser.parse_args()
    base = args.base.rstrip("/") + "/"
    args.out.mkdir(parents=True, exist_ok=True)

    QgsApplication.setPrefixPath("/usr", True)
    profile = tempfile.mkdtemp(prefix="qgis-profile-")  # its own auth database
    app = QgsApplication([], False, profile)
    app.initQgis()
    report = Report()
    report.add("INFO", "QGIS", f"{Qgis.QGIS_VERSION}, PNGs in {args.out}")
    reqs = Requests(app)
    try:
        collections = http_json(base + "collections", args.key)["collections"]
        legends = legend_of(http_json(base + "styles/default.json"))
        units = next(c for c in collections if c["id"].startswith("units-"))
        extent = QgsRectangle(*units["extent"]["spatial"]["bbox"][0][:4])
        extent.scale(1.05)
        # README's way for every release: a Basic configuration, the key as the password.
        authcfg = basic_authcfg(args.key) if args.key else None
        layers = check_oapif(report, reqs, base, args.key, collections, args.out)
        check_positions(report, base, legends, layers, extent, args.out)
        check_styles(report, base, args.key, legends, layers, extent, args.out)
        visible = [c for c in collections if c["id"] != "incidents" or args.key]
        check_tiles(report, reqs, base, authcfg, visible, legends, extent, args.out)
        check_project(report, reqs, base, args.key, authcfg, legends, extent, args.out)
        if args.key:
            check_incidents(report, reqs, base, args.key, authcfg)
            check_challenge(report, base, args.key)
    except Exception as exc:  # a crash of the checks is a failure, with its cause
        report.add("FAIL", "verify_qgis", f"{type(exc).__name__}: {exc}")
        traceback.print_exc()
    print()
    print(report.table(), flush=True)
    failed = any(status == "FAIL" for status, _, _ in report.rows)
    QgsProject.instance().clear()
    app.exitQgis()
    # Python's own teardown after exitQgis() can crash PyQGIS 3.22 (SIGSEGV): leave now.
    sys.stdout.flush()
    os._exit(1 if failed else 0)


if __name__ == "__main__":
    sys.exit(main())
