"""How each kind of layer is drawn, once, for every style format the service writes.

A :class:`Symbology` says which property colours a layer and with which colour and label
per value; the QGIS (``app.styles.qml``), SLD (``app.styles.sld``) and MapLibre
(``app.styles.maplibre``) writers only translate it, so a hot spot is the same red in
QGIS, GeoServer and a web map.

Ramps
-----
- Hot spots (Gi*): ArcGIS Pro's ``Gi_Bin`` renderer of *Hot Spot Analysis*: cold spots at
  99/95/90 % confidence #4575B5, #849EBA, #C0CCBE, not significant #FFFFBF, hot spots at
  90/95/99 % #FAB984, #ED7551, #D62F27, with its labels ("Hot spot - 99% confidence").
- Local Moran: the same hot/cold colours for ArcGIS's *Cluster and Outlier* types (HH, HL,
  LH, LL).
- Emerging hot spots: ColorBrewer Reds/Blues, darker for the more persistent patterns
  (ArcGIS draws these with hatching that other clients cannot reproduce).
- Index classes: ColorBrewer YlOrRd (sequential, colour-blind safe), interpolated for any
  number of classes, class 1 (lowest scores) lightest.
- Near-repeat risk zones: one translucent ColorBrewer Purples fill with a dark purple
  outline, a hue no other layer uses, so a zone reads apart from hot spots and alerts
  (reds) wherever they overlap.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from app.ogc.layers import Layer

ValueType = Literal["long", "string"]


@dataclass(frozen=True)
class Category:
    """One value of the styled property, its colour (#rrggbb) and its legend label."""

    value: int | str
    colour: str
    label: str
    opacity: float = 1.0


@dataclass(frozen=True)
class Symbology:
    """How to draw one layer: a single symbol, or one symbol per value of ``attribute``."""

    geometry: Literal["polygon", "point"]
    attribute: str | None
    categories: tuple[Category, ...]
    # The symbol of a single-symbol layer, and of values outside the categories.
    default: Category
    value_type: ValueType = "long"
    outline: str = "#4d4d4d"
    outline_width_mm: float = 0.26
    # Point diameter in millimetres (QGIS, SLD) and pixels (MapLibre) at count 1.
    size_mm: float = 2.0

    def category(self, value: int | str) -> Category | None:
        """The category of ``value``, or None for a value outside them."""
        return next((c for c in self.categories if c.value == value), None)


# ArcGIS Pro's Gi_Bin colours and labels (Hot Spot Analysis output renderer).
GI_BINS: tuple[Category, ...] = (
    Category(-3, "#4575b5", "Cold spot - 99% confidence"),
    Category(-2, "#849eba", "Cold spot - 95% confidence"),
    Category(-1, "#c0ccbe", "Cold spot - 90% confidence"),
    # Not significant stays faint so the districts underneath show through.
    Category(0, "#ffffbf", "Not significant", opacity=0.4),
    Category(1, "#fab984", "Hot spot - 90% confidence"),
    Category(2, "#ed7551", "Hot spot - 95% confidence"),
    Category(3, "#d62f27", "Hot spot - 99% confidence"),
)

LISA_LABELS: tuple[Category, ...] = (
    Category("HH", "#d62f27", "High-High cluster"),
    Category("HL", "#fab984", "High-Low outlier"),
    Category("LH", "#849eba", "Low-High outlier"),
    Category("LL", "#4575b5", "Low-Low cluster"),
    Category("not significant", "#ffffbf", "Not significant", opacity=0.4),
    Category("island", "#cccccc", "No neighbours (island)", opacity=0.4),
)

_REDS = ("#fee0d2", "#fcbba1", "#fc9272", "#fb6a4a", "#ef3b2c", "#cb181d", "#a50f15", "#67000d")
_BLUES = ("#deebf7", "#c6dbef", "#9ecae1", "#6baed6", "#4292c6", "#2171b5", "#08519c", "#08306b")
# Emerging patterns from the faintest to the strongest signal of a hot (cold) spot today.
_EMERGING_ORDER = (
    "historical",
    "sporadic",
    "oscillating",
    "diminishing",
    "new",
    "consecutive",
    "persistent",
    "intensifying",
)
EMERGING_CATEGORIES: tuple[Category, ...] = (
    *(
        Category(f"{name} hot spot", colour, f"{name.capitalize()} hot spot")
        for name, colour in zip(_EMERGING_ORDER, _REDS, strict=True)
    ),
    *(
        Category(f"{name} cold spot", colour, f"{name.capitalize()} cold spot")
        for name, colour in zip(_EMERGING_ORDER, _BLUES, strict=True)
    ),
    Category("no pattern detected", "#f0f0f0", "No pattern detected", opacity=0.4),
)

# ColorBrewer YlOrRd, 9 classes.
_YLORRD = (
    "#ffffcc",
    "#ffeda0",
    "#fed976",
    "#feb24c",
    "#fd8d3c",
    "#fc4e2a",
    "#e31a1c",
    "#bd0026",
    "#800026",
)

NO_DATA = Category("", "#d9d9d9", "No value", opacity=0.5)
INCIDENT = Category("", "#252525", "Incident")


def _rgb(colour: str) -> tuple[int, int, int]:
    return int(colour[1:3], 16), int(colour[3:5], 16), int(colour[5:7], 16)


def sequential(k: int) -> list[str]:
    """``k`` colours along YlOrRd, lightest first (interpolated in RGB between its anchors)."""
    if k == 1:
        return [_YLORRD[4]]
    out = []
    for i in range(k):
        position = i * (len(_YLORRD) - 1) / (k - 1)
        low = int(position)
        high = min(low + 1, len(_YLORRD) - 1)
        t = position - low
        a, b = _rgb(_YLORRD[low]), _rgb(_YLORRD[high])
        mixed = (round(x + (y - x) * t) for x, y in zip(a, b, strict=True))
        out.append("#" + "".join(f"{v:02x}" for v in mixed))
    return out


def class_field(layer: Layer) -> str | None:
    """The map class property of the layer's first composite index, if any."""
    return next((f.name for f in layer.fields if f.name.endswith("_class")), None)


def hotspot_method(layer: Layer) -> str:
    """The statistic of a hot spot run layer (its second keyword, see ``app.ogc.layers``)."""
    methods = ("gi_star", "optimized_gi_star", "local_moran", "space_time_gi_star")
    return next((k for k in layer.keywords if k in methods), "gi_star")


def _index_title(layer: Layer, field: str) -> str:
    f = layer.field(field)
    description = f.description if f is not None else ""
    return description.split(":")[0] if description else field


# Early-warning alerts by state: open ones in ColorBrewer Reds (new the darkest),
# closed ones grey and faint.
ALERT_STATES = (
    Category("new", "#cb181d", "Alert: new", 0.7),
    Category("acknowledged", "#fb6a4a", "Alert: acknowledged", 0.5),
    Category("closed", "#bdbdbd", "Alert: closed", 0.3),
)


# Near-repeat risk zones (public squares and analysts' discs alike): one symbol.
RISK_ZONE = Category("", "#9e9ac8", "Near-repeat risk zone", 0.45)


def symbology(layer: Layer, classes: int | None = None) -> Symbology:
    """The symbology of a layer.

    Parameters
    ----------
    layer : Layer
        A catalog layer.
    classes : int, optional
        For admin units with a composite index, its number of map classes (the index
        definition's ``classes.k``); None draws the units without classes.
    """
    if layer.style == "incidents":
        return Symbology("point", None, (), INCIDENT, outline="#ffffff", outline_width_mm=0.2)
    if layer.style == "alerts":
        return Symbology("polygon", "state", ALERT_STATES, NO_DATA, "string", "#7f0000", 0.6)
    if layer.style == "risk_zones":
        return Symbology("polygon", None, (), RISK_ZONE, "long", "#54278f", 0.4)
    if layer.style == "hotspots":
        method = hotspot_method(layer)
        if method == "local_moran":
            return Symbology("polygon", "label", LISA_LABELS, NO_DATA, "string", "#ffffff", 0.1)
        if method == "space_time_gi_star":
            return Symbology(
                "polygon", "category", EMERGING_CATEGORIES, NO_DATA, "string", "#ffffff", 0.1
            )
        return Symbology("polygon", "bin", GI_BINS, NO_DATA, "long", "#ffffff", 0.1)
    field = class_field(layer)
    level = next((f for f in layer.id.split("-")[1:] if f.isdigit()), "1")
    # The country is drawn as an outline only; a choropleth needs a smaller unit.
    if level == "0":
        return Symbology(
            "polygon", None, (), Category("", "#ffffff", "Country", 0.0), "long", "#252525", 0.8
        )
    if field is None or not classes:
        return Symbology("polygon", None, (), NO_DATA, "long", "#4d4d4d", 0.4)
    title = _index_title(layer, field)
    cats = []
    for value, colour in enumerate(sequential(classes), start=1):
        note = " (lowest)" if value == 1 else " (highest)" if value == classes else ""
        cats.append(Category(value, colour, f"{title}: class {value}{note}", 0.8))
    return Symbology("polygon", field, tuple(cats), NO_DATA, "long", "#4d4d4d", 0.4)
