"""Report periods (issue 20): their syntax, bounds in local time, neighbours, and the
period a schedule builds."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from app.core.errors import InvalidParameter
from app.services.reports import check_ended, last_complete_period, parse_report_period

TZ = "America/Belize"
BZ = ZoneInfo(TZ)


@pytest.mark.parametrize(
    ("text", "kind", "start", "end", "stats"),
    [
        ("2024Q3", "quarter", (2024, 7), (2024, 10), "2024-Q3"),
        ("2024q4", "quarter", (2024, 10), (2025, 1), "2024-Q4"),
        ("2024-Q4", "quarter", (2024, 10), (2025, 1), "2024-Q4"),
        ("2024-07", "month", (2024, 7), (2024, 8), "2024-07"),
        ("2024-12", "month", (2024, 12), (2025, 1), "2024-12"),
        ("2024H2", "half-year", (2024, 7), (2025, 1), None),
        ("2024H1", "half-year", (2024, 1), (2024, 7), None),
        ("2024", "year", (2024, 1), (2025, 1), "2024"),
    ],
)
def test_periods_are_parsed_in_local_time(text, kind, start, end, stats):
    p = parse_report_period(text, TZ)
    assert p.kind == kind and p.stats_label == stats
    assert p.label == text.upper().replace("-Q", "Q")
    assert p.start == datetime(*start, 1, tzinfo=BZ) and p.end == datetime(*end, 1, tzinfo=BZ)
    # Belize is UTC-6 all year: the quarter starts at 06:00 UTC.
    assert p.start.astimezone(UTC).hour == 6


@pytest.mark.parametrize("text", ["2024Q5", "2024Q0", "2024-13", "2024-00", "2024H3", "24Q1",
                                  "2024-7", "Q3 2024", "", "2024Q3x"])  # fmt: skip
def test_malformed_periods_are_refused_with_the_syntax(text):
    with pytest.raises(InvalidParameter, match=r"2024Q3.*2024-07.*2024H2.*2024"):
        parse_report_period(text, TZ)


def test_neighbours_of_a_period():
    q = parse_report_period("2024Q1", TZ)
    assert q.shifted(-3).label == "2023Q4" and q.shifted(-12).label == "2023Q1"
    h = parse_report_period("2024H1", TZ)
    assert h.shifted(-6).label == "2023H2"
    m = parse_report_period("2024-01", TZ)
    assert m.shifted(-1).label == "2023-12" and m.shifted(-12).label == "2023-01"


def test_a_report_covers_an_ended_period():
    now = datetime(2026, 12, 7, 12, tzinfo=UTC)
    check_ended(parse_report_period("2026Q3", TZ), now)
    with pytest.raises(InvalidParameter, match="has not ended"):
        check_ended(parse_report_period("2026Q4", TZ), now)
    with pytest.raises(InvalidParameter, match="in the future"):
        check_ended(parse_report_period("2027", TZ), now)


@pytest.mark.parametrize(
    ("kind", "label"),
    [("quarter", "2026Q3"), ("month", "2026-11"), ("half-year", "2026H1"), ("year", "2025")],
)
def test_the_schedule_builds_the_period_just_ended(kind, label):
    assert last_complete_period(kind, TZ, datetime(2026, 12, 7, 12, tzinfo=UTC)).label == label
    # On the first local day of a quarter, the quarter that has just ended.
    first = datetime(2026, 10, 1, 4, 30, tzinfo=BZ)
    assert last_complete_period("quarter", TZ, first).label == "2026Q3"
