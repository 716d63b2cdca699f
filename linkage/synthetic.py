"""SYNTHETIC deaths seen by three agencies, with the noise real registers have (truth known).

Used by the tests, the benchmark and (through the service) the demo. Every person and every
name here is invented: names are drawn from short lists of common Belizean given and family
names and from made-up syllable names, so that the name pools are as large as a country's.

The generator draws deaths first (sex, age, birth date, date and place of death, manner),
then lets each agency see each death with its own probability (police see the violent
deaths, the forensic service the deaths it autopsies, the health registry almost every
death), and writes each sighting with the agency's typical errors: misspelt names, given
and family names swapped, missing names (unidentified bodies), dates of death off by a day
or more, missing or rounded ages, coordinates for the police only, another district now and
then, and a manner the agency classifies its own way.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date

import numpy as np
import pandas as pd

from linkage.model import RECORD_COLUMNS


def _words(text: str) -> tuple[str, ...]:
    return tuple(text.split())


GIVEN_M = _words(
    "jose juan carlos luis miguel jorge pedro daniel david michael james john robert "
    "kevin brian anthony mark christopher marvin shane dwight elvis wilfredo francisco "
    "ernesto rolando oscar victor hector mario alberto ricardo fernando rafael andres "
    "manuel leroy dalton glenford delroy kareem jamal tyrone desmond winston clifford "
    "lennox abraham peter jacob cornelius isaac henry santiago mateo gilberto erwin"
)
GIVEN_F = _words(
    "maria ana rosa carmen elena patricia sandra claudia sonia gloria martha julia lucia "
    "sarah mary jennifer lisa michelle karen natasha shanice tamara keisha monique "
    "yolanda marisol yesenia ingrid dalia norma veronica esperanza reina aurora juana "
    "isabel helena margaret susan agatha katarina anna justina leticia wendy"
)
FAMILY = _words(
    "castillo garcia martinez hernandez lopez gonzalez perez sanchez ramirez torres "
    "flores rivera gomez diaz reyes cruz morales ortiz gutierrez chavez ramos ruiz "
    "alvarez mendoza vasquez castro romero herrera medina aguilar vargas jimenez moreno "
    "guerrero young smith williams gordon flowers usher tillett gentle neal lewis "
    "thompson bennett arnold leslie palacio nunez cayetano arana lambey sabal "
    "chun coc cho choc bol pop caal teul ical sho tzib pech chan canul friesen penner "
    "wiebe dueck reimer klassen peters thiessen giesbrecht"
)

# Syllables for invented names: enough pools for 100,000 deaths a source without every
# second person sharing a name (the real lists above alone would be far too small).
_ONSETS = _words("b c ch d f g h j k l m n p r s t v z br cr dr gr pr tr")
_VOWELS = ["a", "e", "i", "o", "u", "ai", "ia", "ea"]
_CODAS = ["", "", "n", "r", "s", "l", "z", "ck"]

DISTRICTS = {  # code: (lon, lat) of a centre, spread in degrees
    "BZ": (-88.35, 17.45, 0.20),
    "CY": (-88.95, 17.10, 0.25),
    "CZL": (-88.45, 18.25, 0.15),
    "OW": (-88.70, 17.95, 0.20),
    "SC": (-88.35, 16.85, 0.20),
    "TOL": (-88.95, 16.25, 0.25),
}
MANNER_SHARE = {
    "homicide": 0.35,
    "accident": 0.30,
    "suicide": 0.10,
    "natural": 0.17,
    "undetermined": 0.08,
}


@dataclass(frozen=True)
class AgencyNoise:
    """How one agency sees and records a death."""

    coverage: dict[str, float]  # manner -> probability that the agency records the death
    typo: float = 0.08  # a name part misspelt
    swap: float = 0.02  # given and family names swapped
    no_name: float = 0.02  # unidentified (both names missing)
    date_shift: tuple[float, float, float] = (0.10, 0.05, 0.02)  # off by 1, 2-3, 4-7 days
    no_age: float = 0.15
    age_off: float = 0.10  # recorded age one year off
    birth_date: float = 0.0  # share with a birth date
    point: float = 0.0  # share with coordinates
    other_unit: float = 0.02
    no_sex: float = 0.01
    reclassify: dict[str, dict[str, float]] = field(default_factory=dict)


AGENCIES: dict[str, AgencyNoise] = {
    "police": AgencyNoise(
        coverage={"homicide": 0.95, "accident": 0.85, "suicide": 0.85, "natural": 0.10,
                  "undetermined": 0.80},
        typo=0.10, no_name=0.04, no_age=0.25, point=0.80,
        reclassify={"undetermined": {"homicide": 0.30}, "suicide": {"undetermined": 0.15},
                    "accident": {"homicide": 0.05}},
    ),
    "forensic": AgencyNoise(
        coverage={"homicide": 0.90, "accident": 0.75, "suicide": 0.85, "natural": 0.15,
                  "undetermined": 0.95},
        typo=0.05, no_age=0.05, birth_date=0.50, point=0.20,
        reclassify={"homicide": {"undetermined": 0.08}},
    ),
    "health": AgencyNoise(
        coverage={"homicide": 0.85, "accident": 0.85, "suicide": 0.80, "natural": 0.95,
                  "undetermined": 0.85},
        typo=0.06, no_name=0.01, no_age=0.02, birth_date=0.85,
        reclassify={"homicide": {"undetermined": 0.05}, "suicide": {"accident": 0.10},
                    "undetermined": {"natural": 0.20}},
    ),
}  # fmt: skip


def _invented_names(rng: np.random.Generator, n: int) -> list[str]:
    names: set[str] = set()
    while len(names) < n:
        k = rng.integers(2, 4)
        parts = [rng.choice(_ONSETS) + rng.choice(_VOWELS) for _ in range(k)]
        names.add("".join(parts) + rng.choice(_CODAS))
    return sorted(names)


def _zipf_pick(rng: np.random.Generator, pool: list[str], n: int) -> np.ndarray:
    """Common names are common: probability proportional to 1 / rank^0.8."""
    weights = 1.0 / np.arange(1, len(pool) + 1) ** 0.8
    return rng.choice(np.array(pool, dtype=object), size=n, p=weights / weights.sum())


def _typo(rng: np.random.Generator, name: str) -> str:
    if len(name) < 3:
        return name
    i = int(rng.integers(1, len(name)))
    kind = rng.integers(4)
    if kind == 0:  # drop a letter
        return name[:i] + name[i + 1 :]
    if kind == 1:  # double a letter
        return name[:i] + name[i - 1] + name[i:]
    if kind == 2 and i < len(name) - 1:  # transpose two letters
        return name[:i] + name[i + 1] + name[i] + name[i + 2 :]
    letter = "abcdefghijklmnopqrstuvwxyz"[int(rng.integers(26))]
    return name[:i] + letter + name[i + 1 :]


def synthetic_deaths(
    n_deaths: int,
    *,
    seed: int = 0,
    start: date = date(2022, 1, 1),
    days: int = 3 * 365,
    agencies: dict[str, AgencyNoise] | None = None,
) -> pd.DataFrame:
    """SYNTHETIC records of ``n_deaths`` deaths as the agencies recorded them.

    Returns the contract's record columns (:data:`linkage.model.RECORD_COLUMNS`) plus
    ``death_id``, the truth: records with the same death_id describe the same death.
    Deterministic for a seed. A death no agency saw is not in the output.
    """
    rng = np.random.default_rng(seed)
    agencies = agencies or AGENCIES
    deaths = _deaths(rng, n_deaths, start, days)
    frames = []
    for source, noise in agencies.items():
        frames.append(_sightings(rng, deaths, source, noise))
    records = pd.concat(frames, ignore_index=True)
    return records.loc[:, [*RECORD_COLUMNS, "death_id"]]


def _deaths(rng: np.random.Generator, n: int, start: date, days: int) -> pd.DataFrame:
    manner = rng.choice(list(MANNER_SHARE), size=n, p=list(MANNER_SHARE.values()))
    male_share = np.where(np.isin(manner, ["homicide", "suicide", "accident"]), 0.85, 0.5)
    sex = np.where(rng.random(n) < male_share, "M", "F")
    age = np.clip(np.rint(rng.gamma(4.0, 9.0, n) + 8), 0, 100).astype(int)
    death = pd.Timestamp(start) + pd.to_timedelta(rng.integers(0, days, n), unit="D")
    birth = death - pd.to_timedelta(age * 365.25 + rng.integers(0, 365, n), unit="D")
    given_m = list(GIVEN_M) + _invented_names(rng, 400)
    given_f = list(GIVEN_F) + _invented_names(rng, 400)
    family = list(FAMILY) + _invented_names(rng, 2500)
    given = np.where(sex == "M", _zipf_pick(rng, given_m, n), _zipf_pick(rng, given_f, n)).astype(
        object
    )
    units = rng.choice(list(DISTRICTS), size=n, p=[0.35, 0.2, 0.1, 0.1, 0.15, 0.1])
    centre = np.array([DISTRICTS[u] for u in units])
    lon = centre[:, 0] + rng.normal(0, 1, n) * centre[:, 2]
    lat = centre[:, 1] + rng.normal(0, 1, n) * centre[:, 2]
    return pd.DataFrame(
        {
            "death_id": np.arange(n),
            "given_name": given,
            "family_name": _zipf_pick(rng, family, n),
            "sex": sex,
            "age": age,
            "birth_date": birth.normalize(),
            "death_date": death,
            "lon": lon,
            "lat": lat,
            "unit_code": units,
            "manner": manner,
        }
    )


def _sightings(
    rng: np.random.Generator, deaths: pd.DataFrame, source: str, noise: AgencyNoise
) -> pd.DataFrame:
    seen = rng.random(len(deaths)) < deaths["manner"].map(noise.coverage).to_numpy()
    rec = deaths[seen].reset_index(drop=True).copy()
    n = len(rec)
    rec["source"] = source
    rec = rec.sample(frac=1.0, random_state=int(rng.integers(2**31))).reset_index(drop=True)
    rec["record_id"] = [f"{source}-{i:07d}" for i in range(n)]  # ids say nothing of truth
    for col in ("given_name", "family_name"):
        hit = rng.random(n) < noise.typo
        rec.loc[hit, col] = [_typo(rng, v) for v in rec.loc[hit, col]]
    swap = rng.random(n) < noise.swap
    rec.loc[swap, ["given_name", "family_name"]] = rec.loc[
        swap, ["family_name", "given_name"]
    ].to_numpy()
    anonymous = rng.random(n) < noise.no_name
    rec.loc[anonymous, ["given_name", "family_name"]] = None
    u = rng.random(n)
    p1, p2, p3 = noise.date_shift
    shift = np.select(
        [u < p1, u < p1 + p2, u < p1 + p2 + p3],
        [rng.choice([-1, 1], n), rng.integers(2, 4, n) * rng.choice([-1, 1], n),
         rng.integers(4, 8, n) * rng.choice([-1, 1], n)],
        0,
    )  # fmt: skip
    rec["death_date"] = (rec["death_date"] + pd.to_timedelta(shift, unit="D")).dt.date
    rec["age"] = rec["age"] + np.where(rng.random(n) < noise.age_off, rng.choice([-1, 1], n), 0)
    rec["age"] = rec["age"].clip(lower=0).astype("Int64").mask(rng.random(n) < noise.no_age)
    rec["birth_date"] = rec["birth_date"].dt.date.where(rng.random(n) < noise.birth_date, None)
    has_point = rng.random(n) < noise.point
    jitter = rng.normal(0, 0.003, (n, 2))  # about 300 m: where the agency put the pin
    rec["lon"] = np.where(has_point, rec["lon"] + jitter[:, 0], np.nan)
    rec["lat"] = np.where(has_point, rec["lat"] + jitter[:, 1], np.nan)
    moved = rng.random(n) < noise.other_unit
    rec.loc[moved, "unit_code"] = rng.choice(list(DISTRICTS), int(moved.sum()))
    rec.loc[rng.random(n) < noise.no_sex, "sex"] = None
    rec["manner"] = [_reclassify(rng, m, noise) for m in rec["manner"]]
    return rec


def _reclassify(rng: np.random.Generator, manner: str, noise: AgencyNoise) -> str:
    u = rng.random()
    for other, p in noise.reclassify.get(manner, {}).items():
        if u < p:
            return other
        u -= p
    return manner
