"""Schemas for composite indexes: stored definitions, results per unit, rank uncertainty."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class IndexDefinitionRecord(BaseModel):
    """One stored version of a definition (``definition`` carries the same version)."""

    code: str
    version: int
    title: str = ""
    created_by: str
    created_at: datetime
    definition: dict[str, Any]


class IndexDefinitionList(BaseModel):
    """The latest version of every index definition."""

    items: list[IndexDefinitionRecord]


class IndexPeriods(BaseModel):
    """The periods with incidents, up to the latest complete one (what the maps show)."""

    code: str
    period: str = Field(description="the index's kind of period: year, quarter or month")
    periods: list[str] = Field(description="oldest first")
    latest: str | None = Field(description="the latest complete period")


class TreatmentStatement(BaseModel):
    """Which outlier rule applied to the index in this period, and why."""

    method: str = Field(description="the definition's treatment: jrc or none")
    min_units: int = Field(description="fewest units the JRC rule runs on by itself")
    units: int = Field(description="units in the index")
    applied: bool = Field(description="whether the rule ran (it may still change nothing)")
    rule: str = Field(description="the rule that applied, in plain words")


class IndicatorDescription(BaseModel):
    """What one indicator counts, per whom, from which census and how it is smoothed."""

    code: str
    name: str
    description: str = ""
    measure: str = Field(description="count, rate, eb_rate, share, change or external")
    per: str | None = Field(
        default=None, description="the denominator of a rate, e.g. 100,000 residents of all ages"
    )
    smoothing: str | None = Field(default=None, description="how the rate is smoothed, if it is")
    census_years: list[int] = Field(
        default_factory=list, description="census years of the denominator in this period"
    )
    census_sources: list[str] = Field(default_factory=list)
    statement: str = Field(description="all of the above in one sentence")


class TreatedValue(BaseModel):
    """One value the outlier treatment changed, with its value before."""

    indicator: str
    name: str
    action: str = Field(description="winsorised or log")
    original: float | None = Field(
        description="the value before treatment; null below the analyst role (a raw "
        "value gives the exact count)"
    )
    treated: float | None = Field(description="the value used; null below the analyst role")


class IndexResultRow(BaseModel):
    """One unit: indicator values at each step, dimension scores, score, rank and class."""

    unit_code: str
    unit_name: str
    rank: int | None
    previous_rank: int | None = Field(description="rank in the previous period, if computable")
    rank_change: int | None = Field(
        description="previous rank - rank: positive = moved up towards rank 1 (higher priority)"
    )
    score: float | None
    map_class: int | None = Field(serialization_alias="class", description="map class 1..k")
    raw: dict[str, float | None]
    treated: dict[str, float | None]
    normalised: dict[str, float | None]
    dimensions: dict[str, float | None]
    contributions: dict[str, float | None] = Field(description="score points; sum to the score")
    treated_values: list[TreatedValue] = Field(
        default_factory=list, description="values the outlier treatment changed"
    )


class IndexResults(BaseModel):
    """An index for one period: per unit results, the rule that applied, the indicators."""

    code: str
    version: int
    title: str = ""
    period: str
    previous_period: str
    unit_level: int
    weights: dict[str, float] = Field(description="effective indicator weights (sum to 1)")
    class_bins: list[float]
    treatment: TreatmentStatement
    indicators: list[IndicatorDescription]
    rows: list[IndexResultRow] = Field(description="by rank")
    notes: list[str]


class SensitivityRow(BaseModel):
    """One unit's rank band, and its score and rank with and without outlier treatment."""

    unit_code: str
    unit_name: str
    nominal_rank: int | None
    median_rank: float | None
    rank_q05: float | None
    rank_q95: float | None
    band: float | None
    score: float | None = Field(default=None, description="the score as defined")
    score_untreated: float | None = Field(
        default=None, description="the score without any outlier treatment"
    )
    rank_untreated: int | None = None
    score_jrc: float | None = Field(
        default=None,
        description="the score with the JRC outlier rule applied whatever the number of units",
    )
    rank_jrc: int | None = None


class IndexSensitivity(BaseModel):
    """Monte Carlo rank bands and the scores with and without outlier treatment."""

    code: str
    version: int
    period: str
    runs: int = Field(description="the definition's sensitivity.runs unless given")
    seed: int = Field(description="the definition's sensitivity.seed (1 by default) unless given")
    treatment: TreatmentStatement
    most_influential: str | None = Field(description="the assumption that moves ranks most")
    assumption_shift: dict[str, float] = Field(
        description="mean absolute rank shift caused by each assumption alone"
    )
    rows: list[SensitivityRow] = Field(description="by nominal rank")


class SensitivityBody(BaseModel):
    """What ``POST /indexes/{code}/sensitivity`` asks: the period and the Monte Carlo."""

    model_config = ConfigDict(extra="forbid")

    period: str = Field(description="one period of the index's kind, e.g. 2024")
    runs: int | None = Field(default=None, ge=1, description="default: the definition's")
    seed: int | None = Field(default=None, ge=0, description="default: the definition's")
    version: int | None = Field(default=None, ge=1, description="default: the latest")


class SensitivityRequest(BaseModel):
    """A sensitivity run's parameters, every default resolved (the key of a stored run)."""

    model_config = ConfigDict(extra="forbid")

    code: str
    version: int = Field(ge=1)
    period: str
    runs: int = Field(ge=1)
    seed: int = Field(ge=0)


class Contributor(BaseModel):
    """One indicator's contribution (score points) to a unit's score."""

    code: str
    name: str
    contribution: float | None = Field(
        description="score points; null below the analyst role when the index has an "
        "indicator counted from sensitive categories: any value shown, with the score and "
        "the non-negativity of contributions, would bound the withheld ones"
    )


class RankingRow(BaseModel):
    """One unit in the planners' view: rank, score, class, rank band, change, top drivers."""

    ranks: str = Field(
        description="the ranks the unit shares with those whose rank bands overlap its own "
        "('1\u20132', an en dash, which spreadsheets keep as text), or its rank when the data "
        "order it ('3'); empty without a rank"
    )
    rank_first: int | None
    rank_last: int | None
    shares_ranks_with: list[str] = Field(
        description="names of the units the data cannot order against this one"
    )
    rank: int | None = Field(description="the rank of the score as computed (1 = highest)")
    unit_code: str
    unit_name: str
    score: float | None
    map_class: int | None = Field(serialization_alias="class", description="map class 1..k")
    median_rank: float | None = Field(description="median rank over the Monte Carlo runs")
    rank_q05: float | None = Field(description="5 % rank quantile over the Monte Carlo runs")
    rank_q95: float | None = Field(description="95 % rank quantile over the Monte Carlo runs")
    previous_rank: int | None
    rank_change: int | None = Field(
        description="previous rank - rank: positive = moved up towards rank 1 (higher priority)"
    )
    top_indicators: list[Contributor] = Field(
        description="up to 3 largest contributions above 0, largest first (a 0 means the "
        "lowest unit on that indicator and is never listed); below the analyst role, when "
        "an indicator is withheld, only released indicators, named without values"
    )
    treated_values: list[TreatedValue] = Field(
        description="values the outlier treatment changed (below the analyst role without "
        "the values, and none of a withheld indicator)"
    )


class TreatmentComparisonRow(BaseModel):
    """One unit's score and rank as published, untreated and under the JRC rule."""

    unit_code: str
    unit_name: str
    score: float | None
    rank: int | None
    score_untreated: float | None
    rank_untreated: int | None
    score_jrc: float | None
    rank_jrc: int | None


class Ranking(BaseModel):
    """The planners' view of an index for one period (``GET /rankings``)."""

    index: str
    version: int
    title: str = ""
    period: str
    previous_period: str
    runs: int = Field(description="Monte Carlo runs of the bands: the definition's")
    seed: int = Field(description="the seed of the bands: the definition's (1 by default)")
    treatment: TreatmentStatement
    indicators: list[IndicatorDescription]
    contributions: str = Field(description="what a contribution is, in plain words")
    ties: list[str] = Field(description="which units share ranks, in plain words")
    treatment_comparison: list[TreatmentComparisonRow] | None = Field(
        description="scores with and without outlier treatment; null below the analyst role "
        "when an indicator is withheld (other scores would bound it)"
    )
    rows: list[RankingRow] = Field(description="by rank")
    notes: list[str]
