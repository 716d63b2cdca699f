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


@pytest.mark.parametrize(
    ("period", "months", "weeks"),
    [
        # 1 April 2025 is a Tuesday: week 14 (31 March - 6 April) has its Thursday in
        # April; week 27 (30 June - 6 July) has its Thursday in July.
        ("2025Q2", ["2025-06", "2025-05", "2025-04"], (2025, 14, 26)),
        # 29 September 2025 is a Monday: week 40's Thursday is 2 October; week 1 of 2026
        # starts on 29 December 2025 and its Thursday is 1 January 2026.
        ("2025Q4", ["2025-12", "2025-11", "2025-10"], (2025, 40, 52)),
        # 2026 begins on a Thursday: its week 1 starts on 29 December 2025 and is 2026's;
        # 2026 has 53 ISO weeks, the last ending on 3 January 2027.
        ("2026-01", ["2026-01"], (2026, 1, 5)),
        ("2026-12", ["2026-12"], (2026, 49, 53)),
    ],
)
def test_alert_periods_are_the_months_and_the_weeks_thursday_falls_in(period, months, weeks):
    """The alert periods a report asks /alerts for: its months and the ISO weeks whose
    Thursday falls within it (ISO 8601's rule for a week's year), latest first."""
    from app.services.reports.where import alert_periods

    p = parse_report_period(period, TZ)
    labels = alert_periods(p.start.date(), p.end.date())
    year, first, last = weeks
    expected_weeks = [f"{year}-W{w:02d}" for w in range(first, last + 1)]
    assert sorted(x for x in labels if "W" in x) == expected_weeks
    assert [x for x in labels if "W" not in x] == months
    # latest start first (the order of /alerts): the last week, then ... the first
    assert labels[0] == expected_weeks[-1] and labels[-1] in (expected_weeks[0], months[-1])
