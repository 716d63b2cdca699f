"""Write the map's glyphs: DejaVu Sans as MapLibre glyph PBFs (signed distance fields).

MapLibre draws text from glyph ranges of 256 code points each (``{fontstack}/{range}.pbf``).
The service serves the ones shipped in app/data/fonts/ (app/routers/fonts.py), so that the
map labels places without any font server. This script made them, from the DejaVu Sans
that Debian ships (``fonts-dejavu-core``); rerun it only to change the ranges or the font.

    pip install fonttools   # anywhere; the service does not need it
    python scripts/make_glyphs.py [--font /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf]

It renders as node-fontnik does (the tool of Mapbox's and MapLibre's own glyph sets): the
unhinted outline at 24 px per em, a 3 px buffer, and each pixel's distance to the outline
(up to 8 px) as ``255 - clamp(d * 32 + 64)``, negative inside, so the edge is at 191,
where MapLibre's shader puts it. The protobuf is glyphs.proto of mapbox/glyph-pbf-composite,
written by hand (seven fields).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from fontTools.pens.basePen import BasePen
from fontTools.ttLib import TTFont

FONT = Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf")
OUT = Path(__file__).parents[1] / "app" / "data" / "fonts" / "dejavu-sans"
FONTSTACK = "DejaVu Sans"
# Basic Latin and Latin-1, Latin Extended-A/B, General Punctuation (dashes, quotes).
RANGES = (0, 256, 8192)
SIZE = 24  # px per em
BUFFER = 3
RADIUS = 8.0
CUTOFF = 0.25
CURVE_STEPS = 8  # line segments per quadratic or cubic curve


class _Segments(BasePen):
    """Flattens a glyph's outline into closed rings of points (font units)."""

    def __init__(self, glyphs):
        super().__init__(glyphs)
        self.rings: list[list[tuple[float, float]]] = []

    def _moveTo(self, pt):
        self.rings.append([pt])

    def _lineTo(self, pt):
        self.rings[-1].append(pt)

    def _qCurveToOne(self, pt1, pt2):
        p0 = np.array(self._getCurrentPoint())
        t = np.linspace(0, 1, CURVE_STEPS + 1)[1:, None]
        points = (1 - t) ** 2 * p0 + 2 * (1 - t) * t * np.array(pt1) + t**2 * np.array(pt2)
        self.rings[-1].extend(map(tuple, points))

    def _curveToOne(self, pt1, pt2, pt3):
        p0 = np.array(self._getCurrentPoint())
        t = np.linspace(0, 1, CURVE_STEPS + 1)[1:, None]
        points = (
            (1 - t) ** 3 * p0
            + 3 * (1 - t) ** 2 * t * np.array(pt1)
            + 3 * (1 - t) * t**2 * np.array(pt2)
            + t**3 * np.array(pt3)
        )
        self.rings[-1].extend(map(tuple, points))

    def _closePath(self):
        ring = self.rings[-1]
        if ring[0] != ring[-1]:
            ring.append(ring[0])

    _endPath = _closePath


def _sdf(rings: list[np.ndarray], width: int, height: int) -> bytes:
    """The buffered bitmap, top row first: distance of each pixel centre to the outline."""
    w, h = width + 2 * BUFFER, height + 2 * BUFFER
    x, y = np.meshgrid(np.arange(w) + 0.5, np.arange(h) + 0.5)
    px, py = x.ravel()[:, None], y.ravel()[:, None]
    a = np.concatenate([r[:-1] for r in rings])
    b = np.concatenate([r[1:] for r in rings])
    ax, ay, bx, by = a[:, 0], a[:, 1], b[:, 0], b[:, 1]
    dx, dy = bx - ax, by - ay
    length2 = np.where(dx * dx + dy * dy == 0, 1.0, dx * dx + dy * dy)
    t = np.clip(((px - ax) * dx + (py - ay) * dy) / length2, 0, 1)
    distance = np.hypot(px - (ax + t * dx), py - (ay + t * dy)).min(axis=1)
    # Even-odd crossing test over every ring (as fontnik's PolyContainsPoint).
    crosses = ((ay > py) != (by > py)) & (
        px < (bx - ax) * (py - ay) / np.where(by == ay, 1, by - ay) + ax
    )
    inside = crosses.sum(axis=1) % 2 == 1
    d = np.minimum(distance, RADIUS) * (256 / RADIUS)
    d = np.where(inside, -d, d) + CUTOFF * 256
    value = (255 - np.clip(d, 0, 255).astype(int)).astype(np.uint8).reshape(h, w)
    return value[::-1].tobytes()  # y grows upwards in the outline, rows go downwards


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _field(number: int, value: int | bytes, signed: bool = False) -> bytes:
    if isinstance(value, bytes):
        return _varint(number << 3 | 2) + _varint(len(value)) + value
    if signed:
        value = (value << 1) ^ (value >> 63)  # zigzag (sint32)
    return _varint(number << 3) + _varint(value)


def glyph_message(font: TTFont, code: int) -> bytes | None:
    """One ``glyph`` message, or None when the font has no glyph for ``code``."""
    name = font.getBestCmap().get(code)
    if name is None:
        return None
    glyphs = font.getGlyphSet()
    scale = SIZE / font["head"].unitsPerEm
    pen = _Segments(glyphs)
    glyphs[name].draw(pen)
    advance = round(glyphs[name].width * scale)
    rings = [np.array(r, dtype=float) * scale for r in pen.rings if len(r) > 2]
    message = _field(1, code)
    if not rings:
        return (
            message
            + _field(3, 0)
            + _field(4, 0)
            + _field(5, 0, True)
            + _field(6, 0, True)
            + _field(7, advance)
        )
    points = np.concatenate(rings)
    xmin, ymin = np.round(points.min(axis=0)).astype(int)
    xmax, ymax = np.round(points.max(axis=0)).astype(int)
    width, height = int(xmax - xmin), int(ymax - ymin)
    shifted = [r - [xmin - BUFFER, ymin - BUFFER] for r in rings]
    return (
        message
        + _field(2, _sdf(shifted, width, height))
        + _field(3, width)
        + _field(4, height)
        + _field(5, int(xmin), True)
        + _field(6, int(ymax), True)
        + _field(7, advance)
    )


def range_pbf(font: TTFont, start: int) -> bytes:
    """The ``glyphs`` message of code points ``start`` to ``start + 255``."""
    stack = _field(1, FONTSTACK.encode()) + _field(2, f"{start}-{start + 255}".encode())
    for code in range(start, start + 256):
        glyph = glyph_message(font, code)
        if glyph is not None:
            stack += _field(3, glyph)
    return _field(1, stack)


def main() -> None:
    """Write one PBF per range of ``RANGES``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--font", type=Path, default=FONT)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    font = TTFont(args.font)
    args.out.mkdir(parents=True, exist_ok=True)
    for start in RANGES:
        path = args.out / f"{start}-{start + 255}.pbf"
        path.write_bytes(range_pbf(font, start))
        print(f"{path}: {path.stat().st_size:,} bytes")


if __name__ == "__main__":
    main()
