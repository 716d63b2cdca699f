"""Read administrative boundaries from GeoJSON, GeoPackage or a zipped Shapefile.

Every reader returns the same frame: ``code``, ``name``, ``parent_code`` and a MultiPolygon
``geometry`` in EPSG:4326, whatever the file's CRS, so that the rest of the service sees one
shape of data.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import pyogrio
import shapely

from boundaries import BoundaryError

__all__ = ["COLUMNS", "SUPPORTED_SUFFIXES", "read_boundaries"]

#: Columns of every frame :func:`read_boundaries` returns, in order.
COLUMNS = ("code", "name", "parent_code", "geometry")

#: File name endings this module reads, and the format each one means.
SUPPORTED_SUFFIXES = {
    ".geojson": "GeoJSON",
    ".json": "GeoJSON",
    ".gpkg": "GeoPackage",
    ".zip": "zipped Shapefile",
}


def read_boundaries(
    path: str | Path,
    *,
    code_field: str,
    name_field: str,
    parent_field: str | None = None,
    layer: str | None = None,
) -> gpd.GeoDataFrame:
    """Read one level of administrative units from a boundary file.

    Parameters
    ----------
    path : str or pathlib.Path
        A GeoJSON (``.geojson``, ``.json``), GeoPackage (``.gpkg``) or zipped Shapefile
        (``.zip`` holding the ``.shp``, ``.shx``, ``.dbf`` and ``.prj``).
    code_field : str
        Attribute holding each unit's unique code (e.g. ``iso_3166_2``).
    name_field : str
        Attribute holding each unit's name.
    parent_field : str, optional
        Attribute holding the code of the unit's parent, when the file has one. Empty
        values mean "no parent given".
    layer : str, optional
        Layer to read from a multi-layer source (GeoPackage, zip with several
        Shapefiles). Required when the source has more than one layer.

    Returns
    -------
    geopandas.GeoDataFrame
        Columns ``code`` (str), ``name`` (str), ``parent_code`` (str or None) and
        ``geometry`` (MultiPolygon, 2D), CRS EPSG:4326, in file order with a fresh
        ``RangeIndex``.

    Raises
    ------
    boundaries.BoundaryError
        When the file cannot be read, has no CRS, has several layers and no ``layer``
        was given, lacks a named field (the message lists the available ones), has empty
        or duplicate codes, empty names, or missing or non-polygonal geometries.

    Notes
    -----
    Files are read with pyogrio (GDAL). A file with no CRS (a Shapefile without its
    ``.prj``) is refused rather than guessed: lon/lat-looking numbers are not proof of
    the datum. GeoJSON is lon/lat WGS 84 by definition (RFC 7946). Z values are dropped.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in SUPPORTED_SUFFIXES:
        raise BoundaryError(
            f"{path.name}: unsupported file type {suffix or '(none)'!r}; use one of "
            f"{', '.join(sorted(SUPPORTED_SUFFIXES))} (a Shapefile must be zipped with its "
            ".shx, .dbf and .prj)"
        )
    if not path.is_file():
        raise BoundaryError(f"{path.name}: file not found")
    layer = _choose_layer(path, layer)
    try:
        frame = gpd.read_file(path, engine="pyogrio", layer=layer)
    except (pyogrio.errors.DataSourceError, pyogrio.errors.DataLayerError) as exc:
        raise BoundaryError(f"{path.name}: cannot read the file ({exc})") from exc
    where = f"{path.name}" + (f" (layer {layer!r})" if layer else "")
    if frame.empty:
        raise BoundaryError(f"{where}: the file has no features")
    _check_fields(where, frame, [code_field, name_field, parent_field])
    if frame.crs is None:
        raise BoundaryError(
            f"{where}: the file has no coordinate reference system (a Shapefile needs its "
            ".prj); add one rather than let the service guess"
        )

    codes = _as_text(frame[code_field])
    _check_codes(where, code_field, codes)
    names = _as_text(frame[name_field])
    empty_names = _feature_numbers(names.isna())
    if empty_names:
        raise BoundaryError(f"{where}: empty {name_field!r} in feature(s) {empty_names}")
    parents = (
        _as_text(frame[parent_field])
        if parent_field
        else pd.Series([None] * len(frame), dtype=object)
    )
    geometry = _multipolygons(where, frame.geometry.array)

    out = gpd.GeoDataFrame(
        {
            # object columns: pandas would turn None into NaN in a str column.
            "code": pd.Series(codes.to_numpy(dtype=object), dtype=object),
            "name": pd.Series(names.to_numpy(dtype=object), dtype=object),
            "parent_code": pd.Series(parents.to_numpy(dtype=object), dtype=object),
        },
        geometry=gpd.GeoSeries(geometry, crs=frame.crs),
    )
    out = out.to_crs(4326)
    _check_lonlat(where, out)
    return out


def _choose_layer(path: Path, layer: str | None) -> str | None:
    try:
        layers = pyogrio.list_layers(path)
    except pyogrio.errors.DataSourceError as exc:
        raise BoundaryError(f"{path.name}: cannot read the file ({exc})") from exc
    names = [str(name) for name in layers[:, 0]]
    if layer is not None:
        if layer not in names:
            raise BoundaryError(
                f"{path.name}: no layer {layer!r}; available layers: {', '.join(names) or 'none'}"
            )
        return layer
    if not names:
        raise BoundaryError(f"{path.name}: the file has no layers")
    if len(names) > 1:
        raise BoundaryError(
            f"{path.name}: the file has {len(names)} layers ({', '.join(names)}); "
            "say which one to read"
        )
    return None


def _check_fields(where: str, frame: pd.DataFrame, wanted: Iterable[str | None]) -> None:
    available = [str(c) for c in frame.columns if c != frame.geometry.name]
    missing = [name for name in wanted if name is not None and name not in frame.columns]
    if missing:
        raise BoundaryError(
            f"{where}: no field {', '.join(repr(m) for m in missing)}; available fields: "
            f"{', '.join(available) or 'none'}"
        )


def _as_text(values: pd.Series) -> pd.Series:
    """Codes and names as stripped strings; null or blank becomes None.

    Whole floats lose their ``.0`` (a Shapefile stores integer codes as reals).
    """

    def one(value: Any) -> str | None:
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return None
        if value is pd.NA or value is pd.NaT:
            return None
        if isinstance(value, float | np.floating) and float(value).is_integer():
            value = int(value)
        text = str(value).strip()
        return text or None

    return pd.Series([one(v) for v in values], index=values.index, dtype=object)


def _feature_numbers(mask: pd.Series, limit: int = 10) -> str:
    """1-based feature numbers where ``mask`` holds, for messages (at most ``limit``)."""
    numbers = [str(i + 1) for i in np.flatnonzero(mask.to_numpy(dtype=bool))]
    if len(numbers) > limit:
        return ", ".join(numbers[:limit]) + f" and {len(numbers) - limit} more"
    return ", ".join(numbers)


def _check_codes(where: str, field: str, codes: pd.Series) -> None:
    empty = _feature_numbers(codes.isna())
    if empty:
        raise BoundaryError(f"{where}: empty {field!r} in feature(s) {empty}")
    duplicated = sorted(set(codes[codes.duplicated(keep=False)]))
    if duplicated:
        shown = ", ".join(duplicated[:10]) + (" …" if len(duplicated) > 10 else "")
        raise BoundaryError(f"{where}: duplicate {field!r} value(s): {shown}")


def _multipolygons(where: str, geometries: np.ndarray) -> np.ndarray:
    geoms = np.asarray(geometries, dtype=object)
    missing = pd.Series(shapely.is_missing(geoms) | shapely.is_empty(geoms))
    if missing.any():
        raise BoundaryError(
            f"{where}: missing or empty geometry in feature(s) {_feature_numbers(missing)}"
        )
    types = pd.Series(shapely.get_type_id(geoms))
    polygonal = types.isin([3, 6])  # Polygon, MultiPolygon
    if not polygonal.all():
        found = sorted({g.geom_type for g in geoms[~polygonal.to_numpy()]})
        raise BoundaryError(
            f"{where}: boundaries must be polygons; found {', '.join(found)} in feature(s) "
            f"{_feature_numbers(~polygonal)}"
        )
    geoms = shapely.force_2d(geoms)
    is_polygon = types.to_numpy() == 3
    promoted = geoms.copy()
    promoted[is_polygon] = [shapely.MultiPolygon([g]) for g in geoms[is_polygon]]
    return promoted


def _check_lonlat(where: str, frame: gpd.GeoDataFrame) -> None:
    west, south, east, north = frame.total_bounds
    finite = np.isfinite([west, south, east, north]).all()
    if not finite or west < -180 or east > 180 or south < -90 or north > 90:
        raise BoundaryError(
            f"{where}: coordinates fall outside longitude/latitude range after "
            "reprojection; the file's declared CRS is probably wrong"
        )
