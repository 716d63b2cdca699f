"""The contract between the service and the linkage core: what goes in, what comes out.

Everything is a pandas DataFrame or a plain dataclass; nothing here touches a database.

Input records (:func:`validate_records` checks and normalises them), one row per agency record:

``record_id``    str, unique across all sources (the service's own id, as text)
``source``       str: ``police`` | ``forensic`` | ``health`` (any other label links too)
``given_name``   str or None; already hashed tokens when the caller passes ``hashed=True``
``family_name``  str or None; idem
``sex``          ``M`` | ``F`` | None
``age``          Int64 or None (completed years at death)
``birth_date``   date or None
``death_date``   date or None (a death record normally has one; FEBRL has none)
``lon``, ``lat`` float or None (EPSG:4326, place of death or of injury)
``unit_code``    str or None (district / administrative unit)
``manner``       ``homicide`` | ``suicide`` | ``accident`` | ``undetermined`` | ``natural`` |
                 ``other`` | None: the source's own coding normalised by the caller

Analysts' decisions (:func:`validate_decisions`): ``record_id_l``, ``record_id_r``,
``decision`` (``accept`` | ``reject``); the order of the two ids does not matter, and a later
row for the same pair wins.

Output, :class:`LinkageResult`:

``pairs``       record_id_l, record_id_r (record_id_l < record_id_r as strings),
                match_probability, match_weight (log2 Bayes factor incl. the prior), band
                (``match`` | ``uncertain`` | ``non_match``), decided (``accept`` |
                ``reject`` | None). Only pairs with match_probability >= ``Thresholds.keep``
                are returned, plus every decided pair; a decided pair that blocking never
                compared has a NaN probability and weight and band ``match`` (accept) or
                ``non_match`` (reject).
``clusters``    record_id, cluster_id: every input record, singletons included; cluster_id is
                the smallest record_id (as a string) in the cluster, so an unchanged cluster
                keeps its id from run to run.
``parameters``  JSON-able dict: ``lambda`` (prior probability that two compared records
                match), ``comparisons``: [{name, levels: [{label, m_probability,
                u_probability, bayes_factor}]}], ``blocking_rules``, ``thresholds``, ``seed``,
                ``hashed``, ``within_source``, ``link_type``, ``splink_version``,
                ``training_notes`` (what tiny inputs could not train).
``counts``      JSON-able dict: ``records``, ``records_by_source``, ``pairs_compared``
                (total), ``pairs_by_blocking_rule`` ({rule: n}, marginal), ``pairs_by_band``,
                ``clusters``, ``clusters_by_size``, ``decisions_applied``,
                ``decisions_unknown_records``, ``links_refused_reject`` (links not merged
                because an analyst rejected a pair they would have joined),
                ``links_refused_same_source``, ``decision_conflicts`` (accepts that a reject
                overrides), ``seconds`` ({phase: wall s}), ``cpu_seconds`` ({phase:
                CPU s, all threads}).

Entry points (the service calls only these):

``linkage.link.link_records(records, decisions=None, *, thresholds=Thresholds(),
hashed=False, within_source=False, seed=42) -> LinkageResult``

``linkage.consolidate.consolidate(records, clusters) -> pd.DataFrame`` with
CONSOLIDATED_COLUMNS, one row per cluster (= one death):

``cluster_id``, ``record_ids`` (list of str), ``n_records``, ``sources`` (sorted source
labels joined by ``+``, e.g. ``forensic+police``), ``n_sources``, ``in_police``,
``in_forensic``, ``in_health`` (bool), ``manner_police``, ``manner_forensic``,
``manner_health`` (that source's manner, None if absent or unrecorded; two records of one
source in a cluster: the most frequent, ties by record_id), ``manners_disagree`` (bool: at
least two different recorded manners), ``manner`` (consolidated: forensic wins, else police,
else health, else any other source), ``manner_from`` (the source that gave it),
``death_date``, ``lon``, ``lat``, ``unit_code``, ``place_from`` (rules in that module),
``same_source_duplicates`` (bool: two records of one source in the cluster).

``linkage.capture.chapman(n1, n2, m) -> MseEstimate`` (two lists) and
``linkage.capture.loglinear(cells) -> MseEstimate`` (three lists; ``cells`` maps capture
patterns such as ``"110"`` — on list 1 and 2, not 3 — to counts), ``overlap_cells(consolidated,
lists=SOURCES)`` builds those cells from the consolidated deaths.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import pandas as pd

SOURCES = ("police", "forensic", "health")
MANNERS = ("homicide", "suicide", "accident", "undetermined", "natural", "other")
SEXES = ("M", "F")
BANDS = ("match", "uncertain", "non_match")
DECISIONS = ("accept", "reject")

RECORD_COLUMNS = (
    "record_id",
    "source",
    "given_name",
    "family_name",
    "sex",
    "age",
    "birth_date",
    "death_date",
    "lon",
    "lat",
    "unit_code",
    "manner",
)
DECISION_COLUMNS = ("record_id_l", "record_id_r", "decision")
PAIR_COLUMNS = (
    "record_id_l",
    "record_id_r",
    "match_probability",
    "match_weight",
    "band",
    "decided",
)
CLUSTER_COLUMNS = ("record_id", "cluster_id")
CONSOLIDATED_COLUMNS = (
    "cluster_id",
    "record_ids",
    "n_records",
    "sources",
    "n_sources",
    "in_police",
    "in_forensic",
    "in_health",
    "manner_police",
    "manner_forensic",
    "manner_health",
    "manners_disagree",
    "manner",
    "manner_from",
    "death_date",
    "lon",
    "lat",
    "unit_code",
    "place_from",
    "same_source_duplicates",
)


class LinkageInputError(ValueError):
    """Records or decisions the linkage cannot use (the service answers 422 with the message)."""


@dataclass(frozen=True)
class Thresholds:
    """Where a match probability falls: ``match`` >= match > ``uncertain`` >= review > dropped.

    ``match``: a pair at or above it links (enters the clusters) unless rejected.
    ``review``: the lower edge of the uncertain band the analysts go through.
    ``keep``: pairs below it are not returned at all (unless decided): the band
    ``non_match`` between keep and review is kept so that a reviewer can look just below.
    The defaults were settled on FEBRL 4 and the synthetic deaths (see ``linkage/link.py``).
    """

    match: float = 0.95
    review: float = 0.5
    keep: float = 0.1

    def __post_init__(self) -> None:
        """Refuse thresholds out of order or outside [0, 1]."""
        if not 0.0 <= self.keep <= self.review <= self.match <= 1.0:
            raise LinkageInputError(
                f"thresholds must satisfy 0 <= keep <= review <= match <= 1, got "
                f"keep={self.keep}, review={self.review}, match={self.match}"
            )

    def band(self, probability: float) -> str:
        """The band of one match probability."""
        if probability >= self.match:
            return "match"
        if probability >= self.review:
            return "uncertain"
        return "non_match"

    def as_dict(self) -> dict[str, float]:
        """The thresholds as a JSON-able dict."""
        return asdict(self)


@dataclass
class LinkageResult:
    """The outcome of one linkage run (see the module docstring for every column)."""

    pairs: pd.DataFrame
    clusters: pd.DataFrame
    parameters: dict[str, Any]
    counts: dict[str, Any]
    thresholds: Thresholds = field(default_factory=Thresholds)


def _map_distinct(series: pd.Series, fn: Any) -> pd.Series:
    """``fn`` on each distinct non-missing value (values repeat: 300,000 records hold a few
    thousand names), missing values as None."""
    known = series.notna()
    table = {v: fn(v) for v in series[known].unique()}
    return series.astype("object").where(known, None).map(table).where(known, None)


def _blank_to_none(value: Any) -> Any:
    return None if isinstance(value, str) and not value.strip() else value


def _empty_to_none(series: pd.Series) -> pd.Series:
    """Blank strings are missing values, not names."""
    out = _map_distinct(series, _blank_to_none)
    return out.where(out.notna(), None)


def validate_records(records: pd.DataFrame) -> pd.DataFrame:
    """Check the input records and return a normalised copy (the input is never changed).

    Raises :class:`LinkageInputError` on a missing column, a duplicate or missing record_id,
    an unknown sex or manner, or an out-of-range coordinate or age.
    """
    missing = [c for c in RECORD_COLUMNS if c not in records.columns]
    if missing:
        raise LinkageInputError(f"records lack the column(s): {', '.join(missing)}")
    df = records.loc[:, list(RECORD_COLUMNS)].copy()
    _check_ids(df)
    _check_codes(df)
    _check_numbers(df)
    return df.reset_index(drop=True)


def _check_ids(df: pd.DataFrame) -> None:
    if df["record_id"].isna().any():
        raise LinkageInputError("every record needs a record_id")
    df["record_id"] = df["record_id"].astype(str)
    dup = df["record_id"][df["record_id"].duplicated()]
    if len(dup):
        raise LinkageInputError(f"duplicate record_id(s): {', '.join(dup.unique()[:5])}")
    if df["source"].isna().any():
        raise LinkageInputError("every record needs a source")
    df["source"] = df["source"].astype(str)


def _check_codes(df: pd.DataFrame) -> None:
    for col in ("given_name", "family_name", "unit_code", "sex", "manner"):
        df[col] = _empty_to_none(df[col])
    df["sex"] = _map_distinct(df["sex"], lambda v: v.strip().upper() if isinstance(v, str) else v)
    bad_sex = set(df["sex"].dropna()) - set(SEXES)
    if bad_sex:
        raise LinkageInputError(f"sex must be M, F or missing, got {sorted(bad_sex)[:5]}")
    bad_manner = set(df["manner"].dropna()) - set(MANNERS)
    if bad_manner:
        raise LinkageInputError(
            f"manner must be one of {', '.join(MANNERS)} or missing, got {sorted(bad_manner)[:5]}"
        )


def _check_numbers(df: pd.DataFrame) -> None:
    df["age"] = pd.to_numeric(df["age"], errors="raise").astype("Int64")
    if ((df["age"] < 0) | (df["age"] > 130)).fillna(False).any():
        raise LinkageInputError("age must lie between 0 and 130")
    for col in ("birth_date", "death_date"):
        df[col] = pd.to_datetime(df[col], errors="raise").dt.date
        df[col] = df[col].astype("object").where(df[col].notna(), None)
    for col, bound in (("lon", 180.0), ("lat", 90.0)):
        df[col] = pd.to_numeric(df[col], errors="raise").astype("float64")
        if (df[col].abs() > bound).fillna(False).any():
            raise LinkageInputError(f"{col} out of range (|{col}| <= {bound:g})")


def validate_decisions(decisions: pd.DataFrame | None) -> pd.DataFrame:
    """Check analysts' decisions; return one row per unordered pair (the last one wins).

    The returned frame has record_id_l < record_id_r (as strings) and no self-pairs.
    """
    if decisions is None or len(decisions) == 0:
        return pd.DataFrame({c: pd.Series(dtype="object") for c in DECISION_COLUMNS})
    missing = [c for c in DECISION_COLUMNS if c not in decisions.columns]
    if missing:
        raise LinkageInputError(f"decisions lack the column(s): {', '.join(missing)}")
    df = decisions.loc[:, list(DECISION_COLUMNS)].copy()
    df["record_id_l"] = df["record_id_l"].astype(str)
    df["record_id_r"] = df["record_id_r"].astype(str)
    bad = set(df["decision"]) - set(DECISIONS)
    if bad:
        raise LinkageInputError(f"decision must be accept or reject, got {sorted(map(str, bad))}")
    if (df["record_id_l"] == df["record_id_r"]).any():
        raise LinkageInputError("a decision needs two different records")
    lo = df[["record_id_l", "record_id_r"]].min(axis=1)
    hi = df[["record_id_l", "record_id_r"]].max(axis=1)
    df["record_id_l"], df["record_id_r"] = lo, hi
    df = df.drop_duplicates(["record_id_l", "record_id_r"], keep="last")
    return df.reset_index(drop=True)
