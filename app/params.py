"""Query-parameter parsing shared by the routers and services: repeated or comma-separated
lists, and the one meaning of a filter's date or time.

A date or a time without a zone is local time of the territory (``territory.timezone``),
as in imported files: ``occurred_from=2024-01-01`` is midnight in Belize, whichever route
reads it (``/incidents``, the OGC items, tiles, ``/stats``, KDE surfaces, the analyses'
filters). :func:`local_time` is that rule and :func:`parse_time` reads text with it; no
naive moment goes on to SQL, where PostgreSQL would read it in the session's zone (UTC).
The bbox parser lives with the other layer filters (``app.ogc.filters.parse_bbox``)."""

from __future__ import annotations

from datetime import date, datetime
from zoneinfo import ZoneInfo


def split_list(values: list[str] | None) -> tuple[str, ...]:
    """Accept both repeated parameters and comma-separated lists."""
    return tuple(v.strip() for raw in values or () for v in raw.split(",") if v.strip())


def local_time(moment: datetime | date | None, timezone: str) -> datetime | None:
    """A filter's moment as an aware datetime: one without a zone is local time of the
    territory (a bare date is its local midnight); one with a zone is kept as it is."""
    if moment is None:
        return None
    if not isinstance(moment, datetime):
        moment = datetime(moment.year, moment.month, moment.day)
    if moment.tzinfo is None:
        return moment.replace(tzinfo=ZoneInfo(timezone))
    return moment


def parse_time(text: str, timezone: str) -> datetime:
    """ISO 8601 text, a date (``2024-01-01``) or a date and time with or without a zone
    (``2024-01-01T06:00:00Z``, ``2024-01-01 00:00``), as an aware datetime in the sense
    of :func:`local_time`. Raises ``ValueError`` for anything else: the caller says which
    parameter it was."""
    moment = datetime.fromisoformat(text.strip())
    return local_time(moment, timezone)  # type: ignore[return-value]
