"""The renderer end to end on the hand-built document: HTML, PDF (read back with pypdf and
Poppler) and the CSV/XLSX bundle, in English and Spanish."""

from __future__ import annotations

import io
import re
import shutil
import subprocess
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from pypdf import PdfReader

from reports.document import SECTION_KEYS
from reports.i18n import LABELS, VOCABULARY, Lang
from reports.render import bundle, render_html, render_pdf, table_files

from .conftest import make_document

POPPLER = "poppler-utils is missing: run OBSERVATORY_SETUP_TESTS=1 scripts/setup.sh"


@pytest.fixture(scope="module")
def html(document) -> str:
    return render_html(document)


@pytest.fixture(scope="module")
def html_es(document_es) -> str:
    return render_html(document_es)


@pytest.fixture(scope="module")
def pdf(document, html) -> bytes:
    return render_pdf(document, html)


@pytest.fixture(scope="module")
def pdf_es(document_es, html_es) -> bytes:
    return render_pdf(document_es, html_es)


def pdf_pages(pdf: bytes, tmp_path: Path) -> list[str]:
    """The text of each page, by Poppler's pdftotext (pages split on form feeds)."""
    assert shutil.which("pdftotext"), POPPLER
    path = tmp_path / "report.pdf"
    path.write_bytes(pdf)
    text = subprocess.run(
        ["pdftotext", "-layout", str(path), "-"], check=True, capture_output=True, text=True
    ).stdout
    return text.split("\f")[: len(PdfReader(io.BytesIO(pdf)).pages)]


def visible_text(html: str) -> str:
    """The words a reader sees: tags, the stylesheet and attribute values stripped."""
    body = re.sub(r"<style.*?</style>", " ", html, flags=re.S)
    body = re.sub(r"<[^>]+>", " ", body)
    return re.sub(r"\s+", " ", body.replace("&amp;", "&"))


# -- HTML ---------------------------------------------------------------------------------


def test_html_has_every_section_title_and_the_headline_figures(html):
    lang = Lang("en")
    text = visible_text(html)
    for key in SECTION_KEYS:
        assert len(re.findall(re.escape(lang(f"section.{key}")), text)) >= 2, key  # TOC + title
    for figure in ("1,234", "296.4", "+4.6%", "\u22125.2%", "+10.7%", "\u221211.4%"):
        assert figure in text, figure
    # the withheld measure says so instead of printing a number
    assert "withheld" in text
    # the district table prints the document's numbers
    assert re.search(r"BZ-TOL\s+Toledo\s+74\s+51\s+\+45\.1%\s+157\.4\s+170\.9", text)


def test_html_internal_links_all_resolve_and_nothing_points_outside(html):
    ids = re.findall(r'\sid="([^"]+)"', html)
    assert len(ids) == len(set(ids)), "duplicate ids"
    targets = set(re.findall(r'href="#([^"]+)"', html)) | set(re.findall(r"url\(#([^)]+)\)", html))
    assert {f"sec-{key}" for key in SECTION_KEYS} <= targets
    assert targets - set(ids) == set()
    # self-contained: no stylesheet, script, image or link fetched from anywhere
    assert not re.search(r'(?:href|src)="(?!#)', html)
    assert "<link" not in html and "<script" not in html and "@import" not in html


def test_html_draws_every_chart_and_map(html):
    svgs = re.findall(r"<svg\b.*?</svg>", html, flags=re.S)
    titles = [re.search(r"<title>(.*?)</title>", svg)[1] for svg in svgs]
    lang = Lang("en")
    expected = ["chart.trend", "map.districts", "chart.pyramid", "chart.heat", "map.hotspots"]
    assert titles == [lang(key) for key in [*expected, "map.alerts"]]
    for svg in svgs:
        assert svg.count("<path") > 10  # drawn, not an empty frame
        assert "Belize Crime Observatory" in svg  # the source line on every chart and map
    assert "<img" not in html
    for svg in svgs[1], svgs[4], svgs[5]:  # the maps: north arrow, scale bar, legend
        assert ">N</text>" in svg
        assert re.search(r">\d+ km</text>", svg)
    # the choropleth legend lists its classes (each district value is its own class here)
    for value in ("216.3", "241.9", "245.2", "360.6", "458.5", "Withheld or no data"):
        assert f">{value}</text>" in svgs[1], value
    assert ">Hot spot, 99% confidence</text>" in svgs[4]


def test_rendering_is_repeatable(document, html):
    assert render_html(document) == html


def test_an_empty_section_says_so(document):
    doc = make_document("en", empty=("when",))
    html = render_html(doc)
    section = re.search(r'<section[^>]*id="sec-when".*?</section>', html, flags=re.S)[0]
    assert "No incidents in the period." in section
    assert "<svg" not in section


def test_a_period_without_incidents_gives_a_report_that_says_so(tmp_path):
    doc = make_document("es", empty=SECTION_KEYS)
    pages = pdf_pages(render_pdf(doc), tmp_path)
    assert len(pages) == 2 + len(SECTION_KEYS)  # cover, contents, a page per section
    for page in pages[2:]:
        assert "No hubo incidentes en el período." in page


# -- PDF ----------------------------------------------------------------------------------


def test_pdf_opens_and_holds_the_headline_figures_and_every_title(pdf, tmp_path):
    reader = PdfReader(io.BytesIO(pdf))
    assert reader.pages[0].mediabox.width == pytest.approx(595.28, abs=0.5)  # A4
    assert reader.pages[0].mediabox.height == pytest.approx(841.89, abs=0.5)
    text = "\n".join(pdf_pages(pdf, tmp_path))
    for figure in ("1,234", "296.4", "+4.6%", "+10.7%"):
        assert figure in text, figure
    lang = Lang("en")
    for key in SECTION_KEYS:
        assert lang(f"section.{key}") in text, key
    assert f"Page 3 of {len(reader.pages)}" in text
    fonts = {
        str(font["/BaseFont"])
        for page in reader.pages
        for font in page["/Resources"]["/Font"].values()
    }
    # the @font-face files (matplotlib's DejaVu Sans), not whatever DejaVu fontconfig has
    assert fonts and all("+Report-DejaVu-Sans" in name for name in fonts), fonts
    assert reader.metadata.title.startswith("Citizen Security Report")


def toc_entries(page: str) -> dict[str, int]:
    entries = re.findall(r"^\s*\d+\.\s+(.+?)\s*\.{2,}\s*(\d+)\s*$", page, flags=re.M)
    return {title.strip(" ."): int(number) for title, number in entries}


def test_the_table_of_contents_gives_the_pages_where_sections_start(pdf, tmp_path):
    lang = Lang("en")
    pages = pdf_pages(pdf, tmp_path)
    toc = toc_entries(pages[1])
    titles = [lang(f"section.{key}") for key in SECTION_KEYS]
    assert list(toc) == titles
    for title, number in toc.items():
        first = next(i for i, page in enumerate(pages[2:], start=3) if title in page)
        assert number == first, title
    # the PDF outline (bookmarks from the headings) agrees
    reader = PdfReader(io.BytesIO(pdf))
    outline = {
        item.title: reader.get_destination_page_number(item) + 1
        for item in _flatten(reader.outline)
    }
    for title, number in toc.items():
        assert outline[title] == number, title


def _flatten(outline):
    for item in outline:
        if isinstance(item, list):
            yield from _flatten(item)
        else:
            yield item


def test_every_page_renders_to_png(pdf, tmp_path):
    assert shutil.which("pdftoppm"), POPPLER
    path = tmp_path / "report.pdf"
    path.write_bytes(pdf)
    subprocess.run(["pdftoppm", "-r", "50", "-png", str(path), str(tmp_path / "page")], check=True)
    pngs = sorted(tmp_path.glob("page-*.png"))
    assert len(pngs) == len(PdfReader(io.BytesIO(pdf)).pages)
    for png in pngs:
        with Image.open(png) as image:
            width, height = image.size
            assert abs(width - 413) <= 1 and abs(height - 585) <= 1  # A4 at 50 dpi
            darkest, lightest = image.convert("L").getextrema()
            assert darkest < 100 and lightest > 200, png.name  # ink on paper on every page


# -- bundle -------------------------------------------------------------------------------


def test_the_bundle_holds_every_table_as_csv_and_xlsx(document, html, pdf):
    archive = zipfile.ZipFile(io.BytesIO(bundle(document, html, pdf)))
    tables = table_files(document)
    expected_csv = {f"{section}_{name}.csv" for section, name in (k.split("_", 1) for k in tables)}
    names = set(archive.namelist())
    assert {n for n in names if n.endswith(".csv")} == expected_csv
    assert "districts_districts.csv" in names and "quality_delay.csv" in names
    assert {"tables.xlsx", "quarterly-public_2024Q3.html", "quarterly-public_2024Q3.pdf"} <= names
    assert archive.read("quarterly-public_2024Q3.pdf") == pdf
    workbook = pd.read_excel(io.BytesIO(archive.read("tables.xlsx")), sheet_name=None)
    assert set(workbook) == set(tables)
    for name, frame in tables.items():
        from_csv = pd.read_csv(io.BytesIO(archive.read(f"{name}.csv")), dtype={"month": str})
        pd.testing.assert_frame_equal(from_csv, frame.reset_index(drop=True), check_dtype=False)
        pd.testing.assert_frame_equal(
            workbook[name], frame.reset_index(drop=True), check_dtype=False
        )
    districts = pd.read_csv(io.BytesIO(archive.read("districts_districts.csv")))
    assert districts.set_index("unit_code").loc["BZ-BZ", "count"] == 521
    headline = pd.read_csv(io.BytesIO(archive.read("headline_figures.csv")))
    assert headline["period"].isna().tolist() == [False, False, True]  # withheld stays empty


# -- language -----------------------------------------------------------------------------


def test_spanish_changes_every_label(html, html_es):
    text = visible_text(html_es)
    es, en = Lang("es"), Lang("en")
    for key in SECTION_KEYS:
        assert es(f"section.{key}") in text
    english = {pair[0] for pair in (*LABELS.values(), *VOCABULARY.values()) if pair[0] != pair[1]}
    english |= {en.month_name(m) for m in range(1, 13)} | {en.weekday(d, "wide") for d in range(7)}
    left = sorted(
        word for word in english if len(word) > 3 and re.search(rf"\b{re.escape(word)}\b", text)
    )
    assert left == []
    # nor any English phrase the catalogue might have missed (the fixture's data values are
    # proper names, codes or Spanish)
    assert re.findall(r"\b(?:the|and|per|by|of|vs|with|from|in the)\b", text) == []
    # and the English report did use those words
    assert "Headline figures" in visible_text(html) and "Cifras principales" not in html
    assert html_es.startswith('<!DOCTYPE html>\n<html lang="es">')
    assert "Tercer trimestre de 2024" in text and "1 de julio de 2024" in text
    assert "Julio de 2024" in text  # the months of the period, in the trend table


def test_spanish_pdf_pages_say_pagina(pdf_es, tmp_path):
    pages = pdf_pages(pdf_es, tmp_path)
    assert f"Página 3 de {len(pages)}" in pages[2]
    assert "Page" not in "".join(pages)
    assert toc_entries(pages[1])["Distritos"] == next(
        i for i, page in enumerate(pages[2:], start=3) if "Distritos" in page
    )


def test_withheld_counts_print_a_dash_and_draw_nothing(tmp_path):
    doc = make_document("en")
    trend = doc.section("trend").tables["monthly"]
    trend.loc[trend["group"] == "homicides", "count"] = np.nan  # a whole measure withheld
    victims = doc.section("victims").tables["by_sex_age"]
    victims.loc[victims["age_group"] == "60+", "count"] = np.nan
    doc.section("when").tables["weekday_hour"].loc[:10, "count"] = np.nan
    html = render_html(doc)
    pyramid = re.search(r'<section[^>]*id="sec-victims".*?</section>', html, flags=re.S)[0]
    assert re.search(r"<td>60\+</td><td class=\"num\">—</td><td class=\"num\">—</td>", pyramid)
    assert pyramid.count(">—</text>") == 2  # the chart's labels for the two withheld bars
    assert "withheld (small count) or not available" in pyramid
    pages = pdf_pages(render_pdf(doc, html), tmp_path)
    assert len(pages) == 12


def test_tables_without_rows_or_columns_render():
    doc = make_document("en")
    for section in doc.sections:
        section.tables = {name: frame.iloc[0:0] for name, frame in section.tables.items()}
        section.maps = {name: frame.iloc[0:0] for name, frame in section.maps.items()}
    doc.section("index").tables["ranking"] = pd.DataFrame()
    doc.basemap = {}
    html = render_html(doc)
    assert "<svg" not in html  # nothing to draw, nothing drawn
    assert "<table>" not in html
    assert "<strong>Ranking</strong>: none in the period." in html


def test_a_section_with_nothing_in_it_says_so():
    doc = make_document("es")
    doc.section("methods").notes = []
    html = render_html(doc)
    section = re.search(r'<section[^>]*id="sec-methods".*?</section>', html, flags=re.S)[0]
    assert "No hay datos para esta sección." in section
