"""The result every detector returns: one row per evaluated period.

A detector evaluates the periods ``index`` (0-based positions in the input series). For
each it reports the observed count, the expected count, the upper threshold, the
detector's own score, whether it raises an alarm, and, when no threshold could be
computed, why not (``reason``). Arrays are aligned with ``index``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

#: Reasons a period cannot be evaluated (``DetectorResult.reason``).
TOO_LITTLE_HISTORY = "too little history"
ALL_ZERO = "all zero"
NO_VARIANCE = "no variance in the baseline"
TOO_FEW_CASES = "too few cases"
NO_CONVERGENCE = "model did not converge"


@dataclass(frozen=True)
class DetectorResult:
    """Per evaluated period: observed, expected, threshold, score, alarm, computability.

    ``expected``, ``upperbound`` and ``score`` are NaN where the detector does not define
    them (EARS has no model expectation beyond the baseline mean; GLR has no expectation
    under the alternative) or where the period is not computable. ``alarm`` is False where
    not computable; ``computable`` is False exactly where ``reason`` is not None.
    """

    detector: str
    index: np.ndarray  # int, 0-based positions in the input series
    observed: np.ndarray  # float (counts; NaN for missing)
    expected: np.ndarray
    upperbound: np.ndarray
    score: np.ndarray
    alarm: np.ndarray  # bool
    reason: list[str | None]
    extra: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def computable(self) -> np.ndarray:
        """Boolean mask: True where a threshold could be computed."""
        return np.array([r is None for r in self.reason], dtype=bool)

    def __len__(self) -> int:
        """Number of evaluated periods."""
        return len(self.index)

    def rows(self) -> list[dict]:
        """The result as a list of plain dicts (one per evaluated period), NaN as None."""

        def num(x: float) -> float | None:
            return None if np.isnan(x) else float(x)

        out = []
        for i, pos in enumerate(self.index):
            row = {
                "index": int(pos),
                "observed": num(self.observed[i]),
                "expected": num(self.expected[i]),
                "upperbound": num(self.upperbound[i]),
                "score": num(self.score[i]),
                "alarm": bool(self.alarm[i]),
                "computable": self.reason[i] is None,
                "reason": self.reason[i],
            }
            for name, values in self.extra.items():
                row[name] = num(values[i])
            out.append(row)
        return out


def as_counts(counts) -> np.ndarray:
    """Counts as a 1-D float array (NaN = missing); refuse negative or fractional counts."""
    y = np.asarray(counts, dtype=float)
    if y.ndim != 1:
        raise ValueError("a count series must be one-dimensional")
    finite = y[np.isfinite(y)]
    if (finite < 0).any() or (finite != np.round(finite)).any():
        raise ValueError("counts must be non-negative integers")
    return y


def evaluation_range(n: int, first: int, range_: range | list[int] | None) -> np.ndarray:
    """0-based positions to evaluate: ``range_`` if given, else ``first .. n - 1``."""
    if range_ is None:
        return np.arange(first, n)
    idx = np.sort(np.asarray(list(range_), dtype=int))
    if len(idx) and (idx[0] < 0 or idx[-1] >= n):
        raise ValueError("the evaluation range lies outside the series")
    return idx
