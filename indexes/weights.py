"""Weights of the hierarchy indicators → dimensions → index.

Weights in a definition are relative: they are normalised to sum to 1 within each group
(the indicators of one dimension; the dimensions of the index), as COINr's ``a_amean``
does (``w / sum(w)``). The *effective* weight of an indicator in the index is its
dimension's weight times its weight within the dimension; effective weights sum to 1.
Equal weights are the default (every weight 1).

References
----------
OECD/JRC (2008). Handbook on Constructing Composite Indicators, §1.6.
https://doi.org/10.1787/9789264043466-en

Becker, W. et al. (2022). COINr. JOSS 7(78), 4567 — ``R/aggregate.R`` (``a_amean``),
``R/sensitivity.R`` (``get_noisy_weights``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from indexes import IndexDefinitionError
from indexes.spec import IndexDefinition

__all__ = [
    "Hierarchy",
    "equal_weights",
    "hierarchy",
    "normalise_weights",
    "perturb_weights",
]


def normalise_weights(weights: Mapping[str, float] | pd.Series) -> pd.Series:
    """Scale positive weights to sum to 1.

    Raises
    ------
    indexes.IndexDefinitionError
        If there are no weights, or one is not a positive finite number.
    """
    series = pd.Series(weights, dtype=float)
    if series.empty:
        raise IndexDefinitionError("no weights given")
    bad = series[~(np.isfinite(series) & (series > 0))]
    if not bad.empty:
        listed = ", ".join(f"{k}={v}" for k, v in bad.items())
        raise IndexDefinitionError(f"weights must be positive and finite: {listed}")
    return series / series.sum()


def equal_weights(codes: Sequence[str]) -> pd.Series:
    """Equal weights ``1 / len(codes)``."""
    return normalise_weights(dict.fromkeys(codes, 1.0))


@dataclass(frozen=True)
class Hierarchy:
    """The normalised weights of a definition.

    Attributes
    ----------
    membership : pandas.Series
        Dimension code of each indicator (indexed by indicator code, definition order).
        An index without dimensions has a single implicit dimension ``"index"``.
    within : pandas.Series
        Weight of each indicator within its dimension (sums to 1 per dimension).
    dimension_weights : pandas.Series
        Weight of each dimension in the index (sums to 1).
    has_dimensions : bool
        Whether the definition declares dimensions.
    """

    membership: pd.Series
    within: pd.Series
    dimension_weights: pd.Series
    has_dimensions: bool

    @property
    def effective(self) -> pd.Series:
        """Effective indicator weights ``W_d * w_i|d`` (sum to 1)."""
        return self.within * self.membership.map(self.dimension_weights).to_numpy()

    @property
    def dimensions(self) -> list[str]:
        """Dimension codes in order."""
        return list(self.dimension_weights.index)


def hierarchy(definition: IndexDefinition) -> Hierarchy:
    """Normalised weights of the indicators and dimensions of a definition."""
    codes = definition.indicator_codes
    if definition.dimensions:
        membership = pd.Series([i.dimension for i in definition.indicators], index=codes)
        dims = normalise_weights({d.code: d.weight for d in definition.dimensions})
    else:
        membership = pd.Series("index", index=codes)
        dims = pd.Series({"index": 1.0})
    raw = pd.Series([i.weight for i in definition.indicators], index=codes, dtype=float)
    within = raw / raw.groupby(membership).transform("sum")
    return Hierarchy(membership, within, dims, bool(definition.dimensions))


def perturb_weights(
    weights: np.ndarray, noise: float, uniforms: np.ndarray, groups: np.ndarray | None = None
) -> np.ndarray:
    """Randomly perturbed weights, renormalised to sum to 1 (within each group).

    Parameters
    ----------
    weights : numpy.ndarray, shape (k,)
        Nominal weights.
    noise : float
        Relative amplitude: each weight is multiplied by ``1 + noise * (2u - 1)``, i.e. a
        uniform ±``noise`` deviation (COINr ``get_noisy_weights``' ``NoiseFactor``).
    uniforms : numpy.ndarray, shape (runs, k)
        U(0, 1) draws (drawn by the caller from its seeded generator).
    groups : numpy.ndarray of int, shape (k,), optional
        Group of each weight; normalisation is within groups (default: one group).

    Returns
    -------
    numpy.ndarray, shape (runs, k)
    """
    if not 0 <= noise < 1:
        raise ValueError(f"weight noise must be in [0, 1), got {noise}")
    noisy = weights[None, :] * (1.0 + noise * (2.0 * uniforms - 1.0))
    if groups is None:
        return noisy / noisy.sum(axis=1, keepdims=True)
    out = np.empty_like(noisy)
    for g in np.unique(groups):
        cols = groups == g
        out[:, cols] = noisy[:, cols] / noisy[:, cols].sum(axis=1, keepdims=True)
    return out
