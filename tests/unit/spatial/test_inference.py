"""Two-sided p, Benjamini-Hochberg and ArcGIS Pro's confidence bins."""

from __future__ import annotations

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal
from scipy import stats

import spatial
from spatial import AnalysisError
from spatial.inference import (
    confidence_bins,
    exact_pseudo_p,
    fdr_mask,
    resolved_seed,
    two_sided_p,
    validated_values,
)


def test_package_exports_resolve() -> None:
    for name in spatial.__all__:
        assert getattr(spatial, name) is not None
    assert issubclass(AnalysisError, ValueError)


def test_two_sided_p() -> None:
    # scipy: the 97.5 % normal quantile is 1.959963984540054 (two-sided 5 %).
    z = np.array([0.0, 1.959963984540054, -1.959963984540054, 2.5758293035489004, np.nan])
    assert_allclose(two_sided_p(z), [1.0, 0.05, 0.05, 0.01, np.nan], rtol=1e-12)


def _bh_reference(p: np.ndarray, alpha: float) -> np.ndarray:
    """Benjamini-Hochberg through scipy's adjusted p-values (scipy >= 1.11)."""
    return stats.false_discovery_control(p, method="bh") <= alpha


@pytest.mark.parametrize("alpha", [0.01, 0.05, 0.10])
def test_fdr_mask_equals_scipy_bh(alpha: float) -> None:
    rng = np.random.default_rng(3)
    p = np.concatenate([rng.uniform(0, 0.02, 40), rng.uniform(0, 1, 400)])
    assert_array_equal(fdr_mask(p, alpha), _bh_reference(p, alpha))


def test_fdr_mask_worked_example() -> None:
    # Benjamini & Hochberg's rule by hand: m = 5, thresholds 0.01, 0.02, 0.03, 0.04, 0.05.
    p = np.array([0.041, 0.001, 0.6, 0.008, 0.039])
    assert fdr_mask(p, 0.05).tolist() == [False, True, False, True, False]
    assert fdr_mask(np.array([0.01, 0.02]), 0.05).tolist() == [True, True]  # no Bonferroni
    assert fdr_mask(np.array([np.nan, 0.01]), 0.05).tolist() == [False, True]
    with pytest.raises(AnalysisError):
        fdr_mask(p, 1.5)


def test_confidence_bins_thresholds() -> None:
    # ArcGIS Pro: |z| > 2.5758 -> 3, > 1.9600 -> 2, > 1.6449 -> 1 (strict), sign of z.
    z = np.array([2.5759, 2.5758, 1.9601, 1.9600, 1.6450, 1.6449, 0.0, -1.7, -2.0, -3.0, np.nan])
    expected = [3, 2, 2, 1, 1, 0, 0, -1, -2, -3, 0]
    assert confidence_bins(z, two_sided_p(z)).tolist() == expected


def test_fdr_bins_keep_the_highest_level_that_passes() -> None:
    rng = np.random.default_rng(5)
    z = np.concatenate([rng.normal(0, 1, 300), [2.7, 3.5, 4.0, -3.0, 2.0]])
    p = two_sided_p(z)
    plain = confidence_bins(z, p)
    corrected = confidence_bins(z, p, fdr=True)
    assert (np.abs(corrected) <= np.abs(plain)).all()
    assert (np.sign(corrected)[corrected != 0] == np.sign(plain)[corrected != 0]).all()
    for level, alpha in ((3, 0.01), (2, 0.05), (1, 0.10)):
        at_least = np.abs(corrected) >= level
        assert_array_equal(at_least, (np.abs(plain) >= level) & fdr_mask(p, alpha))


def test_validated_values_and_seed() -> None:
    assert validated_values([1, 2, 3], 3, "x").dtype == float
    for bad in ([1.0, 2.0], [1.0, np.nan, 2.0], [2.0, 2.0, 2.0], [[1.0, 2.0], [3.0, 4.0]]):
        with pytest.raises(AnalysisError):
            validated_values(bad, 3, "x")
    assert resolved_seed(None, 0) is None
    assert resolved_seed(7, 99) == 7
    assert isinstance(resolved_seed(None, 99), int)
    for bad_seed, perms in ((-1, 99), (2**32, 99), (1.5, 99), (1, -1)):
        with pytest.raises(AnalysisError):
            resolved_seed(bad_seed, perms)


def test_exact_pseudo_p_undoes_float32() -> None:
    k = np.arange(0, 10000)
    p32 = ((k + 1) / 10000).astype(np.float32)
    assert_array_equal(exact_pseudo_p(p32, 9999), (k + 1) / 10000)
