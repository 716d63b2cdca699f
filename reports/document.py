"""What a report is made of, between the service that computes it and the renderer.

The service (``app.services.reports``) fills a :class:`ReportDocument` from its own answers
(``/stats``, rankings, alerts, hot spot runs, imports); the renderer (``reports.render``)
turns it into HTML and PDF; the bundle writes every table as CSV and XLSX. Nothing here
computes a statistic: a number in the report is a number in a table of this document.

Sections and their tables (``Section.tables``, pandas DataFrames; column names are the
CSV header, in English whatever the language):

``headline``   ``figures``: measure, period, previous, year_before, change_previous_pct,
               change_year_pct, rate_per_100k, projected_annual_rate (rows: one per measure,
               e.g. ``major_crimes``, ``homicides``; a withheld value is missing, not 0)
``trend``      ``monthly``: month (YYYY-MM), group, count, in_period (bool)
``districts``  ``districts``: unit_code, unit_name, count, previous, change_pct, rate_per_100k,
               eb_rate_per_100k; map ``districts`` (GeoDataFrame, EPSG:4326: unit_code,
               unit_name, value, geometry)
``victims``    ``by_sex_age``: sex, age_group, count (``vawg`` for the analyst audience)
``when``       ``weekday_hour``: weekday (0 = Monday), hour (0-23), count
``where``      ``hotspot_classes``: category, cells; ``alerts``: alert_id, monitor, place,
               period, observed, expected, threshold, periods_lasting, state;
               maps ``hotspots`` (cell geometry, gi_bin -3..3) and ``alerts`` (outline);
               ``alert_series``: alert_id, period, observed, expected, threshold, alarm
               (each open alert's series as ``GET /alerts/{id}`` gives it, the alert's
               period last; small multiples draw the first few alerts of ``alerts``)
``index``      ``ranking``: rank, unit_code, unit_name, score, band
``quality``    ``georeferenced``: source, unit_name, incidents, georeferenced_pct (public
               audience: unit_name, georeferenced_pct over every source);
               ``rejected``: batch_id, reason, rows; ``delay``: source, median_days,
               p90_days; ``sources`` (analyst audience only, as ``GET /quality`` is):
               source, records, completeness_pct, georeferenced_pct, timely_pct,
               median_delay_days, linked_pct, same_manner_pct (the death records' quality
               scorecard of each agency; completeness: the mean share of the scored fields)
``methods``    no table: ``notes`` (paragraphs generated from the definitions used)

A section may carry ``notes`` (short paragraphs, already in the report's language) and an
``empty`` reason instead of tables ("no incidents in the period").
Every map layer shares ``ReportDocument.basemap``: the country outline and the districts,
drawn from the service's own layers (never web tiles).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime

import geopandas as gpd
import pandas as pd

SECTION_KEYS = (
    "headline",
    "trend",
    "districts",
    "victims",
    "when",
    "where",
    "index",
    "quality",
    "methods",
)


@dataclass
class Section:
    """One section of the report: its tables, its maps and its notes."""

    key: str
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    maps: dict[str, gpd.GeoDataFrame] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    empty: str | None = None


@dataclass
class ReportDocument:
    """A computed report: its definition, its period and its sections, in order."""

    definition: str  # the definition's name, e.g. "quarterly-public"
    definition_version: int
    language: str  # "en" or "es"
    audience: str  # "public" or "analyst"
    period_label: str  # "2024Q3", "2024-07", "2024H2", "2024"
    period_start: date  # first local day of the period
    period_end: date  # last local day of the period (inclusive)
    territory: str  # "Belize"
    data_version: int  # the full fingerprint (metadata); print short_version(data_version)
    generated_at: datetime
    sections: list[Section]
    basemap: dict[str, gpd.GeoDataFrame] = field(default_factory=dict)  # "country", "districts"
    source_line: str = ""  # printed under every map and chart

    @property
    def data_label(self) -> str:
        """The data version as people read it (a short hash, like a commit's)."""
        return short_version(self.data_version)

    def section(self, key: str) -> Section | None:
        """The section ``key``, or None when the definition leaves it out."""
        return next((s for s in self.sections if s.key == key), None)


def short_version(version: int) -> str:
    """A data version as 7 hexadecimal digits (the 52-bit fingerprint's first 28 bits),
    short enough to print and quote; the full number stays in the metadata."""
    return f"{version:013x}"[:7]
