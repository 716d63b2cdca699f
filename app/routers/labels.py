"""What a map needs to write place names, from this service (nothing from the internet):
the glyphs (``/fonts/{fontstack}/{range}.pbf``) and the points to label
(``/labels.geojson``). Both public.

The glyphs are DejaVu Sans as signed distance fields, in MapLibre's PBF format, shipped in
``app/data/fonts`` (made by ``scripts/make_glyphs.py``; the font's licence is beside them).
Ranges that are not shipped answer an empty range, which MapLibre reads as "no glyphs
here", rather than a 404 that it would report as an error for every label.
"""

from __future__ import annotations

import hashlib
import re
from functools import cache
from typing import Annotated

import orjson
from fastapi import APIRouter, Request, Response
from fastapi import Path as PathParam

from app.core.errors import NotFound
from app.core.settings import DATA_DIR
from app.deps import ReaderDep, SettingsDep
from app.services.labels import label_points

router = APIRouter(tags=["maps"])

FONTS = DATA_DIR / "fonts"
PBF = "application/x-protobuf"
GEOJSON = "application/geo+json"
# Font name (as a style's text-font names it) -> directory of its ranges.
FONT_DIRS = {"DejaVu Sans": "dejavu-sans"}
# Glyphs never change for a release: a day in caches, then revalidated by ETag.
GLYPH_CACHE = "public, max-age=86400"
_RANGE = re.compile(r"(\d+)-(\d+)")


def _varint(n: int) -> bytes:
    out = bytearray()
    while n > 0x7F:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _empty_range(font: str, glyph_range: str) -> bytes:
    """A ``glyphs`` message with one fontstack and no glyph (glyphs.proto)."""
    stack = b""
    for number, value in ((1, font.encode()), (2, glyph_range.encode())):
        stack += _varint(number << 3 | 2) + _varint(len(value)) + value
    return _varint(1 << 3 | 2) + _varint(len(stack)) + stack


@cache
def _glyphs(font: str, start: int) -> bytes:
    path = FONTS / FONT_DIRS[font] / f"{start}-{start + 255}.pbf"
    return path.read_bytes() if path.exists() else _empty_range(font, f"{start}-{start + 255}")


def _font(fontstack: str) -> str:
    """The first font of a comma-separated stack that is served."""
    for name in (part.strip() for part in fontstack.split(",")):
        if name in FONT_DIRS:
            return name
    raise NotFound(f"no font of '{fontstack}' is served here; use one of: {', '.join(FONT_DIRS)}")


def _cached(request: Request, body: bytes, media_type: str, cache_control: str) -> Response:
    etag = '"' + hashlib.blake2b(body, digest_size=12).hexdigest() + '"'
    headers = {"ETag": etag, "Cache-Control": cache_control}
    if etag in request.headers.get("if-none-match", ""):
        return Response(status_code=304, headers=headers)
    return Response(body, media_type=media_type, headers=headers)


@router.get(
    "/fonts/{fontstack}/{glyph_range}.pbf",
    summary="Glyphs of a font for map labels (MapLibre glyph PBF)",
    response_class=Response,
    responses={200: {"content": {PBF: {}}}, 304: {"description": "Not modified (ETag)"}},
)
async def glyphs(
    request: Request,
    fontstack: Annotated[str, PathParam(description="Font names, comma-separated")],
    glyph_range: Annotated[
        str, PathParam(pattern=r"^\d+-\d+$", description="256 code points, e.g. 0-255")
    ],
) -> Response:
    """The style's ``glyphs`` URL: ``/fonts/{fontstack}/{range}.pbf``. Served font:
    ``DejaVu Sans`` (Latin, Latin-1, Latin Extended and general punctuation; other
    ranges answer no glyphs)."""
    font = _font(fontstack)
    match = _RANGE.fullmatch(glyph_range)
    start, end = (int(match[1]), int(match[2])) if match else (-1, -1)
    if start % 256 or end != start + 255 or end > 65535:
        raise NotFound(f"'{glyph_range}' is no glyph range: 256 code points, e.g. 0-255")
    return _cached(request, _glyphs(font, start), PBF, GLYPH_CACHE)


@router.get(
    "/labels.geojson",
    summary="Points to label on a map: districts and towns",
    response_class=Response,
    responses={200: {"content": {GEOJSON: {}}}, 304: {"description": "Not modified (ETag)"}},
)
async def labels(request: Request, reader: ReaderDep, settings: SettingsDep) -> Response:
    """A point inside each district (``kind`` "unit": ``code``, ``name``) and the
    territory's towns and villages (``kind`` "settlement": ``name``, ``population``,
    ``rank``, 1 the largest; ``territory.settlements_file``, for Belize GeoNames' places
    of 500 people or more, CC BY 4.0). The default style and the QGIS project label
    them."""
    body = orjson.dumps(await label_points(reader, settings))
    max_age = settings.tiles.max_age_s
    return _cached(request, body, GEOJSON, f"public, max-age={max_age}")


__all__ = ["FONTS", "router"]
