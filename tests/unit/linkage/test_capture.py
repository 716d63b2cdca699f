"""Multiple-systems estimates against hand computations and a published three-list data set."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest
from numpy.testing import assert_allclose
from scipy.optimize import brentq

from linkage.capture import chapman, loglinear, overlap_cells
from linkage.model import LinkageInputError

HAV = Path(__file__).parents[2] / "data" / "linkage" / "hav_taiwan_1995.csv"


def _hav() -> dict[str, int]:
    table = pd.read_csv(HAV, comment="#", dtype={"pattern": str})
    return dict(zip(table["pattern"], table["count"], strict=True))


def test_chapman_equals_the_hand_computed_value() -> None:
    # police 100 deaths, forensic 80, 40 on both:
    # N = 101 * 81 / 41 - 1 = 8181 / 41 - 1 = 198.5366
    # var = 101 * 81 * 60 * 40 / (41^2 * 42) = 19634400 / 70602 = 278.1000
    est = chapman(100, 80, 40)
    assert_allclose(est.total, 8181 / 41 - 1, rtol=1e-12)
    assert_allclose(est.total, 198.53659, atol=1e-4)
    assert est.observed == 140
    assert_allclose(est.models[0]["se"] ** 2, 19634400 / 70602, rtol=1e-12)
    # Chao's log-normal interval around f0 = 58.537, by hand:
    f0 = 8181 / 41 - 1 - 140
    c = math.exp(1.959963985 * math.sqrt(math.log(1 + (19634400 / 70602) / f0**2)))
    assert_allclose([est.lower, est.upper], [140 + f0 / c, 140 + f0 * c], rtol=1e-9)
    assert 140 < est.lower < est.total < est.upper


def test_chapman_refuses_impossible_counts() -> None:
    with pytest.raises(LinkageInputError):
        chapman(10, 5, 6)


def test_hav_cells_match_the_published_list_totals() -> None:
    cells = _hav()
    # Chao et al. (2001) / CARE1::HAV: P 135, Q 122, E 126 cases, 271 after linkage
    assert sum(n for p, n in cells.items() if p[0] == "1") == 135
    assert sum(n for p, n in cells.items() if p[1] == "1") == 122
    assert sum(n for p, n in cells.items() if p[2] == "1") == 126
    assert sum(cells.values()) == 271


def test_hav_loglinear_models_reproduce_independent_references() -> None:
    cells = _hav()
    est = loglinear(cells)
    models = {m["model"]: m for m in est.models}
    assert len(models) == 8

    # all two-way interactions: the closed form of Fienberg (1972) for the missing cell,
    # z000 = z111 z100 z010 z001 / (z110 z101 z011)
    z000 = 28 * 69 * 55 * 63 / (21 * 17 * 18)
    assert_allclose(models["[12,13,23]"]["total"], 271 + z000, rtol=1e-6)
    assert_allclose(models["[12,13,23]"]["total"], 1312.76, atol=0.01)

    # independence: the Mt estimator, Darroch's (1958) equation 1 - M/N = prod(1 - n_j/N)
    darroch = brentq(lambda n: (1 - 271 / n) - (1 - 135 / n) * (1 - 122 / n) * (1 - 126 / n),
                     272, 10_000)  # fmt: skip
    assert_allclose(models["independence"]["total"], darroch, rtol=1e-6)
    assert_allclose(models["independence"]["total"], 388.48, atol=0.01)

    # a single interaction has a closed form too: with [12], list 3 is independent of
    # (1, 2), so z000 = z001 * (cells off list 3 seen by 1 or 2) / (cells on list 3 and 1 or 2)
    z000_12 = 63 * (69 + 55 + 21) / (17 + 18 + 28)
    assert_allclose(models["[12]"]["total"], 271 + z000_12, rtol=1e-6)

    # BIC picks the model with all interactions here (deviance 0 vs 24 for independence)
    assert est.criterion == "bic"
    assert est.model == "[12,13,23]"
    assert est.lower < est.total < est.upper
    assert est.lower > 271


def test_profile_interval_of_the_independence_model_is_sensible() -> None:
    # with a single model forced by AIC on cells generated under independence, the
    # interval must cover the truth and the estimate
    n, p = 1000, (0.5, 0.4, 0.3)
    cells = {}
    for pattern in ("100", "010", "001", "110", "101", "011", "111"):
        prob = 1.0
        for on, pj in zip(pattern, p, strict=True):
            prob *= pj if on == "1" else 1 - pj
        cells[pattern] = round(n * prob)
    est = loglinear(cells, criterion="aic")
    assert est.lower <= n <= est.upper
    assert est.upper - est.lower < 200


def test_overlap_cells_from_consolidated_sources() -> None:
    consolidated = pd.DataFrame(
        {"sources": ["forensic+health+police", "police", "health+police", "forensic", "police"]}
    )
    assert overlap_cells(consolidated) == {"111": 1, "100": 2, "101": 1, "010": 1}
    assert overlap_cells(consolidated, ("police", "health")) == {"11": 2, "10": 2}


def test_loglinear_refuses_cells_without_overlap_and_is_json_safe() -> None:
    with pytest.raises(LinkageInputError, match="at least one death"):
        loglinear({"100": 5, "010": 3})
    with pytest.raises(LinkageInputError, match="do not overlap"):
        loglinear({"100": 5, "010": 3, "001": 2})
    with pytest.raises(LinkageInputError, match="unknown capture patterns"):
        loglinear({"200": 1})
    sparse = loglinear({"100": 5, "010": 3, "001": 2, "110": 1})
    assert sparse.observed == 11
    as_json = json.loads(json.dumps(sparse.as_dict(), allow_nan=False))
    assert as_json["observed"] == 11
