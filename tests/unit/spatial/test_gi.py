"""Gi* against Columbus and afcon reference values and against esda called directly."""

from __future__ import annotations

import warnings

import esda
import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal
from scipy import stats

from spatial import AnalysisError, gi_star
from spatial.inference import confidence_bins
from spatial.weights import binary_with_self, from_sparse
from tests.unit.spatial.conftest import ATOL, RTOL, lattice_with_island, random_counts

# gi_star hands esda a libpysal W when given one, and a libpysal Graph when given
# SpatialWeights: both must give the reference values (as esda's own tests do).
WEIGHTS_TYPES = pytest.mark.parametrize("weights_type", ["W", "SpatialWeights"])


def _weights(w, weights_type: str):
    return w if weights_type == "W" else from_sparse(w.sparse, w.id_order)


@WEIGHTS_TYPES
def test_columbus_z_equals_esda_and_spdep(columbus_queen, columbus_table, weights_type) -> None:
    result = gi_star(columbus_table["CRIME"].to_numpy(), _weights(columbus_queen, weights_type))
    # Computed table: esda 2.9.0 G_Local(star=True, transform="B") and spdep 1.2-7
    # localG(include.self(nb)), both on columbus_queen.gal.
    assert_allclose(result.z, columbus_table["esda_GiStar_z"], rtol=RTOL, atol=ATOL)
    assert_allclose(result.z, columbus_table["spdep_GiStar_z"], rtol=RTOL, atol=ATOL)
    assert_allclose(result.p, 2 * stats.norm.sf(np.abs(columbus_table["esda_GiStar_z"])), rtol=1e-8)
    expected_bins = confidence_bins(columbus_table["esda_GiStar_z"].to_numpy(), result.p)
    assert_array_equal(result.bin, expected_bins)
    assert set(np.unique(result.bin)) >= {-1, 3}  # hot and cold cells exist in Columbus
    assert_array_equal(
        result.n_neighbours, [len(columbus_queen.neighbors[i]) + 1 for i in columbus_queen.id_order]
    )
    assert result.p_sim is None and result.seed is None


@WEIGHTS_TYPES
def test_columbus_p_sim_equals_esda_with_the_same_seed(
    columbus_queen, columbus_table, weights_type
) -> None:
    w = _weights(columbus_queen, weights_type)
    result = gi_star(columbus_table["CRIME"].to_numpy(), w, permutations=9999, seed=12345)
    # Computed table: esda 2.9.0 G_Local(..., permutations=9999, seed=12345); esda stores
    # p_sim in float32, hence the 1e-7 tolerance.
    assert_allclose(result.p_sim, columbus_table["esda_GiStar_p_sim"], atol=1e-7)
    assert result.seed == 12345


def test_caller_weights_untouched(columbus_queen, columbus_table) -> None:
    before = {i: list(columbus_queen.weights[i]) for i in columbus_queen.id_order}
    diagonal = columbus_queen.sparse.diagonal().copy()
    gi_star(columbus_table["CRIME"].to_numpy(), columbus_queen, permutations=99, seed=1)
    assert columbus_queen.transform == "O"
    assert {i: list(columbus_queen.weights[i]) for i in columbus_queen.id_order} == before
    assert_array_equal(columbus_queen.sparse.diagonal(), diagonal)


def test_afcon_published_gi_star(afcon, afcon_paper_nb) -> None:
    data, published = afcon
    result = gi_star(data["totcon"].to_numpy(), afcon_paper_nb)
    # Published: spdep docs, localmoran.md @6ed4b46, localG(totcon, include.self(paper.nb)),
    # printed to 3 decimals.
    assert_allclose(result.z, published["GiStar_z"], atol=5e-4, rtol=0)


@WEIGHTS_TYPES
def test_random_data_equals_esda_directly(weights_type) -> None:
    w = lattice_with_island(9, 9)
    y = random_counts(w.n, seed=11)
    ours = gi_star(y, _weights(w, weights_type), permutations=199, seed=42)
    direct_w = binary_with_self(w)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        direct = esda.G_Local(
            y,
            direct_w,
            transform="B",
            star=True,
            permutations=199,
            seed=42,
            keep_simulations=False,
            n_jobs=1,
        )
    assert_allclose(ours.z, direct.Zs, rtol=RTOL, atol=0)
    assert_allclose(ours.p, 2 * direct.p_norm, rtol=RTOL, atol=0)
    not_island = ours.n_neighbours > 1
    assert_allclose(ours.p_sim[not_island], direct.p_sim[not_island], rtol=1e-6)


def test_seeds() -> None:
    w = lattice_with_island(7, 7)
    y = random_counts(w.n, seed=2)
    first = gi_star(y, w, permutations=99, seed=5)
    again = gi_star(y, w, permutations=99, seed=5)
    other = gi_star(y, w, permutations=99, seed=6)
    assert_array_equal(first.p_sim, again.p_sim)
    assert not np.array_equal(np.nan_to_num(first.p_sim), np.nan_to_num(other.p_sim))
    assert_array_equal(first.z, other.z)  # permutations never change z
    drawn = gi_star(y, w, permutations=99)
    assert drawn.seed is not None
    assert_array_equal(gi_star(y, w, permutations=99, seed=drawn.seed).p_sim, drawn.p_sim)
    assert gi_star(y, w).p_sim is None


@WEIGHTS_TYPES
def test_island_does_not_crash(weights_type) -> None:
    w = lattice_with_island(6, 6)
    y = random_counts(w.n, seed=4)
    y[-1] = 50.0  # a large value on the island must not become a hot spot
    result = gi_star(y, _weights(w, weights_type), permutations=99, seed=1, fdr=True)
    assert result.n_neighbours[-1] == 1
    assert result.bin[-1] == 0
    assert np.isnan(result.p_sim[-1])
    assert np.isfinite(result.z).all()


def test_fdr_changes_only_bins() -> None:
    w = lattice_with_island(12, 12)
    y = random_counts(w.n, seed=8)
    plain = gi_star(y, w)
    corrected = gi_star(y, w, fdr=True)
    assert_array_equal(plain.z, corrected.z)
    assert_array_equal(plain.p, corrected.p)
    assert (corrected.bin != 0).sum() <= (plain.bin != 0).sum()
    assert (np.abs(corrected.bin) <= np.abs(plain.bin)).all()
    assert corrected.fdr and not plain.fdr


@pytest.mark.parametrize(
    "y",
    [np.ones(5), np.array([1.0, 2.0, np.nan] + [1.0] * 34), np.array([-1.0] + [1.0, 2.0] * 18)],
    ids=["length", "nan", "negative"],
)
def test_invalid_values(y: np.ndarray) -> None:
    w = lattice_with_island(6, 6)
    with pytest.raises(AnalysisError):
        gi_star(y, w)


def test_constant_values_refused() -> None:
    with pytest.raises(AnalysisError, match="equal"):
        gi_star(np.full(37, 3.0), lattice_with_island(6, 6))


def test_warm_up_runs() -> None:
    import spatial

    assert spatial.warm_up() >= 0.0


def test_repeated_runs_on_cached_weights_stay_identical() -> None:
    # SpatialWeights keeps the Graph it hands esda; esda's permutations must not alter it.
    lattice = lattice_with_island(8, 8)
    w = from_sparse(lattice.sparse, lattice.id_order)
    y = random_counts(w.n, seed=9)
    first = gi_star(y, w, permutations=99, seed=3)
    for _ in range(2):
        again = gi_star(y, w, permutations=99, seed=3)
        assert_array_equal(again.z, first.z)
        assert_array_equal(again.p_sim, first.p_sim)
    assert_array_equal(w.star_graph.sparse.diagonal(), np.ones(w.n))
