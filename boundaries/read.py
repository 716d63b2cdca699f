"""Read administrative boundaries from GeoJSON, GeoPackage or a zipped Shapefile.

Every reader returns the same frame: ``code``, ``name``, ``parent_code`` and a MultiPolygon
``geometry`` in EPSG:4326, whatever the file's CRS, so that the rest of the service sees one
shape of data.
"""

from __future__ import annotations

import math
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import pyogrio
import shapely

from boundaries import BoundaryError

__all__ = ["COLUMNS", "SUPPORTED_SUFFIXES", "ZipLimits", "check_zip", "read_boundaries"]

#: Columns of every frame :func:`read_boundaries` returns, in order.
COLUMNS = ("code", "name", "parent_code", "geometry")

#: File name endings this module reads, and the format each one means.
SUPPORTED_SUFFIXES = {
    ".geojson": "GeoJSON",
    ".json": "GeoJSON",
    ".gpkg": "GeoPackage",
    ".zip": "zipped Shapefile",
}


@dataclass(frozen=True)
class ZipLimits:
    """What a zipped Shapefile may hold before GDAL is allowed to open it.

    Attributes
    ----------
    max_members : int
        Files in the archive (a Shapefile is 4 to 8 files; a thousand is not a Shapefile).
    max_total_bytes : int
        Sum of the members' uncompressed sizes (declared and, while streaming, actual).
    max_ratio : float
        Uncompressed / compressed size of one member. Shapefiles deflate to a fifth or a
        tenth; a run of zeros to a thousandth, which is what a decompression bomb is.
    ratio_floor_bytes : int
        Members smaller than this are exempt from the ratio check: a tiny ``.prj`` or
        ``.cpg`` can compress very well without being dangerous.
    """

    max_members: int = 100
    max_total_bytes: int = 1 << 30
    max_ratio: float = 100.0
    ratio_floor_bytes: int = 1 << 20


def read_boundaries(
    path: str | Path,
    *,
    code_field: str,
    name_field: str,
    parent_field: str | None = None,
    layer: str | None = None,
    zip_limits: ZipLimits = ZipLimits(),
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
    zip_limits : ZipLimits, optional
        Limits a ``.zip`` must respect before it is opened (see :func:`check_zip`).

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
        or duplicate codes, empty names, missing or non-polygonal geometries, or
        non-finite (NaN, infinite) coordinates; and for a zip, when :func:`check_zip`
        refuses it.

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
    if suffix == ".zip":
        # GDAL reads the archive in place (/vsizip/); nothing is extracted, but a bomb
        # would still be inflated by it, so the archive is vetted first.
        check_zip(path, zip_limits)
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


def check_zip(path: str | Path, limits: ZipLimits = ZipLimits()) -> None:
    """Refuse an archive with unsafe names, too many members or a decompression bomb.

    Parameters
    ----------
    path : str or pathlib.Path
        The ``.zip`` file.
    limits : ZipLimits, optional
        Member count, total uncompressed size and compression ratio allowed.

    Raises
    ------
    boundaries.BoundaryError
        When the file is not a zip, a member name is absolute or climbs out of the archive
        (``../``), a limit is exceeded, or a member's data does not match its header.

    Notes
    -----
    Two passes, both before GDAL sees the file. The first reads only the central
    directory: names, member count, and the declared sizes and ratios. Declared sizes
    can lie, so the second inflates every member in 1 MiB chunks, discarding the output,
    and stops as soon as the bytes actually produced pass a limit; Python's zipfile also
    stops a member at its declared size and checks its CRC, so a member whose header
    understates its data fails there.
    """
    path = Path(path)
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise BoundaryError(f"{path.name}: not a readable zip file ({exc})") from exc
    with archive:
        members = archive.infolist()
        _check_directory(path.name, members, limits)
        total = 0
        for info in members:
            if not info.is_dir():
                total = _inflate(path.name, archive, info, limits, total)


def _check_directory(name: str, members: list[zipfile.ZipInfo], limits: ZipLimits) -> None:
    """The first pass: member names, count, and the declared sizes and ratios."""
    if len(members) > limits.max_members:
        raise BoundaryError(
            f"{name}: the archive holds {len(members)} files; at most "
            f"{limits.max_members} are allowed"
        )
    for info in members:
        _check_member_name(name, info.filename)
    declared = sum(info.file_size for info in members)
    if declared > limits.max_total_bytes:
        raise BoundaryError(
            f"{name}: the archive declares {declared} bytes uncompressed; at most "
            f"{limits.max_total_bytes} are allowed"
        )
    for info in members:
        _check_ratio(name, info.filename, info.file_size, info.compress_size, limits)


def _inflate(
    name: str, archive: zipfile.ZipFile, info: zipfile.ZipInfo, limits: ZipLimits, total: int
) -> int:
    """The second pass for one member: inflate it, discarding the output, and stop once the
    bytes produced pass a limit. Returns ``total`` (the bytes of earlier members) plus this
    member's."""
    produced = 0
    try:
        with archive.open(info) as member:
            while chunk := member.read(1 << 20):
                produced += len(chunk)
                total += len(chunk)
                if total > limits.max_total_bytes:
                    raise BoundaryError(
                        f"{name}: the archive inflates to more than {limits.max_total_bytes} bytes"
                    )
                _check_ratio(name, info.filename, produced, info.compress_size, limits)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError) as exc:
        raise BoundaryError(f"{name}: member {info.filename!r} is damaged ({exc})") from exc
    except NotImplementedError as exc:  # encrypted or an exotic compression method
        raise BoundaryError(f"{name}: member {info.filename!r}: {exc}") from exc
    except RuntimeError as exc:  # zipfile's "encrypted, password required"
        raise BoundaryError(f"{name}: member {info.filename!r}: {exc}") from exc
    return total


def _check_member_name(archive: str, name: str) -> None:
    """Relative names that stay inside the archive, on POSIX and Windows readings alike."""
    posix, windows = PurePosixPath(name), PureWindowsPath(name)
    if (
        posix.is_absolute()
        or windows.is_absolute()
        or windows.drive
        or ".." in posix.parts
        or ".." in windows.parts
        or "\x00" in name
    ):
        raise BoundaryError(
            f"{archive}: unsafe path {name!r} in the archive (absolute or climbing out with "
            "'..'); zip the Shapefile's files without folders"
        )


def _check_ratio(archive: str, name: str, size: int, compressed: int, limits: ZipLimits) -> None:
    if size < limits.ratio_floor_bytes:
        return
    ratio = size / max(compressed, 1)
    if ratio > limits.max_ratio:
        raise BoundaryError(
            f"{archive}: member {name!r} expands {ratio:.0f} times (at most "
            f"{limits.max_ratio:.0f} allowed); the archive looks like a decompression bomb"
        )


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
    # GDAL reads NaN and infinite coordinates without complaint (GeoJSON's NaN token, a
    # GeoPackage's IEEE doubles), and total_bounds skips NaN, so each geometry is checked.
    coords, owners = shapely.get_coordinates(geoms, return_index=True)
    not_finite = np.zeros(len(geoms), dtype=bool)
    not_finite[owners[~np.isfinite(coords).all(axis=1)]] = True
    if not_finite.any():
        raise BoundaryError(
            f"{where}: non-finite coordinates (NaN or infinity) in feature(s) "
            f"{_feature_numbers(pd.Series(not_finite))}"
        )
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
