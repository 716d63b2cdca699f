"""Ranks (1 = highest score, ties min), rank change and map classes."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from indexes.rank import classify, rank_change, rank_scores, shared_ranks


def test_rank_one_is_the_highest_score_and_ties_share_the_minimum():
    score = pd.Series([10.0, 30.0, 30.0, 5.0, np.nan], index=list("ABCDE"))
    ranks = rank_scores(score)
    # 30, 30 -> 1, 1; 10 -> 3 (a gap after the tie); 5 -> 4; no score -> no rank
    assert ranks.tolist()[:4] == [3, 1, 1, 4]
    assert ranks.isna().tolist() == [False] * 4 + [True]
    assert str(ranks.dtype) == "Int64"


def test_rank_change_is_previous_minus_current():
    current = pd.Series([1, 2, 3], index=list("ABC"), dtype="Int64")
    previous = pd.Series([3, 2], index=list("AB"), dtype="Int64")
    change = rank_change(current, previous)
    assert change.loc["A"] == 2 and change.loc["B"] == 0 and pd.isna(change.loc["C"])


@pytest.mark.parametrize("method", ["quantiles", "natural_breaks", "equal_interval"])
def test_classes_are_1_to_k_from_low_to_high(method):
    score = pd.Series([1.0, 2.0, 3.0, 10.0, 11.0, 12.0, 50.0, 51.0], index=list("ABCDEFGH"))
    result = classify(score, method, k=3)
    assert result.k == 3
    assert result.classes.min() == 1 and result.classes.max() == 3
    assert result.classes["A"] == 1 and result.classes["H"] == 3
    assert (np.diff(result.classes.to_numpy(dtype=int)) >= 0).all()


def test_equal_interval_by_hand_and_fewer_distinct_values_than_k():
    score = pd.Series([0.0, 10.0, 40.0, 60.0, 100.0])
    # k = 4 intervals of 25: (0, 25], (25, 50], (50, 75], (75, 100]
    result = classify(score, "equal_interval", k=4)
    assert result.bins == (25.0, 50.0, 75.0, 100.0)
    assert result.classes.tolist() == [1, 1, 2, 3, 4]
    two = classify(pd.Series([1.0, 1.0, 2.0]), "quantiles", k=5)
    assert two.k == 2


def test_overlapping_rank_bands_share_a_range_of_ranks():
    units = list("ABCDEFG")
    nominal = pd.Series([1, 2, 3, 4, 5, 6, np.nan], index=units)
    # A and B both 1-2 (the data cannot order them); C alone; D-E-F chained (D overlaps E,
    # E overlaps F, D not F); G has no rank.
    low = pd.Series([1, 1, 3, 4, 4.6, 5.5, np.nan], index=units)
    high = pd.Series([2, 2, 3, 4.6, 5.5, 6, np.nan], index=units)
    shared = shared_ranks(nominal, low, high)
    assert shared["first"].tolist()[:6] == [1, 1, 3, 4, 4, 4]
    assert shared["last"].tolist()[:6] == [2, 2, 3, 6, 6, 6]
    assert shared["group"].tolist()[:6] == [0, 0, 1, 2, 2, 2]
    assert shared.loc["G"].isna().all() and str(shared["first"].dtype) == "Int64"


def test_a_band_that_misses_its_nominal_rank_and_tied_scores():
    # B's band (3-3) excludes its nominal rank 2, which still counts: B overlaps C.
    shared = shared_ranks(
        pd.Series([1, 2, 3], index=list("ABC")),
        pd.Series([1.0, 3.0, 2.0], index=list("ABC")),
        pd.Series([1.0, 3.0, 3.0], index=list("ABC")),
    )
    assert shared["first"].tolist() == [1, 2, 2] and shared["last"].tolist() == [1, 3, 3]
    # Equal scores (both nominal 1) with collapsed bands still share 1-2.
    tied = shared_ranks(pd.Series([1, 1, 3]), pd.Series([1, 1, 3]), pd.Series([1, 1, 3]))
    assert tied["first"].tolist() == [1, 1, 3] and tied["last"].tolist() == [2, 2, 3]
