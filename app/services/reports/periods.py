"""Report periods: ``2024Q3``, ``2024-07``, ``2024H2``, ``2024``, their bounds and labels."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

from app.core.errors import InvalidParameter

_MONTHS = {"month": 1, "quarter": 3, "half-year": 6, "year": 12}
# 2024Q3 (or 2024-Q3, as /stats writes it), 2024-07, 2024H2 (or 2024-H2), 2024.
_PERIOD = re.compile(r"^(\d{4})(?:-?Q([1-4])|-(0[1-9]|1[0-2])|-?H([12]))?$")

# --- periods ------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReportPeriod:
    """One report period: ``2024Q3``, ``2024-07``, ``2024H2`` or ``2024``, with its local
    bounds (``start`` <= t < ``end``, aware) and its name in ``/stats`` (None for a
    half-year, which ``/stats`` has no period for)."""

    label: str
    kind: str
    start: datetime
    end: datetime

    @property
    def stats_label(self) -> str | None:
        """The same period as ``/stats`` names it (``2024-Q3``), None for a half-year."""
        s = self.start
        return {
            "month": f"{s.year}-{s.month:02d}",
            "quarter": f"{s.year}-Q{(s.month - 1) // 3 + 1}",
            "year": f"{s.year}",
        }.get(self.kind)

    @property
    def days(self) -> float:
        """The period's length in days."""
        return (self.end - self.start).total_seconds() / 86_400

    def shifted(self, months: int) -> ReportPeriod:
        """The period of the same kind starting ``months`` later (negative: earlier)."""
        return _period(self.kind, _add_months(self.start, months), self.start.tzinfo)


def _add_months(moment: datetime, months: int) -> datetime:
    index = moment.year * 12 + moment.month - 1 + months
    return moment.replace(year=index // 12, month=index % 12 + 1, day=1)


def _label(kind: str, start: datetime) -> str:
    y, m = start.year, start.month
    return {
        "month": f"{y}-{m:02d}",
        "quarter": f"{y}Q{(m - 1) // 3 + 1}",
        "half-year": f"{y}H{(m - 1) // 6 + 1}",
        "year": f"{y}",
    }[kind]


def _period(kind: str, start: datetime, tz: Any) -> ReportPeriod:
    begin = datetime(start.year, start.month, 1, tzinfo=tz)
    end = _add_months(begin, _MONTHS[kind])
    return ReportPeriod(_label(kind, begin), kind, begin, end)


def parse_report_period(text: str, timezone: str) -> ReportPeriod:
    """``2024Q3``, ``2024-07``, ``2024H2`` or ``2024`` → the period in the territory's
    local time. Raises InvalidParameter (422) for anything else, e.g. ``2024Q5``."""
    match = _PERIOD.fullmatch(text.strip().upper())
    if match is None:
        raise InvalidParameter(
            f"period {text!r} is not a report period: write a quarter (2024Q3), a month "
            "(2024-07), a half-year (2024H2) or a year (2024)"
        )
    year, quarter, month, half = match.groups()
    kind, first = (
        ("quarter", (int(quarter) - 1) * 3 + 1)
        if quarter
        else ("month", int(month))
        if month
        else ("half-year", (int(half) - 1) * 6 + 1)
        if half
        else ("year", 1)
    )
    if int(year) < 1900:
        raise InvalidParameter(f"period {text!r} is before 1900")
    return _period(kind, datetime(int(year), first, 1), ZoneInfo(timezone))


def check_ended(period: ReportPeriod, now: datetime | None = None) -> None:
    """A report covers a period that has ended: a future or running one is a 422."""
    now = now or datetime.now(UTC)
    if period.start > now:
        raise InvalidParameter(f"period {period.label} is in the future")
    if period.end > now:
        raise InvalidParameter(
            f"period {period.label} has not ended yet (it ends {period.end.date()}); a "
            "report covers a whole period"
        )


def last_complete_period(kind: str, timezone: str, now: datetime | None = None) -> ReportPeriod:
    """The latest period of ``kind`` that has ended by ``now`` (local time)."""
    local = (now or datetime.now(UTC)).astimezone(ZoneInfo(timezone))
    months = _MONTHS[kind]
    index = local.year * 12 + local.month - 1
    first = index - index % months if kind != "month" else index
    current = _period(kind, datetime(first // 12, first % 12 + 1, 1), ZoneInfo(timezone))
    return current.shifted(-months)
