"""Weights, aggregation (arithmetic, geometric, Copeland) and contributions by hand."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from numpy.testing import assert_allclose

from indexes import IndexDataError, IndexDefinitionError
from indexes.aggregate import (
    aggregate,
    arithmetic_mean,
    copeland,
    geometric_mean,
    outranking_matrix,
    shift_positive,
)
from indexes.contribution import contributions
from indexes.spec import load_definition
from indexes.weights import equal_weights, hierarchy, normalise_weights, perturb_weights
from tests.unit.indexes.conftest import RTOL, external


def test_weights_normalise_and_hierarchy():
    assert_allclose(normalise_weights({"a": 1, "b": 3}).to_numpy(), [0.25, 0.75])
    assert_allclose(equal_weights(["a", "b", "c", "d"]).to_numpy(), [0.25] * 4)
    with pytest.raises(IndexDefinitionError, match="positive"):
        normalise_weights({"a": 1, "b": 0})
    definition = load_definition(
        {
            "name": "x",
            "indicators": [
                external("a", dimension="x", weight=1),
                external("b", dimension="x", weight=3),
                external("c", dimension="y", weight=2),
            ],
            "dimensions": [{"code": "x", "weight": 1}, {"code": "y", "weight": 3}],
        }
    )
    h = hierarchy(definition)
    # within x: 1/4, 3/4; within y: 1;  dimensions: 1/4, 3/4
    assert_allclose(h.within.to_numpy(), [0.25, 0.75, 1.0])
    assert_allclose(h.dimension_weights.to_numpy(), [0.25, 0.75])
    # effective: 1/16, 3/16, 3/4 (sum 1)
    assert_allclose(h.effective.to_numpy(), [0.0625, 0.1875, 0.75])
    assert_allclose(h.effective.sum(), 1.0)


def test_perturbed_weights_stay_within_the_band_and_sum_to_one():
    w = np.array([0.2, 0.3, 0.5])
    rng = np.random.default_rng(0)
    out = perturb_weights(w, 0.25, rng.random((1000, 3)))
    assert_allclose(out.sum(axis=1), 1.0)
    # before renormalisation each weight is within +-25 %: the ratio of two is within 0.75/1.25
    ratio = out[:, 0] / out[:, 2] / (0.2 / 0.5)
    assert ratio.min() >= 0.75 / 1.25 - 1e-12 and ratio.max() <= 1.25 / 0.75 + 1e-12
    assert_allclose(perturb_weights(w, 0.0, rng.random((5, 3))), np.tile(w, (5, 1)))


def test_arithmetic_and_geometric_by_hand():
    x = np.array([[20.0, 80.0], [50.0, 50.0]])
    # 0.25 * 20 + 0.75 * 80 = 65;  50
    assert_allclose(arithmetic_mean(x, np.array([1.0, 3.0])), [65.0, 50.0], rtol=RTOL)
    # equal weights: arithmetic (1 + 100) / 2 = 50.5 vs (10 + 10) / 2 = 10;
    # geometric sqrt(1 * 100) = 10 = sqrt(10 * 10): the imbalance is penalised
    y = np.array([[1.0, 100.0], [10.0, 10.0]])
    assert_allclose(arithmetic_mean(y, np.ones(2)), [50.5, 10.0], rtol=RTOL)
    assert_allclose(geometric_mean(y, np.ones(2)), [10.0, 10.0], rtol=RTOL)
    # weighted: 4^(1/4) 16^(3/4) = 2^(1/2 + 3) = 2^3.5
    assert_allclose(geometric_mean(np.array([[4.0, 16.0]]), np.array([1.0, 3.0])), [2**3.5])
    with pytest.raises(IndexDataError, match="positive"):
        geometric_mean(np.array([[0.0, 1.0]]), np.ones(2))


def test_copeland_by_hand_is_non_compensatory():
    #      i1  i2   i3        A vs B: A wins i1, i2 -> e_AB = 2/3 > 1/2: A +1, B -1
    # A    10  10    0        A vs C: A wins i1, i2 -> A +1, C -1
    # B     9   9  100        B vs C: B wins all three -> B +1, C -1
    # C     0   0   50        Copeland: A = 2, B = 0, C = -2
    # while the arithmetic mean ranks B (39.3) above C (16.7) above A (6.7).
    x = np.array([[10.0, 10.0, 0.0], [9.0, 9.0, 100.0], [0.0, 0.0, 50.0]])
    w = np.ones(3)
    e = outranking_matrix(x, w)
    assert_allclose(e, [[0, 2 / 3, 2 / 3], [1 / 3, 0, 1], [1 / 3, 0, 0]], rtol=RTOL)
    assert_allclose(copeland(x, w), [2.0, 0.0, -2.0])
    assert_allclose(arithmetic_mean(x, w), [20 / 3, 118 / 3, 50 / 3], rtol=RTOL)
    # weights change the majority: with i3 weighing 3 of 5 the unit ahead on i3 wins each
    # pair: B beats A (e_BA = 3/5) and C (all), C beats A (3/5) -> A = -2, B = 2, C = 0
    assert_allclose(copeland(x, np.array([1.0, 1.0, 3.0])), [-2.0, 2.0, 0.0])
    # a 50/50 split is a draw (0); equal values count half to each side
    assert_allclose(copeland(np.array([[1.0, 0.0], [0.0, 1.0]]), np.ones(2)), [0.0, 0.0])
    assert_allclose(copeland(np.array([[1.0, 1.0], [1.0, 0.0]]), np.ones(2)), [1.0, -1.0])


def test_copeland_blocks_match_the_full_matrix(monkeypatch):
    import indexes.aggregate as module

    rng = np.random.default_rng(5)
    x = rng.integers(0, 4, size=(37, 3)).astype(float)
    w = np.array([0.2, 0.3, 0.5])
    full = copeland(x, w)
    monkeypatch.setattr(module, "_BLOCK_CELLS", 7)
    assert_allclose(copeland(x, w), full)
    e = outranking_matrix(x, w)
    assert_allclose(e + e.T, 1.0 - np.eye(37), atol=1e-12)


def test_hierarchical_aggregation_and_contributions_sum_to_the_score():
    definition = load_definition(
        {
            "name": "x",
            "indicators": [
                external("a", dimension="x"),
                external("b", dimension="x", weight=3),
                external("c", dimension="y"),
            ],
            "dimensions": [{"code": "x", "weight": 1}, {"code": "y", "weight": 3}],
        }
    )
    h = hierarchy(definition)
    frame = pd.DataFrame(
        {"a": [100.0, 0.0], "b": [0.0, 100.0], "c": [40.0, 80.0]}, index=["P", "Q"]
    )
    result = aggregate(frame, h, "arithmetic")
    # x: P = .25(100) + .75(0) = 25, Q = 75;  index: P = .25(25) + .75(40) = 36.25,
    # Q = .25(75) + .75(80) = 78.75
    assert_allclose(result.dimension_scores["x"], [25.0, 75.0])
    assert_allclose(result.dimension_scores["y"], [40.0, 80.0])
    assert_allclose(result.score, [36.25, 78.75])
    points, shares = contributions(frame, h.effective, result.score, "arithmetic")
    # P: a 1/16 * 100 = 6.25, b 0, c 3/4 * 40 = 30 -> 36.25
    assert_allclose(points.loc["P"], [6.25, 0.0, 30.0])
    assert_allclose(points.sum(axis=1), result.score, rtol=RTOL)
    assert_allclose(shares.sum(axis=1), 1.0, rtol=RTOL)
    # geometric: the log decomposition also sums to the score
    positive = frame + 1.0
    geo = aggregate(positive, h, "geometric")
    points, _ = contributions(positive, h.effective, geo.score, "geometric")
    assert_allclose(points.sum(axis=1), geo.score, rtol=RTOL)
    # collapsed: exp(sum v_i log x_i) with the effective weights
    assert_allclose(geo.score, np.exp(np.log(positive.to_numpy()) @ h.effective.to_numpy()))


def test_shift_positive_is_the_coin_tool_shift():
    frame = pd.DataFrame({"z": [-1.5, 0.0, 1.5], "p": [2.0, 3.0, 4.0]})
    shifted, shifts = shift_positive(frame)
    # x - min + 1
    assert_allclose(shifted["z"], [1.0, 2.5, 4.0])
    assert shifts == {"z": 2.5}
    assert_allclose(shifted["p"], frame["p"])
