"""The export writer (app.files.exports): formula-leading text neutralised in CSV and XLSX,
header cells included, numbers kept as numbers, text cells stored as text."""

from __future__ import annotations

import csv
import datetime as dt
import io
import math
from decimal import Decimal

import numpy as np
import pytest
from openpyxl import load_workbook

from app.files.exports import about_rows, csv_text, safe_text, xlsx_bytes

HOSTILE = [
    '=HYPERLINK("http://x","y")',
    '=cmd|"/c calc"!A1',
    "+3+3",
    "@x",
    "@SUM(A1:A9)",
    "-2+3",
    "-",
    "=",
    "\t=1+1",
    "\rx",
    "-inf",
    "+",
]
HARMLESS = ["", "Belize", "BZ-CY", "a=b", " =1+1", "'=1", "#N/A", "{}", "1+1", "x-1"]
NUMBERS_AS_TEXT = ["-88.77", "-3", "+3", "17.25", "-0.5e-3", ".5", "-.5", "0"]
FORMULA_LEADS = ("=", "+", "-", "@", "\t", "\r")


def _cells(text: str) -> list[list[str]]:
    return list(csv.reader(io.StringIO(text, newline="")))


def _book(columns, rows, about=None):
    return load_workbook(io.BytesIO(xlsx_bytes(columns, rows, about=about)))


@pytest.mark.parametrize("value", HOSTILE)
def test_formula_leading_text_gets_a_quote(value):
    assert safe_text(value) == "'" + value


@pytest.mark.parametrize("value", HARMLESS + NUMBERS_AS_TEXT)
def test_other_text_and_plain_numbers_stay(value):
    assert safe_text(value) == value


def test_csv_neutralises_values_and_header_cells():
    text = csv_text(["=bad", "name", "@x"], [[v, v, v] for v in HOSTILE])
    header, *rows = _cells(text)
    assert header == ["'=bad", "name", "'@x"]
    assert [row[0] for row in rows] == ["'" + v for v in HOSTILE]
    for cell in (c for line in _cells(text) for c in line):
        assert not cell.startswith(FORMULA_LEADS), cell


def test_csv_keeps_numbers_as_numbers():
    row = [-88.77, -3, "-88.77", "-3", np.float64(-1.5), np.int64(-7), Decimal("-2.50"), 0.1]
    text = csv_text(list("abcdefgh"), [row])
    assert text.splitlines()[1] == "-88.77,-3,-88.77,-3,-1.5,-7,-2.50,0.1"


def test_csv_cells_for_missing_values_and_other_types():
    row = [None, math.nan, np.nan, True, False, math.inf, -math.inf, {"k": [1, "=x"]},
           dt.datetime(2024, 1, 2, 3, 4, tzinfo=dt.UTC), dt.date(2024, 1, 2)]  # fmt: skip
    (line,) = _cells(csv_text(list("abcdefghij"), [row]))[1:]
    assert line == ["", "", "", "true", "false", "inf", "'-inf", '{"k":[1,"=x"]}',
                    "2024-01-02T03:04:00+00:00", "2024-01-02"]  # fmt: skip


def test_csv_quotes_line_breaks_so_rows_survive():
    text = csv_text(["a", "b"], [["x\ry", "\r=1"], ["p\nq", "z"]])
    assert text.endswith("\r\n")
    assert _cells(text) == [["a", "b"], ["x\ry", "'\r=1"], ["p\nq", "z"]]


def test_csv_without_rows_is_the_header():
    assert csv_text(["row_number", "source_id", "reason"], []) == "row_number,source_id,reason\r\n"


def test_xlsx_stores_text_as_text_never_as_a_formula():
    book = _book(["=bad", "value"], [[v, "#N/A"] for v in HOSTILE])
    sheet = book["rows"]
    cells = [c for line in sheet.iter_rows() for c in line]
    assert all(c.data_type != "f" for c in cells)
    assert sheet["A1"].value == "'=bad" and sheet["A1"].data_type == "s"
    # openpyxl reads a carriage return back as a line feed (XML normalises line ends).
    expected = ["'" + v.replace("\r", "\n") for v in HOSTILE]
    assert [c.value for c in sheet["A"][1:]] == expected
    assert all(c.data_type == "s" and c.value == "#N/A" for c in sheet["B"][1:])


def test_xlsx_keeps_numbers_as_number_cells():
    row = [-88.77, -3, np.float64(-1.5), np.int64(-7), Decimal("-2.5"), True, None, math.nan]
    sheet = _book(list("abcdefgh"), [row])["rows"]
    values = [c.value for c in sheet[2]]
    assert values[:6] == [-88.77, -3, -1.5, -7, -2.5, True]
    assert [c.data_type for c in sheet[2]][:6] == ["n"] * 5 + ["b"]
    assert values[6:] == [None, None]


def test_xlsx_text_that_is_a_number_stays_text_unchanged():
    sheet = _book(["lon"], [["-88.77"]])["rows"]
    assert sheet["A2"].value == "-88.77" and sheet["A2"].data_type == "s"


def test_xlsx_replaces_characters_xml_cannot_hold():
    sheet = _book(["a"], [["bell\x07", "\x01=1"]])["rows"]
    assert sheet["A2"].value == "bell\ufffd" and sheet["B2"].value == "\ufffd=1"


def test_xlsx_about_sheet_is_optional_and_neutralised():
    assert _book(["a"], [[1]]).sheetnames == ["rows"]
    about = about_rows(
        "idx", 2, "2024", {"weights": {"a": 0.5}, "seed": 1}, ["=1+1 note"], title="=1+1"
    )
    book = _book(["a"], [[1]], about=about)
    assert book.sheetnames == ["rows", "about"]
    lines = {row[0]: row[1] for row in book["about"].iter_rows(values_only=True)}
    assert lines["item"] == "value"
    assert lines["index"] == "idx" and lines["title"] == "'=1+1" and lines["version"] == 2
    assert lines["parameter: weights"] == '{"a": 0.5}' and lines["parameter: seed"] == 1
    assert lines["note"] == "'=1+1 note"
    assert all(c.data_type != "f" for line in book["about"].iter_rows() for c in line)
