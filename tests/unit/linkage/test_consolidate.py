"""The consolidated register: sources present, manners, disagreements and the rules."""

from __future__ import annotations

from datetime import date

import numpy as np
import pandas as pd
import pytest

from linkage.consolidate import consolidate
from linkage.model import CONSOLIDATED_COLUMNS, RECORD_COLUMNS, LinkageInputError


def _record(record_id: str, source: str, **fields: object) -> dict[str, object]:
    row: dict[str, object] = dict.fromkeys(RECORD_COLUMNS)
    row.update(record_id=record_id, source=source, lon=np.nan, lat=np.nan)
    row.update(fields)
    return row


@pytest.fixture
def records() -> pd.DataFrame:
    return pd.DataFrame(
        [
            # one death seen by all three, classified differently
            _record("p1", "police", manner="homicide", death_date=date(2024, 7, 2),
                    lon=-88.2, lat=17.5, unit_code="BZ"),
            _record("f1", "forensic", manner="undetermined", death_date=date(2024, 7, 3),
                    lon=-88.3, lat=17.4, unit_code="BZ"),
            _record("h1", "health", manner="homicide", death_date=date(2024, 7, 3),
                    unit_code="CY"),
            # seen by police and health, same manner; only health has a place
            _record("p2", "police", manner="accident", death_date=date(2024, 8, 1)),
            _record("h2", "health", manner="accident", death_date=date(2024, 7, 31),
                    unit_code="OW"),
            # police only, no manner recorded
            _record("p3", "police", death_date=date(2024, 9, 9), unit_code="SC"),
            # two police records in one cluster (an analyst accepted them) and forensic
            _record("p4", "police", manner="suicide", death_date=date(2024, 10, 1)),
            _record("p5", "police", manner="accident", death_date=date(2024, 10, 1)),
            _record("p6", "police", manner="accident", death_date=date(2024, 10, 2)),
            _record("f4", "forensic", death_date=date(2024, 10, 1)),
        ]
    )  # fmt: skip


@pytest.fixture
def clusters() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "record_id": ["p1", "f1", "h1", "p2", "h2", "p3", "p4", "p5", "p6", "f4"],
            "cluster_id": ["f1", "f1", "f1", "h2", "h2", "p3", "f4", "f4", "f4", "f4"],
        }
    )


def test_one_row_per_death_with_sources_and_rules(records, clusters) -> None:
    deaths = consolidate(records, clusters).set_index("cluster_id")
    assert list(deaths.reset_index().columns) == list(CONSOLIDATED_COLUMNS)
    assert len(deaths) == 4

    all_three = deaths.loc["f1"]
    assert all_three["sources"] == "forensic+health+police"
    assert all_three["n_sources"] == 3
    assert (all_three["in_police"], all_three["in_forensic"], all_three["in_health"]) == (
        True,
        True,
        True,
    )
    assert all_three["manner_police"] == "homicide"
    assert all_three["manner_forensic"] == "undetermined"
    assert all_three["manners_disagree"]
    assert (all_three["manner"], all_three["manner_from"]) == ("undetermined", "forensic")
    assert all_three["death_date"] == date(2024, 7, 3)  # the health registry's date
    # the police point, and the police unit with it (not the health registry's CY)
    assert (all_three["lon"], all_three["lat"], all_three["unit_code"]) == (-88.2, 17.5, "BZ")
    assert all_three["place_from"] == "police"

    two = deaths.loc["h2"]
    assert two["sources"] == "health+police"
    assert not two["manners_disagree"]
    assert (two["manner"], two["manner_from"]) == ("accident", "police")  # no forensic record
    assert two["manner_forensic"] is None
    assert two["death_date"] == date(2024, 7, 31)
    assert np.isnan(two["lon"])
    assert (two["unit_code"], two["place_from"]) == ("OW", "health")

    alone = deaths.loc["p3"]
    assert alone["sources"] == "police"
    assert alone["manner"] is None and alone["manner_from"] is None
    assert not alone["manners_disagree"]
    assert alone["record_ids"] == ["p3"]

    dup = deaths.loc["f4"]
    assert dup["same_source_duplicates"]
    assert dup["n_records"] == 4
    # police: accident twice, suicide once -> accident; forensic recorded none -> police wins
    assert dup["manner_police"] == "accident"
    assert (dup["manner"], dup["manner_from"]) == ("accident", "police")
    assert dup["manners_disagree"]  # suicide vs accident within the police records
    assert dup["death_date"] == date(2024, 10, 1)  # forensic's, health absent


def test_a_record_without_a_cluster_is_an_error(records, clusters) -> None:
    with pytest.raises(LinkageInputError, match="without a cluster"):
        consolidate(records, clusters[clusters["record_id"] != "p3"])
