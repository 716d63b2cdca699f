"""A ReportDocument as HTML, as PDF (WeasyPrint, from the same HTML) and as a CSV/XLSX bundle.

The HTML is self-contained: the stylesheet is embedded and every chart and map is inline
SVG, so the file opens the same on a machine without network. The PDF is that HTML laid
out by WeasyPrint on A4 with a cover, a table of contents whose page numbers WeasyPrint
fills in (``target-counter``) and "Page N of M" in the margin; the inline SVG stays vector.

Values are formatted here, in the report's language; the numbers themselves come from the
document's tables unchanged, and the bundle writes those tables as they are.
"""

from __future__ import annotations

import io
import logging
import re
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib
import pandas as pd
from jinja2 import Environment, FileSystemLoader, select_autoescape
from markupsafe import Markup

from reports import charts, maps
from reports.document import ReportDocument, Section
from reports.i18n import MISSING, Lang

HERE = Path(__file__).parent
TEMPLATES = HERE / "templates"
STYLESHEET = HERE / "static" / "report.css"
#: The family the stylesheet and the charts ask for first. A name no system font has: an
#: @font-face named "DejaVu Sans" loses to fontconfig's own DejaVu Sans, so the PDF would
#: take whatever DejaVu the machine has; this one always resolves to ``fonts_dir``'s files
#: (in a browser, where it is unknown, the next family in the list, DejaVu Sans, is used).
FONT_FAMILY = "Report DejaVu Sans"
#: DejaVu Sans as shipped inside matplotlib: the same font files on every machine.
DEFAULT_FONTS = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
FONT_FACES = (
    ("DejaVuSans.ttf", "normal", "normal"),
    ("DejaVuSans-Bold.ttf", "bold", "normal"),
    ("DejaVuSans-Oblique.ttf", "normal", "italic"),
    ("DejaVuSans-BoldOblique.ttf", "bold", "italic"),
)

_env = Environment(
    loader=FileSystemLoader(TEMPLATES),
    autoescape=select_autoescape(["html"]),
    trim_blocks=True,
    lstrip_blocks=True,
)

# -- cell formatting ----------------------------------------------------------------------

COUNTS = ("count", "previous", "year_before", "incidents", "rows", "cells", "observed",
          "periods_lasting", "rank", "alert_id", "batch_id", "records")  # fmt: skip
CHANGES = ("change_previous_pct", "change_year_pct", "change_pct")
RATES = ("rate_per_100k", "eb_rate_per_100k", "projected_annual_rate", "expected", "threshold",
         "median_days", "p90_days", "median_delay_days")  # fmt: skip
SHARES = ("georeferenced_pct", "completeness_pct", "timely_pct", "linked_pct", "same_manner_pct")
TERMS = ("measure", "group", "category", "sex", "state", "source", "age_group")
#: Column -> kind of value; a column not listed prints as text (names, places, reasons).
KINDS = {
    **dict.fromkeys(COUNTS, "count"),
    **dict.fromkeys(CHANGES, "change"),
    **dict.fromkeys(RATES, "rate"),
    **dict.fromkeys(TERMS, "term"),
    **dict.fromkeys(SHARES, "share"),
    "score": "score",
    "month": "month",
    "weekday": "weekday",
    "in_period": "flag",
    "alarm": "flag",
    "period": "period",  # a count in the headline, a period label in the alerts
}


def _text(value: object) -> str:
    return MISSING if pd.isna(value) else str(value)


def _formats(lang: Lang) -> dict[str, Callable[[object], str]]:
    def period(value: object) -> str:
        if isinstance(value, str):
            return lang.month(value) if len(value) == 7 and value[4] == "-" else value
        return lang.integer(value)

    return {
        "count": lang.integer,
        "change": lang.change,
        "rate": lang.decimal,
        "share": lang.percent,
        "score": lambda v: lang.decimal(v, 3),
        "term": lang.term,
        "month": lambda v: lang.month(str(v)),
        "weekday": lambda v: lang.weekday(int(v), "wide"),
        "flag": lambda v: lang("yes") if bool(v) else lang("no"),
        "period": period,
        "text": _text,
    }


NUMERIC = {"count", "change", "rate", "share", "score", "period"}


def _formatter(column: str, lang: Lang) -> tuple[Callable[[object], str], bool]:
    """How to print a column's values, and whether they are numbers (right-aligned)."""
    kind = KINDS.get(column, "text")
    return _formats(lang)[kind], kind in NUMERIC


@dataclass
class Table:
    """A table ready to print: caption, headers and formatted cells."""

    caption: str
    headers: list[tuple[str, bool]]  # (text, numeric)
    rows: list[list[tuple[str, bool]]]
    missing: bool = False  # whether any cell is withheld/not available (a footnote says so)


@dataclass
class Figure:
    """An inline SVG chart or map with its caption."""

    caption: str
    svg: Markup
    kind: str = "chart"  # "chart" or "map"


@dataclass
class View:
    """One section as the templates see it."""

    key: str
    title: str
    anchor: str
    empty: str | None = None
    notes: list[str] = field(default_factory=list)
    tables: dict[str, Table] = field(default_factory=dict)
    figures: dict[str, Figure] = field(default_factory=dict)
    cards: list[dict[str, str]] = field(default_factory=list)


def table(frame: pd.DataFrame, caption: str, lang: Lang, columns: list[str] | None = None) -> Table:
    """Format ``frame`` (its ``columns``, all by default) for printing."""
    columns = columns or list(frame.columns)
    formats = [_formatter(c, lang) for c in columns]
    # "period" is a count in the headline and a label in the alerts: align as what it holds.
    formats = [
        (fmt, numeric and pd.api.types.is_numeric_dtype(frame[c]))
        for c, (fmt, numeric) in zip(columns, formats, strict=True)
    ]
    headers = [(lang.column(c), numeric) for c, (_, numeric) in zip(columns, formats, strict=True)]
    rows, missing = [], False
    for record in frame[columns].itertuples(index=False):
        row = []
        for value, (fmt, numeric) in zip(record, formats, strict=True):
            text = fmt(value)
            missing |= text == MISSING
            row.append((text, numeric))
        rows.append(row)
    return Table(caption, headers, rows, missing)


def _wide(frame: pd.DataFrame, index: str, columns: str, lang: Lang, caption: str) -> Table:
    """A long table (index, columns, count) printed wide: one column per ``columns`` value."""
    order = list(dict.fromkeys(frame[columns]))
    wide = charts.wide(frame, index, columns).reset_index()
    out = table(wide, caption, lang, [index])
    out.headers += [(lang.term(c), True) for c in order]
    for row, values in zip(out.rows, wide[order].itertuples(index=False), strict=True):
        row += [(lang.integer(v), True) for v in values]
        out.missing |= any(pd.isna(v) for v in values)
    return out


# -- sections -----------------------------------------------------------------------------


def _cards(figures: pd.DataFrame, lang: Lang) -> list[dict[str, str]]:
    """One headline card per measure: the count, its rate and two changes with arrows."""
    cards = []
    for row in figures.to_dict("records"):
        withheld = pd.isna(row.get("period"))
        cards.append(
            {
                "measure": lang.term(row["measure"]),
                "value": lang("withheld") if withheld else lang.integer(row["period"]),
                "withheld": withheld,
                "rate": lang.decimal(row.get("rate_per_100k")),
                "projected": lang("projected", rate=lang.decimal(row.get("projected_annual_rate"))),
                "changes": [
                    _change(row.get("change_previous_pct"), lang("vs_previous"), lang),
                    _change(row.get("change_year_pct"), lang("vs_year_before"), lang),
                ],
            }
        )
    return cards


def _change(pct: object, against: str, lang: Lang) -> dict[str, str]:
    """An arrow, a signed percentage and a class: up (worse, red), down (green) or flat."""
    if pct is None or pd.isna(pct):
        return {"arrow": "", "text": MISSING, "class": "na", "against": against}
    value = float(pct)
    if abs(value) < 0.05:
        return {"arrow": "\u25ac", "text": lang("no_change"), "class": "flat", "against": against}
    arrow, kind = ("\u25b2", "up") if value > 0 else ("\u25bc", "down")
    return {"arrow": arrow, "text": lang.change(value), "class": kind, "against": against}


def _figures(section: Section, doc: ReportDocument, lang: Lang) -> dict[str, Figure]:
    """Charts and maps this section draws from its tables and maps."""
    t, m, line = section.tables, section.maps, doc.source_line
    out: dict[str, Figure] = {}
    if section.key == "trend" and "monthly" in t and len(t["monthly"]):
        out["trend"] = Figure(lang("chart.trend"), Markup(charts.trend(t["monthly"], lang, line)))
    if section.key == "victims" and "by_sex_age" in t and len(t["by_sex_age"]):
        out["pyramid"] = Figure(
            lang("chart.pyramid"), Markup(charts.pyramid(t["by_sex_age"], lang, line))
        )
    if section.key == "when" and "weekday_hour" in t and len(t["weekday_hour"]):
        out["heat"] = Figure(lang("chart.heat"), Markup(charts.heat(t["weekday_hour"], lang, line)))
    if "districts" in m and len(m["districts"]):
        svg = maps.choropleth(m["districts"], doc.basemap, lang, line)
        out["districts"] = Figure(lang("map.districts"), Markup(svg), "map")
    if "hotspots" in m and len(m["hotspots"]):
        svg = maps.hotspots(m["hotspots"], doc.basemap, lang, line)
        out["hotspots"] = Figure(lang("map.hotspots"), Markup(svg), "map")
    if section.key == "where" and len(t.get("alert_series", ())) and "alerts" in t:
        svg = charts.alert_series(t["alert_series"], t["alerts"], lang, line)
        if svg:
            out["alert_series"] = Figure(lang("chart.alert_series"), Markup(svg))
    if "alerts" in m and len(m["alerts"]):
        svg = maps.alerts(m["alerts"], doc.basemap, lang, line)
        out["alerts"] = Figure(lang("map.alerts"), Markup(svg), "map")
    return out


def _tables(section: Section, lang: Lang) -> dict[str, Table]:
    """Every table of the section, formatted; a few printed wide rather than long."""
    out: dict[str, Table] = {}
    for name, frame in section.tables.items():
        key = f"table.{section.key}.{name}"
        caption = lang(key) if lang.has(key) else lang.term(name)
        if section.key == "trend" and name == "monthly":
            period = frame[frame["in_period"].astype(bool)]
            out[name] = _wide(period, "month", "group", lang, caption)
        elif section.key == "victims" and name == "by_sex_age":
            out[name] = _wide(frame, "age_group", "sex", lang, caption)
        elif section.key == "when" and name == "weekday_hour":
            continue  # 168 cells: the chart shows them, the bundle has them
        elif section.key == "where" and name == "alert_series":
            continue  # two years per alert: the small multiples show them, the bundle has them
        elif section.key == "where" and name == "alerts" and "monitor_name" in frame:
            # the monitor by its title in the report's language; its code is for the bundle
            out[name] = table(frame.drop(columns="monitor"), caption, lang)
        else:
            out[name] = table(frame, caption, lang)
    return out


def view(section: Section, doc: ReportDocument, lang: Lang) -> View:
    """A section as the templates see it: title, formatted tables, drawn figures, notes."""
    out = View(
        key=section.key,
        title=lang(f"section.{section.key}") if lang.has(f"section.{section.key}") else section.key,
        anchor=f"sec-{section.key}",
        notes=list(section.notes),
    )
    if section.empty:
        out.empty = lang(section.empty) if lang.has(section.empty) else section.empty
        return out
    out.tables = _tables(section, lang)
    out.figures = _figures(section, doc, lang)
    if section.key == "headline" and "figures" in section.tables:
        out.cards = _cards(section.tables["figures"], lang)
    return out


# -- outputs ------------------------------------------------------------------------------


def render_html(doc: ReportDocument) -> str:
    """The report as one self-contained HTML page (embedded CSS, inline SVG, no links out)."""
    lang = Lang(doc.language)
    sections = [view(s, doc, lang) for s in doc.sections]
    template = _env.get_template("base.html")
    return template.render(
        doc=doc,
        t=lang,
        sections=sections,
        css=Markup(STYLESHEET.read_text(encoding="utf-8")),
        period_name=lang.period_name(doc.period_label),
        date_range=lang.date_range(doc.period_start, doc.period_end),
        generated=lang.date(doc.generated_at),
    )


def _font_css(fonts_dir: Path) -> str:
    faces = []
    for name, weight, style in FONT_FACES:
        path = fonts_dir / name
        if path.exists():
            faces.append(
                f'@font-face {{ font-family: "{FONT_FAMILY}"; src: url("{path.as_uri()}"); '
                f"font-weight: {weight}; font-style: {style}; }}"
            )
    return "\n".join(faces)


class _SvgStyleNoise(logging.Filter):
    """Drops WeasyPrint's "Ignored `fill: …`, unknown property" for SVG presentation
    properties: its CSS parser reports every matplotlib ``style=""`` attribute, then its SVG
    renderer applies them (the PDF's colours are right). Other warnings pass."""

    PATTERN = re.compile(r"^Ignored `(fill|stroke|text-anchor|clip-path|opacity)[a-z-]*:")

    def filter(self, record: logging.LogRecord) -> bool:
        return not self.PATTERN.match(record.getMessage())


def render_pdf(
    doc: ReportDocument, html: str | None = None, fonts_dir: Path | None = None
) -> bytes:
    """The report as an A4 PDF: WeasyPrint lays out ``html`` (rendered when not given).

    ``fonts_dir`` holds DejaVu Sans's TTF files (matplotlib's copy by default), so the PDF
    embeds the same font on every machine whatever fontconfig would pick.
    """
    from weasyprint import CSS, HTML
    from weasyprint.text.fonts import FontConfiguration

    html = html if html is not None else render_html(doc)
    fonts = FontConfiguration()
    css = CSS(string=_font_css(fonts_dir or DEFAULT_FONTS), font_config=fonts)
    noise, logger = _SvgStyleNoise(), logging.getLogger("weasyprint")
    logger.addFilter(noise)
    try:
        return HTML(string=html, base_url=str(HERE)).write_pdf(stylesheets=[css], font_config=fonts)
    finally:
        logger.removeFilter(noise)


def table_files(doc: ReportDocument) -> dict[str, pd.DataFrame]:
    """Every table of the document by its bundle name, ``<section>_<table>``."""
    return {
        f"{section.key}_{name}": frame
        for section in doc.sections
        for name, frame in section.tables.items()
    }


def bundle(doc: ReportDocument, html: str | None = None, pdf: bytes | None = None) -> bytes:
    """A zip: each table as ``<section>_<table>.csv``, all of them in ``tables.xlsx``
    (a sheet per table), and the HTML and PDF when given."""
    tables = table_files(doc)
    stem = f"{doc.definition}_{doc.period_label}"
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, frame in tables.items():
            archive.writestr(f"{name}.csv", frame.to_csv(index=False, lineterminator="\n"))
        workbook = io.BytesIO()
        with pd.ExcelWriter(workbook, engine="openpyxl") as writer:
            for name, frame in tables.items():
                frame.to_excel(writer, sheet_name=name[:31], index=False)
            if not tables:
                pd.DataFrame({"empty": []}).to_excel(writer, sheet_name="empty", index=False)
        archive.writestr("tables.xlsx", workbook.getvalue())
        if html is not None:
            archive.writestr(f"{stem}.html", html)
        if pdf is not None:
            archive.writestr(f"{stem}.pdf", pdf)
    return buffer.getvalue()
