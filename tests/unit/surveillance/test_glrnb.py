"""GLR CUSUM equals R surveillance::glrnb (1.20.3) on the reference series."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from surveillance.glrnb import glrnb
from tests.unit.surveillance.conftest import ATOL, DATA, r_alarm, reference, series

CONFIGS = {
    "nb_value": {"alpha": 0.2},
    "nb_window": {"alpha": 0.2, "m": 26, "c_arl": 4.0},
    "pois_value": {"alpha": 0.0},
    "pois_cases": {"alpha": 0.0, "ret": "cases"},
    "pois_window_cases": {"alpha": 0.0, "ret": "cases", "m": 10},
    "nb_estimated": {},
    "nb_cases": {"alpha": 0.2, "ret": "cases"},
    "nb_window_cases": {"alpha": 0.2, "ret": "cases", "m": 26},
    "pois_dec": {"alpha": 0.0, "direction": "dec"},
    "nb_dec": {"alpha": 0.2, "direction": "dec"},
}
SERIES = series()
REF = reference("glrnb")


@pytest.mark.parametrize("config", CONFIGS)
@pytest.mark.parametrize("name", SERIES)
def test_equals_r(name: str, config: str) -> None:
    """mu0, alpha, the upper bound (statistic or cases) and the alarms equal glrnb's."""
    ref = REF[(REF.series == name) & (REF.detector == config)].sort_values("t")
    y, freq = SERIES[name]
    res = glrnb(y, freq=freq, range_=range(2 * freq, len(y)), **{"c_arl": 5.0, **CONFIGS[config]})
    np.testing.assert_array_equal(res.index + 1, ref["t"].to_numpy())
    np.testing.assert_allclose(res.extra["alpha"], ref["alpha"].to_numpy(float), rtol=1e-6)
    np.testing.assert_allclose(res.expected, ref["mu0"].to_numpy(float), rtol=1e-9)
    np.testing.assert_allclose(res.upperbound, ref["upperbound"].to_numpy(float), rtol=0, atol=ATOL)
    np.testing.assert_array_equal(res.alarm, r_alarm(ref["alarm"]))
    assert res.alarm.any() or config.endswith("_dec")  # downward charts: no alarm here


def test_poisson_by_hand() -> None:
    """A jump from mu0 = 2 to 8 counts: GLR after one period is 8 log 4 - 6, alarm at once."""
    res = glrnb([2, 2, 2, 8], freq=4, range_=range(0, 4), mu0=[2.0] * 4, alpha=0.0)
    assert res.score[:3] == pytest.approx([0.0, 0.0, 0.0])
    assert res.score[3] == pytest.approx(8 * np.log(4) - 6, abs=1e-12)
    assert res.alarm.tolist() == [False, False, False, True]


def test_bad_options() -> None:
    """Options R refuses, or this port lacks, are refused with a message."""
    y = np.arange(30.0)
    with pytest.raises(ValueError, match="direction"):
        glrnb(y, freq=4, direction="up")
    with pytest.raises(ValueError, match="alpha must be given"):
        glrnb(y, freq=4, mu0=np.ones(22))
    with pytest.raises(ValueError, match="cases"):
        glrnb(y, freq=4, alpha=0.5, ret="cases", direction="dec")


def test_testthat_vector() -> None:
    """surveillance's tests/testthat/test-algo.glrnb.R: NB chart with known mu0, alpha 0.2."""
    ref = pd.read_csv(DATA / "testthat_glrnb.csv")
    x, mu0 = ref["observed"].to_numpy(float), ref["mu0"].to_numpy(float)
    res = glrnb(x, freq=52, range_=range(len(x)), mu0=mu0, alpha=0.2, c_arl=5.0)
    # the package pins 7 significant digits and compares with tolerance 1e-6
    np.testing.assert_allclose(res.upperbound, ref["pinned"], rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(res.upperbound, ref["upperbound"], rtol=0, atol=ATOL)
    np.testing.assert_array_equal(res.alarm, r_alarm(ref["alarm"]))
    assert res.alarm.sum() == 1 and res.index[res.alarm][0] == 113
