"""SYNTHETIC death records of the Belize demo, as three agencies would keep them: **invented
data**, every record's ``source_id`` starting ``SYNTHETIC-``.

The deaths are the demo's synthetic incidents that kill (homicides, suicides, road-traffic
deaths; one death per victim). Each agency sees a death with its own probability and
records it its own way, with the noise real registers have:

- the **police** (``police``): violent deaths; manner in words ("Murder", "Suicide",
  "Road traffic accident", "Undetermined") with ICCS 0101 for homicides; a point where
  it happened (most records) and the day it registered it;
- the **forensic service** (``forensic``): the deaths it autopsies; its own words
  ("Homicide", "Suicide", "Accident", "Undetermined"), a date of birth for half;
- the **health registry** (``health``): almost every death, coded in ICD-10 only (its
  manner is what the code says), with a date of birth and a district, registered weeks
  later.

Noise: misspelt names, given and family names swapped now and then, dates of death a day
or two off, missing or one-year-off ages, unknown sex, deaths one agency alone recorded,
and manners classified differently: a share of the police's homicides are
"Undetermined" for the forensic service (:data:`PLANTED`), suicides coded as accidents.

The truth stays in the generator's output: ``true_death_id`` (records with the same value
describe one death) and ``true_manner``; they are not import columns, and the demo load
drops them before importing. Pure: numpy, pandas, shapely; no settings, database or HTTP.
"""

from __future__ import annotations

import geopandas
import numpy as np
import pandas as pd
import shapely

from linkage.synthetic import FAMILY, GIVEN_F, GIVEN_M

__all__ = ["DEATH_CATEGORIES", "FILE_COLUMNS", "PLANTED", "SOURCE_PREFIX", "generate_deaths"]

SOURCE_PREFIX = "SYNTHETIC"
# Demo incident category -> the true manner of the death.
DEATH_CATEGORIES = {"homicide": "homicide", "suicide": "suicide", "road_traffic_death": "accident"}
# The share of homicides the forensic service records as undetermined while the police
# record a homicide: the disagreement the Inter-Agency Group goes through.
PLANTED = 0.08
FILE_COLUMNS = (
    "source", "source_id", "given_name", "family_name", "sex", "age", "birth_date",
    "death_date", "registered_at", "longitude", "latitude", "location_precision",
    "unit_code", "manner", "icd10", "iccs",
)  # fmt: skip

# Probability that each agency records a death of each true manner.
COVERAGE = {
    "police": {"homicide": 0.97, "suicide": 0.85, "accident": 0.92},
    "forensic": {"homicide": 0.93, "suicide": 0.80, "accident": 0.70},
    "health": {"homicide": 0.92, "suicide": 0.90, "accident": 0.90},
}
POLICE_WORDS = {
    "homicide": "Murder",
    "suicide": "Suicide",
    "accident": "Road traffic accident",
    "undetermined": "Undetermined",
}
FORENSIC_WORDS = {
    "homicide": "Homicide",
    "suicide": "Suicide",
    "accident": "Accident",
    "undetermined": "Undetermined",
}
# ICD-10 underlying causes by manner and weapon (assault by firearm X95, sharp object X99,
# blunt object Y00, unspecified Y09; hanging X70; car occupant in traffic V49.9;
# undetermined intent Y34).
ICD10 = {
    ("homicide", "firearm"): "X95",
    ("homicide", "knife"): "X99",
    ("homicide", "blunt"): "Y00",
    ("homicide", None): "Y09",
    ("suicide", None): "X70",
    ("accident", None): "V49.9",
    ("undetermined", None): "Y34",
}
# Delays from death to registration (days): low, high.
DELAY = {"police": (0, 2), "forensic": (1, 6), "health": (5, 60)}


def generate_deaths(
    incidents: pd.DataFrame, districts: geopandas.GeoDataFrame, *, seed: int = 42
) -> pd.DataFrame:
    """SYNTHETIC death records of the three agencies from the demo's incidents.

    Parameters
    ----------
    incidents : pandas.DataFrame
        :func:`app.demo.incidents.generate_incidents`' output (only the deadly categories
        are used; one death per victim). Not modified.
    districts : geopandas.GeoDataFrame
        The districts (``code``, ``geometry``, EPSG:4326): the health registry records the
        district of each death. Not modified.
    seed : int
        Seed: the same arguments give the same records.

    Returns
    -------
    pandas.DataFrame
        :data:`FILE_COLUMNS` as strings ('' when missing), plus the truth:
        ``true_death_id`` and ``true_manner`` (not import columns).
    """
    rng = np.random.default_rng(seed)
    deaths = _deaths(rng, incidents, districts)
    frames = [_records(rng, deaths, source) for source in COVERAGE]
    out = pd.concat(frames, ignore_index=True)
    return out.sort_values(["source", "source_id"], ignore_index=True)


def _deaths(
    rng: np.random.Generator, incidents: pd.DataFrame, districts: geopandas.GeoDataFrame
) -> pd.DataFrame:
    """One row per death: the incident's date, place, victim and weapon, a name, a birth."""
    deadly = incidents[incidents["category"].isin(list(DEATH_CATEGORIES))]
    victims = deadly["victims_count"].fillna(1).astype(int).clip(lower=1)
    rows = deadly.loc[deadly.index.repeat(victims)].reset_index(drop=True)
    n = len(rows)
    sex = rows["victim_sex"].where(rows["victim_sex"].isin(["female", "male"]), None)
    sex = sex.where(sex.notna(), np.where(rng.random(n) < 0.8, "male", "female"))
    age = pd.to_numeric(rows["victim_age"], errors="coerce")
    age = age.where(age.notna(), np.clip(np.rint(rng.gamma(4.0, 8.0, n) + 10), 15, 90))
    age = age.astype(int).to_numpy()
    death = pd.to_datetime(rows["occurred_at"].str.slice(0, 10))
    birth = death - pd.to_timedelta(age * 365.25 + rng.integers(0, 365, n), unit="D")
    given = np.where(sex == "male", _pick(rng, GIVEN_M, n), _pick(rng, GIVEN_F, n)).astype(object)
    family = _pick(rng, FAMILY, n)
    second = _pick(rng, FAMILY, n)  # a second family name makes names rarer, as in Belize
    family = np.where(rng.random(n) < 0.5, family + " " + second, family)
    lon = rows["longitude"].astype(float).to_numpy()
    lat = rows["latitude"].astype(float).to_numpy()
    unit = _district(districts, lon, lat)
    return pd.DataFrame(
        {
            "true_death_id": np.arange(1, n + 1),
            "true_manner": rows["category"].map(DEATH_CATEGORIES).to_numpy(),
            "weapon": rows["weapon"].to_numpy(),
            "given_name": np.char.title(given.astype(str)),
            "family_name": np.char.title(family.astype(str)),
            "sex": sex.to_numpy(),
            "age": age,
            "birth_date": birth,
            "death_date": death,
            "longitude": lon,
            "latitude": lat,
            "unit_code": unit,
        }
    )


def _records(rng: np.random.Generator, deaths: pd.DataFrame, source: str) -> pd.DataFrame:
    """The deaths one agency recorded, with its noise and its coding."""
    seen = rng.random(len(deaths)) < deaths["true_manner"].map(COVERAGE[source]).to_numpy()
    rec = deaths[seen].reset_index(drop=True)
    n = len(rec)
    manner = rec["true_manner"].to_numpy().astype(object)
    if source == "forensic":
        planted = (manner == "homicide") & (rng.random(n) < PLANTED / COVERAGE[source]["homicide"])
        manner[planted] = "undetermined"
    if source == "health":
        manner[(manner == "suicide") & (rng.random(n) < 0.05)] = "accident"
    given = rec["given_name"].to_numpy().astype(object)
    family = rec["family_name"].to_numpy().astype(object)
    for names in (given, family):
        typo = rng.random(n) < 0.06
        names[typo] = [_typo(rng, v) for v in names[typo]]
    swap = rng.random(n) < 0.01
    given[swap], family[swap] = family[swap], given[swap].copy()
    shift = np.where(rng.random(n) < 0.12, rng.choice([-2, -1, 1, 2], n), 0)
    death = rec["death_date"] + pd.to_timedelta(shift, unit="D")
    low, high = DELAY[source]
    registered = rec["death_date"] + pd.to_timedelta(rng.integers(low, high + 1, n), unit="D")
    registered = registered.where(registered >= death, death)
    age = rec["age"] + np.where(rng.random(n) < 0.05, rng.choice([-1, 1], n), 0)
    age_text = np.where(rng.random(n) < (0.2 if source == "police" else 0.05), "", age.astype(str))
    sex = np.where(rng.random(n) < 0.01, "", rec["sex"].to_numpy())
    width = 5
    out = pd.DataFrame(
        {
            "source": source,
            "source_id": [
                f"{SOURCE_PREFIX}-{source[:3].upper()}-{i:0{width}d}"
                for i in rng.permutation(n) + 1
            ],
            "given_name": given,
            "family_name": family,
            "sex": sex,
            "age": age_text,
            "birth_date": "",
            "death_date": death.dt.strftime("%Y-%m-%d").to_numpy(),
            "registered_at": registered.dt.strftime("%Y-%m-%d").to_numpy(),
            "longitude": "",
            "latitude": "",
            "location_precision": "",
            "unit_code": "",
            "manner": "",
            "icd10": "",
            "iccs": "",
            "true_death_id": rec["true_death_id"].to_numpy(),
            "true_manner": rec["true_manner"].to_numpy(),
        }
    )
    births = rec["birth_date"].dt.strftime("%Y-%m-%d").to_numpy()
    if source == "police":
        point = rng.random(n) < 0.85
        jitter = rng.normal(0, 0.0005, (n, 2))  # ~50 m: where the officer put the pin
        out.loc[point, "longitude"] = np.round(rec["longitude"] + jitter[:, 0], 6)[point].astype(
            str
        )
        out.loc[point, "latitude"] = np.round(rec["latitude"] + jitter[:, 1], 6)[point].astype(str)
        out.loc[point, "location_precision"] = np.where(rng.random(n) < 0.7, "exact", "street")[
            point
        ]
        out.loc[~point, "unit_code"] = rec["unit_code"].to_numpy()[~point]
        out["manner"] = [POLICE_WORDS[m] for m in manner]
        out["iccs"] = np.where(manner == "homicide", "0101", "")
    elif source == "forensic":
        point = rng.random(n) < 0.2
        out.loc[point, "longitude"] = rec["longitude"].round(5).astype(str).to_numpy()[point]
        out.loc[point, "latitude"] = rec["latitude"].round(5).astype(str).to_numpy()[point]
        out.loc[point, "location_precision"] = "locality"
        out.loc[~point, "unit_code"] = rec["unit_code"].to_numpy()[~point]
        out["manner"] = [FORENSIC_WORDS[m] for m in manner]
        out["birth_date"] = np.where(rng.random(n) < 0.5, births, "")
    else:
        out["unit_code"] = rec["unit_code"].to_numpy()
        out["birth_date"] = np.where(rng.random(n) < 0.85, births, "")
        weapons = rec["weapon"].to_numpy()
        out["icd10"] = [
            ICD10.get((m, w if m == "homicide" else None)) or ICD10[(m, None)]
            for m, w in zip(manner, weapons, strict=True)
        ]
    return out


def _pick(rng: np.random.Generator, pool: list[str], n: int) -> np.ndarray:
    """Common names are common: probability proportional to 1 / rank^0.8."""
    weights = 1.0 / np.arange(1, len(pool) + 1) ** 0.8
    return rng.choice(np.array(pool, dtype=object), size=n, p=weights / weights.sum())


def _typo(rng: np.random.Generator, name: str) -> str:
    """One letter dropped, doubled, swapped with the next or replaced."""
    if len(name) < 4:
        return name
    i = int(rng.integers(1, len(name) - 1))
    kind = int(rng.integers(4))
    if kind == 0:
        return name[:i] + name[i + 1 :]
    if kind == 1:
        return name[:i] + name[i] + name[i:]
    if kind == 2:
        return name[:i] + name[i + 1] + name[i] + name[i + 2 :]
    return name[:i] + "aeiourstln"[int(rng.integers(10))] + name[i + 1 :]


def _district(districts: geopandas.GeoDataFrame, lon: np.ndarray, lat: np.ndarray) -> np.ndarray:
    """The code of the district holding each point ('' when none does)."""
    out = np.full(len(lon), "", dtype=object)
    for code, geometry in zip(districts["code"], districts.geometry, strict=True):
        shapely.prepare(geometry)
        inside = shapely.contains_xy(geometry, lon, lat) & (out == "")
        out[inside] = code
    return out
