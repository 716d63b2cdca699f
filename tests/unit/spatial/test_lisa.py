"""Local and global Moran's I against Columbus, afcon and esda called directly."""

from __future__ import annotations

import warnings

import esda
import libpysal
import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal
from scipy.stats import norm

import spatial.lisa
from spatial import AnalysisError, global_moran, local_moran
from spatial.weights import plain_copy
from tests.unit.spatial.conftest import (
    ATOL,
    COLUMBUS,
    RTOL,
    lattice_with_island,
    random_counts,
)

QUEEN_W = "queen contiguity (columbus_queen.gal / poly2nb queen), row-standardised"


def test_columbus_local_moran(columbus_queen, columbus_table) -> None:
    result = local_moran(
        columbus_table["CRIME"].to_numpy(), columbus_queen, permutations=9999, seed=12345
    )
    # Computed table: esda 2.9.0 Moran_Local(CRIME, queen, permutations=9999, seed=12345).
    assert_allclose(result.i, columbus_table["esda_Is"], rtol=RTOL, atol=ATOL)
    assert_array_equal(result.quadrant, columbus_table["esda_q"])
    assert_allclose(result.p_sim, columbus_table["esda_p_sim"], rtol=0, atol=1e-12)
    assert_allclose(result.z_sim, columbus_table["esda_z_sim"], rtol=RTOL, atol=ATOL)
    # spdep 1.2-7 localmoran divides by n instead of n - 1 (data README §3).
    n = len(result.i)
    assert_allclose(result.i * n / (n - 1), columbus_table["spdep_Ii"], rtol=RTOL, atol=ATOL)
    significant = columbus_table["esda_p_sim"].to_numpy() < 0.05
    assert_array_equal(result.significant, significant)
    names = {1: "HH", 2: "LH", 3: "LL", 4: "HL"}
    expected = [
        names[q] if s else "not significant"
        for q, s in zip(columbus_table["esda_q"], significant, strict=True)
    ]
    assert result.label.tolist() == expected
    # GeoDa's High-High set at p < 0.05 (data README §3); esda agrees on it.
    hh = set(columbus_table["POLYID"][result.label == "HH"])
    assert hh == {11, 15, 16, 18, 24, 25, 26, 28, 29, 30, 37}


def test_columbus_global_moran(columbus_queen, columbus_table, columbus_published) -> None:
    result = global_moran(columbus_table["CRIME"].to_numpy(), columbus_queen, permutations=0)
    # Published: vincnardelli/seai seai_lab5.md (R/spdep moran.test, queen, style W),
    # printed to 9 decimals (z to 4); the one-sided p printed as 1.139e-08.
    assert_allclose(result.i, columbus_published[("moran_I", QUEEN_W)], atol=5e-10, rtol=0)
    assert_allclose(result.i, 0.500188557, atol=5e-10, rtol=0)
    assert_allclose(result.expected, -0.020833333, atol=5e-10, rtol=0)
    assert_allclose(result.variance_rand, 0.008689289, atol=5e-10, rtol=0)
    assert_allclose(result.z_rand, 5.5894, atol=5e-5, rtol=0)
    assert_allclose(result.p_rand / 2, 1.139e-08, atol=5e-12, rtol=0)
    assert result.p_sim is None


def test_columbus_col_nb_published_normality_and_randomisation(
    columbus_table, columbus_published
) -> None:
    # spdep's COL.nb (Anselin 1988 neighbours): COL.OLD's row names are 1000 + NEIG.
    gal = libpysal.io.open(str(COLUMBUS / "columbus_COL_nb_oldcol.gal")).read()
    ids = [str(1000 + i) for i in columbus_table["NEIG"]]
    w = libpysal.weights.W({i: list(gal.neighbors[i]) for i in ids}, id_order=ids)
    result = global_moran(columbus_table["CRIME"].to_numpy(), w, permutations=0)
    # Published: spdep docs moran.test.md @6ed4b46, style W, 9 decimals (z to 4):
    # moran.test(CRIME, nb2listw(COL.nb)) and the same with randomisation = FALSE.
    col_w = "COL.nb (Anselin 1988 neighbours; columbus_COL_nb_oldcol.gal), style W"
    assert_allclose(result.i, columbus_published[("moran_I", col_w)], atol=5e-10, rtol=0)
    var_rand = columbus_published[("moran_I_variance_randomisation", "COL.nb, style W")]
    var_norm = columbus_published[("moran_I_variance_normality", "COL.nb, style W")]
    assert_allclose([result.variance_rand, result.variance_norm], [var_rand, var_norm], atol=5e-10)
    assert_allclose(
        [result.z_rand, result.z_norm],
        [columbus_published[("moran_I_std_deviate_randomisation", "COL.nb, style W")], 5.6754],
        atol=5e-5,
        rtol=0,
    )
    # Two-sided normal p of each z (spdep prints the one-sided "greater" p).
    assert_allclose(
        [result.p_rand, result.p_norm],
        [2 * norm.sf(result.z_rand), 2 * norm.sf(result.z_norm)],
        rtol=1e-12,
    )
    assert result.p_norm < result.p_rand  # the larger z_norm: Columbus's CRIME is platykurtic


def test_afcon_published_local_moran(afcon, afcon_paper_nb) -> None:
    data, published = afcon
    result = local_moran(data["totcon"].to_numpy(), afcon_paper_nb, permutations=0)
    n = len(result.i)
    # Published: spdep docs localmoran.md @6ed4b46 (style W), 5 significant digits;
    # spdep's Ii = esda's Is * n / (n - 1).
    assert_allclose(result.i * n / (n - 1), published["Ii"], rtol=5e-5, atol=5e-6)
    assert result.p_sim is None and result.z_sim is None
    assert set(result.label) == {"not significant"}


def test_afcon_published_global_moran(afcon, afcon_paper_nb) -> None:
    data, _ = afcon
    result = global_moran(data["totcon"].to_numpy(), afcon_paper_nb, permutations=0)
    # Published in the same spdep page: I = 0.41679563, E = -0.02439024, Var = 0.01029358,
    # z = 4.3485 (data README §4).
    assert_allclose(
        [result.i, result.expected, result.variance_rand],
        [0.41679563, -0.02439024, 0.01029358],
        atol=5e-9,
        rtol=0,
    )
    assert_allclose(result.z_rand, 4.3485, atol=5e-5, rtol=0)


def test_random_data_equals_esda_directly() -> None:
    w = libpysal.weights.lat2W(11, 11, rook=False)
    y = random_counts(w.n, seed=21)
    ours = local_moran(y, w, permutations=199, seed=99)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        kept = esda.Moran_Local(y, plain_copy(w), permutations=199, seed=99, keep_simulations=True)
        lean = esda.Moran_Local(y, plain_copy(w), permutations=199, seed=99, keep_simulations=False)
    assert_allclose(ours.i, kept.Is, rtol=RTOL, atol=0)
    assert_array_equal(ours.quadrant, kept.q)
    assert_array_equal(ours.p_sim, kept.p_sim)
    assert_allclose(ours.z_sim, kept.z_sim, rtol=RTOL, atol=1e-12)
    assert_allclose(ours.p_sim, lean.p_sim, rtol=1e-6)


def test_chunking_does_not_change_the_result(monkeypatch) -> None:
    w = libpysal.weights.lat2W(9, 9, rook=True)
    y = random_counts(w.n, seed=3)
    whole = local_moran(y, w, permutations=99, seed=4)
    monkeypatch.setattr(spatial.lisa, "_SIMULATED_VALUES_PER_CHUNK", 99 * 7)  # 7 units a call
    chunked = local_moran(y, w, permutations=99, seed=4)
    assert_array_equal(whole.p_sim, chunked.p_sim)
    assert_array_equal(whole.z_sim, chunked.z_sim)


def test_global_permutations_equal_esda_with_numpy_seed() -> None:
    w = libpysal.weights.lat2W(8, 8, rook=False)
    y = random_counts(w.n, seed=6)
    state = np.random.get_state()
    try:
        np.random.seed(17)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            direct = esda.Moran(y, plain_copy(w), permutations=99)
    finally:
        np.random.set_state(state)
    ours = global_moran(y, w, permutations=99, seed=17)
    assert ours.p_sim == direct.p_sim
    # Every reported value under esda's name, from esda on the same W and y.
    names = ("z_norm", "z_rand", "p_norm", "p_rand")
    assert_allclose(
        [getattr(ours, k) for k in names], [getattr(direct, k) for k in names], rtol=RTOL
    )
    assert_allclose(
        [ours.i, ours.expected, ours.variance_norm, ours.variance_rand],
        [direct.I, direct.EI, direct.VI_norm, direct.VI_rand],
        rtol=RTOL,
    )
    assert ours.z_norm != ours.z_rand  # two variances, two z
    state_before = np.random.get_state()[1].copy()
    global_moran(y, w, permutations=9, seed=1)
    assert_array_equal(np.random.get_state()[1], state_before)  # global RNG untouched


def test_seeds() -> None:
    w = libpysal.weights.lat2W(7, 7)
    y = random_counts(w.n, seed=9)
    first = local_moran(y, w, permutations=99, seed=3)
    assert_array_equal(first.p_sim, local_moran(y, w, permutations=99, seed=3).p_sim)
    assert first.seed == 3
    none = local_moran(y, w, permutations=0)
    assert none.p_sim is None and none.z_sim is None and none.seed is None


def test_island_is_labelled() -> None:
    w = lattice_with_island(6, 6)
    y = random_counts(w.n, seed=1)
    y[-1] = 40.0
    result = local_moran(y, w, permutations=99, seed=2)
    assert result.label[-1] == "island"
    assert result.quadrant[-1] == 0
    assert np.isnan(result.p_sim[-1]) and np.isnan(result.z_sim[-1])
    assert not result.significant[-1]
    assert (result.label[:-1] != "island").all()
    fdr = local_moran(y, w, permutations=99, seed=2, fdr=True)
    assert fdr.label[-1] == "island"
    moran = global_moran(y, w, permutations=9, seed=1)
    assert np.isfinite(moran.i)


def test_fdr_changes_only_labels() -> None:
    w = libpysal.weights.lat2W(12, 12, rook=False)
    y = random_counts(w.n, seed=12)
    plain = local_moran(y, w, permutations=199, seed=8)
    corrected = local_moran(y, w, permutations=199, seed=8, fdr=True)
    assert_array_equal(plain.i, corrected.i)
    assert_array_equal(plain.p_sim, corrected.p_sim)
    assert_array_equal(plain.z_sim, corrected.z_sim)
    assert not (corrected.significant & ~plain.significant).any()
    labelled = corrected.label != "not significant"
    assert_array_equal(labelled, corrected.significant)


def test_caller_weights_untouched(columbus_queen, columbus_table) -> None:
    before = {i: list(columbus_queen.weights[i]) for i in columbus_queen.id_order}
    local_moran(columbus_table["CRIME"].to_numpy(), columbus_queen, permutations=9, seed=1)
    global_moran(columbus_table["CRIME"].to_numpy(), columbus_queen, permutations=9, seed=1)
    assert columbus_queen.transform == "O"
    assert {i: list(columbus_queen.weights[i]) for i in columbus_queen.id_order} == before


def test_invalid_input(columbus_queen) -> None:
    with pytest.raises(AnalysisError):
        local_moran(np.arange(10.0), columbus_queen)
    with pytest.raises(AnalysisError):
        local_moran(np.arange(49.0), columbus_queen, alpha=0)
    with pytest.raises(AnalysisError):
        global_moran(np.full(49, 2.0), columbus_queen)
