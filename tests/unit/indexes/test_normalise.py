"""Normalisers against hand-computed values; directions flip; bounds 0 / 100."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from numpy.testing import assert_allclose

from indexes import IndexDataError
from indexes.normalise import normalise, normalise_column
from tests.unit.indexes.conftest import RTOL


def test_minmax_by_hand_and_direction_flip():
    x = np.array([2.0, 4.0, 6.0, 10.0])
    # (x - 2) / (10 - 2) * 100
    assert_allclose(normalise_column(x, 1, "minmax"), [0.0, 25.0, 50.0, 100.0], rtol=RTOL)
    # direction -1: y = -x, (y + 10) / 8 * 100
    assert_allclose(normalise_column(x, -1, "minmax"), [100.0, 75.0, 50.0, 0.0], rtol=RTOL)
    # COINr l_u = c(1, 100): (x - 2) / 8 * 99 + 1
    assert_allclose(
        normalise_column(x, 1, "minmax", low=1, high=100), [1.0, 25.75, 50.5, 100.0], rtol=RTOL
    )


def test_minmax_bounds_are_exactly_0_and_100():
    rng = np.random.default_rng(3)
    frame = pd.DataFrame(rng.lognormal(size=(50, 4)), columns=list("abcd"))
    out = normalise(frame, {"a": 1, "b": -1, "c": 1, "d": -1})
    assert (out.min() == 0.0).all() and (out.max() == 100.0).all()
    assert out["a"].idxmax() == frame["a"].idxmax()
    assert out["b"].idxmax() == frame["b"].idxmin()


def test_zscore_rank_percentile_by_hand():
    # mean 2, sd (n - 1) 1
    assert_allclose(normalise_column(np.array([1.0, 2.0, 3.0]), 1, "zscore"), [-1, 0, 1])
    x = np.array([10.0, 20.0, 20.0, 30.0])
    # ties take the minimum rank: 1, 2, 2, 4
    assert_allclose(normalise_column(x, 1, "rank"), [1, 2, 2, 4])
    assert_allclose(normalise_column(x, -1, "rank"), [4, 2, 2, 1])
    # percentile: 100 (rank - 1) / (n - 1) = 0, 33.3, 33.3, 100
    assert_allclose(normalise_column(x, 1, "percentile"), [0, 100 / 3, 100 / 3, 100], rtol=RTOL)


def test_goalposts_and_distance_to_best_by_hand():
    x = np.array([-10.0, 25.0, 60.0])
    # (x - 0) / (50 - 0), clipped to [0, 1], * 100
    assert_allclose(normalise_column(x, 1, "goalposts", goalposts=(0, 50)), [0, 50, 100])
    assert_allclose(normalise_column(x, -1, "goalposts", goalposts=(0, 50)), [100, 50, 0])
    y = np.array([5.0, 10.0, 20.0])
    assert_allclose(normalise_column(y, 1, "distance_to_best"), [25, 50, 100])  # 100 x / max
    assert_allclose(normalise_column(y, -1, "distance_to_best"), [100, 50, 25])  # 100 min / x
    with pytest.raises(IndexDataError, match="positive"):
        normalise_column(np.array([0.0, 1.0]), -1, "distance_to_best")


def test_constant_indicator_is_refused_by_name_and_input_untouched():
    frame = pd.DataFrame({"a": [1.0, 2.0], "flat": [3.0, 3.0]})
    before = frame.copy()
    with pytest.raises(IndexDataError, match="'flat' is constant"):
        normalise(frame, {})
    pd.testing.assert_frame_equal(frame, before)
    with pytest.raises(ValueError, match="unknown normalisation"):
        normalise_column(np.array([1.0, 2.0]), 1, "softmax")
