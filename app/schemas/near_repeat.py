"""Schemas for near repeat (issue 19): the Knox test over distance x time bands, and the
risk zones a significant result draws around new incidents."""

from __future__ import annotations

from itertools import pairwise
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from app.schemas.analyses import AnalysisFilters

__all__ = ["MAX_BANDS", "NearRepeatBand", "NearRepeatRequest"]

# Bands per axis: Ratcliffe's Near Repeat Calculator offers up to 10 of each.
MAX_BANDS = 10

Bbox = Annotated[
    list[float],
    Field(
        min_length=4,
        max_length=4,
        description="[min lon, min lat, max lon, max lat] (EPSG:4326): only incidents inside",
    ),
]


def _check_edges(edges: list[float], what: str, unit: str) -> list[float]:
    if any(e <= 0 for e in edges):
        raise ValueError(f"{what} are upper edges in {unit} and must be positive")
    if any(b <= a for a, b in pairwise(edges)):
        raise ValueError(f"{what} must be strictly increasing (upper edges of consecutive bands)")
    return edges


class NearRepeatRequest(BaseModel):
    """A near-repeat analysis: Knox's test per distance band x time band on the incidents
    that pass ``filters`` (and ``category_groups``, ``bbox``), with Monte Carlo
    permutations of their times (Ratcliffe's Near Repeat Calculator)."""

    model_config = ConfigDict(extra="forbid")

    filters: AnalysisFilters = AnalysisFilters()
    category_groups: list[str] = Field(
        default_factory=list,
        description="category groups (GET /categories: category_group); with "
        "filters.categories, incidents of either",
    )
    bbox: Bbox | None = None
    distance_bands_m: list[float] = Field(
        default=[100, 200, 300, 400, 500],
        min_length=1,
        max_length=MAX_BANDS,
        description="upper edges of the distance bands in metres, increasing: [100, 200] is "
        "0-100 m and 100-200 m (closed on the right); pairs farther apart than the last "
        "are not tallied. Distances are measured in territory.projected_crs",
    )
    time_bands_days: list[float] = Field(
        default=[7, 14, 21, 28],
        min_length=1,
        max_length=MAX_BANDS,
        description="upper edges of the time bands in days, increasing (closed on the right)",
    )
    permutations: int = Field(
        default=999, ge=19, le=9999, description="Monte Carlo permutations of the times"
    )
    seed: int | None = Field(default=None, description="seed of the permutations")
    alpha: float = Field(
        default=0.05, gt=0, lt=0.5, description="significance of a band cell (p <= alpha)"
    )
    risk_zones: bool = Field(
        default=False,
        description="when the result is significant, turn every incident of these filters "
        "(any date) into a risk zone: a disc of the significant distance around it, valid "
        "for the significant time after it (the risk_zones layers); expired zones are "
        "not served",
    )
    risk_zones_days: int = Field(
        default=90,
        ge=1,
        le=366,
        description="how long after the run new incidents still become risk zones (the "
        "pattern should be tested again after that)",
    )

    @field_validator("distance_bands_m")
    @classmethod
    def _distances(cls, v: list[float]) -> list[float]:
        v = _check_edges(v, "distance_bands_m", "metres")
        if v[-1] > 20_000:
            raise ValueError("distance_bands_m: the last band may reach at most 20,000 m")
        return v

    @field_validator("time_bands_days")
    @classmethod
    def _times(cls, v: list[float]) -> list[float]:
        v = _check_edges(v, "time_bands_days", "days")
        if v[-1] > 366:
            raise ValueError("time_bands_days: the last band may reach at most 366 days")
        return v

    @field_validator("category_groups")
    @classmethod
    def _groups(cls, v: list[str]) -> list[str]:
        return [g.strip().lower() for g in v]

    @model_validator(mode="after")
    def _box(self) -> NearRepeatRequest:
        if self.bbox is not None:
            x0, y0, x1, y1 = self.bbox
            if not (-180 <= x0 < x1 <= 180 and -90 <= y0 < y1 <= 90):
                raise ValueError(
                    "bbox must be [min lon, min lat, max lon, max lat] with min < max, "
                    "within -180..180 and -90..90"
                )
        return self


class NearRepeatBand(BaseModel):
    """One cell of the band table (a row of the CSV)."""

    distance_from: float = Field(description="metres, exclusive (0: inclusive)")
    distance_to: float = Field(description="metres, inclusive")
    time_from: float = Field(description="days, exclusive (0: inclusive)")
    time_to: float = Field(description="days, inclusive")
    observed: int = Field(description="pairs of incidents this close in space and time")
    expected: float = Field(description="mean pairs over the permutations of the times")
    knox_ratio: float | None = Field(description="observed / expected (null if expected 0)")
    p_value: float = Field(description="(#permutations with >= observed pairs + 1) / (n + 1)")
    significant: bool = Field(description="p_value <= alpha and knox_ratio > 1")
