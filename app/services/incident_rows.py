"""Read incident files and validate their rows, vectorised over the whole frame.

The same rules serve the bulk import and the single-incident endpoints, so a row accepted
by one is accepted by the other. Every rejected row keeps its original values and all
its reasons, joined by "; ", so an analyst can fix the file in one pass.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import orjson
import pandas as pd
import shapely
from pyproj import CRS, Transformer

from app.core.errors import InvalidFile, InvalidParameter
from app.models import INCIDENT_FIELDS
from app.sql.imports import STAGING_COLUMNS

# The columns an incident file may provide, by our names (map others onto them).
TEXT_COLUMNS = ("location_precision", "weapon", "perpetrator_relation")
CANONICAL = (
    "source",
    "source_id",
    "longitude",
    "latitude",
    "wkt",
    *(f for f in INCIDENT_FIELDS if f != "attributes"),
)
FORMATS = {".csv": "csv", ".txt": "csv", ".geojson": "geojson", ".json": "geojson", ".gpkg": "gpkg"}
SEX_ALIASES = {
    "f": "female",
    "female": "female",
    "woman": "female",
    "w": "female",
    "mujer": "female",
    "femenino": "female",
    "m": "male",
    "male": "male",
    "man": "male",
    "hombre": "male",
    "masculino": "male",
    "u": "unknown",
    "unknown": "unknown",
    "": "unknown",
    "na": "unknown",
    "n/a": "unknown",
}
# A validated frame has the staging table's columns, in its order.
VALID_COLUMNS = STAGING_COLUMNS


@dataclass(frozen=True)
class ReadOptions:
    """How to read an incident file.

    ``columns`` maps a canonical name (``category``, ``occurred_at``, ``longitude``,
    ``wkt``…) to the file's own column name. ``crs`` is the CRS of the coordinates
    (default: the file's own CRS, else EPSG:4326). ``constants`` gives a canonical
    column one value for every row where the file has none (no such column, or an
    empty cell): ``{"category": "shooting"}`` for a file of shootings. ``source``
    is the constant of the ``source`` column (the agency), kept as its own option.
    """

    source: str | None = None
    format: str | None = None
    columns: dict[str, str] = field(default_factory=dict)
    crs: str | None = None
    layer: str | None = None
    delimiter: str = ","
    encoding: str = "utf-8"
    constants: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_constants(self.constants)
        given = self.constants.get("source")
        if self.source and given is not None and given != self.source:
            raise InvalidParameter(
                f"source {self.source!r} and the constant source {given!r} differ: give one"
            )

    @property
    def filled(self) -> dict[str, str]:
        """Every column's constant, the source option included."""
        return {**self.constants, **({"source": self.source} if self.source else {})}

    def as_dict(self) -> dict:
        """The options that were set, as the batch records them."""
        return {k: v for k, v in self.__dict__.items() if v not in (None, {}, "")}


def check_constants(constants: dict[str, str]) -> None:
    """Refuse constants that name no canonical column (nearest name suggested: a typo
    would otherwise pass silently), that are not text, or that set ``source_id`` (each
    row's own key)."""
    for name, value in constants.items():
        if name == "source_id":
            raise InvalidParameter("source_id is each row's own key: it cannot be a constant")
        if name not in CANONICAL:
            near = difflib.get_close_matches(str(name), CANONICAL, n=1)
            hint = f"; did you mean {near[0]!r}?" if near else ""
            raise InvalidParameter(
                f"constant for unknown column {name!r}{hint} Constants set our columns: "
                f"{', '.join(c for c in CANONICAL if c != 'source_id')}"
            )
        if not isinstance(value, str) or not value.strip():
            raise InvalidParameter(f"the constant for {name} must be non-empty text")


def with_constants(frame: pd.DataFrame, constants: dict[str, str]) -> pd.DataFrame:
    """The frame with each constant filling its column where the file gives no value
    (the column is absent, or the cell empty); values in the file win."""
    if not constants:
        return frame
    out = frame.copy()  # keeps attrs (crs, non-point rows)
    for name, value in constants.items():
        if name in out:
            column = out[name].astype(str)
            out[name] = column.where(column.str.strip() != "", value)
        else:
            out[name] = value
    return out


@dataclass(frozen=True)
class Territory:
    """Where incidents may lie: the loaded outline (buffered by the tolerance) in EPSG:4326."""

    name: str
    geometry: shapely.Geometry
    tolerance_m: float


@dataclass(frozen=True)
class Vocabulary:
    """Category codes, and names that map to them (matched case-insensitively)."""

    codes: frozenset[str]
    aliases: dict[str, str]


@dataclass(frozen=True)
class Validated:
    """One chunk of an incident file, checked: the valid rows typed, the rejected rows with
    their reasons, and how many rows were read."""

    valid: pd.DataFrame  # VALID_COLUMNS, typed
    rejected: pd.DataFrame  # row_number, source_id, reason, raw (dict)
    received: int


def detect_format(filename: str, declared: str | None = None) -> str:
    """The file's format (csv, geojson, gpkg): ``declared``, else from the file name's
    suffix; 422 when neither says."""
    if declared:
        if declared not in set(FORMATS.values()):
            raise InvalidParameter(f"format must be one of csv, geojson, gpkg (got {declared!r})")
        return declared
    suffix = Path(filename).suffix.lower()
    if suffix not in FORMATS:
        raise InvalidFile(
            f"cannot tell the format of {Path(filename).name!r}: use .csv, .geojson or .gpkg, "
            "or name the format"
        )
    return FORMATS[suffix]


def read_incident_chunks(
    path: Path,
    options: ReadOptions,
    filename: str | None = None,
    *,
    chunk_rows: int = 100_000,
    canonical: tuple[str, ...] = CANONICAL,
) -> Iterator[pd.DataFrame]:
    """Read a CSV, GeoJSON or GeoPackage as frames of at most ``chunk_rows`` rows of strings
    with canonical column names (CSV is streamed, so a large file never sits whole in memory).

    Coordinates end up in ``longitude``/``latitude`` (strings, as in the file) or ``wkt``;
    ``frame.attrs`` carries the coordinates' CRS. Columns that are not canonical are kept
    and later stored in ``attributes``. Unreadable files raise ``InvalidFile`` — for a CSV,
    possibly only when the bad part is reached.
    """
    fmt = detect_format(filename or path.name, options.format)
    unknown = [c for c in options.columns if c not in canonical]  # death files: their own
    if unknown:
        raise InvalidParameter(
            f"unknown target column(s) {', '.join(unknown)}; map onto: {', '.join(canonical)}"
        )
    header: list[str] | None = None
    with _read_errors(fmt, options):
        if fmt == "csv":
            header = _csv_header(path, options)
            frames: Iterator[pd.DataFrame] = pd.read_csv(
                path,
                dtype=str,
                keep_default_na=False,
                sep=options.delimiter,
                encoding=options.encoding,
                skipinitialspace=True,
                chunksize=chunk_rows,
            )
            crs = options.crs or "EPSG:4326"
        else:
            whole, crs = _read_vector(path, options)
            frames = _slices(whole, chunk_rows)
    while True:
        with _read_errors(fmt, options):
            frame = next(frames, None)
        if frame is None:
            return
        yield _canonical(frame, options, crs, header)


def count_data_rows(path: Path) -> int:
    """Lines in a text file minus its header: the progress bar's total for a streamed CSV
    (quoted line breaks make it an estimate)."""
    with path.open("rb") as fh:
        lines = sum(block.count(b"\n") for block in iter(lambda: fh.read(1 << 20), b""))
    return max(lines - 1, 0)


@contextmanager
def _read_errors(fmt: str, options: ReadOptions) -> Iterator[None]:
    """Turn the readers' exceptions into one clear 422 each."""
    # GDAL's reader (~27 MiB) is imported when a file is read, not by every importer of
    # this module (the report reads the death sources' columns through it).
    import pyogrio

    try:
        yield
    except UnicodeDecodeError as exc:
        raise InvalidFile(
            f"the file is not valid {options.encoding}: {exc.reason} at byte {exc.start}; "
            "name its encoding (for example latin-1)"
        ) from exc
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise InvalidFile(f"cannot parse the CSV file: {exc}") from exc
    except pyogrio.errors.DataSourceError as exc:
        raise InvalidFile(f"cannot read the {fmt} file: {exc}") from exc


def _slices(frame: pd.DataFrame, rows: int) -> Iterator[pd.DataFrame]:
    """Chunks of a frame, with per-row arrays in ``attrs`` sliced alongside."""
    for start in range(0, max(len(frame), 1), rows):
        part = frame.iloc[start : start + rows]
        part.attrs = {
            k: v[start : start + rows] if isinstance(v, np.ndarray) else v
            for k, v in frame.attrs.items()
        }
        yield part


def _csv_header(path: Path, options: ReadOptions) -> list[str]:
    """The CSV's header cells as written (pandas renames repeated ones, ``note.1``, and
    would hide that ``note`` and ``note `` collide once trimmed)."""
    first = pd.read_csv(
        path,
        header=None,
        nrows=1,
        dtype=str,
        keep_default_na=False,
        sep=options.delimiter,
        encoding=options.encoding,
        skipinitialspace=True,
    )
    return [str(c) for c in first.iloc[0]] if len(first) else []


def unique_headers(names: list[str]) -> tuple[list[str], list[str]]:
    """Column names trimmed, then made unique: a name already taken gets ``_2``, ``_3``…
    (skipping names the file uses itself), so no column is lost, e.g. ``note, note ,
    Note, note`` → ``note, note_2, Note, note_3`` (case is kept: ``Note`` is another
    name). Returns the names and, for the report, each renamed header as
    ``'note ' (column 8) → 'note_2'`` (columns counted from 1)."""
    trimmed = [str(n).strip() or f"Unnamed: {i}" for i, n in enumerate(names)]
    taken = set(trimmed)
    seen: set[str] = set()
    out, renamed = [], []
    for i, (raw, name) in enumerate(zip(names, trimmed, strict=True), start=1):
        if name in seen:
            n = 2
            while f"{name}_{n}" in seen or f"{name}_{n}" in taken:
                n += 1
            renamed.append(f"{str(raw)!r} (column {i}) → '{name}_{n}'")
            name = f"{name}_{n}"
        seen.add(name)
        out.append(name)
    return out, renamed


def _canonical(
    frame: pd.DataFrame, options: ReadOptions, crs: str, header: list[str] | None = None
) -> pd.DataFrame:
    """Canonical column names: the file's trimmed and made unique (``unique_headers``;
    ``attrs["warnings"]`` names any renamed), then the options' mapping applied."""
    attrs = frame.attrs
    raw = header if header is not None and len(header) == len(frame.columns) else frame.columns
    names, renamed = unique_headers(list(raw))
    frame = frame.set_axis(names, axis=1)
    warnings = list(attrs.get("warnings", ()))
    if renamed:
        warnings.append(
            "headers renamed so that no column is lost (names are trimmed, then a repeated "
            "name is numbered): " + ", ".join(renamed)
        )
    missing = [f for f in options.columns.values() if f not in frame.columns]
    if missing:
        raise InvalidFile(
            f"column(s) {', '.join(missing)} not in the file; it has: {', '.join(frame.columns)}"
        )
    frame = frame.rename(columns={theirs: ours for ours, theirs in options.columns.items()})
    own = [c for c in options.filled if c in frame.columns]
    if own:
        warnings.append(
            "the file has its own column(s) "
            + ", ".join(f"{c} (constant {options.filled[c]!r})" for c in own)
            + ": the constant fills only their empty cells"
        )
    frame.attrs = {**attrs, "crs": crs, "warnings": warnings}
    return frame


def _read_vector(path: Path, options: ReadOptions) -> tuple[pd.DataFrame, str]:
    import pyogrio

    gdf = pyogrio.read_dataframe(path, layer=options.layer)
    crs = options.crs or (gdf.crs.to_string() if gdf.crs is not None else "EPSG:4326")
    geoms = gdf.geometry.values
    frame = pd.DataFrame(gdf.drop(columns=gdf.geometry.name))
    for col in frame.columns:
        values = frame[col]
        if pd.api.types.is_datetime64_any_dtype(values):
            frame[col] = values.map(lambda v: "" if pd.isna(v) else v.isoformat())
        else:
            frame[col] = values.map(lambda v: "" if v is None or v is pd.NA or v != v else str(v))
    points = shapely.get_type_id(geoms) == 0
    frame["longitude"] = np.where(points, shapely.get_x(geoms), np.nan).astype(str)
    frame["latitude"] = np.where(points, shapely.get_y(geoms), np.nan).astype(str)
    frame.loc[~points, "longitude"] = ""
    frame.loc[~points, "latitude"] = ""
    frame.attrs["non_point"] = ~points & ~shapely.is_missing(geoms)
    return frame, crs


def validate_incidents(
    frame: pd.DataFrame,
    *,
    options: ReadOptions,
    vocabulary: Vocabulary,
    territory: Territory,
    timezone: str,
    now: pd.Timestamp | None = None,
    first_row: int = 1,
) -> Validated:
    """Check every row; return the valid rows typed for the store and the rejected ones.

    ``first_row`` is the file row number of the frame's first row (1 = first data row),
    so that a chunk of a large file reports the file's row numbers.
    """
    n = len(frame)
    now = now or pd.Timestamp.now(tz="UTC")
    reasons = _Reasons(n)
    as_read = frame  # a rejected row is reported as the file has it
    frame = with_constants(frame, options.filled)

    def col(name: str) -> pd.Series:
        if name in frame:
            return frame[name].astype(str).str.strip()
        return pd.Series([""] * n, index=frame.index, dtype=object)

    # Who reported it, and its id in their system: the key of idempotent re-imports.
    source = col("source")
    reasons.add(source == "", "missing source (name the agency)")
    source_id = col("source_id")
    reasons.add(source_id == "", "missing source_id")

    raw_category = col("category")
    category = raw_category.str.lower().map(
        lambda v: v if v in vocabulary.codes else vocabulary.aliases.get(v)
    )
    reasons.add(raw_category == "", "missing category")
    reasons.add_each(
        category.isna() & (raw_category != ""), "unknown category '" + raw_category + "'"
    )

    occurred_raw = col("occurred_at")
    occurred = _parse_times(occurred_raw, timezone)
    reasons.add(occurred_raw == "", "missing occurred_at")
    reasons.add_each(
        occurred.isna() & (occurred_raw != ""), "occurred_at '" + occurred_raw + "' is not a date"
    )
    reasons.add(occurred > now + pd.Timedelta(days=1), "occurred_at is in the future")
    reasons.add(occurred < pd.Timestamp("1900-01-01", tz="UTC"), "occurred_at is before 1900")
    reported_raw = col("reported_at")
    reported = _parse_times(reported_raw, timezone)
    reasons.add_each(
        reported.isna() & (reported_raw != ""), "reported_at '" + reported_raw + "' is not a date"
    )
    reasons.add(reported < occurred, "reported_at is before occurred_at")

    lon, lat = _coordinates(frame, col, options, reasons)
    inside = _inside(territory, lon, lat)
    reasons.add(
        ~np.isnan(lon) & ~inside,
        f"outside the territory ({territory.name}) by more than {territory.tolerance_m:g} m",
    )

    sex_raw = col("victim_sex")
    sex = sex_raw.str.lower().map(SEX_ALIASES)
    reasons.add_each(sex.isna(), "victim_sex '" + sex_raw + "' is not female, male or unknown")
    age = _integers(col("victim_age"), "victim_age", 0, 120, reasons)
    victims = _integers(col("victims_count"), "victims_count", 1, 10_000, reasons).fillna(1)

    # A key repeated in the file: the first otherwise valid row wins, later ones are rejected.
    candidates = ~reasons.mask
    key = (source + "\x1f" + source_id)[candidates]
    row_number = pd.Series(np.arange(first_row, first_row + n), index=frame.index)[candidates]
    first_of_key = row_number.groupby(key.values).transform("min")
    duplicate = np.zeros(n, dtype=bool)
    duplicate[candidates] = key.duplicated(keep="first").to_numpy()
    first = pd.Series("", index=frame.index)
    first[candidates] = first_of_key.astype(str)
    reasons.add_each(duplicate, "duplicate of row " + first + " (same source and source_id)")

    attributes = _attributes(frame)
    rejected_mask = reasons.mask
    valid = pd.DataFrame(
        {
            "row_number": np.arange(first_row, first_row + n),
            "source": source,
            "source_id": source_id,
            "category": category,
            "occurred_at": occurred,
            "reported_at": reported,
            "longitude": lon,
            "latitude": lat,
            "victim_sex": sex,
            "victim_age": age,
            "victims_count": victims,
            "attributes": attributes,
            **{c: col(c).replace("", None) for c in TEXT_COLUMNS},
        },
        index=frame.index,
    )[list(VALID_COLUMNS)]
    bad = np.flatnonzero(rejected_mask)
    originals = as_read.iloc[bad]
    rejected = pd.DataFrame(
        {
            "row_number": bad + first_row,
            "source_id": source_id.iloc[bad].replace("", None).to_numpy(),
            "reason": reasons.text(bad),
            "raw": originals.to_dict("records"),
        }
    )
    return Validated(valid=valid[~rejected_mask], rejected=rejected, received=n)


class _Reasons:
    """Collects, per row, every reason it is rejected."""

    def __init__(self, n: int) -> None:
        self.mask = np.zeros(n, dtype=bool)
        self._items: list[tuple[np.ndarray, object]] = []

    def add(self, condition: pd.Series | np.ndarray, reason: str) -> None:
        cond = np.asarray(condition, dtype=bool)
        if cond.any():
            self.mask |= cond
            self._items.append((cond, reason))

    def add_each(self, condition: pd.Series | np.ndarray, reasons: pd.Series) -> None:
        """Like ``add`` with a reason per row (quoting the bad value)."""
        cond = np.asarray(condition, dtype=bool)
        if cond.any():
            self.mask |= cond
            self._items.append((cond, np.asarray(reasons, dtype=object)))

    def text(self, rows: np.ndarray) -> list[str]:
        out: list[list[str]] = [[] for _ in rows]
        for cond, reason in self._items:
            for i, row in enumerate(rows):
                if cond[row]:
                    out[i].append(reason if isinstance(reason, str) else str(reason[row]))
        return ["; ".join(r) for r in out]


_OFFSET = r"(?:[zZ]|[+-]\d{2}(?::?\d{2})?)$"


def _parse_times(values: pd.Series, timezone: str) -> pd.Series:
    """ISO 8601 dates and times; naive ones are local time of the territory."""
    out = pd.Series(pd.NaT, index=values.index, dtype="datetime64[ns, UTC]")
    present = values != ""
    if not present.any():
        return out
    aware = present & values.str.contains(_OFFSET, regex=True)
    if aware.any():
        out[aware] = pd.to_datetime(values[aware], errors="coerce", utc=True, format="ISO8601")
    naive = present & ~aware
    if naive.any():
        local = pd.to_datetime(values[naive], errors="coerce", format="ISO8601")
        out[naive] = local.dt.tz_localize(
            timezone, ambiguous="NaT", nonexistent="NaT"
        ).dt.tz_convert("UTC")
    return out


def _numbers(values: pd.Series) -> np.ndarray:
    return pd.to_numeric(values.replace("", None), errors="coerce").to_numpy(dtype=float)


def _coordinates(
    frame, col, options: ReadOptions, reasons: _Reasons
) -> tuple[np.ndarray, np.ndarray]:
    """Longitude/latitude in EPSG:4326 (NaN where missing or invalid)."""
    n = len(frame)
    if "wkt" in frame:
        wkt = col("wkt")
        geoms = shapely.from_wkt(wkt.replace("", None).to_numpy(), on_invalid="ignore")
        is_point = shapely.get_type_id(geoms) == 0
        reasons.add((wkt == "").to_numpy(), "missing geometry (wkt)")
        reasons.add((wkt != "").to_numpy() & ~is_point, "wkt is not a valid POINT")
        x = np.where(is_point, shapely.get_x(geoms), np.nan)
        y = np.where(is_point, shapely.get_y(geoms), np.nan)
    elif "longitude" in frame and "latitude" in frame:
        lon_raw, lat_raw = col("longitude"), col("latitude")
        x, y = _numbers(lon_raw), _numbers(lat_raw)
        non_point = np.asarray(frame.attrs.get("non_point", np.zeros(n, dtype=bool)))
        reasons.add(non_point, "geometry is not a point")
        missing = ((lon_raw == "") | (lat_raw == "")).to_numpy() & ~non_point
        reasons.add(missing, "missing coordinates")
        reasons.add(
            ~missing & ~non_point & (np.isnan(x) | np.isnan(y)), "coordinates are not numbers"
        )
    else:
        raise InvalidFile(
            "no coordinates: the file needs longitude and latitude columns or a wkt column "
            "(map yours with the column options)"
        )
    crs = CRS.from_user_input(frame.attrs.get("crs") or options.crs or "EPSG:4326")
    finite = np.isfinite(x) & np.isfinite(y)
    if not crs.equals(CRS.from_epsg(4326)) and finite.any():
        transformer = Transformer.from_crs(crs, 4326, always_xy=True)
        x, y = x.copy(), y.copy()
        x[finite], y[finite] = transformer.transform(x[finite], y[finite], errcheck=False)
    reasons.add(np.isinf(x) | np.isinf(y), "coordinates are not finite")
    out_of_range = np.isfinite(x) & np.isfinite(y) & ((np.abs(x) > 180) | (np.abs(y) > 90))
    reasons.add(out_of_range, "coordinates out of range (longitude ±180, latitude ±90)")
    bad = ~(np.isfinite(x) & np.isfinite(y)) | out_of_range
    # Round to 1e-7 degrees (about 1 cm): finer digits are noise from reprojection, and
    # would make an unchanged incident look changed on re-import.
    x = np.where(bad, np.nan, np.round(x, 7))
    y = np.where(bad, np.nan, np.round(y, 7))
    assert len(x) == n
    return x, y


def _inside(territory: Territory, lon: np.ndarray, lat: np.ndarray) -> np.ndarray:
    ok = ~np.isnan(lon)
    inside = np.zeros(len(lon), dtype=bool)
    if ok.any():
        shapely.prepare(territory.geometry)
        inside[ok] = shapely.contains_xy(territory.geometry, lon[ok], lat[ok])
    return inside


def _integers(values: pd.Series, name: str, low: int, high: int, reasons: _Reasons) -> pd.Series:
    numbers = _numbers(values)
    present = (values != "").to_numpy()
    whole = np.isfinite(numbers) & (np.mod(numbers, 1) == 0)
    reasons.add_each(present & ~whole, name + " '" + values + "' is not a whole number")
    in_range = (numbers >= low) & (numbers <= high)
    reasons.add(present & whole & ~in_range, f"{name} must be between {low} and {high}")
    return pd.Series(
        np.where(present & whole & in_range, numbers, np.nan), index=values.index
    ).astype("Int64")


def _attributes(frame: pd.DataFrame) -> pd.Series:
    """Non-canonical columns, kept as a JSON object per row."""
    extra = [c for c in frame.columns if c not in CANONICAL]
    if not extra:
        return pd.Series(["{}"] * len(frame), index=frame.index)
    records = frame[extra].to_dict("records")
    return pd.Series(
        [orjson.dumps({k: v for k, v in r.items() if v != ""}).decode() for r in records],
        index=frame.index,
    )
