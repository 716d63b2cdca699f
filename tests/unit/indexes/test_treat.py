"""The JRC / COINr outlier rule: estimators, winsorisation count and the log fallback."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from numpy.testing import assert_allclose
from scipy import stats

from indexes.treat import (
    MIN_UNITS,
    kurtosis,
    log_ct,
    passes_skew_kurtosis,
    skewness,
    treat,
    treat_indicator,
    treatment_rule,
    winsorise,
)
from tests.unit.indexes.conftest import RTOL


def test_estimators_by_hand():
    # x = (0, 0, 0, 0, 4): mean 0.8, d = (-0.8 x4, 3.2), n = 5
    # sum d^2 = 4(0.64) + 10.24 = 12.8;  sum d^3 = 4(-0.512) + 32.768 = 30.72
    # g1 = sqrt(5) 30.72 / 12.8^1.5 = 1.5;  G1 = 1.5 sqrt(5 * 4) / 3 = sqrt(5)
    # sum d^4 = 4(0.4096) + 104.8576 = 106.496;  r = 5 (106.496) / 12.8^2 = 3.25
    # G2 = ((6)(3.25 - 3) + 6)(4) / ((3)(2)) = 5
    x = np.array([0.0, 0.0, 0.0, 0.0, 4.0])
    assert_allclose(skewness(x), np.sqrt(5.0), rtol=RTOL)
    assert_allclose(kurtosis(x), 5.0, rtol=RTOL)


def test_estimators_are_e1071_type_2():
    # COINr's skew()/kurt() are e1071 type 2 = scipy's bias-corrected estimators
    rng = np.random.default_rng(7)
    x = rng.lognormal(size=40)
    assert_allclose(skewness(x), stats.skew(x, bias=False), rtol=RTOL)
    assert_allclose(kurtosis(x), stats.kurtosis(x, fisher=True, bias=False), rtol=RTOL)
    assert np.isnan(skewness([1.0, 2.0])) and np.isnan(kurtosis([1.0, 2.0, 3.0]))


def test_rule_fails_only_when_both_thresholds_are_reached():
    # COINr check_SkewKurt: pass = |skew| < 2 OR kurt < 3.5
    # x = (0, 0, 0, 0, 4): skew 2.24 >= 2 and kurt 5 >= 3.5 -> fails
    assert passes_skew_kurtosis(np.array([0.0, 0.0, 0.0, 0.0, 4.0])) is False
    assert passes_skew_kurtosis(np.array([0.0, 0.0, 0.0, 0.0, 4.0]), kurtosis_threshold=6) is True
    assert passes_skew_kurtosis(np.array([1.0, 1.0, 1.0, 1.0])) is None


def test_coinr_vignette_example_winsorises_one_point():
    # COINr "Outlier Treatment" vignette: x <- c(1:10, 30, 100)
    # skew 3.063 >= 2, kurt 9.741 >= 3.5 -> fail; skew > 0 -> 100 takes the next value, 30;
    # then skew 1.712 < 2 -> pass after 1 point.
    x = np.r_[np.arange(1.0, 11.0), 30.0, 100.0]
    assert_allclose([skewness(x), kurtosis(x)], [3.0632410342394985, 9.741390834569144], rtol=1e-12)
    result = winsorise(x)
    assert result.n_winsorised == 1
    assert result.high == (11,) and result.low == ()
    assert_allclose(result.values, np.r_[np.arange(1.0, 11.0), 30.0, 30.0])
    assert result.passes is True


def test_winsorisation_count_follows_the_step_by_step_rule():
    # x = 1..30, 100, 200, 300, 400 (34 values)
    # step 1: skew 3.278, kurt 10.556 -> fail; 400 -> 300
    # step 2: still failing; the two 300s -> 200
    # step 3: still failing; the three 200s -> 100 (3 distinct points changed)
    #         now skew 2.096 >= 2 but kurt 3.303 < 3.5 -> pass (the rule needs both)
    x = np.r_[np.arange(1.0, 31.0), 100.0, 200.0, 300.0, 400.0]
    expected = x.copy()
    expected[-3:] = 100.0
    trail = []
    v = x.copy()
    while passes_skew_kurtosis(v) is False:  # an independent, naive loop
        top = v.max()
        v[v == top] = v[v != top].max()
        trail.append(np.count_nonzero(v != x))
    assert trail == [1, 2, 3]
    result = winsorise(x)
    assert result.n_winsorised == 3
    assert_allclose(result.values, expected)
    assert result.high == (31, 32, 33)
    assert_allclose(
        [skewness(result.values), kurtosis(result.values)],
        [2.0956709768484534, 3.3028641279562505],
        rtol=1e-9,
    )
    series = pd.Series(x, index=[f"u{i}" for i in range(x.size)], name="rate")
    treated, note = treat_indicator(series)
    assert note.action == "winsorised" and note.n_winsorised == 3
    assert note.winsorised_units == ("u31", "u32", "u33")
    assert_allclose(treated.to_numpy(), expected)
    assert series.iloc[-1] == 400.0  # input untouched


def test_negative_skew_winsorises_the_low_end():
    x = -np.r_[np.arange(1.0, 11.0), 30.0, 100.0]
    result = winsorise(x)
    assert result.low == (11,) and result.high == ()
    assert result.values[-1] == -30.0


def test_log_fallback_when_five_points_are_not_enough():
    # 100 log-normal quantiles, sigma 2: winsorising 5 points leaves it failing, so COINr
    # discards the winsorisation and applies log_CT to the ORIGINAL values.
    n = 100
    x = np.exp(2.0 * stats.norm.ppf((np.arange(1, n + 1) - 0.5) / n))
    win = winsorise(x, winmax=5)
    assert win.n_winsorised == 5 and win.passes is False
    treated, note = treat_indicator(pd.Series(x, name="rate"))
    # log_CT: log(x - min + 0.01 (max - min))
    expected = np.log(x - x.min() + 0.01 * (x.max() - x.min()))
    assert_allclose(treated.to_numpy(), expected, rtol=RTOL)
    assert_allclose(log_ct(x), expected, rtol=RTOL)
    assert note.action == "log"
    assert note.n_winsorised == 5 and note.winsorised_units == ()
    assert note.passes is True
    assert_allclose(note.skew_after, skewness(expected), rtol=RTOL)


def test_treat_records_every_indicator_and_none_changes_nothing():
    frame = pd.DataFrame(
        {
            "skewed": np.r_[np.arange(1.0, 11.0), 30.0, 100.0],
            "flat": np.arange(12.0),
            "constant": np.ones(12),
        }
    )
    before = frame.copy()
    # 12 units: below the rule's own minimum (20), so it is asked for explicitly.
    treated, notes = treat(frame, "jrc", min_units=12)
    assert [(n.indicator, n.action) for n in notes] == [
        ("skewed", "winsorised"),
        ("flat", "none"),
        ("constant", "skipped"),
    ]
    assert treated["skewed"].max() == 30.0
    pd.testing.assert_frame_equal(frame, before)
    untreated, notes = treat(frame, "none")
    pd.testing.assert_frame_equal(untreated, frame)
    assert notes[0].action == "none" and notes[0].passes is False


def test_the_rule_does_not_fire_below_the_minimum_number_of_units():
    # Six districts, one far above the others (the TVI's situation in 2024): skew 2.43 and
    # kurtosis 5.93 meet the rule, which would winsorise 60 down to 18.
    x = pd.DataFrame({"homicide": [60.0, 18.0, 17.0, 16.5, 16.0, 15.0]}, index=list("ABCDEF"))
    assert passes_skew_kurtosis(x["homicide"].to_numpy()) is False
    treated, (note,) = treat(x, "jrc")
    assert MIN_UNITS == 20 and len(x) < MIN_UNITS
    assert treated.equals(x) and treated is not x
    assert note.action == "below_min_units" and note.passes is False
    assert note.skew_before == note.skew_after == pytest.approx(skewness(x["homicide"]))
    forced, (note,) = treat(x, "jrc", min_units=6)
    assert note.action == "winsorised" and note.winsorised_units == ("A",)
    assert forced.loc["A", "homicide"] == 18.0
    # The ceiling of the skewness of n values is sqrt(n) (one value apart from n - 1 equal
    # ones): at 6 units it is 2.45, barely above the threshold of 2.
    assert skewness(np.r_[np.zeros(5), 1.0]) == pytest.approx(np.sqrt(6))


def test_the_rule_in_words_says_which_rule_applied():
    below = treatment_rule("jrc", 6)
    assert below.startswith("No outlier treatment") and "6 units" in below and "20" in below
    applied = treatment_rule("jrc", 25)
    assert applied.startswith("Outlier treatment by the JRC rule") and "applied" in applied
    assert treatment_rule("none", 100).startswith("No outlier treatment: the definition")
