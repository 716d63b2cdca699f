"""The one writer of tabular exports: CSV text and XLSX workbooks, for every route that
offers ``format=csv`` or ``format=xlsx`` (and the rejected rows of an import).

Exported text comes from people and files the service does not control: unit names and
codes from third-party boundary files, index titles and indicator names from
``POST /indexes``, the raw values and headers of rejected import rows, actors and file
names in the audit log. A spreadsheet that opens such a file runs a cell beginning with
``=`` as a formula (``=HYPERLINK(...)``, ``=cmd|"/c calc"!A1``), and ``+``, ``-``, ``@``,
tab and carriage return can start one too. Following OWASP's rule on CSV injection,
every text cell, header cells included, that begins with one of those characters is
written with a leading single quote ``'``, the spreadsheet convention for "this is
text". Numbers stay numbers: the decision is made per value, so an ``int`` or ``float``
(longitude ``-88.77``, a rank change ``-3``) is written as a number, and a text that is
a plain decimal number (``"-88.77"`` read from a file) is left as it is, since a
spreadsheet reads it as that number and nothing else. In XLSX every text cell is stored
as a string, never as a formula or an error value, and the characters XML cannot hold
are replaced by U+FFFD. CSV follows RFC 4180 (CRLF line ends).
"""

from __future__ import annotations

import csv
import datetime as dt
import enum
import io
import json
import math
import numbers
import re
from collections.abc import Iterable, Sequence
from decimal import Decimal
from typing import Any

import orjson
from fastapi import Response
from openpyxl import Workbook
from openpyxl.cell.cell import ILLEGAL_CHARACTERS_RE

__all__ = [
    "CSV",
    "FORMULA_LEADS",
    "XLSX",
    "about_rows",
    "csv_text",
    "download",
    "safe_text",
    "xlsx_bytes",
]

CSV = "text/csv; charset=utf-8"
XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"

# What a spreadsheet may read as the start of a formula (OWASP, CSV injection).
FORMULA_LEADS = ("=", "+", "-", "@", "\t", "\r")
# A text a spreadsheet reads as a plain number and nothing else: -88.77, +3, 1.5e-3.
_PLAIN_NUMBER = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")


def safe_text(text: str) -> str:
    """``text`` with a leading ``'`` when a spreadsheet could run it as a formula."""
    if text.startswith(FORMULA_LEADS) and not _PLAIN_NUMBER.fullmatch(text):
        return "'" + text
    return text


def csv_text(columns: Sequence[Any], rows: Iterable[Sequence[Any]]) -> str:
    """A header line and one line per row, RFC 4180 (CRLF line ends, so that a field
    holding a carriage return or a line feed is quoted). None and NaN are empty cells,
    booleans ``true``/``false``, numbers as numbers, dates ISO 8601, dicts and lists JSON
    text, and every text formula-safe (:func:`safe_text`)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow([_csv_cell(c) for c in columns])
    for values in rows:
        writer.writerow([_csv_cell(v) for v in values])
    return out.getvalue()


def xlsx_bytes(
    columns: Sequence[Any],
    rows: Iterable[Sequence[Any]],
    about: Sequence[Sequence[Any]] | None = None,
) -> bytes:
    """A workbook with the rows on a sheet "rows" and, when given, ``about`` (item, value
    lines) on a sheet "about". Cells follow :func:`csv_text`'s rules, numbers and
    booleans as typed cells, every text a string cell."""
    book = Workbook()
    sheet = book.active
    sheet.title = "rows"
    _write(sheet, [columns, *rows])
    if about is not None:
        _write(book.create_sheet("about"), [["item", "value"], *about])
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()


def about_rows(
    code: str,
    version: int,
    period: str,
    parameters: dict[str, Any],
    notes: Sequence[str],
    *,
    title: str = "",
) -> list[list[Any]]:
    """The "about" sheet of an index export: what the rows came from (non-scalar
    parameters as JSON text)."""
    about: list[list[Any]] = [
        ["index", code],
        ["title", title],
        ["version", version],
        ["period", period],
    ]
    for key, value in parameters.items():
        scalar = value is None or isinstance(value, str | int | float)
        about.append([f"parameter: {key}", value if scalar else json.dumps(value)])
    about += [["note", note] for note in notes]
    return about


def download(
    content: str | bytes,
    media_type: str,
    filename: str,
    *,
    status_code: int = 200,
    headers: dict[str, str] | None = None,
) -> Response:
    """A response saved as ``filename`` by a browser."""
    return Response(
        content,
        status_code=status_code,
        media_type=media_type,
        headers={**(headers or {}), "Content-Disposition": f'attachment; filename="{filename}"'},
    )


# --- cells --------------------------------------------------------------------------------


def _plain(value: Any) -> Any:
    """``value`` as None, bool, int, float, Decimal or str (numbers kept as numbers)."""
    if isinstance(value, enum.Enum):
        value = value.value
    if hasattr(value, "dtype") and hasattr(value, "item"):  # a numpy scalar
        value = value.item()
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        number = float(value)
        return None if math.isnan(number) else number
    if isinstance(value, Decimal):
        return None if value.is_nan() else value
    if isinstance(value, dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, dict | list | tuple):
        return _json(value)
    return str(value)


def _csv_cell(value: Any) -> str | int | float | Decimal:
    value = _plain(value)
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return safe_text(value)
    if isinstance(value, float | Decimal) and not _finite(value):
        return safe_text(str(value))  # inf and -inf as text ("'-inf")
    return value


def _write(sheet, lines: Iterable[Sequence[Any]]) -> None:
    """``lines`` on ``sheet``, text as string cells: openpyxl would store a text starting
    with ``=`` as a formula, and ``#N/A`` as an error value."""
    for row, values in enumerate(lines, start=1):
        for column, raw in enumerate(values, start=1):
            value = _plain(raw)
            if isinstance(value, float | Decimal) and not _finite(value):
                value = str(value)  # inf and -inf as text
            if isinstance(value, str):
                value = safe_text(ILLEGAL_CHARACTERS_RE.sub("\ufffd", value))
            cell = sheet.cell(row=row, column=column, value=value)
            if isinstance(value, str):
                cell.data_type = "s"


def _finite(value: float | Decimal) -> bool:
    return value.is_finite() if isinstance(value, Decimal) else math.isfinite(value)


def _json(value: Any) -> str:
    return orjson.dumps(value, default=str, option=orjson.OPT_NON_STR_KEYS).decode()
