"""Import the statistical tables: population denominators and external indicators.

Both read a *long* CSV (one value per row). A file is all or nothing: every row is
checked first and, if any is invalid, nothing is written and the error names each bad
row; otherwise the rows are upserted in one transaction and one audit entry is written.
"""

from __future__ import annotations

import csv
import math
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import pandas as pd
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from app.core.errors import InvalidFile
from app.core.settings import DATA_DIR
from app.sql import tables as sql
from app.sql.audit import insert_audit

__all__ = [
    "DEMO_POPULATION_FILE",
    "TableReport",
    "import_indicators",
    "import_population",
    "load_demo_population",
]

DEMO_POPULATION_FILE = DATA_DIR / "belize" / "population" / "belize_district_population.csv"

# At most this many bad rows are listed in an error.
MAX_LISTED_ROWS = 50
MIN_YEAR, MAX_YEAR = 1900, 2100
SEX_ALIASES = {
    "total": "total",
    "all": "total",
    "both": "total",
    "female": "female",
    "f": "female",
    "male": "male",
    "m": "male",
}
AGE_GROUP = re.compile(r"^(?:total|(\d{1,3})-(\d{1,3})|(\d{1,3})\+)$")
PERIOD = re.compile(r"^(\d{4})(?:-Q([1-4])|-(0[1-9]|1[0-2]))?$")
INDICATOR = re.compile(r"^[a-z0-9][a-z0-9_\-]{0,99}$")
THOUSANDS = re.compile(r"^-?\d{1,3}(?:,\d{3})+(?:\.\d+)?$")

POPULATION_COLUMNS = ("unit_code", "year", "value")
POPULATION_OPTIONAL = ("sex", "age_group", "source")
INDICATOR_COLUMNS = ("unit_code", "period", "indicator", "value")
INDICATOR_OPTIONAL = ("sex", "age_group", "source")


@dataclass(frozen=True)
class TableReport:
    """What an import did.

    ``received`` data rows were read; ``inserted`` were new, ``updated`` changed an
    existing value or source, ``unchanged`` matched what was stored already, and
    ``skipped`` rows (demo loader only) named a unit that is not loaded.
    """

    table: str
    filename: str
    received: int
    inserted: int
    updated: int
    unchanged: int
    skipped: int = 0


class _RowError(ValueError):
    pass


async def import_population(engine: AsyncEngine, path: Path, *, actor: str) -> TableReport:
    """Import population denominators from a long CSV.

    Columns: ``unit_code``, ``year``, ``value`` (required); ``sex`` (``total``, ``female``
    or ``male``; default ``total``), ``age_group`` (``total``, ``15-29`` or ``65+``;
    default ``total``) and ``source`` (optional). A value must be a finite number ≥ 0.
    Rows are upserted on (unit, year, sex, age group).

    Raises
    ------
    InvalidFile
        The file cannot be read, lacks a column, has no data rows, or has invalid rows
        (listed in the ``rows`` extra as ``{row, reason}``, row 1 = first data row).
        Nothing is written then.
    """
    path = Path(path)
    frame = _read_csv(path, POPULATION_COLUMNS, POPULATION_OPTIONAL)

    def parse(record: dict[str, str], units: dict[str, int]) -> tuple[tuple, dict]:
        row = {
            "unit_id": _unit(record["unit_code"], units),
            "year": _year(record["year"]),
            "sex": _sex(record["sex"]),
            "age_group": _age_group(record["age_group"]),
            "value": _value(record["value"], non_negative=True),
            "source": record["source"],
        }
        return (row["unit_id"], row["year"], row["sex"], row["age_group"]), row

    async with engine.begin() as conn:
        rows = _validate(path, frame, await _unit_ids(conn), parse)
        report = await _write(conn, "population", path.name, rows, sql.upsert_population)
        await conn.execute(
            insert_audit(actor, "import", "population", path.name, None, asdict(report))
        )
    return report


async def import_indicators(engine: AsyncEngine, path: Path, *, actor: str) -> TableReport:
    """Import external indicator values (poverty, school drop-out …) from a long CSV.

    Columns: ``unit_code``, ``period`` (``2024``, ``2024-Q1`` or ``2024-03``),
    ``indicator`` (a code: lower-case letters, digits, ``_`` or ``-``), ``value``
    (required); ``sex``, ``age_group``, ``source`` (optional, as for population).
    Indicator values may be negative (a change, a balance) but must be finite. Rows are
    upserted on (unit, period, indicator, sex, age group).

    Raises
    ------
    InvalidFile
        As for :func:`import_population`; nothing is written.
    """
    path = Path(path)
    frame = _read_csv(path, INDICATOR_COLUMNS, INDICATOR_OPTIONAL)

    def parse(record: dict[str, str], units: dict[str, int]) -> tuple[tuple, dict]:
        row = {
            "unit_id": _unit(record["unit_code"], units),
            "period": _period(record["period"]),
            "indicator": _indicator(record["indicator"]),
            "sex": _sex(record["sex"]),
            "age_group": _age_group(record["age_group"]),
            "value": _value(record["value"], non_negative=False),
            "source": record["source"],
        }
        key = (row["unit_id"], row["period"], row["indicator"], row["sex"], row["age_group"])
        return key, row

    async with engine.begin() as conn:
        rows = _validate(path, frame, await _unit_ids(conn), parse)
        report = await _write(conn, "indicator_value", path.name, rows, sql.upsert_indicators)
        await conn.execute(
            insert_audit(actor, "import", "indicator_value", path.name, None, asdict(report))
        )
    return report


SIB_2022 = "Statistical Institute of Belize (SIB), Census 2022"
SIB_2022_WEIGHTED = f"{SIB_2022}, weighted district totals (General Characteristics, Table 9)"
SIB_2022_PUBLISHED = f"{SIB_2022}, published national figures (SIB release of 8 April 2024)"
SIB_2022_DERIVED = (
    f"Derived from SIB sex ratio: {SIB_2022} weighted total split by the district sex ratio"
    " (males per 1000 females)"
)
SIB_2010 = "Statistical Institute of Belize (SIB), Census 2010"


async def load_demo_population(engine: AsyncEngine, *, actor: str) -> TableReport:
    """Load the census populations of Belize shipped in ``app/data/belize/population``.

    Rows written (all age group ``total``; ISO 3166-2 codes are the unit codes, the
    national rows go to unit ``BZ``):

    - 2022, sex ``total``: the SIB census 2022 weighted district totals (series
      ``census_2022_weighted``, non-integer because SIB adjusted for non-response) and
      their national sum.
    - 2022, sex ``female`` / ``male`` per district: **derived**, not published. SIB
      publishes district sex ratios (males per 1000 females) but no district counts by
      sex, so ``female = total / (1 + ratio / 1000)`` and ``male = total - female``; the
      source says "Derived from SIB sex ratio". They are kept because sex-specific rates
      (violence against women per 100,000 women) need a female denominator. The six
      derived female counts add up to 201,810, 0.01 % above SIB's published national
      female count (201,789).
    - 2022, national ``female`` / ``male``: the published counts (series
      ``census_2022_published``: 201,789 and 195,695).
    - 2010, sex ``total``: the census 2010 district counts and national total (series
      ``census_2010``).

    Every source names the Statistical Institute of Belize, as its copyright notice asks.
    Rows for units that are not loaded (e.g. ``BZ`` without a country outline) are
    skipped and counted in ``skipped``. Re-loading updates nothing that is unchanged.
    """
    rows = _demo_population_rows(pd.read_csv(DEMO_POPULATION_FILE, dtype=str).fillna(""))
    async with engine.begin() as conn:
        units = await _unit_ids(conn)
        known = [
            {k: v for k, v in row.items() if k != "unit_code"}
            | {"unit_id": units[row["unit_code"]]}
            for row in rows
            if row["unit_code"] in units
        ]
        report = await _write(
            conn, "population", DEMO_POPULATION_FILE.name, known, sql.upsert_population
        )
        report = replace(report, received=len(rows), skipped=len(rows) - len(known))
        await conn.execute(
            insert_audit(
                actor, "load_demo", "population", DEMO_POPULATION_FILE.name, None, asdict(report)
            )
        )
    return report


def _demo_population_rows(frame: pd.DataFrame) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []

    def add(code: str, year: int, sex: str, value: float, source: str) -> None:
        rows.append(
            {
                "unit_code": code,
                "year": year,
                "sex": sex,
                "age_group": "total",
                "value": value,
                "source": source,
            }
        )

    for r in frame.itertuples(index=False):
        code, total = r.iso_3166_2, float(r.population_total)
        if r.series == "census_2022_weighted":
            add(code, 2022, "total", total, SIB_2022_WEIGHTED)
            if r.sex_ratio_m_per_1000_f:
                female = total / (1 + float(r.sex_ratio_m_per_1000_f) / 1000)
                add(code, 2022, "female", female, SIB_2022_DERIVED)
                add(code, 2022, "male", total - female, SIB_2022_DERIVED)
        elif r.series == "census_2022_published" and r.district == "NATIONAL":
            if r.population_female and r.population_male:
                add(code, 2022, "female", float(r.population_female), SIB_2022_PUBLISHED)
                add(code, 2022, "male", float(r.population_male), SIB_2022_PUBLISHED)
        elif r.series == "census_2010":
            add(code, 2010, "total", total, SIB_2010)
    return rows


def _read_csv(path: Path, required: tuple[str, ...], optional: tuple[str, ...]) -> pd.DataFrame:
    try:
        frame = pd.read_csv(
            path, dtype=str, keep_default_na=False, encoding="utf-8-sig", skipinitialspace=True
        )
    except (OSError, UnicodeDecodeError, pd.errors.ParserError, csv.Error) as exc:
        raise InvalidFile(f"{path.name}: not a readable UTF-8 CSV file ({exc})") from exc
    except pd.errors.EmptyDataError as exc:
        raise InvalidFile(f"{path.name}: the file is empty") from exc
    frame.columns = [str(c).strip().lower() for c in frame.columns]
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise InvalidFile(
            f"{path.name}: missing column(s) {', '.join(missing)}",
            required=list(required),
            optional=list(optional),
        )
    if frame.empty:
        raise InvalidFile(f"{path.name}: no data rows")
    for column in optional:
        if column not in frame.columns:
            frame[column] = ""
    return frame[[*required, *optional]].apply(lambda s: s.str.strip())


async def _unit_ids(conn: AsyncConnection) -> dict[str, int]:
    """Unit ids by code; also by lower-cased code, so ``bz-cy`` finds ``BZ-CY``."""
    result = await conn.execute(sql.select_unit_codes())
    units: dict[str, int] = {}
    for code, unit_id in result.all():
        units.setdefault(code.lower(), unit_id)
        units[code] = unit_id
    return units


def _validate(
    path: Path,
    frame: pd.DataFrame,
    units: dict[str, int],
    parse: Callable[[dict[str, str], dict[str, int]], tuple[tuple, dict]],
) -> list[dict]:
    rows: list[dict] = []
    errors: list[dict[str, Any]] = []
    seen: dict[tuple, int] = {}
    for number, record in enumerate(frame.to_dict("records"), start=1):
        try:
            key, row = parse(record, units)
            if key in seen:
                raise _RowError(
                    f"duplicates row {seen[key]} (same unit, period, sex and age group)"
                )
        except _RowError as exc:
            errors.append({"row": number, "reason": str(exc)})
            continue
        seen[key] = number
        rows.append(row)
    if errors:
        raise InvalidFile(
            f"{path.name}: {len(errors)} invalid row(s) of {len(frame)}; nothing was imported",
            rows=errors[:MAX_LISTED_ROWS],
            invalid=len(errors),
        )
    return rows


async def _write(
    conn: AsyncConnection,
    table: str,
    filename: str,
    rows: list[dict],
    upsert: Callable[[list[dict]], Any],
) -> TableReport:
    inserted = updated = 0
    for start in range(0, len(rows), sql.CHUNK_ROWS):
        result = await conn.execute(upsert(rows[start : start + sql.CHUNK_ROWS]))
        flags = [bool(r.inserted) for r in result]
        inserted += sum(flags)
        updated += len(flags) - sum(flags)
    return TableReport(
        table=table,
        filename=filename,
        received=len(rows),
        inserted=inserted,
        updated=updated,
        unchanged=len(rows) - inserted - updated,
    )


def _unit(text: str, units: dict[str, int]) -> int:
    if not text:
        raise _RowError("unit_code is empty")
    unit_id = units.get(text, units.get(text.lower()))
    if unit_id is None:
        raise _RowError(f"unknown unit code {text!r}")
    return unit_id


def _year(text: str) -> int:
    if not re.fullmatch(r"\d{4}", text):
        raise _RowError(f"year {text!r} is not a four-digit year")
    year = int(text)
    if not MIN_YEAR <= year <= MAX_YEAR:
        raise _RowError(f"year {year} is outside {MIN_YEAR} to {MAX_YEAR}")
    return year


def _period(text: str) -> str:
    match = PERIOD.fullmatch(text.upper())
    if match is None:
        raise _RowError(f"period {text!r} is not YYYY, YYYY-Qn or YYYY-MM")
    if not MIN_YEAR <= int(match.group(1)) <= MAX_YEAR:
        raise _RowError(f"period {text!r} is outside {MIN_YEAR} to {MAX_YEAR}")
    return text.upper()


def _indicator(text: str) -> str:
    code = text.lower()
    if not INDICATOR.fullmatch(code):
        raise _RowError(
            f"indicator {text!r} is not a code (lower-case letters, digits, _ or -; ≤ 100)"
        )
    return code


def _sex(text: str) -> str:
    if not text:
        return "total"
    sex = SEX_ALIASES.get(text.lower())
    if sex is None:
        raise _RowError(f"sex {text!r} is not total, female or male")
    return sex


def _age_group(text: str) -> str:
    if not text:
        return "total"
    group = re.sub(r"\s+", "", text.lower()).replace("\u2013", "-")  # en dash
    match = AGE_GROUP.fullmatch(group)
    if match is None:
        raise _RowError(f"age_group {text!r} is not total, a range such as 15-29, or 65+")
    if match.group(1) is not None and int(match.group(1)) > int(match.group(2)):
        raise _RowError(f"age_group {text!r} ends before it starts")
    return group


def _value(text: str, *, non_negative: bool) -> float:
    if not text:
        raise _RowError("value is empty")
    number = text.replace(",", "") if THOUSANDS.fullmatch(text) else text
    try:
        value = float(number)
    except ValueError:
        raise _RowError(f"value {text!r} is not a number") from None
    if not math.isfinite(value):
        raise _RowError(f"value {text!r} is not a finite number")
    if non_negative and value < 0:
        raise _RowError(f"value {value:g} is negative")
    return value
