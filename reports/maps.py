"""The report's maps, from the document's own layers (never web tiles), as SVG text.

Every map is drawn in a metric CRS (the UTM zone of the layers' centre, EPSG:32616 for
Belize) so that the scale bar measures kilometres, and carries a north arrow, a scale
bar, a legend and the document's source line. The districts choropleth classes its values
with Fisher-Jenks natural breaks (jenkspy) and its legend lists the breaks.
"""

from __future__ import annotations

import math

import geopandas as gpd
import jenkspy
import numpy as np
import pandas as pd
from matplotlib import colormaps, patheffects
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Patch, PathPatch, Polygon, Rectangle
from matplotlib.path import Path as MplPath
from pyproj import CRS

from reports.charts import INK, WIDTH_IN, source, style, to_svg
from reports.i18n import Lang

#: Gi* bins, hot to cold: the usual red/blue diverging scheme (ColorBrewer RdBu).
GI_COLOURS = {
    3: "#b2182b",
    2: "#ef8a62",
    1: "#fddbc7",
    0: "#eeeeee",
    -1: "#d1e5f0",
    -2: "#67a9cf",
    -3: "#2166ac",
}
NO_VALUE = "#d9d9d9"
ALERT = "#c0392b"
LAND = "#f4f1ea"
HEIGHT_IN = 6.4
MAX_CLASSES = 5


def metric_crs(*layers: gpd.GeoDataFrame) -> CRS:
    """The WGS 84 / UTM zone (north or south) at the centre of the layers' bounds."""
    bounds = np.array([layer.to_crs(4326).total_bounds for layer in layers if len(layer)])
    if not len(bounds):
        return CRS.from_epsg(32616)
    lon = (bounds[:, 0].min() + bounds[:, 2].max()) / 2
    lat = (bounds[:, 1].min() + bounds[:, 3].max()) / 2
    zone = min(60, int((lon + 180) // 6) + 1)
    return CRS.from_epsg((32600 if lat >= 0 else 32700) + zone)


# -- furniture ----------------------------------------------------------------------------


def _canvas(basemap: dict[str, gpd.GeoDataFrame], layers: list[gpd.GeoDataFrame]):
    """A figure with the map axes on the left 62 % and the basemap's extent, in UTM."""
    crs = metric_crs(*(basemap.values()), *layers)
    fig = Figure(figsize=(WIDTH_IN, HEIGHT_IN))
    ax = fig.add_axes((0.01, 0.05, 0.6, 0.94))
    ax.set_axis_off()
    ax.set_aspect("equal")
    projected = {k: v.to_crs(crs) for k, v in basemap.items() if v is not None and len(v)}
    extent_from = [*projected.values(), *(layer.to_crs(crs) for layer in layers if len(layer))]
    x0, y0, x1, y1 = _bounds(extent_from)
    pad = 0.06 * max(x1 - x0, y1 - y0)
    ax.set_xlim(x0 - pad, x1 + pad)
    ax.set_ylim(y0 - pad, y1 + pad)
    return fig, ax, crs, projected


def _bounds(frames: list[gpd.GeoDataFrame]) -> tuple[float, float, float, float]:
    b = np.array([f.total_bounds for f in frames])
    return b[:, 0].min(), b[:, 1].min(), b[:, 2].max(), b[:, 3].max()


def _land(ax: Axes, projected: dict[str, gpd.GeoDataFrame], fill: str = LAND) -> None:
    if "country" in projected:
        projected["country"].plot(ax=ax, color=fill, edgecolor="none", zorder=1)


def _boundaries(ax: Axes, projected: dict[str, gpd.GeoDataFrame]) -> None:
    if "districts" in projected:
        projected["districts"].boundary.plot(ax=ax, color="#8a8a8a", lw=0.6, zorder=4)
    if "country" in projected:
        projected["country"].boundary.plot(ax=ax, color="#555555", lw=0.8, zorder=5)


def north_arrow(ax: Axes, lang: Lang) -> None:
    """A filled arrow pointing up (the map is in UTM: grid north within a degree of true)."""
    x, y, h, w = 0.92, 0.86, 0.08, 0.035
    left = Polygon([(x, y + h), (x - w, y), (x, y + h * 0.3)], closed=True, transform=ax.transAxes)
    right = Polygon([(x, y + h), (x + w, y), (x, y + h * 0.3)], closed=True, transform=ax.transAxes)
    left.set(facecolor=INK, edgecolor=INK, lw=0.6, zorder=10)
    right.set(facecolor="white", edgecolor=INK, lw=0.6, zorder=10)
    ax.add_patch(left)
    ax.add_patch(right)
    ax.text(
        x,
        y + h + 0.012,
        lang("map.north")[:1],  # N for North and for Norte
        transform=ax.transAxes,
        ha="center",
        va="bottom",
        fontsize=10,
        fontweight="bold",
        zorder=10,
    )


def _nice_length(span_m: float) -> float:
    """A round scale-bar length (1, 2, 2.5 or 5 x 10^n km) near a third of the span."""
    target = span_m / 3 / 1000
    exponent = 10 ** math.floor(math.log10(target))
    for step in (5, 2.5, 2, 1):
        if step * exponent <= target:
            return step * exponent * 1000
    return exponent * 1000


def scale_bar(ax: Axes, lang: Lang) -> None:
    """A two-segment black and white bar in the lower right corner, labelled in km.

    Lower right because a country's outline rarely fills its bounding box's corners there
    for Belize (the Gulf of Honduras); the bar sits on a white halo anyway.
    """
    x0, x1 = ax.get_xlim()
    y0, y1 = ax.get_ylim()
    length = _nice_length(x1 - x0)
    left, bottom = x1 - 0.06 * (x1 - x0) - length, y0 + 0.04 * (y1 - y0)
    height = 0.012 * (y1 - y0)
    for i, colour in enumerate((INK, "white")):
        ax.add_patch(
            Rectangle(
                (left + i * length / 2, bottom),
                length / 2,
                height,
                facecolor=colour,
                edgecolor=INK,
                lw=0.6,
                zorder=10,
            )
        )
    for fraction in (0, 0.5, 1):
        km = lang.decimal(
            length * fraction / 1000, 0 if (length * fraction / 1000).is_integer() else 1
        )
        text = f"{km} {lang('map.km')}" if fraction == 1 else km
        ax.text(
            left + fraction * length,
            bottom + height * 1.6,
            text,
            ha="center",
            va="bottom",
            fontsize=7,
            zorder=10,
        )


def _legend(fig: Figure, handles: list, title: str) -> None:
    fig.legend(
        handles=handles,
        title=title,
        loc="center left",
        bbox_to_anchor=(0.63, 0.55),
        fontsize=7.5,
        title_fontsize=8,
        alignment="left",
        handlelength=1.6,
        handleheight=1.1,
        labelspacing=0.55,
        frameon=False,
    )


def _label_units(ax: Axes, frame: gpd.GeoDataFrame, column: str) -> None:
    halo = [patheffects.withStroke(linewidth=2.4, foreground="white")]
    for point, name in zip(frame.geometry.representative_point(), frame[column], strict=True):
        ax.text(
            point.x,
            point.y,
            str(name),
            ha="center",
            va="center",
            fontsize=7,
            color=INK,
            path_effects=halo,
            zorder=11,
        )


def _finish(fig: Figure, ax: Axes, lang: Lang, source_line: str, title: str) -> str:
    north_arrow(ax, lang)
    scale_bar(ax, lang)
    source(fig, lang, source_line)
    return to_svg(fig, title)


# -- the three maps -------------------------------------------------------------------------


def class_breaks(values: np.ndarray) -> np.ndarray:
    """Upper bounds of up to five Fisher-Jenks classes of the non-missing ``values``."""
    valid = values[~np.isnan(values)]
    distinct = np.unique(valid)
    if len(distinct) <= 1:
        return distinct
    k = min(MAX_CLASSES, len(distinct))
    if k == len(distinct):
        return distinct
    # jenkspy, not mapclassify.FisherJenks (same breaks, a unit test compares them):
    # importing mapclassify compiles its numba kernels eagerly (~5 s and ~70-250 MiB of
    # LLVM in a fresh process), which was a third of the report's peak memory.
    return np.asarray(jenkspy.jenks_breaks(valid, n_classes=k)[1:], dtype=float)


def choropleth(
    units: gpd.GeoDataFrame, basemap: dict[str, gpd.GeoDataFrame], lang: Lang, source_line: str = ""
) -> str:
    """Districts shaded by ``value`` in natural-break classes; missing values hatched grey."""
    measure = units.attrs.get("value", "rate_per_100k")
    with style():
        fig, ax, crs, projected = _canvas(basemap, [units])
        _land(ax, projected)
        frame = units.to_crs(crs)
        values = frame["value"].to_numpy(dtype=float)
        breaks = class_breaks(values)
        colours = colormaps["YlOrRd"](np.linspace(0.15, 0.85, max(1, len(breaks))))
        classes = np.searchsorted(breaks, values, side="left")
        handles = []
        for i, upper in enumerate(breaks):
            members = frame[(classes == i) & ~np.isnan(values)]
            members.plot(ax=ax, color=colours[i], edgecolor="white", lw=0.5, zorder=2)
            # Label a class by its members' own range: a class of one value shows one value.
            if len(members):
                lower, upper = float(members["value"].min()), float(members["value"].max())
            else:
                lower = upper
            label = (
                lang.decimal(upper)
                if lower == upper
                else f"{lang.decimal(lower)} \u2013 {lang.decimal(upper)}"
            )
            handles.append(Patch(facecolor=colours[i], edgecolor="#999999", lw=0.4, label=label))
        missing = frame[np.isnan(values)]
        if len(missing):
            missing.plot(ax=ax, color=NO_VALUE, hatch="////", edgecolor="white", lw=0.5, zorder=2)
            handles.append(
                Patch(
                    facecolor=NO_VALUE, hatch="////", edgecolor="white", label=lang("map.no_value")
                )
            )
        _boundaries(ax, projected)
        _label_units(ax, frame, "unit_name")
        _legend(fig, handles, lang.column(measure))
        return _finish(fig, ax, lang, source_line, lang("map.districts"))


def hotspots(
    cells: gpd.GeoDataFrame, basemap: dict[str, gpd.GeoDataFrame], lang: Lang, source_line: str = ""
) -> str:
    """Cells coloured by their Gi* confidence bin (-3 … 3), hot red and cold blue."""
    with style():
        fig, ax, crs, projected = _canvas(basemap, [cells])
        _land(ax, projected)
        frame = cells.to_crs(crs)
        bins = pd.to_numeric(frame["gi_bin"], errors="coerce")
        colours = bins.map(GI_COLOURS).fillna(NO_VALUE)  # a cell without a bin: grey
        # One path per colour and one for all the cells' edges, not one per cell: the
        # same drawing, but a few SVG elements instead of hundreds (WeasyPrint lays out
        # each element of an inline SVG apart, and a run has ~700 cells: ~10 MiB).
        for colour, members in frame.groupby(colours.to_numpy(), sort=False):
            ax.add_patch(PathPatch(_one_path(members.geometry), facecolor=colour, lw=0, zorder=2))
        edges = _one_path(frame.geometry)
        ax.add_patch(PathPatch(edges, facecolor="none", edgecolor="white", lw=0.25, zorder=2))
        # Cells of a few km vanish at country scale: small significant ones also get an
        # outline in their own colour, so a lone hot spot still shows.
        x0, x1 = ax.get_xlim()
        bounds = frame.geometry.bounds
        size = np.maximum(bounds["maxx"] - bounds["minx"], bounds["maxy"] - bounds["miny"])
        small = (bins.fillna(0).ne(0) & (size < 0.015 * (x1 - x0))).to_numpy()
        if small.any():
            frame[small].plot(
                ax=ax, facecolor="none", edgecolor=colours[small].tolist(), lw=1.1, zorder=3
            )
        _boundaries(ax, projected)
        handles = [
            Patch(facecolor=GI_COLOURS[b], edgecolor="#999999", lw=0.4, label=lang(f"gi.{b}"))
            for b in (3, 2, 1, 0, -1, -2, -3)
        ]
        _legend(fig, handles, "Gi*")
        return _finish(fig, ax, lang, source_line, lang("map.hotspots"))


def _one_path(geometries: gpd.GeoSeries) -> MplPath:
    """The polygons' rings (exteriors and holes) as one compound path."""
    rings = [
        np.asarray(ring.coords)
        for polygon in geometries.explode(index_parts=False)
        if polygon is not None and not polygon.is_empty
        for ring in (polygon.exterior, *polygon.interiors)
    ]
    if not rings:
        return MplPath(np.empty((0, 2)))
    codes = []
    for ring in rings:
        code = np.full(len(ring), MplPath.LINETO, dtype=MplPath.code_type)
        code[0], code[-1] = MplPath.MOVETO, MplPath.CLOSEPOLY
        codes.append(code)
    return MplPath(np.concatenate(rings), np.concatenate(codes))


def _ring_small(ax: Axes, frame: gpd.GeoDataFrame) -> None:
    """A ring around each area too small to see at the map's scale (under 2 % of its span)."""
    x0, x1 = ax.get_xlim()
    span = x1 - x0
    for geom in frame.geometry:
        minx, miny, maxx, maxy = geom.bounds
        if max(maxx - minx, maxy - miny) < 0.02 * span:
            point = geom.representative_point()
            ax.plot(point.x, point.y, marker="o", ms=11, mfc="none", mec=ALERT, mew=1.3, zorder=7)


def _alert_labels(frame: gpd.GeoDataFrame, lang: Lang) -> list[str]:
    """The place when the layer names it, else "Alert 17" (the id in the alerts table)."""
    if "place" in frame.columns:
        return [str(p) for p in frame["place"]]
    if "alert_id" in frame.columns:
        return [f"{lang('col.alert_id')} {i}" for i in frame["alert_id"]]
    return [""] * len(frame)


def _label_places(
    ax: Axes, frame: gpd.GeoDataFrame, lang: Lang
) -> dict[tuple[float, float, bool], list[str]]:
    """Where each alert's label goes, alerts that would share a place under one label:
    the upper right of a small area (its ring), a point inside a large one; two places
    whose labels would overlap (within a label's width across and its height up or
    down: alerts on the same district, or cells a few kilometres apart) are one."""
    x0, x1 = ax.get_xlim()
    y0, y1 = ax.get_ylim()
    across, up, small_span = 0.2 * (x1 - x0), 0.035 * (y1 - y0), 0.02 * (x1 - x0)
    places: dict[tuple[float, float, bool], list[str]] = {}
    for geom, name in zip(frame.geometry, _alert_labels(frame, lang), strict=True):
        minx, miny, maxx, maxy = geom.bounds
        small = max(maxx - minx, maxy - miny) < small_span
        if small:
            x, y = maxx, maxy
        else:
            point = geom.representative_point()
            x, y = point.x, point.y
        for px, py, psmall in places:
            if psmall == small and abs(px - x) < across and abs(py - y) < up:
                places[(px, py, psmall)].append(name)
                break
        else:
            places[(x, y, small)] = [name]
    return places


def _joined(names: list[str], lang: Lang) -> str:
    """One label for the alerts at one place: "Alert 3, 11" (their ids) or the places."""
    prefix = f"{lang('col.alert_id')} "
    if all(n.startswith(prefix) and n[len(prefix) :].isdigit() for n in names):
        return prefix + ", ".join(str(i) for i in sorted(int(n[len(prefix) :]) for n in names))
    return ", ".join(dict.fromkeys(names))


def alerts(
    areas: gpd.GeoDataFrame, basemap: dict[str, gpd.GeoDataFrame], lang: Lang, source_line: str = ""
) -> str:
    """The outlines of the areas under an open alert, over the districts."""
    with style():
        fig, ax, crs, projected = _canvas(basemap, [areas])
        _land(ax, projected)
        _boundaries(ax, projected)
        frame = areas.to_crs(crs)
        frame.plot(ax=ax, facecolor=(0.75, 0.22, 0.17, 0.12), edgecolor=ALERT, lw=1.4, zorder=6)
        _ring_small(ax, frame)
        halo = [patheffects.withStroke(linewidth=2.4, foreground="white")]
        for (x, y, small), names in _label_places(ax, frame, lang).items():
            # a small area's label sits up and right of its ring, a large one's inside it
            ax.annotate(
                _joined(names, lang), (x, y), xytext=(5, 4) if small else (0, 0),
                textcoords="offset points", ha="left" if small else "center",
                va="bottom" if small else "center", fontsize=7, color=ALERT,
                path_effects=halo, zorder=11,
            )  # fmt: skip
        handles = [
            Patch(
                facecolor=(0.75, 0.22, 0.17, 0.12),
                edgecolor=ALERT,
                lw=1.4,
                label=lang("map.alert_area"),
            ),
            Patch(facecolor=LAND, edgecolor="#8a8a8a", lw=0.6, label=lang("map.district_boundary")),
        ]
        _legend(fig, handles, "")
        return _finish(fig, ax, lang, source_line, lang("map.alerts"))
