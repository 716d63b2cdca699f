"""Schemas for density surfaces (KDE) and for the evaluation of hot spot selections."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from app.schemas.analyses import AnalysisFilters, Cover, GridUnits, H3Units, cover_field


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class KdeQuery(_Strict):
    """What a density surface is made of: the incidents and the kernel's scale."""

    filters: AnalysisFilters = AnalysisFilters()
    bandwidth_m: float | None = Field(
        default=None, gt=0, description="search radius, metres; default: ArcGIS's rule"
    )
    cell_size_m: float | None = Field(
        default=None, gt=0, description="cell side, metres; default: ArcGIS's rule"
    )
    victims: bool = Field(default=False, description="weight each incident by its victims")


class KdeRequest(KdeQuery):
    """A KDE run: the surface, and its hot areas above ``percentile``."""

    percentile: float = Field(
        default=95, ge=0, lt=100, description="hot areas: of the non-zero cell densities"
    )


class EvaluationFilters(_Strict):
    """The incident filters of ``GET /incidents`` without dates (the periods give them)."""

    categories: list[str] = []
    victim_sex: list[Literal["female", "male", "unknown"]] = []
    age_min: int | None = Field(default=None, ge=0, le=120)
    age_max: int | None = Field(default=None, ge=0, le=120)
    unit: str | None = Field(default=None, description="only incidents in this unit (any level)")
    sources: list[str] = []


class Period(_Strict):
    """A half-open period ``[from, to)``."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    start: datetime = Field(alias="from", description="inclusive")
    end: datetime = Field(alias="to", description="exclusive")

    @model_validator(mode="after")
    def _ordered(self) -> Period:
        if self.end <= self.start:
            raise ValueError("a period's 'to' must come after its 'from'")
        return self


EvaluationMethod = Literal["gi_star", "kde", "counts"]
EvaluationUnits = Annotated[H3Units | GridUnits, Field(discriminator="type")]


class EvaluationRequest(_Strict):
    """Select hot cells on ``train`` with each method; score them on ``test``."""

    filters: EvaluationFilters = EvaluationFilters()
    train: Period
    test: Period
    units: EvaluationUnits = H3Units()
    area: str | None = Field(
        default=None, description="unit code bounding the study area; default: the territory"
    )
    cover: Cover = cover_field()
    area_share: float = Field(
        default=0.05, gt=0, le=1, description="share of the study area each method selects"
    )
    methods: list[EvaluationMethod] = Field(
        default=["gi_star", "kde", "counts"], min_length=1, description="methods to compare"
    )
    kde_bandwidth_m: float | None = Field(
        default=None, gt=0, description="KDE search radius, metres; default: ArcGIS's rule"
    )

    @model_validator(mode="after")
    def _check(self) -> EvaluationRequest:
        if len(set(self.methods)) != len(self.methods):
            raise ValueError("methods must not repeat")
        if self.train.start < self.test.end and self.test.start < self.train.end:
            raise ValueError("the train and test periods must not overlap")
        return self


class EvaluationRow(BaseModel):
    """One method's selection, scored (NaN ratios are null)."""

    method: EvaluationMethod
    units: int = Field(description="selected units")
    selected_area_km2: float
    total_area_km2: float
    hits_train: float = Field(description="train-period incidents in the selection")
    total_train: float
    hits_test: float = Field(description="test-period incidents in the selection")
    total_test: float
    hit_rate: float | None = Field(description="hits_test / total_test")
    area_share: float = Field(description="selected_area_km2 / total_area_km2")
    pai: float | None = Field(description="hit_rate / area_share (Chainey et al. 2008)")
    pai_train: float | None
    rri: float | None = Field(description="(hits_test/hits_train)/(total_test/total_train)")
    rank_pai: int | None = Field(description="1 = highest PAI")


class EvaluationPublic(BaseModel):
    """An evaluation run and its table."""

    id: int
    status: str
    progress: float
    message: str | None
    parameters: dict[str, Any]
    rows: list[EvaluationRow]
    summary: dict[str, Any]
    created_by: str
    created_at: datetime
    finished_at: datetime | None
    links: list[dict[str, str]] = []
