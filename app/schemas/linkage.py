"""Deaths from three agencies (issue 21): linkage run requests and answers, pairs under
review and decisions, the consolidated register, its disagreements and the quality
scorecard.

Two families: the linker's (:class:`PairPage`, :class:`DeathRecordView`: the deceased's
identifiers) and everybody else's (:class:`DeathPage`, :class:`Discrepancies`,
:class:`DeathSummary`, :class:`QualityReport`: not one identifier field).
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "DeathPage",
    "DeathPublic",
    "DeathRecordView",
    "DeathSummary",
    "Decision",
    "DecisionPublic",
    "Discrepancies",
    "DiscrepancyLine",
    "LinkageRunPublic",
    "LinkageRunRequest",
    "PairPage",
    "PairPublic",
    "QualityReport",
    "SourceQuality",
]

Probability = float


class LinkageRunRequest(BaseModel):
    """A linkage run: thresholds of the match bands (defaults: ``linkage`` settings),
    whether records of one source may link together, and the seed of the sampling."""

    model_config = ConfigDict(extra="forbid")

    match_threshold: float | None = Field(default=None, ge=0, le=1)
    review_threshold: float | None = Field(default=None, ge=0, le=1)
    keep_threshold: float | None = Field(default=None, ge=0, le=1)
    within_source: bool = Field(
        default=False,
        description="link records of the same agency too (duplicates within one source)",
    )
    seed: int | None = None


class LinkageRunPublic(BaseModel):
    """A linkage run: its status, parameters (m and u probabilities per comparison level,
    the prior, blocking rules, thresholds), counts, and what it stored."""

    id: int
    status: str
    progress: float
    message: str | None
    parameters: dict[str, Any]
    counts: dict[str, Any]
    stored: dict[str, int] = Field(description="pairs, records (clustered) and deaths stored")
    created_by: str
    created_at: datetime
    finished_at: datetime | None
    links: list[dict[str, str]] = []


class DeathRecordView(BaseModel):
    """One agency's record as the linker reviews it (identifiers included)."""

    id: int
    source: str
    source_id: str
    given_name: str | None
    family_name: str | None
    person_key: str | None
    names_hashed: bool
    sex: str | None
    age: int | None
    birth_date: date | None
    death_date: date | None
    unit_code: str | None
    manner: str | None
    manner_raw: str | None


class PairPublic(BaseModel):
    """A pair of records the run compared: its probability, band, the decision the run
    applied, and the latest decision on it (which the next run respects)."""

    id: int
    run_id: int
    match_probability: Probability | None
    match_weight: float | None
    band: Literal["match", "uncertain", "non_match"]
    decided: Literal["accept", "reject"] | None = Field(description="applied by this run")
    decision: Literal["accept", "reject"] | None = Field(description="the latest decision")
    note: str | None
    decided_by: str | None
    decided_at: datetime | None
    record_l: DeathRecordView
    record_r: DeathRecordView


class PairPage(BaseModel):
    """A page of pairs, most probable first."""

    run_id: int
    numberMatched: int
    pairs: list[PairPublic]


class Decision(BaseModel):
    """A linker's decision on a pair: the two records describe one death, or not."""

    model_config = ConfigDict(extra="forbid")

    decision: Literal["accept", "reject"]
    note: str | None = Field(default=None, max_length=2000)


class DecisionPublic(BaseModel):
    """A stored decision."""

    id: int
    pair_id: int | None
    run_id: int | None
    record_l: int
    record_r: int
    decision: str
    note: str | None
    decided_by: str
    decided_at: datetime


class DeathPublic(BaseModel):
    """One consolidated death (a cluster of agency records): which agencies recorded it,
    each one's manner, the consolidated manner and where it came from, date and unit.
    No identifier of the deceased."""

    cluster_id: int
    n_records: int
    sources: str
    n_sources: int
    in_police: bool
    in_forensic: bool
    in_health: bool
    manner_police: str | None
    manner_forensic: str | None
    manner_health: str | None
    manners_disagree: bool
    manner: str | None
    manner_from: str | None
    death_date: date | None
    unit_code: str | None
    same_source_duplicates: bool


class DeathPage(BaseModel):
    """The consolidated deaths of a period, from a linkage run."""

    period: str | None
    unit: str | None
    run_id: int
    records_not_linked_yet: int = Field(
        description="death records written after the run (or not seen by it): run again"
    )
    numberMatched: int
    deaths: list[DeathPublic]


class SourceCoding(BaseModel):
    """How one agency coded one death."""

    source: str
    manner: str | None
    manner_raw: str | None
    icd10: str | None
    iccs: str | None
    source_id: str | None = Field(
        default=None, description="the agency's record id: linker and admin only"
    )


class DiscrepancyLine(BaseModel):
    """One death the agencies disagree on (or that one agency alone recorded)."""

    cluster_id: int
    death_date: date | None
    unit_code: str | None
    sources: str
    manner: str | None
    manner_from: str | None
    manner_police: str | None
    manner_forensic: str | None
    manner_health: str | None
    codings: list[SourceCoding]


class Discrepancies(BaseModel):
    """Deaths whose manner differs between agencies, line by line, and deaths one agency
    alone recorded (by agency)."""

    period: str | None
    unit: str | None
    run_id: int
    manner_differs: list[DiscrepancyLine]
    single_source: dict[str, list[DiscrepancyLine]]


class DeathSummary(BaseModel):
    """Deaths found by all three agencies, by two (which), by one (which); the
    consolidated count by manner and its rule; a multiple-systems estimate."""

    period: str | None
    unit: str | None
    run_id: int
    deaths: int
    by_sources: dict[str, int]
    found_by: dict[str, int] = Field(description="all three, two, one")
    by_source: dict[str, int] = Field(description="deaths each agency recorded")
    by_manner: dict[str, int]
    manner_rule: str
    by_unit: dict[str, int]
    estimate: dict[str, Any] | None = Field(
        description="multiple-systems (capture-recapture) estimate of all deaths, missed by "
        "every agency included, with its interval and model; None when it cannot be made"
    )


class SourceQuality(BaseModel):
    """One agency's scores for one period."""

    source: str
    records: int
    completeness: dict[str, float | None]
    georeferenced: float | None
    precision: dict[str, int]
    unit_known: float | None
    timeliness: dict[str, float | None]
    coherence: dict[str, float | None]


class QualityReport(BaseModel):
    """The data quality scorecard of every agency for one period."""

    period: str
    run_id: int | None
    criteria: dict[str, str]
    sources: list[SourceQuality]
