"""The public lattice of /stats: its published window and the bound on cells per incident."""

from __future__ import annotations

from datetime import date

import pytest

from app.core.settings import PrivacySettings, Settings
from app.services.lattice import cells_per_incident, published_window


def _settings(**privacy) -> Settings:
    return Settings(environment="test", privacy=PrivacySettings(**privacy))


@pytest.mark.parametrize(
    ("granularity", "start", "end"),
    [
        ("month", date(2021, 2, 1), date(2024, 7, 1)),
        ("quarter", date(2021, 4, 1), date(2024, 7, 1)),
        ("year", date(2022, 1, 1), date(2024, 1, 1)),
    ],
)
def test_the_window_holds_whole_periods_only(granularity, start, end):
    settings = _settings(published_from=date(2021, 2, 1), published_to=date(2024, 7, 15))
    first, last = published_window(settings, granularity)
    assert (first.date(), last.date()) == (start, end)
    assert str(first.tzinfo) == "America/Belize"


def test_the_open_end_is_the_start_of_the_current_month():
    settings = _settings(published_from=date(2021, 1, 1))
    _, last = published_window(settings, "month", today=date(2026, 12, 6))
    assert last.date() == date(2026, 12, 1)
    _, last = published_window(settings, "year", today=date(2026, 12, 6))
    assert last.date() == date(2026, 1, 1)


def test_the_window_must_be_in_order():
    with pytest.raises(ValueError, match="published_to"):
        PrivacySettings(published_from=date(2024, 1, 1), published_to=date(2023, 1, 1))


def test_one_incident_lies_in_a_bounded_number_of_cells():
    # Its unit at each level x (all, its category, its group) x (all, its sex) x
    # (all, its age group) x (its month, quarter, year).
    assert cells_per_incident(2) == 72
    assert cells_per_incident(3) == 108
