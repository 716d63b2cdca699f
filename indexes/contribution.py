"""Each indicator's contribution to a unit's index score.

* ``arithmetic``: the score is :math:`s = \\sum_i W_{d(i)} w_{i|d} x_i = \\sum_i v_i x_i`
  with the effective weights :math:`v_i`, so the contribution of indicator i is exactly
  :math:`c_i = v_i x_i` (points of the score, summing to the score) and its share
  :math:`c_i / s` (summing to 1) — the decomposition the OECD/JRC Handbook and COINr's
  results tables use for additive indexes.
* ``geometric``: :math:`\\ln s = \\sum_i v_i \\ln x_i`, so the share is
  :math:`v_i \\ln x_i / \\ln s` (the log decomposition; values are >= 1 after the
  pipeline's [1, 100] rescaling, so shares are non-negative) and the points
  :math:`s \\cdot` share sum to the score. If :math:`s = 1` the shares are the weights.
* ``copeland``: not decomposable by indicator. Shares are those of the weighted normalised
  values :math:`v_i x_i / \\sum_j v_j x_j` (an explanation of what is high for the unit,
  not of its Copeland score), and points are share times score.

References
----------
OECD/JRC (2008). Handbook on Constructing Composite Indicators, §1.10 (decomposition).
https://doi.org/10.1787/9789264043466-en
"""

from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = ["contributions"]


def contributions(
    normalised: pd.DataFrame, effective_weights: pd.Series, score: pd.Series, method: str
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Contributions (in score points) and contribution shares of each indicator.

    Parameters
    ----------
    normalised : pandas.DataFrame
        The aggregated normalised values (rows = units, columns = indicators).
    effective_weights : pandas.Series
        Effective indicator weights (sum to 1), indexed by indicator code.
    score : pandas.Series
        The index score of each unit.
    method : {"arithmetic", "geometric", "copeland"}

    Returns
    -------
    points : pandas.DataFrame
        Rows sum to the score.
    shares : pandas.DataFrame
        Rows sum to 1. Where the decomposition would divide by zero (a score of 0, all
        values 1 under geometric, all values 0 under Copeland) the shares are the weights.
    """
    v = effective_weights[normalised.columns].to_numpy(dtype=float)
    x = normalised.to_numpy(dtype=float)
    s = score.to_numpy(dtype=float)[:, None]
    weights = np.broadcast_to(v, x.shape)
    with np.errstate(divide="ignore", invalid="ignore"):
        if method == "arithmetic":
            points = x * v
            shares = np.where(s == 0, weights, points / s)
        elif method == "geometric":
            logs = np.log(x) * v
            total = logs.sum(axis=1, keepdims=True)
            shares = np.where(total == 0, weights, logs / total)
            points = shares * s
        elif method == "copeland":
            weighted = x * v
            total = weighted.sum(axis=1, keepdims=True)
            shares = np.where(total == 0, weights, weighted / total)
            points = shares * s
        else:
            raise ValueError(f"unknown aggregation {method!r}")
    index, columns = normalised.index, normalised.columns
    return pd.DataFrame(points, index=index, columns=columns), pd.DataFrame(
        shares, index=index, columns=columns
    )
