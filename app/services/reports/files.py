"""The report's files: HTML, PDF and the tables' bundle, and the stored summary."""

from __future__ import annotations

import logging
import math
import threading
from typing import Any

import numpy as np

from reports.document import ReportDocument

# WeasyPrint logs every layout step at INFO: a worker's log would be mostly that.
logging.getLogger("weasyprint").setLevel(logging.WARNING)


# The charts are drawn with pyplot, whose figures and settings are global: one report is
# rendered at a time in a process (render_files runs in a thread, off the event loop).
_RENDERING = threading.Lock()


def render_files(doc: ReportDocument) -> tuple[str, bytes, bytes]:
    """(HTML, PDF, zip of every table as CSV and XLSX) of the document
    (:mod:`reports.render`: the PDF is laid out from the same HTML)."""
    # Imported here: the renderer's imports cost seconds, which the API's start need not pay.
    from reports import render

    with _RENDERING:
        html = render.render_html(doc)
        return html, render.render_pdf(doc, html), render.bundle(doc)


def summary_of(doc: ReportDocument, title: str = "") -> dict:
    """What the stored report says about itself without its files: the headline
    figures, and which sections are empty and why."""
    headline = doc.section("headline")
    figures = (
        headline.tables["figures"].replace({np.nan: None}).to_dict("records")
        if headline is not None and "figures" in headline.tables
        else []
    )
    return {
        "title": title,
        "period_start": str(doc.period_start),
        "period_end": str(doc.period_end),
        "generated_at": doc.generated_at.isoformat(),
        "headline": [{k: _plain(v) for k, v in f.items()} for f in figures],
        "sections": [{"key": s.key, "empty": s.empty} for s in doc.sections],
    }


def _plain(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value.item() if isinstance(value, np.generic) else value
