"""The periodic situational report (issue 20): a :class:`reports.document.ReportDocument`
computed from the service's own answers, rendered by :mod:`reports.render`, stored.

Every number comes from the function behind the route that answers the same question:
counts and rates from :func:`app.services.stats.compute_stats` (``/stats``), the ranking
from :func:`app.services.rankings.compute_ranking` (``/rankings``), alerts from
:func:`app.services.monitors.list_alerts` (``/alerts``), hot spots from the stored runs.
For the ``public`` audience each query is first made a public table by
:func:`app.services.lattice.restrict` and computed for the anonymous caller, so the
disclosure control of public statistics applies unchanged (perturbed counts, small
counts withheld, no sensitive category, no point); a figure ``/stats`` withholds is
missing in the report, never 0. The weekday x hour chart has no public table: the public
report says so instead of drawing it.

A report is stored with the data version it was built from (a fingerprint of what it
reads, :data:`app.sql.reports.DATA_FINGERPRINT`); asking again for the same definition
version, period and data returns the stored one.

The package: :mod:`.definitions`, :mod:`.periods`, :mod:`.context` (what the sections
share), the sections (:mod:`.sections`, :mod:`.where`, :mod:`.index`, :mod:`.quality`,
:mod:`.methods`), :mod:`.document` (assembling them), :mod:`.files` (rendering) and
:mod:`.run` (building and storing: a run, the schedule, the CLI).
"""

from app.services.reports.context import ANALYST, PUBLISHER
from app.services.reports.definitions import (
    DEFAULTS_DIR,
    get_definition,
    list_definitions,
    load_default_definitions,
    parse_definition,
    store_definition,
)
from app.services.reports.document import build_document, check_request, data_version, reader_of
from app.services.reports.files import render_files, summary_of
from app.services.reports.periods import (
    ReportPeriod,
    check_ended,
    last_complete_period,
    parse_report_period,
)
from app.services.reports.run import build_here, build_report, build_scheduled, run_report

__all__ = [
    "ANALYST",
    "DEFAULTS_DIR",
    "PUBLISHER",
    "ReportPeriod",
    "build_document",
    "build_here",
    "build_report",
    "build_scheduled",
    "check_ended",
    "check_request",
    "data_version",
    "get_definition",
    "last_complete_period",
    "list_definitions",
    "load_default_definitions",
    "parse_definition",
    "parse_report_period",
    "reader_of",
    "render_files",
    "run_report",
    "store_definition",
    "summary_of",
]
