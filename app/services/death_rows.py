"""Death records from each agency (issue 21): their columns, and the checks every row of a
death file goes through, vectorised like ``app.services.incident_rows``.

A death file (police, forensic service, health registry) has one row per deceased as the
agency recorded it: its key (``source``, ``source_id``), the deceased's name parts (or the
agency's pseudonymous ``person_key``), sex, age and/or date of birth, date of death, date
the agency registered it, place (a point and/or a unit code), and the manner of death in
the agency's own coding, with ICD-10 (health) or ICCS (police) codes. The manner is
normalised to one vocabulary (:data:`app.models.MANNERS`, the linkage core's): the
``manner`` column's words first, else what the ICD-10 or ICCS code says.

Rejected rows keep every reason; names are replaced by HMAC tokens
(:func:`hash_name`) before anything is stored when ``linkage.hash_names`` is on, in the
rejected rows' copy of the file too.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import unicodedata
from dataclasses import dataclass

import numpy as np
import orjson
import pandas as pd
import shapely
from pyproj import CRS, Transformer

from app.services.incident_rows import SEX_ALIASES, Territory, Validated

__all__ = [
    "DEATH_CANONICAL",
    "STAGING_COLUMNS",
    "DeathRules",
    "hash_name",
    "manner_of_iccs",
    "manner_of_icd10",
    "normalise_manner",
    "validate_deaths",
]

# The columns a death file may provide, by our names (map others onto them).
DEATH_CANONICAL = (
    "source",
    "source_id",
    "given_name",
    "family_name",
    "person_key",
    "sex",
    "age",
    "birth_date",
    "death_date",
    "registered_at",
    "longitude",
    "latitude",
    "wkt",
    "location_precision",
    "unit_code",
    "manner",
    "icd10",
    "iccs",
)
NAME_COLUMNS = ("given_name", "family_name")
# The staging table's columns (app.sql.linkage), in the order COPY carries them.
STAGING_COLUMNS = (
    "row_number",
    "source",
    "source_id",
    "given_name",
    "family_name",
    "person_key",
    "names_hashed",
    "sex",
    "age",
    "birth_date",
    "death_date",
    "registered_at",
    "longitude",
    "latitude",
    "location_precision",
    "unit_code",
    "manner_raw",
    "manner",
    "icd10",
    "iccs",
    "attributes",
)

# Words agencies use for a manner of death (English and Spanish), lower case.
MANNER_ALIASES = {
    **dict.fromkeys(
        (
            "homicide", "murder", "manslaughter", "intentional homicide", "killing",
            "homicidio", "asesinato", "assault", "agresion",
        ),
        "homicide",
    ),
    **dict.fromkeys(("suicide", "suicidio", "self-harm", "intentional self-harm"), "suicide"),
    **dict.fromkeys(
        (
            "accident", "accidental", "road traffic", "road traffic accident", "rta",
            "traffic accident", "traffic", "road death", "transport accident", "drowning",
            "accidente", "accidente de transito", "accidente de tránsito",
        ),
        "accident",
    ),
    **dict.fromkeys(
        (
            "undetermined", "undetermined intent", "unknown intent", "pending",
            "pending investigation", "indeterminado", "indeterminada", "no determinado",
        ),
        "undetermined",
    ),
    **dict.fromkeys(("natural", "natural causes", "disease", "muerte natural"), "natural"),
    **dict.fromkeys(("other", "legal intervention", "otro"), "other"),
}  # fmt: skip

_ICD10 = re.compile(r"^([A-Z])(\d{2})(?:\.?(\d{1,2}))?$")
_ICCS = re.compile(r"^\d{2,6}$")


def manner_of_icd10(code: str | None) -> str | None:
    """The manner an ICD-10 underlying cause of death says (WHO ICD-10 chapter XX,
    external causes): V01-X59 accidents (transport V01-V99), X60-X84 intentional
    self-harm, X85-Y09 assault, Y10-Y34 undetermined intent, Y35-Y36 legal intervention
    and war (other), Y87.0/.1/.2 sequelae of self-harm/assault/undetermined, U01-U03
    terrorism (assault); A00-R99 natural. None for an injury code (S, T: the nature of
    an injury, not its cause) or a malformed one."""
    if not code:
        return None
    match = _ICD10.match(code.strip().upper())
    if match is None:
        return None
    letter, number, sub = match.group(1), int(match.group(2)), match.group(3)
    if letter == "Y" and number == 87 and sub:
        return {"0": "suicide", "1": "homicide", "2": "undetermined"}.get(sub[0], "other")
    for first, last, manner in _ICD10_RANGES:
        if first <= (letter, number) <= last:
            return manner
    return None if letter in "STU" else "natural"


# ICD-10 external causes (chapter XX) by range of (letter, number), first match wins.
_ICD10_RANGES = (
    (("V", 0), ("X", 59), "accident"),
    (("X", 60), ("X", 84), "suicide"),
    (("X", 85), ("Y", 9), "homicide"),
    (("Y", 10), ("Y", 34), "undetermined"),
    (("Y", 35), ("Y", 99), "other"),
    (("U", 1), ("U", 3), "homicide"),
)


def manner_of_iccs(code: str | None) -> str | None:
    """The manner an ICCS code (UNODC International Classification of Crime for
    Statistical Purposes, 2015) says of a death: 0101 intentional homicide and 0107
    unlawful killing in armed conflict → homicide; 01031 negligent manslaughter (vehicular
    homicide among them) → accident; 0104 assisting suicide → suicide; other 010x → other;
    0102 (an attempt: nobody died) and codes outside section 01 → None."""
    if not code:
        return None
    code = code.strip()
    if not _ICCS.match(code):
        return None
    if code.startswith(("0101", "0107")):
        return "homicide"
    if code.startswith("01031"):
        return "accident"
    if code.startswith("0104"):
        return "suicide"
    if code.startswith("01") and not code.startswith("0102") and len(code) >= 4:
        return "other"
    return None


def normalise_manner(raw: str | None, icd10: str | None, iccs: str | None) -> str | None:
    """The normalised manner: the agency's words (:data:`MANNER_ALIASES`) first, else the
    ICD-10 code's, else the ICCS code's; None when nothing says."""
    if raw:
        word = " ".join(raw.strip().lower().replace("_", " ").split())
        if word in MANNER_ALIASES:
            return MANNER_ALIASES[word]
    return manner_of_icd10(icd10) or manner_of_iccs(iccs)


def normalise_name(name: str) -> list[str]:
    """A name's words, case and accents dropped, anything but letters a separator:
    ``"José  O'Neil-Pérez"`` → ``["jose", "o", "neil", "perez"]``."""
    plain = unicodedata.normalize("NFKD", name)
    plain = "".join(c for c in plain if not unicodedata.combining(c)).lower()
    return re.sub(r"[^a-z]+", " ", plain).split()


def hash_name(name: str | None, secret: bytes) -> str | None:
    """A name part as HMAC-SHA256 hex tokens of its normalised words (space separated),
    under the installation's secret: equal words give equal tokens, so the linkage still
    compares names word by word (exactly, no longer by spelling). None for no words."""
    if name is None:
        return None
    words = normalise_name(name)
    if not words:
        return None
    return " ".join(hmac.new(secret, w.encode(), hashlib.sha256).hexdigest() for w in words)


@dataclass(frozen=True)
class DeathRules:
    """What a death row is checked against: the agencies, the known unit codes, the
    territory (points), the CRS of the file's coordinates, and the name secret (None: names
    kept in clear)."""

    sources: tuple[str, ...]
    unit_codes: frozenset[str]
    territory: Territory
    crs: str = "EPSG:4326"
    secret: bytes | None = None


class _Reasons:
    """Per row, every reason it is rejected."""

    def __init__(self, n: int) -> None:
        self.mask = np.zeros(n, dtype=bool)
        self.items: list[tuple[np.ndarray, object]] = []

    def add(self, condition, reason) -> None:
        cond = np.asarray(condition, dtype=bool)
        if cond.any():
            self.mask |= cond
            self.items.append((cond, reason))

    def text(self, rows: np.ndarray) -> list[str]:
        out: list[list[str]] = [[] for _ in rows]
        for cond, reason in self.items:
            for i, row in enumerate(rows):
                if cond[row]:
                    out[i].append(reason if isinstance(reason, str) else str(reason[row]))
        return ["; ".join(r) for r in out]


def _dates(values: pd.Series) -> pd.Series:
    """ISO dates (a time after the date is ignored); NaT where empty or not a date."""
    head = values.str.slice(0, 10)
    return pd.to_datetime(head.where(values != "", None), errors="coerce", format="%Y-%m-%d")


def validate_deaths(
    frame: pd.DataFrame,
    *,
    rules: DeathRules,
    today: pd.Timestamp | None = None,
    first_row: int = 1,
) -> Validated:
    """Check every row of a death file (canonical column names, strings); return the valid
    rows typed for staging (:data:`STAGING_COLUMNS`) and the rejected ones with reasons."""
    n = len(frame)
    today = (today or pd.Timestamp.now()).normalize()
    reasons = _Reasons(n)

    def col(name: str) -> pd.Series:
        if name in frame:
            return frame[name].astype(str).str.strip()
        return pd.Series([""] * n, index=frame.index, dtype=object)

    source_raw = col("source")
    source = source_raw.str.lower()
    reasons.add(source == "", "missing source (name the agency)")
    known = ", ".join(rules.sources)
    reasons.add(
        (source != "") & ~source.isin(rules.sources),
        "source '" + source_raw + f"' is not one of the agencies ({known})",
    )
    source_id = col("source_id")
    reasons.add(source_id == "", "missing source_id")

    sex_raw = col("sex")
    sex = sex_raw.str.lower().map(SEX_ALIASES)
    reasons.add(sex.isna(), "sex '" + sex_raw + "' is not female, male or unknown")
    age_raw = col("age")
    age = pd.to_numeric(age_raw.replace("", None), errors="coerce")
    bad_age = (age_raw != "") & (age.isna() | (age % 1 != 0) | (age < 0) | (age > 130))
    reasons.add(bad_age, "age '" + age_raw + "' is not a whole number of years from 0 to 130")
    age = age.where(~bad_age)  # a rejected row's value must not stop the typing of the rest

    dates = {}
    for name in ("birth_date", "death_date", "registered_at"):
        raw = col(name)
        parsed = _dates(raw)
        reasons.add(raw.ne("") & parsed.isna(), name + " '" + raw + "' is not a date (YYYY-MM-DD)")
        reasons.add(parsed > today + pd.Timedelta(days=1), f"{name} is in the future")
        reasons.add(parsed < pd.Timestamp("1900-01-01"), f"{name} is before 1900")
        dates[name] = parsed
    death, birth, registered = dates["death_date"], dates["birth_date"], dates["registered_at"]
    reasons.add(death.isna() & registered.isna(), "missing death_date (and no registered_at)")
    reasons.add(birth > death, "birth_date is after death_date")
    reasons.add(registered < death, "registered_at is before death_date")

    lon, lat = _coordinates(frame, col, rules, reasons)

    unit_raw = col("unit_code")
    unit = unit_raw.str.upper()
    known_units = {c.upper(): c for c in rules.unit_codes}
    reasons.add(
        (unit != "") & ~unit.isin(list(known_units)),
        "unit_code '" + unit_raw + "' is not a loaded unit",
    )
    unit = unit.map(lambda v: known_units.get(v))

    icd10, iccs = col("icd10").str.upper(), col("iccs")
    reasons.add(
        (icd10 != "") & ~icd10.str.match(_ICD10.pattern),
        "icd10 '" + icd10 + "' is not an ICD-10 code",
    )
    reasons.add(
        (iccs != "") & ~iccs.str.match(_ICCS.pattern), "iccs '" + iccs + "' is not an ICCS code"
    )
    manner_raw = col("manner")
    manner = pd.Series(
        [
            normalise_manner(r or None, i or None, c or None)
            for r, i, c in zip(manner_raw, icd10, iccs, strict=True)
        ],
        index=frame.index,
        dtype=object,
    )
    reasons.add(
        (manner_raw != "") & manner.isna(),
        "manner '" + manner_raw + "' is not a known coding (homicide, suicide, accident, "
        "undetermined, natural, other, or their usual names); give icd10 or iccs instead",
    )

    key = source + "\x1f" + source_id
    candidates = ~reasons.mask
    first_of = {}
    duplicate_of = np.full(n, "", dtype=object)
    for i, (k, ok) in enumerate(zip(key, candidates, strict=True)):
        if not ok:
            continue
        if k in first_of:
            duplicate_of[i] = str(first_of[k])
        else:
            first_of[k] = first_row + i
    reasons.add(
        duplicate_of != "",
        np.array(["duplicate of row " + d + " (same source and source_id)" for d in duplicate_of]),
    )

    names = {c: col(c).replace("", None) for c in NAME_COLUMNS}
    if rules.secret is not None:
        names = {c: v.map(lambda s: hash_name(s, rules.secret)) for c, v in names.items()}
    valid = pd.DataFrame(
        {
            "row_number": np.arange(first_row, first_row + n),
            "source": source,
            "source_id": source_id,
            **names,
            "person_key": col("person_key").replace("", None),
            "names_hashed": rules.secret is not None,
            "sex": sex,
            "age": age.astype("Int64"),
            "birth_date": _iso(birth),
            "death_date": _iso(death),
            "registered_at": _iso(registered),
            "longitude": lon,
            "latitude": lat,
            "location_precision": col("location_precision").replace("", None),
            "unit_code": unit,
            "manner_raw": manner_raw.replace("", None),
            "manner": manner,
            "icd10": icd10.str.replace(".", "", regex=False).replace("", None),
            "iccs": iccs.replace("", None),
            "attributes": _attributes(frame),
        },
        index=frame.index,
    )[list(STAGING_COLUMNS)]
    bad = np.flatnonzero(reasons.mask)
    originals = frame.iloc[bad].to_dict("records")
    rejected = pd.DataFrame(
        {
            "row_number": bad + first_row,
            "source_id": source_id.iloc[bad].replace("", None).to_numpy(),
            "reason": reasons.text(bad),
            "raw": originals,
        }
    )
    return Validated(valid=valid[~reasons.mask], rejected=rejected, received=n)


def hash_raw_names(raw: dict, secret: bytes | None, columns: dict[str, str]) -> dict:
    """A rejected row as read, its name cells hashed (``columns``: our name → the file's)
    when names are hashed: a rejected row never keeps what an accepted one may not."""
    if secret is None:
        return raw
    out = dict(raw)
    for ours in NAME_COLUMNS:
        theirs = columns.get(ours, ours)
        if isinstance(out.get(theirs), str):
            out[theirs] = hash_name(out[theirs], secret)
    return out


def _iso(dates: pd.Series) -> pd.Series:
    return dates.dt.strftime("%Y-%m-%d").where(dates.notna(), None)


def _coordinates(frame, col, rules: DeathRules, reasons: _Reasons) -> tuple[np.ndarray, np.ndarray]:
    """Longitude/latitude in EPSG:4326, NaN where the row has no place point (optional)."""
    n = len(frame)
    if "wkt" in frame:
        wkt = col("wkt")
        geoms = shapely.from_wkt(wkt.replace("", None).to_numpy(), on_invalid="ignore")
        is_point = shapely.get_type_id(geoms) == 0
        reasons.add((wkt != "").to_numpy() & ~is_point, "wkt is not a valid POINT")
        x = np.where(is_point, shapely.get_x(geoms), np.nan)
        y = np.where(is_point, shapely.get_y(geoms), np.nan)
    else:
        lon_raw, lat_raw = col("longitude"), col("latitude")
        x = pd.to_numeric(lon_raw.replace("", None), errors="coerce").to_numpy(dtype=float)
        y = pd.to_numeric(lat_raw.replace("", None), errors="coerce").to_numpy(dtype=float)
        given = ((lon_raw != "") | (lat_raw != "")).to_numpy()
        reasons.add(
            given & (np.isnan(x) | np.isnan(y)), "longitude and latitude must both be numbers"
        )
    crs = CRS.from_user_input(frame.attrs.get("crs") or rules.crs)
    finite = np.isfinite(x) & np.isfinite(y)
    if not crs.equals(CRS.from_epsg(4326)) and finite.any():
        transformer = Transformer.from_crs(crs, 4326, always_xy=True)
        x, y = x.copy(), y.copy()
        x[finite], y[finite] = transformer.transform(x[finite], y[finite], errcheck=False)
    finite = np.isfinite(x) & np.isfinite(y)
    inside = np.zeros(n, dtype=bool)
    if finite.any():
        geometry = rules.territory.geometry
        shapely.prepare(geometry)
        inside[finite] = shapely.contains_xy(geometry, x[finite], y[finite])
    reasons.add(
        finite & ~inside,
        f"place outside the territory ({rules.territory.name}) by more than "
        f"{rules.territory.tolerance_m:g} m",
    )
    x = np.where(finite, np.round(x, 7), np.nan)
    y = np.where(finite, np.round(y, 7), np.nan)
    return x, y


def _attributes(frame: pd.DataFrame) -> pd.Series:
    """The file's other columns, as JSON text per row (kept: the import loses nothing)."""
    extra = [c for c in frame.columns if c not in DEATH_CANONICAL]
    if not extra:
        return pd.Series(["{}"] * len(frame), index=frame.index)
    records = frame[extra].astype(str).to_dict("records")
    return pd.Series(
        [orjson.dumps({k: v for k, v in r.items() if v != ""}).decode() for r in records],
        index=frame.index,
    )
