"""Planted-outbreak evaluation: detection within a few periods and false alarm rates.

Synthetic weekly count series (seeded) are generated without outbreaks, to measure each
detector's false alarm rate (share of evaluated, computable periods with an alarm), and
with one planted outbreak of known start, to measure the share of outbreaks detected by an
alarm at the start period or within the next ``within`` periods. Where a detector has a
nominal false alarm probability, the observed count of false alarms is compared with
binomial bounds around it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy.stats import binom, norm
from scipy.stats import t as student_t

from surveillance.ears import ears
from surveillance.farrington import farrington_flexible
from surveillance.glrnb import glrnb
from surveillance.series import DetectorResult

__all__ = [
    "Detector",
    "EvaluationRow",
    "Scenario",
    "default_detectors",
    "ears_false_alarm_probability",
    "evaluate",
    "format_table",
    "simulate",
]


@dataclass(frozen=True)
class Scenario:
    """Synthetic weekly Poisson series: mean ``level * exp(amplitude * sin(2 pi t / 52))``.

    The last ``eval_periods`` periods are evaluated. An outbreak adds, from its start
    for ``outbreak_length`` periods, Poisson(``outbreak_size * sqrt(mean)``) cases.
    """

    n_series: int = 40
    n_years: int = 6
    freq: int = 52
    level: float = 10.0
    amplitude: float = 0.4
    eval_periods: int = 52
    outbreak_length: int = 3
    outbreak_size: float = 3.0
    seed: int = 20261206


@dataclass(frozen=True)
class Detector:
    """A detector to evaluate: ``run(counts, range_)`` and its nominal false alarm rate."""

    name: str
    run: Callable[[np.ndarray, range], DetectorResult]
    nominal: float | None = None  # per-period false alarm probability, if one applies
    nominal_is_upper_bound: bool = False  # True: the rate may be lower (discrete quantiles)
    contiguous: bool = False  # True: evaluate the whole period (the chart has memory)


@dataclass(frozen=True)
class EvaluationRow:
    """One detector's results on a scenario."""

    detector: str
    detected: float  # share of planted outbreaks with an alarm within `within` periods
    false_alarm_rate: float  # share of computable periods with an alarm, no outbreak
    false_alarms: int
    periods: int  # computable periods without outbreak
    nominal: float | None
    bounds: tuple[int, int] | None  # binomial 99.9 % bounds on false_alarms, if nominal
    within_bounds: bool | None


def simulate(scenario: Scenario, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One series without outbreak: (counts, means)."""
    n = scenario.n_years * scenario.freq
    t = np.arange(n)
    mu = scenario.level * np.exp(scenario.amplitude * np.sin(2 * np.pi * t / scenario.freq))
    return rng.poisson(mu).astype(float), mu


def ears_false_alarm_probability(method: str, alpha: float, baseline: int = 7) -> float:
    """EARS C1/C2's false alarm probability on independent normal counts of constant mean.

    ``(y - mean) / sd`` of a new value against ``baseline`` past ones is
    ``sqrt(1 + 1/baseline)`` times a Student t with ``baseline - 1`` df, so the rate is
    ``P(T > z(1 - alpha) / sqrt(1 + 1/baseline))``, well above alpha: EARS's nominal
    level assumes a known sd.
    """
    if method not in ("C1", "C2"):
        raise ValueError("the closed form holds for C1 and C2")
    return float(student_t.sf(norm.ppf(1 - alpha) / np.sqrt(1 + 1 / baseline), baseline - 1))


def default_detectors(freq: int = 52) -> list[Detector]:
    """EARS C1/C2/C3, Farrington (original and Noufaily) and the GLR CUSUM, R's defaults."""
    noufaily = {
        "no_periods": 10,
        "b": 4,
        "w": 3,
        "past_weeks_not_included": 26,
        "p_threshold_trend": 1,
    }
    return [
        Detector(
            "EARS C1",
            lambda y, r: ears(y, "C1", range_=r),
            ears_false_alarm_probability("C1", 0.001),
        ),
        Detector(
            "EARS C2",
            lambda y, r: ears(y, "C2", range_=r),
            ears_false_alarm_probability("C2", 0.001),
        ),
        Detector("EARS C3", lambda y, r: ears(y, "C3", range_=r)),
        Detector(
            "Farrington",
            lambda y, r: farrington_flexible(
                y, freq, range_=r, b=4, weights_threshold=1, alpha=0.01
            ),
        ),
        Detector(
            "Noufaily",
            lambda y, r: farrington_flexible(
                y, freq, range_=r, threshold_method="nbPlugin", alpha=0.01, **noufaily
            ),
            nominal=0.01,
            nominal_is_upper_bound=True,
        ),
        Detector(
            "GLR Poisson", lambda y, r: glrnb(y, freq=freq, range_=r, alpha=0.0), contiguous=True
        ),
    ]


def _false_alarms(det: Detector, series: list[np.ndarray], eval_range: range) -> tuple[int, int]:
    alarms = periods = 0
    for y in series:
        res = det.run(y, eval_range)
        alarms += int(res.alarm[res.computable].sum())
        periods += int(res.computable.sum())
    return alarms, periods


def _detections(
    det: Detector, planted: list[tuple[np.ndarray, int]], eval_range: range, within: int
) -> float:
    hits = 0
    for y, start in planted:
        window = range(start, start + within + 1)
        res = det.run(y, eval_range if det.contiguous else window)
        hits += bool(res.alarm[np.isin(res.index, list(window))].any())
    return hits / len(planted)


def evaluate(
    scenario: Scenario | None = None,
    detectors: list[Detector] | None = None,
    *,
    within: int = 2,
    null_scenario: Scenario | None = None,
) -> list[EvaluationRow]:
    """Detection share and false alarm rate per detector on seeded synthetic series.

    ``scenario`` makes the series with one planted outbreak each (start uniform in the
    evaluated year, leaving room for ``within``); ``null_scenario`` (default: the same)
    the series without outbreak. An outbreak is detected if an alarm falls on its start
    period or one of the next ``within`` periods.
    """
    scenario = scenario or Scenario()
    null_scenario = null_scenario or scenario
    detectors = detectors or default_detectors(scenario.freq)
    rng = np.random.default_rng(scenario.seed)
    null = [simulate(null_scenario, rng)[0] for _ in range(null_scenario.n_series)]
    n = scenario.n_years * scenario.freq
    eval_range = range(n - scenario.eval_periods, n)
    planted = []
    for _ in range(scenario.n_series):
        y, mu = simulate(scenario, rng)
        start = int(rng.integers(eval_range.start, n - within))
        end = min(start + scenario.outbreak_length, n)
        y[start:end] += rng.poisson(scenario.outbreak_size * np.sqrt(mu[start:end]))
        planted.append((y, start))
    n_null = null_scenario.n_years * null_scenario.freq
    null_range = range(n_null - null_scenario.eval_periods, n_null)
    rows = []
    for det in detectors:
        alarms, periods = _false_alarms(det, null, null_range)
        rows.append(_row(det, _detections(det, planted, eval_range, within), alarms, periods))
    return rows


def _row(det: Detector, detected: float, alarms: int, periods: int) -> EvaluationRow:
    bounds = within = None
    if det.nominal is not None and periods:
        lo = 0 if det.nominal_is_upper_bound else int(binom.ppf(0.0005, periods, det.nominal))
        bounds = (lo, int(binom.ppf(0.9995, periods, det.nominal)))
        within = bounds[0] <= alarms <= bounds[1]
    return EvaluationRow(
        detector=det.name,
        detected=detected,
        false_alarm_rate=alarms / periods if periods else float("nan"),
        false_alarms=alarms,
        periods=periods,
        nominal=det.nominal,
        bounds=bounds,
        within_bounds=within,
    )


def format_table(rows: list[EvaluationRow]) -> str:
    """The evaluation as a plain-text table."""
    head = (
        f"{'detector':<12} {'detected':>8} {'FAR':>7} {'alarms/periods':>15} "
        f"{'nominal':>8} {'99.9% bounds':>13}"
    )
    lines = [head, "-" * len(head)]
    for r in rows:
        nominal = "-" if r.nominal is None else f"{r.nominal:.4f}"
        bounds = "-" if r.bounds is None else f"{r.bounds[0]}-{r.bounds[1]}"
        lines.append(
            f"{r.detector:<12} {r.detected:>8.2f} {r.false_alarm_rate:>7.4f} "
            f"{f'{r.false_alarms}/{r.periods}':>15} {nominal:>8} {bounds:>13}"
        )
    return "\n".join(lines)
