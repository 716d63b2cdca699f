"""The checks of a death file's rows and the normalisation of manners (issue 21), without a
database; and the demo's SYNTHETIC death records."""

from __future__ import annotations

import geopandas as gpd
import pandas as pd
import pytest
import shapely

from app.demo.deaths import FILE_COLUMNS, generate_deaths
from app.demo.incidents import generate_incidents
from app.demo.load import DISTRICTS
from app.services.death_rows import (
    DeathRules,
    hash_name,
    manner_of_iccs,
    manner_of_icd10,
    normalise_manner,
    validate_deaths,
)
from app.services.incident_rows import Territory

# WHO ICD-10 (2019), chapter XX "External causes of morbidity and mortality" and the
# block ranges of its manners; A00-R99 are diseases and symptoms (natural deaths).
ICD10_CASES = {
    "V01": "accident", "V49.9": "accident", "W65": "accident", "X59": "accident",
    "X60": "suicide", "X70": "suicide", "X84": "suicide",
    "X85": "homicide", "X95": "homicide", "Y00": "homicide", "Y09": "homicide",
    "Y10": "undetermined", "Y34": "undetermined",
    "Y35": "other", "Y87.0": "suicide", "Y87.1": "homicide", "Y87.2": "undetermined",
    "I21.9": "natural", "C34": "natural", "R99": "natural",
    "S06.9": None, "T71": None, "not a code": None, "": None,
}  # fmt: skip
# UNODC ICCS version 1.0 (2015), section 01 "Acts leading to death or intending to cause
# death": 0101 intentional homicide, 0102 attempted, 01031 negligent manslaughter, 0104
# assisting or instigating suicide, 0107 unlawful killing associated with armed conflict.
ICCS_CASES = {
    "0101": "homicide", "01011": "homicide", "0102": None, "01031": "accident",
    "01032": "other", "0104": "suicide", "0107": "homicide", "0201": None, "01": None,
}  # fmt: skip


@pytest.mark.parametrize(("code", "manner"), ICD10_CASES.items())
def test_icd10_codes_give_the_who_manner(code, manner):
    assert manner_of_icd10(code) == manner


@pytest.mark.parametrize(("code", "manner"), ICCS_CASES.items())
def test_iccs_codes_give_the_unodc_manner(code, manner):
    assert manner_of_iccs(code) == manner


def test_the_agencys_words_come_before_its_codes():
    assert normalise_manner("Undetermined", "X95", None) == "undetermined"
    assert normalise_manner("Road  Traffic_Accident", None, None) == "accident"
    assert normalise_manner("Homicidio", None, None) == "homicide"
    assert normalise_manner("Misadventure", "X70", None) == "suicide"
    assert normalise_manner(None, None, "0101") == "homicide"
    assert normalise_manner("Misadventure", None, None) is None


def test_a_name_hashes_word_by_word_without_case_or_accents():
    secret = b"0123456789abcdef"
    assert hash_name("José  Pérez-Ángel", secret) == hash_name("jose perez angel", secret)
    assert hash_name("Jose", secret) != hash_name("Jose", b"another secret!!")
    assert len(hash_name("Jose Perez", secret).split()) == 2
    assert hash_name("  -- ", secret) is None and hash_name(None, secret) is None


BELIZE_BOX = Territory("Belize", shapely.box(-89.3, 15.8, -87.4, 18.6), 0)
RULES = DeathRules(
    sources=("police", "forensic", "health"),
    unit_codes=frozenset({"BZ-BZ", "BZ-CY"}),
    territory=BELIZE_BOX,
)


def _frame(**columns) -> pd.DataFrame:
    base = {"source": "police", "source_id": "A1", "death_date": "2024-03-01"}
    return pd.DataFrame([{**base, **columns}]).astype(str)


@pytest.mark.parametrize(
    ("columns", "reason"),
    [
        ({"source": "army"}, "source 'army' is not one of the agencies"),
        ({"source_id": ""}, "missing source_id"),
        ({"death_date": "2024-02-30"}, "death_date '2024-02-30' is not a date"),
        ({"death_date": "", "registered_at": ""}, "missing death_date (and no registered_at)"),
        ({"death_date": "2099-01-01"}, "death_date is in the future"),
        ({"birth_date": "2024-03-02"}, "birth_date is after death_date"),
        ({"registered_at": "2024-02-28"}, "registered_at is before death_date"),
        ({"age": "12.5"}, "age '12.5' is not a whole number of years from 0 to 130"),
        ({"sex": "x"}, "sex 'x' is not female, male or unknown"),
        ({"unit_code": "BZ-XX"}, "unit_code 'BZ-XX' is not a loaded unit"),
        ({"longitude": "-60", "latitude": "17"}, "place outside the territory (Belize)"),
        ({"longitude": "-88.2", "latitude": ""}, "longitude and latitude must both be numbers"),
        ({"icd10": "XYZ"}, "icd10 'XYZ' is not an ICD-10 code"),
        ({"manner": "Misadventure"}, "manner 'Misadventure' is not a known coding"),
    ],
)
def test_a_bad_row_is_rejected_with_its_reason(columns, reason):
    checked = validate_deaths(_frame(**columns), rules=RULES)
    assert checked.valid.empty
    assert reason in checked.rejected["reason"].iloc[0]


def test_a_good_row_is_typed_for_the_store():
    frame = _frame(
        given_name="Ana", sex="F", age="31", unit_code="bz-bz", icd10="x95", extra="kept"
    )
    checked = validate_deaths(frame, rules=RULES)
    row = checked.valid.iloc[0]
    assert checked.rejected.empty
    assert (row["sex"], row["age"], row["unit_code"], row["icd10"]) == (
        "female",
        31,
        "BZ-BZ",
        "X95",
    )
    assert row["manner"] == "homicide" and row["attributes"] == '{"extra":"kept"}'
    assert not row["names_hashed"] and row["given_name"] == "Ana"


def test_a_repeated_key_is_rejected_after_the_first():
    frame = pd.concat([_frame(), _frame(), _frame(source_id="A2")], ignore_index=True)
    checked = validate_deaths(frame, rules=RULES, first_row=10)
    assert list(checked.valid["source_id"]) == ["A1", "A2"]
    assert checked.rejected["reason"].tolist() == [
        "duplicate of row 10 (same source and source_id)"
    ]


def test_the_demo_deaths_are_synthetic_noisy_and_keep_their_truth():
    districts = gpd.read_file(DISTRICTS).rename(columns={"iso_3166_2": "code", "district": "name"})
    incidents = generate_incidents(districts, n=6_000, seed=3)
    deaths = generate_deaths(incidents, districts, seed=3)
    again = generate_deaths(incidents, districts, seed=3)
    pd.testing.assert_frame_equal(deaths, again)
    assert deaths["source_id"].str.startswith("SYNTHETIC-").all()
    assert set(deaths["source"]) == {"police", "forensic", "health"}
    assert list(deaths.columns[: len(FILE_COLUMNS)]) == list(FILE_COLUMNS)
    per_death = deaths.groupby("true_death_id")["source"].nunique()
    assert (per_death == 1).any() and (per_death == 3).any()
    deadly = incidents["category"].isin(["homicide", "suicide", "road_traffic_death"])
    assert deaths["true_death_id"].max() == incidents.loc[deadly, "victims_count"].sum()
    police = deaths[deaths["source"] == "police"]
    assert (police["age"] == "").mean() > 0.1  # missing ages
    health = deaths[deaths["source"] == "health"]
    assert (health["manner"] == "").all() and (health["icd10"] != "").all()
    checked = validate_deaths(
        deaths[list(FILE_COLUMNS)].reset_index(drop=True),
        rules=DeathRules(
            sources=RULES.sources,
            unit_codes=frozenset(districts["code"]),
            territory=Territory("Belize", shapely.union_all(districts.geometry), 0),
        ),
    )
    assert checked.rejected.empty, checked.rejected.head()
