"""Imputation: none names every missing cell; mean / median by hand."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from indexes import IndexDataError
from indexes.impute import impute


@pytest.fixture
def gappy() -> pd.DataFrame:
    return pd.DataFrame(
        {"a": [1.0, np.nan, 3.0, 8.0], "b": [2.0, 4.0, np.nan, np.nan]},
        index=["A", "B", "C", "D"],
    )


def test_none_names_every_missing_cell(gappy):
    before = gappy.copy()
    with pytest.raises(IndexDataError) as info:
        impute(gappy, "none")
    message = str(info.value)
    assert "3 missing value(s)" in message
    for cell in ("('B', a)", "('C', b)", "('D', b)"):
        assert cell in message
    pd.testing.assert_frame_equal(gappy, before)


def test_mean_and_median_by_hand(gappy):
    before = gappy.copy()
    imputed, notes = impute(gappy, "mean")
    # a: mean(1, 3, 8) = 12 / 3 = 4;  b: mean(2, 4) = 3
    assert imputed.loc["B", "a"] == 4.0
    assert imputed.loc["C", "b"] == imputed.loc["D", "b"] == 3.0
    assert [(n.unit, n.indicator, n.value) for n in notes] == [
        ("B", "a", 4.0),
        ("C", "b", 3.0),
        ("D", "b", 3.0),
    ]
    imputed, _ = impute(gappy, "median")
    # a: median(1, 3, 8) = 3;  b: median(2, 4) = 3
    assert imputed.loc["B", "a"] == 3.0
    pd.testing.assert_frame_equal(gappy, before)  # the input is never modified


def test_complete_table_passes_and_empty_indicator_fails(gappy):
    complete = gappy.fillna(0.0)
    out, notes = impute(complete, "none")
    assert notes == ()
    pd.testing.assert_frame_equal(out, complete)
    with pytest.raises(IndexDataError, match="without any value"):
        impute(gappy.assign(c=np.nan), "mean")
    with pytest.raises(ValueError, match="unknown imputation"):
        impute(gappy, "knn")
