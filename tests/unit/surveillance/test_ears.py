"""EARS C1/C2/C3 equal R surveillance::earsC (1.20.3) on the reference series."""

from __future__ import annotations

import numpy as np
import pytest

from surveillance.ears import ears
from surveillance.series import ALL_ZERO, TOO_LITTLE_HISTORY
from tests.unit.surveillance.conftest import ATOL, r_alarm, reference, series

CONFIGS = {
    "C1": {"method": "C1"},
    "C2": {"method": "C2"},
    "C3": {"method": "C3"},
    "C2_b10_ms0.5_a0.01": {"method": "C2", "baseline": 10, "min_sigma": 0.5, "alpha": 0.01},
    "C3_ms1": {"method": "C3", "min_sigma": 1.0},
}
SERIES = series()
REF = reference("ears")


@pytest.mark.parametrize("config", CONFIGS)
@pytest.mark.parametrize("name", SERIES)
def test_equals_r(name: str, config: str) -> None:
    """Same evaluated periods, thresholds to 1e-6 and the same alarms as earsC."""
    ref = REF[(REF.series == name) & (REF.detector == config)].sort_values("t")
    assert len(ref) > 50
    y, _ = SERIES[name]
    res = ears(y, **CONFIGS[config])
    np.testing.assert_array_equal(res.index + 1, ref["t"].to_numpy())
    r_upper = ref["upperbound"].to_numpy(dtype=float)
    np.testing.assert_array_equal(np.isnan(res.upperbound), np.isnan(r_upper))
    np.testing.assert_allclose(res.upperbound, r_upper, rtol=0, atol=ATOL)
    np.testing.assert_array_equal(res.alarm, r_alarm(ref["alarm"]))


def test_c1_by_hand() -> None:
    """C1 threshold is the baseline mean + z * sd; an all-zero baseline has threshold 0."""
    y = [1, 2, 3, 4, 5, 6, 7, 20, 0, 0, 0, 0, 0, 0, 0, 1]
    res = ears(y, "C1", alpha=0.05)
    base = np.arange(1, 8)
    expect = base.mean() + 1.6448536269514722 * base.std(ddof=1)
    assert res.index[0] == 7
    assert res.upperbound[0] == pytest.approx(expect, abs=1e-12)
    assert res.alarm[0]
    assert res.upperbound[-1] == 0.0 and res.alarm[-1]  # 1 > 0 after seven zeros


def test_short_history_is_not_computable() -> None:
    """Periods before a full baseline are reported, not raised on."""
    res = ears([3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14], "C2", range_=range(12))
    assert res.reason[:9] == [TOO_LITTLE_HISTORY] * 9
    assert res.reason[9:] == [None] * 3
    assert not res.alarm[:9].any()


def test_bad_input() -> None:
    """Invalid methods, baselines and counts are refused with a clear message."""
    with pytest.raises(ValueError, match="method"):
        ears([1, 2, 3], "C4")
    with pytest.raises(ValueError, match="baseline"):
        ears([1, 2, 3], baseline=2)
    with pytest.raises(ValueError, match="non-negative"):
        ears([1, -2, 3])


def test_c3_all_zero_baseline() -> None:
    """C3 on an all-zero stretch: R's threshold is NA (0/0); reported as 'all zero'."""
    y = [0] * 20 + [3]
    res = ears(y, "C3")
    assert res.reason[-1] == ALL_ZERO
    assert not res.alarm[-1]
