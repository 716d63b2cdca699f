"""Shared fixtures of the ``spatial`` unit tests: reference data, tolerances, numba cache."""

from __future__ import annotations

import os
from pathlib import Path

import libpysal
import numpy as np
import pandas as pd
import pytest

REFERENCE = Path(__file__).resolve().parents[2] / "fixtures" / "reference"
COLUMBUS = REFERENCE / "columbus"
AFCON = REFERENCE / "afcon"

#: Values stored with 10 significant digits (the computed Columbus table): relative error
#: of the print at most 5e-10.
RTOL = 1e-9
ATOL = 1e-9

_NUMBA_CACHE = Path(__file__).resolve().parents[3] / ".data" / "numba-cache"


@pytest.fixture(scope="session", autouse=True)
def numba_cache() -> Path:
    """Keep esda's compiled kernels in ``.data/numba-cache`` between test sessions.

    The first session compiles them (15-60 s); later ones load them (a few seconds).
    """
    import numba.core.config

    _NUMBA_CACHE.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("NUMBA_CACHE_DIR", str(_NUMBA_CACHE))
    numba.core.config.CACHE_DIR = os.environ["NUMBA_CACHE_DIR"]
    import spatial

    spatial.enable_numba_cache()
    return Path(os.environ["NUMBA_CACHE_DIR"])


@pytest.fixture(scope="session")
def columbus_table() -> pd.DataFrame:
    """``columbus_crime_local_stats_queen_computed.csv`` (esda 2.9.0, spdep 1.2-7), by POLYID."""
    table = pd.read_csv(COLUMBUS / "columbus_crime_local_stats_queen_computed.csv")
    return table.sort_values("POLYID").reset_index(drop=True)


@pytest.fixture
def columbus_queen() -> libpysal.weights.W:
    """libpysal's ``columbus.gal`` (queen, 236 links), ids "1".."49" in POLYID order."""
    w = libpysal.io.open(str(COLUMBUS / "columbus_queen.gal")).read()
    assert w.id_order == [str(i) for i in range(1, 50)]
    return w


@pytest.fixture(scope="session")
def columbus_published() -> dict[tuple[str, str], float]:
    """Published global values, keyed by (statistic, weights)."""
    table = pd.read_csv(COLUMBUS / "columbus_crime_published_global_reference.csv")
    return {(r.statistic, r.weights): float(r.value) for r in table.itertuples()}


@pytest.fixture(scope="session")
def afcon() -> tuple[pd.DataFrame, pd.DataFrame]:
    """afcon data (spData order) and the published spdep values aligned with it."""
    data = pd.read_csv(AFCON / "afcon_data.csv")
    published = pd.read_csv(AFCON / "afcon_totcon_spdep_docs_published.csv")
    published = published.set_index("region_id").loc[data["region_id"]].reset_index()
    return data, published


@pytest.fixture
def afcon_paper_nb(afcon) -> libpysal.weights.W:
    """spdep ``paper.nb`` as GAL, reordered to the data's order."""
    data, _ = afcon
    gal = libpysal.io.open(str(AFCON / "afcon_paper_nb.gal")).read()
    ids = data["region_id"].tolist()
    neighbours = {i: list(gal.neighbors[i]) for i in ids}
    return libpysal.weights.W(neighbours, id_order=ids, silence_warnings=True)


def lattice_with_island(rows: int = 6, cols: int = 6) -> libpysal.weights.W:
    """A queen lattice plus one unit, ``"island"``, with no neighbour."""
    base = libpysal.weights.lat2W(rows, cols, rook=False)
    neighbours = {str(i): [str(j) for j in base.neighbors[i]] for i in base.id_order}
    neighbours["island"] = []
    return libpysal.weights.W(neighbours, id_order=list(neighbours), silence_warnings=True)


def random_counts(n: int, seed: int = 0) -> np.ndarray:
    """Poisson counts with a planted cluster in the first tenth."""
    rng = np.random.default_rng(seed)
    y = rng.poisson(2.0, n).astype(float)
    y[: max(1, n // 10)] += rng.poisson(6.0, max(1, n // 10))
    return y
