"""A monitor's count series (app.services.monitors): the numpy builder against the
reference it replaced, ``spatial.grids.points_to_h3`` and a pandas pivot (the series read
from the database, stored cells and all, are checked against it in
tests/integration/test_monitor_cells.py)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from app.schemas.monitors import load_monitor
from app.services.monitors import _calendar, _count_table, _h3_cells
from spatial.grids import points_to_h3


def definition(step: str = "week", kind: str = "h3"):
    places = {"kind": "h3", "resolution": 8} if kind == "h3" else {"kind": "units", "level": 1}
    return load_monitor(
        {
            "name": "series-test",
            "title": "series test",
            "places": places,
            "step": step,
            "detector": {"name": "ears"},
        }
    )


def reference(lon, lat, period, last, step):
    """The previous implementation: a cell per point, a groupby, a pivot over the
    calendar from the first period to ``last``."""
    cells = points_to_h3(np.asarray(lon, float), np.asarray(lat, float), 8)
    frame = (
        pd.DataFrame({"place": cells, "period": period})
        .groupby(["place", "period"], sort=False)
        .size()
        .rename("n")
        .reset_index()
    )
    frame = frame[frame["period"] <= last]
    periods = list(pd.date_range(frame["period"].min(), last, freq={"week": "W-MON"}[step]))
    table = frame.pivot_table(index="place", columns="period", values="n", aggfunc="sum")
    table = table.reindex(columns=pd.DatetimeIndex(periods), fill_value=0).fillna(0)
    return periods, list(table.index), table.to_numpy(dtype=float)


def test_h3_series_equal_the_pandas_reference():
    rng = np.random.default_rng(3)
    n = 5000
    # Belize City and around: many points per cell, and cells with one point.
    lon = rng.normal(-88.2, 0.05, n)
    lat = rng.normal(17.5, 0.05, n)
    mondays = pd.date_range("2024-01-01", periods=40, freq="W-MON")
    period = mondays[rng.integers(0, 40, n)]
    # A coordinate QGIS or a bad import could leave: skipped, as points_to_h3 does.
    lon[:3] = [np.nan, 200.0, -88.2]
    lat[:3] = [17.5, 17.5, 95.0]
    last = mondays[35]  # the weeks after it are not counted
    cells = _h3_cells(lon, lat, 8)
    assert cells.dtype == np.int64 and (cells[:3] == 0).all() and (cells[3:] > 0).all()
    place = cells[cells != 0].astype(np.uint64)
    when = np.array(period[3:], dtype="datetime64[us]")
    got = _count_table(definition(), place, when, np.ones(len(place)), last)
    periods, places, counts = reference(lon, lat, period, last, "week")
    assert got.periods == periods and got.periods[-1] == last
    assert got.places == places and all(isinstance(p, str) for p in got.places)
    np.testing.assert_array_equal(got.counts, counts)
    assert got.counts.sum() == np.sum(period[3:] <= last)  # every valid point once


def test_unit_counts_fill_the_calendar_with_zeros():
    """Units: the GROUP BY's counts placed on every month from the first to ``last``, a
    place with no count in a month at 0, months after ``last`` left out."""
    place = np.array(["BZ-CY", "BZ-BZ", "BZ-CY", "BZ-BZ"], dtype=object)
    period = np.array(["2025-01-01", "2025-03-01", "2025-04-01", "2025-06-01"], "datetime64[us]")
    got = _count_table(
        definition("month", "units"), place, period, np.array([2.0, 5, 1, 9]),
        pd.Timestamp("2025-04-01"),
    )  # fmt: skip
    assert got.periods == list(pd.date_range("2025-01-01", "2025-04-01", freq="MS"))
    assert got.places == ["BZ-BZ", "BZ-CY"]
    np.testing.assert_array_equal(got.counts, [[0, 0, 5, 0], [2, 0, 0, 1]])


def test_no_counts_up_to_last_is_an_empty_series():
    got = _count_table(
        definition(), np.array([1], np.uint64), np.array(["2025-02-03"], "datetime64[us]"),
        np.ones(1), pd.Timestamp("2025-01-27"),
    )  # fmt: skip
    assert got.periods == [] and got.places == [] and got.counts.shape == (0, 0)
    assert _h3_cells(np.zeros(0), np.zeros(0), 8).shape == (0,)


@pytest.mark.parametrize("step, freq", [("week", "W-MON"), ("month", "MS")])
def test_the_calendar_is_pandas_date_range(step, freq):
    """The weeks by 7-day steps from the first Monday, the months by pandas: the dates
    of ``pd.date_range`` with W-MON (MS), first day off a period start or on one, last
    before the first, time of day or not."""
    rng = np.random.default_rng(5)
    for _ in range(500):
        first = pd.Timestamp("2019-01-01") + pd.Timedelta(minutes=int(rng.integers(0, 576_000)))
        if rng.random() < 0.5:
            first = first.normalize()
        last = first + pd.Timedelta(days=int(rng.integers(-10, 2000)))
        if rng.random() < 0.5:
            last = last.normalize()
        assert _calendar(first, last, step) == list(pd.date_range(first, last, freq=freq))
