"""Schemas for composite indexes: stored definitions, results per unit, rank uncertainty."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field


class IndexDefinitionRecord(BaseModel):
    """One stored version of a definition (``definition`` carries the same version)."""

    code: str
    version: int
    title: str = ""
    created_by: str
    created_at: datetime
    definition: dict[str, Any]


class IndexDefinitionList(BaseModel):
    items: list[IndexDefinitionRecord]


class IndexPeriods(BaseModel):
    """The periods with incidents, up to the latest complete one (what the maps show)."""

    code: str
    period: str = Field(description="the index's kind of period: year, quarter or month")
    periods: list[str] = Field(description="oldest first")
    latest: str | None = Field(description="the latest complete period")


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


class IndexResults(BaseModel):
    code: str
    version: int
    title: str = ""
    period: str
    previous_period: str
    unit_level: int
    weights: dict[str, float] = Field(description="effective indicator weights (sum to 1)")
    class_bins: list[float]
    rows: list[IndexResultRow] = Field(description="by rank")
    notes: list[str]


class SensitivityRow(BaseModel):
    unit_code: str
    unit_name: str
    nominal_rank: int | None
    median_rank: float | None
    rank_q05: float | None
    rank_q95: float | None
    band: float | None


class IndexSensitivity(BaseModel):
    code: str
    version: int
    period: str
    runs: int
    seed: int
    most_influential: str | None = Field(description="the assumption that moves ranks most")
    assumption_shift: dict[str, float] = Field(
        description="mean absolute rank shift caused by each assumption alone"
    )
    rows: list[SensitivityRow] = Field(description="by nominal rank")


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

    rank: int | None
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
        description="the 3 largest contributions, largest first; below the analyst role, "
        "when an indicator is withheld, only released indicators, named without values"
    )


class Ranking(BaseModel):
    index: str
    version: int
    title: str = ""
    period: str
    previous_period: str
    runs: int
    seed: int
    rows: list[RankingRow] = Field(description="by rank")
    notes: list[str]
