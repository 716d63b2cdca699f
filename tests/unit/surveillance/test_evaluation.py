"""Planted outbreaks: detection within 2 periods, false alarm rates against nominal levels."""

from __future__ import annotations

import pytest

from surveillance.evaluation import (
    Scenario,
    default_detectors,
    ears_false_alarm_probability,
    evaluate,
    format_table,
)

OUTBREAKS = Scenario(n_series=30, level=10.0, amplitude=0.4, outbreak_size=3.0, seed=20261206)


@pytest.fixture(scope="module")
def detectors():
    """The default detectors by name."""
    return {d.name: d for d in default_detectors()}


def test_ears_closed_form() -> None:
    """C1's rate on normal counts is P(t_6 > z(0.999) / sqrt(8/7)), not alpha = 0.001.

    Reference: R ``pt(qnorm(0.999) / sqrt(1 + 1/7), 6, lower.tail = FALSE)``.
    """
    assert ears_false_alarm_probability("C1", 0.001) == pytest.approx(0.0138350744052, abs=1e-12)


def test_ears_false_alarm_rate_on_near_normal_counts(detectors) -> None:
    """On flat Poisson(200) counts, C1/C2 alarm at the t-based rate, within binomial bounds."""
    null = Scenario(n_series=30, level=200.0, amplitude=0.0, seed=11)
    rows = evaluate(
        OUTBREAKS,
        [detectors["EARS C1"], detectors["EARS C2"], detectors["EARS C3"]],
        null_scenario=null,
    )
    print("\n" + format_table(rows))
    for row in rows[:2]:
        assert row.periods == 30 * 52
        assert row.within_bounds, row
    assert rows[2].nominal is None  # C3 has no closed form: reported only
    assert all(row.detected > 0.4 for row in rows)


def test_farrington_and_glr(detectors) -> None:
    """Noufaily's false alarm rate stays under its nominal 1 % (within sampling error);
    the model-based detectors find most planted outbreaks within 2 periods."""
    null = Scenario(n_series=30, level=10.0, amplitude=0.4, seed=12)
    rows = evaluate(
        OUTBREAKS,
        [detectors["Farrington"], detectors["Noufaily"], detectors["GLR Poisson"]],
        null_scenario=null,
    )
    print("\n" + format_table(rows))
    by_name = {row.detector: row for row in rows}
    noufaily = by_name["Noufaily"]
    assert noufaily.nominal == 0.01 and noufaily.periods == 30 * 52
    assert noufaily.within_bounds, noufaily
    for name in ("Farrington", "Noufaily", "GLR Poisson"):
        assert by_name[name].detected >= 0.7, by_name[name]
        assert by_name[name].false_alarm_rate < 0.05, by_name[name]
