"""Periods of the territory's calendar, shared by ``/stats`` and the composite indexes.

A period is a whole year, quarter or month of local time in the territory (imports read a
date without a zone the same way), named ``2024``, ``2024-Q1`` or ``2024-03``. Both
services cut time here so that a count of 2024 is the same count in a table and in an
index.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

import pandas as pd

from app.core.errors import InvalidParameter

__all__ = [
    "FREQ",
    "Period",
    "local_naive",
    "middle_year",
    "one_period",
    "parse_period",
    "period_containing",
    "period_label",
    "period_labels",
    "previous_period",
]

# pandas frequency of each granularity.
FREQ = {"year": "Y", "quarter": "Q", "month": "M"}
_PERIOD_VALUE = re.compile(r"^(\d{4})(?:-Q([1-4])|-(0[1-9]|1[0-2]))?$")


@dataclass(frozen=True)
class Period:
    """One whole period: its label, granularity and local bounds (``start`` <= t < ``end``)."""

    label: str
    granularity: str
    start: datetime
    end: datetime

    @property
    def year(self) -> int:
        """The calendar year the period starts in (the census year a rate looks up)."""
        return self.start.year


def parse_period(
    text: str, timezone: str
) -> tuple[str, str | None, datetime | None, datetime | None]:
    """A granularity or one period → (granularity, period or None, local start, local end).

    ``month``, ``quarter`` or ``year`` name a granularity (no bounds); ``2024``, ``2024-Q1``
    or ``2024-03`` name one period, whose bounds are aware datetimes in ``timezone``.
    Raises InvalidParameter for anything else.
    """
    value = text.strip().lower()
    if value in FREQ:
        return value, None, None, None
    match = _PERIOD_VALUE.fullmatch(value.upper())
    if match is None:
        raise InvalidParameter(
            f"period {text!r} is not month, quarter or year, nor a period such as 2024, "
            "2024-Q1 or 2024-03"
        )
    year, quarter, month = match.groups()
    granularity = "quarter" if quarter else "month" if month else "year"
    start_month = (int(quarter) - 1) * 3 + 1 if quarter else int(month) if month else 1
    start = pd.Period(year=int(year), month=start_month, freq=FREQ[granularity])
    tz = ZoneInfo(timezone)
    begin = start.start_time.to_pydatetime().replace(tzinfo=tz)
    end = (start + 1).start_time.to_pydatetime().replace(tzinfo=tz)
    return granularity, period_label(start.start_time, granularity), begin, end


def period_label(moment: datetime | pd.Timestamp, granularity: str) -> str:
    """The label of the period of ``granularity`` that ``moment`` falls in (its own clock)."""
    if granularity == "year":
        return f"{moment.year}"
    if granularity == "quarter":
        return f"{moment.year}-Q{(moment.month - 1) // 3 + 1}"
    return f"{moment.year}-{moment.month:02d}"


def one_period(text: str, granularity: str, timezone: str) -> Period:
    """Exactly one period of ``granularity`` (``2024`` for a year). Raises InvalidParameter
    for a granularity alone or a period of another kind."""
    found, label, start, end = parse_period(text, timezone)
    if label is None or start is None or end is None:
        raise InvalidParameter(f"period must be one {granularity}, e.g. 2024 (got {text!r})")
    if found != granularity:
        raise InvalidParameter(
            f"this index is defined per {granularity}; period {text!r} is a {found}"
        )
    return Period(label, granularity, start, end)


def previous_period(period: Period, timezone: str) -> Period:
    """The period of the same granularity just before ``period``."""
    freq = FREQ[period.granularity]
    before = pd.Period(period.start.replace(tzinfo=None), freq=freq) - 1
    return one_period(
        period_label(before.start_time, period.granularity), period.granularity, timezone
    )


def period_containing(moment: datetime, granularity: str, timezone: str) -> Period:
    """The period of ``granularity`` holding ``moment`` (an aware time) in local time."""
    local = pd.Timestamp(moment).tz_convert(timezone)
    return one_period(period_label(local, granularity), granularity, timezone)


def local_naive(moment: datetime, timezone: str) -> datetime:
    """A filter bound as naive local time (naive bounds are read as UTC by PostgreSQL)."""
    aware = moment if moment.tzinfo else moment.replace(tzinfo=ZoneInfo("UTC"))
    return aware.astimezone(ZoneInfo(timezone)).replace(tzinfo=None)


def period_labels(start: datetime, end: datetime, granularity: str) -> list[str]:
    """The labels of every period from the one holding ``start`` to the one holding ``end``."""
    span = pd.period_range(pd.Timestamp(start), pd.Timestamp(end), freq=FREQ[granularity])
    return [period_label(p.start_time, granularity) for p in span]


def middle_year(start: datetime | None, end: datetime | None, timezone: str) -> int:
    """The year of the middle of a range (either end may be open; neither: this year).

    A table over a whole range takes its denominators from this year.
    """
    first, last = start or end, end or start
    if first is None or last is None:
        return datetime.now(ZoneInfo(timezone)).year
    return (first + (last - first) / 2).year
