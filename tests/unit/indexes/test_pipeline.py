"""compute_index end to end: hand-checked scores and the invariants of issue 4."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
from numpy.testing import assert_allclose

from indexes import IndexDataError, IndexDefinitionError, compute_index
from tests.unit.indexes.conftest import RTOL, external


def test_result_by_hand(raw, definition):
    before = raw.copy()
    result = compute_index(raw, definition)
    pd.testing.assert_frame_equal(raw, before)  # the input is never modified
    assert (result.name, result.version) == ("test-index", 3)
    # min-max 0-100: homicide (x - 5) / 25; robbery (x - 20) / 90; police (9 - x) / 7
    n = result.normalised
    assert_allclose(n.loc["BZ"], [100.0, 100.0, 600 / 7], rtol=RTOL)
    assert_allclose(n.loc["SC"], [0.0, 0.0, 0.0], atol=1e-12)
    # lethal = homicide; property = (robbery + police) / 2; index = (lethal + property) / 2
    bz = (100.0 + (100.0 + 600 / 7) / 2) / 2
    assert_allclose(result.score.loc["BZ"], bz, rtol=RTOL)
    assert result.rank.loc["BZ"] == 1 and result.rank.loc["SC"] == 6
    assert_allclose(result.contributions.sum(axis=1), result.score, rtol=RTOL)
    assert_allclose(result.contribution_shares.sum(axis=1), 1.0, rtol=RTOL)
    assert_allclose(result.weights.to_numpy(), [0.5, 0.25, 0.25])
    table = result.table()
    assert table.index[0] == "BZ" and table.iloc[0]["top_1"] == "homicide"
    assert list(result.dimension_scores.columns) == ["lethal", "property"]


def test_result_is_frozen_and_rebuilds_from_its_parameters(raw, definition):
    result = compute_index(raw, definition)
    with pytest.raises(dataclasses.FrozenInstanceError):
        result.score = None  # type: ignore[misc]
    again = compute_index(raw, result.parameters["definition"])
    pd.testing.assert_series_equal(again.score, result.score)
    assert result.parameters["normalisation"] == {
        "method": "minmax",
        "low": 0.0,
        "high": 100.0,
        "shifts": {},
    }


def test_direction_minus_one_flips_minmax(raw, definition):
    definition["indicators"][2]["direction"] = 1
    up = compute_index(raw, definition).normalised["police"]
    definition["indicators"][2]["direction"] = -1
    down = compute_index(raw, definition).normalised["police"]
    assert_allclose(up + down, 100.0, rtol=RTOL)


def test_equal_weight_arithmetic_minmax_is_the_mean_of_the_normalised_columns(raw):
    definition = {
        "name": "flat",
        "indicators": [external(c) for c in raw.columns],
        "treatment": "none",
    }
    result = compute_index(raw, definition)
    assert_allclose(result.score, result.normalised.mean(axis=1), rtol=RTOL)
    assert result.dimension_scores.shape == (6, 0)


def test_monotonicity_raising_a_plus_indicator_never_lowers_the_score(raw, definition):
    base = compute_index(raw, definition).score
    for unit in raw.index:
        for bump in (0.5, 5.0, 100.0):
            higher = raw.copy()
            higher.loc[unit, "homicide"] += bump
            assert compute_index(higher, definition).score.loc[unit] >= base.loc[unit] - 1e-12


def test_geometric_uses_minmax_1_to_100(raw, definition):
    definition["aggregation"] = "geometric"
    result = compute_index(raw, definition)
    assert result.normalised.min().min() == 1.0 and result.normalised.max().max() == 100.0
    assert result.parameters["normalisation"]["low"] == 1.0
    w = result.weights.to_numpy()
    assert_allclose(result.score, np.exp(np.log(result.normalised.to_numpy()) @ w), rtol=RTOL)
    assert_allclose(result.contributions.sum(axis=1), result.score, rtol=RTOL)
    # zscore + geometric: the COIN Tool shift x - min + 1 makes each column positive
    definition["normalisation"] = "zscore"
    shifted = compute_index(raw, definition)
    assert_allclose(shifted.normalised.min(), 1.0, rtol=RTOL)
    assert set(shifted.parameters["normalisation"]["shifts"]) == set(raw.columns)


def test_copeland_index(raw, definition):
    definition["aggregation"] = "copeland"
    result = compute_index(raw, definition)
    # BZ is first on homicide and on the property dimension: it wins every pair.
    assert result.score.loc["BZ"] == 5.0 and result.rank.loc["BZ"] == 1
    assert_allclose(result.contributions.sum(axis=1), result.score, rtol=RTOL)


def test_missing_values_and_imputation(raw, definition):
    gappy = raw.copy()
    gappy.loc["CY", "robbery"] = np.nan
    gappy.loc["OW", "police"] = np.nan
    with pytest.raises(IndexDataError) as info:
        compute_index(gappy, definition)
    assert "('CY', robbery)" in str(info.value) and "('OW', police)" in str(info.value)
    definition["imputation"] = "median"
    result = compute_index(gappy, definition)
    assert result.imputed.loc["CY", "robbery"] == 70.0  # median(110, 90, 40, 20, 70)
    assert len(result.imputation_notes) == 2


def test_treatment_notes_and_transform(raw, definition):
    skewed = (
        pd.concat([raw] * 3, keys=["a", "b", "c"])
        .reset_index(drop=True)
        .set_axis([f"u{i}" for i in range(18)])
    )
    skewed.loc["u0", "homicide"] = 1000.0
    definition["treatment"] = "jrc"
    # 18 units: fewer than the rule needs by itself (20), so nothing is treated ...
    untreated = compute_index(skewed, definition)
    assert {n.action for n in untreated.treatment_notes} == {"below_min_units"}
    assert untreated.treated.equals(untreated.raw)
    assert untreated.parameters["treatment"]["applied"] is False
    # ... unless the definition asks for it on fewer units.
    definition["treatment"] = {"method": "jrc", "min_units": 18}
    result = compute_index(skewed, definition)
    assert result.parameters["treatment"]["applied"] is True
    notes = {n.indicator: n for n in result.treatment_notes}
    assert notes["homicide"].action == "winsorised"
    assert notes["homicide"].winsorised_units == ("u0",)
    assert result.treated.loc["u0", "homicide"] == 30.0
    assert result.raw.loc["u0", "homicide"] == 1000.0
    definition["indicators"][0]["transform"] = "log1p"
    logged = compute_index(skewed, definition)
    assert_allclose(logged.imputed["homicide"], np.log1p(skewed["homicide"]))


def test_bad_tables_and_definitions(raw, definition):
    with pytest.raises(IndexDataError, match="missing from the table: police"):
        compute_index(raw.drop(columns="police"), definition)
    with pytest.raises(IndexDataError, match="duplicate unit ids"):
        compute_index(pd.concat([raw, raw.iloc[:1]]), definition)
    with pytest.raises(IndexDataError, match="infinite"):
        compute_index(raw.replace(30.0, np.inf), definition)
    definition["normalisation"] = "softmax"
    with pytest.raises(IndexDefinitionError, match=r"normalisation\.method"):
        compute_index(raw, definition)


def test_without_classes_the_same_scores_and_ranks_and_no_class(raw, definition):
    full = compute_index(raw, definition)
    ranks_only = compute_index(raw, definition, classes=False)
    pd.testing.assert_series_equal(ranks_only.score, full.score)
    pd.testing.assert_series_equal(ranks_only.rank, full.rank)
    assert full.classes.notna().all() and ranks_only.classes.isna().all()
    assert ranks_only.class_bins == () and ranks_only.parameters["classes"]["k"] == 0
