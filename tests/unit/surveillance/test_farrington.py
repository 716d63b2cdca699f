"""Farrington flexible equals R surveillance::farringtonFlexible (1.20.3)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from surveillance.farrington import (
    _weights,
    farrington_flexible,
    threshold_farrington,
    threshold_noufaily,
)
from surveillance.series import TOO_FEW_CASES, TOO_LITTLE_HISTORY
from tests.unit.surveillance.conftest import ATOL, DATA, r_alarm, reference, series

NOUFAILY = {
    "no_periods": 10,
    "b": 4,
    "w": 3,
    "weights_threshold": 2.58,
    "past_weeks_not_included": 26,
    "p_threshold_trend": 1,
    "alpha": 0.05,
}
CONFIGS = {
    "farrington": {
        "no_periods": 1,
        "b": 4,
        "w": 3,
        "weights_threshold": 1,
        "past_weeks_not_included": 3,
        "p_threshold_trend": 0.05,
        "threshold_method": "delta",
        "powertrans": "2/3",
        "alpha": 0.05,
    },
    "noufaily": {**NOUFAILY, "threshold_method": "nbPlugin"},
    "noufaily_muan": {**NOUFAILY, "threshold_method": "muan"},
    "defaults": {},
    "population_offset": {
        **NOUFAILY,
        "p_threshold_trend": 0.05,
        "threshold_method": "muan",
        "population_offset": True,
    },
}
SERIES = series()
REF = reference("farrington")


@pytest.mark.parametrize("config", CONFIGS)
@pytest.mark.parametrize("name", SERIES)
def test_equals_r(name: str, config: str) -> None:
    """Thresholds, expected values, scores, phi, trend to 1e-6 and alarms exactly."""
    ref = REF[(REF.series == name) & (REF.detector == config)].sort_values("t")
    y, freq = SERIES[name]
    population = 1000 * (1 + 0.002 * np.arange(1, len(y) + 1))
    res = farrington_flexible(y, freq, population=population, **CONFIGS[config])
    np.testing.assert_array_equal(res.index + 1, ref["t"].to_numpy())
    r_upper = ref["upperbound"].to_numpy(float)
    # R's NA threshold (fewer than 5 cases in 4 periods) is our "not computable"
    np.testing.assert_array_equal(~res.computable, np.isnan(r_upper))
    ok = res.computable
    assert ok.sum() >= 15
    np.testing.assert_allclose(res.upperbound[ok], r_upper[ok], rtol=0, atol=ATOL)
    np.testing.assert_allclose(
        res.expected[ok], ref["expected"].to_numpy(float)[ok], rtol=0, atol=ATOL
    )
    np.testing.assert_allclose(res.score[ok], ref["score"].to_numpy(float)[ok], rtol=0, atol=ATOL)
    for col in ("pvalue", "phi"):
        np.testing.assert_allclose(res.extra[col], ref[col].to_numpy(float), rtol=0, atol=ATOL)
    np.testing.assert_array_equal(res.extra["trend"], ref["trend"].to_numpy(float))
    np.testing.assert_array_equal(res.alarm, r_alarm(ref["alarm"]))
    assert res.alarm.any() or config == "noufaily_muan"


def test_sparse_series_reasons() -> None:
    """Periods with fewer than 5 cases in the last 4 are 'too few cases', not alarms."""
    y, freq = SERIES["monthly_sparse"]
    res = farrington_flexible(y, freq, range_=range(len(y)))
    assert res.reason[0] == TOO_LITTLE_HISTORY
    first = freq * 5 + 3
    assert all(r == TOO_LITTLE_HISTORY for r in res.reason[:first])
    assert TOO_FEW_CASES in res.reason[first:]
    assert not res.alarm[~res.computable].any()


TESTTHAT = pd.read_csv(DATA / "testthat_thresholds.csv", dtype={"transform_or_method": str})


@pytest.mark.parametrize(
    "row",
    TESTTHAT.to_dict("records"),
    ids=lambda r: f"{r['function']}-{r['transform_or_method']}-{r['phi']}",
)
def test_testthat_threshold_vectors(row: dict) -> None:
    """The values pinned in surveillance's tests/testthat/test-farringtonFlexible.R."""
    fit = np.log(5) if row["pred_fit"] == "log(5)" else float(row["pred_fit"])
    se = np.log(2) if row["pred_se_fit"] == "log(2)" else float(row["pred_se_fit"])
    method = row["transform_or_method"]
    if row["function"] == "farrington":
        got = threshold_farrington(fit, se, row["phi"], method, row["alpha"], row["y"])
    else:
        got = threshold_noufaily(fit, se, row["phi"], row["alpha"], row["y"], method)
    expect = [row["lower"], row["upper"], row["prob"], row["score"]]
    np.testing.assert_allclose(np.array(got, dtype=float), expect, rtol=0, atol=1e-6)


def test_testthat_wrong_exponent_and_weights() -> None:
    """testthat: a wrong exponent is refused; the weights 'checked by hand'."""
    with pytest.raises(ValueError, match="powertrans"):
        threshold_farrington(5, 0.2, 1, "2/88", 0.05, 8)
    assert _weights(np.zeros(10), 0).tolist() == [1.0] * 10
    s = np.array([0.0] * 5 + [2.0] * 5)
    np.testing.assert_allclose(_weights(s, 0), [1.6] * 5 + [0.4] * 5)
