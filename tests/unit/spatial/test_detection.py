"""Does Gi* find planted hot spots, and stay quiet on spatial randomness?

Synthetic Poisson counts on a 40 x 40 queen lattice: three 4 x 4 patches at four times the
background rate. Recall counts the planted cells flagged hot at 95 %; false positives
count flagged cells more than one cell away from any patch (Gi* neighbourhoods overlap the
patch edges, so the ring around a patch is neither a hit nor a false alarm).
"""

from __future__ import annotations

import numpy as np
import pytest
from libpysal.weights import lat2W

from spatial import gi_star

SIDE = 40
PATCHES = [(5, 5), (20, 28), (30, 8)]  # top-left corners of the planted 4 x 4 patches


def _planted() -> tuple[np.ndarray, np.ndarray]:
    planted = np.zeros((SIDE, SIDE), dtype=bool)
    ring = np.zeros((SIDE, SIDE), dtype=bool)
    for r, c in PATCHES:
        planted[r : r + 4, c : c + 4] = True
        ring[max(r - 1, 0) : r + 5, max(c - 1, 0) : c + 5] = True
    return planted.ravel(), ring.ravel()


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_planted_clusters_are_found(seed):
    rng = np.random.default_rng(seed)
    planted, ring = _planted()
    counts = rng.poisson(np.where(planted, 8.0, 2.0)).astype(float)
    result = gi_star(counts, lat2W(SIDE, SIDE, rook=False))
    hot = result.bin >= 2
    recall = hot[planted].mean()
    false_positive_rate = hot[~ring].mean()
    assert recall >= 0.9, recall
    assert false_positive_rate <= 0.02, false_positive_rate


@pytest.mark.parametrize("seed", [4, 5, 6])
def test_spatial_randomness_yields_few_significant_cells(seed):
    counts = np.random.default_rng(seed).poisson(3.0, SIDE * SIDE).astype(float)
    w = lat2W(SIDE, SIDE, rook=False)
    plain = gi_star(counts, w)
    with_fdr = gi_star(counts, w, fdr=True)
    # At 95 % about 5 % of cells are flagged by chance; FDR removes nearly all of them.
    assert (np.abs(plain.bin) >= 2).mean() <= 0.08
    assert (np.abs(with_fdr.bin) >= 2).mean() <= 0.01
