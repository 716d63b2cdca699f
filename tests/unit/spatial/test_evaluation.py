"""PAI (Chainey et al. 2008) and RRI (Levine 2008) of hot spot selections."""

from __future__ import annotations

import math

import numpy as np
import pytest

from spatial import AnalysisError
from spatial.evaluation import (
    compare_selections,
    evaluate_selection,
    pai,
    rri,
    select_top_area,
)


def test_pai_and_rri_against_hand_values():
    # PAI = (n/N) / (a/A) = (30/100) / (5/100) = 6 (Chainey, Tompson and Uhlig 2008)
    assert pai(30, 100, 5.0, 100.0) == pytest.approx(6.0)
    # a selection catching its share of area exactly scores 1
    assert pai(10, 100, 10.0, 100.0) == pytest.approx(1.0)
    # RRI = (n2/n1) / (N2/N1) = (30/40) / (100/200) = 1.5 (Levine 2008)
    assert rri(40, 30, 200, 100) == pytest.approx(1.5)
    assert rri(20, 10, 100, 50) == pytest.approx(1.0)
    assert math.isnan(pai(0, 0, 5.0, 100.0))
    assert math.isnan(rri(0, 3, 10, 10))


def test_invalid_numbers_are_refused():
    with pytest.raises(AnalysisError, match="exceeds"):
        pai(120, 100, 5, 100)
    with pytest.raises(AnalysisError, match="exceeds"):
        pai(10, 100, 150, 100)
    with pytest.raises(AnalysisError, match=">= 0"):
        rri(-1, 3, 10, 10)


def test_evaluate_selection_hand_example():
    # four units of 2 km²; the first two selected
    mask = np.array([True, True, False, False])
    train = np.array([10, 6, 3, 1])
    test = np.array([8, 4, 4, 4])
    result = evaluate_selection(mask, train, test, 2.0)
    assert (result.units, result.selected_area, result.total_area) == (2, 4.0, 8.0)
    assert (result.hits_train, result.total_train) == (16, 20)
    assert (result.hits_test, result.total_test) == (12, 20)
    assert result.hit_rate == pytest.approx(0.6)
    assert result.area_share == pytest.approx(0.5)
    assert result.pai == pytest.approx(0.6 / 0.5)  # 1.2
    assert result.pai_train == pytest.approx(0.8 / 0.5)  # 1.6
    assert result.rri == pytest.approx((12 / 16) / (20 / 20))  # 0.75


def test_perfect_predictor_beats_a_random_one():
    rng = np.random.default_rng(0)
    n = 400
    intensity = np.full(n, 0.2)
    hot = rng.choice(n, 20, replace=False)
    intensity[hot] = 8.0
    train = rng.poisson(intensity)
    test = rng.poisson(intensity)
    areas = np.full(n, 1.0)
    perfect = np.zeros(n, dtype=bool)
    perfect[hot] = True
    random_mask = np.zeros(n, dtype=bool)
    random_mask[rng.choice(n, 20, replace=False)] = True
    frame = compare_selections({"perfect": perfect, "random": random_mask}, train, test, areas)
    assert list(frame["selection"]) == ["perfect", "random"]
    best, chance = frame.iloc[0], frame.iloc[1]
    assert best.area_share == chance.area_share == pytest.approx(0.05)
    assert best.pai > 11  # expected 0.68 / 0.05 = 13.6
    assert chance.pai < 3
    assert best.hit_rate > 0.55  # expected 20 * 8 / (20 * 8 + 380 * 0.2) = 0.68
    assert list(frame["rank_pai"]) == [1, 2]
    assert {"pai", "rri", "hit_rate", "area_share", "hits_test"} <= set(frame.columns)


def test_select_top_area_respects_the_area_budget():
    scores = np.array([5.0, np.nan, 9.0, 1.0, 7.0])
    areas = np.array([1.0, 1.0, 2.0, 1.0, 1.0])
    mask = select_top_area(scores, areas, area_share=0.5)  # budget 3 of 6
    assert mask.tolist() == [False, False, True, False, True]
    assert select_top_area(scores, areas, area_share=0.01).sum() == 1


def test_shapes_are_checked():
    with pytest.raises(AnalysisError, match="units"):
        evaluate_selection(np.array([True, False]), [1, 2, 3], [1, 2, 3], 1.0)
    with pytest.raises(AnalysisError, match="boolean"):
        evaluate_selection(np.array([1, 0, 0]), [1, 2, 3], [1, 2, 3], 1.0)
