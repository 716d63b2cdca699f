"""Schemas for analyses: what to count, where, with which weights and method."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class AnalysisFilters(_Strict):
    """The incident filters of ``GET /incidents``, as a JSON object."""

    categories: list[str] = []
    occurred_from: datetime | None = None
    occurred_to: datetime | None = None
    victim_sex: list[Literal["female", "male", "unknown"]] = []
    age_min: int | None = Field(default=None, ge=0, le=120)
    age_max: int | None = Field(default=None, ge=0, le=120)
    unit: str | None = Field(default=None, description="only incidents in this unit (any level)")
    sources: list[str] = []


class H3Units(_Strict):
    """Units of analysis: H3 hexagons of one resolution over the study area."""

    type: Literal["h3"] = "h3"
    resolution: int = Field(default=8, ge=4, le=10, description="H3 resolution (8 ≈ 0.74 km²)")


class GridUnits(_Strict):
    """Units of analysis: square cells of a regular grid in the territory's metric CRS."""

    type: Literal["grid"] = "grid"
    cell_size_m: float = Field(default=1000, ge=100, le=50_000, description="square side, metres")


class AdminUnits(_Strict):
    """Units of analysis: the administrative units of one level."""

    type: Literal["admin"] = "admin"
    level: int = Field(default=1, ge=0)


Units = Annotated[H3Units | GridUnits | AdminUnits, Field(discriminator="type")]

#: Which H3 or square cells make the study area (see ``COVER_DESCRIPTION``).
Cover = Literal["center", "intersects"]
COVER_DESCRIPTION = (
    "which H3 or grid cells make the study area: 'center', the cells whose centre lies in "
    "the area (H3's own rule, h3.polygon_to_cells) plus every cell that holds an incident "
    "of the area matching the filters, so that no incident is left out (those imported "
    "within territory.tolerance_m outside a coarse outline included); 'intersects', every "
    "cell that touches the area (more cells at the edge, e.g. water with zero counts, and "
    "incidents outside them are not counted). The run's summary gives the rule, the cells "
    "(units, cells_added_for_incidents) and the incidents counted"
)


def cover_field() -> Any:
    """The ``cover`` field of every grid analysis request (default ``center``)."""
    return Field(default="center", description=COVER_DESCRIPTION)


class WeightsSpec(_Strict):
    """Neighbours. Default: H3 neighbours for hexagons, queen contiguity otherwise."""

    type: Literal["queen", "rook", "h3", "knn", "distance_band"] | None = None
    k: int = Field(default=8, ge=1, le=100, description="neighbours, for knn")
    distance_m: float | None = Field(
        default=None, gt=0, description="band, for distance_band; default: the smallest "
        "distance that gives every unit a neighbour",
    )  # fmt: skip


class HotspotRequest(_Strict):
    """A hot spot analysis to run: Getis-Ord Gi*, Local Moran or Optimized Hot Spot
    Analysis, on the incidents that pass ``filters``, counted in ``units``."""

    method: Literal["gi_star", "local_moran", "optimized_gi_star"] = Field(
        default="gi_star",
        description="optimized_gi_star chooses the distance band by incremental spatial "
        "autocorrelation and applies FDR, as ArcGIS Pro's Optimized Hot Spot Analysis",
    )
    units: Units = H3Units()
    area: str | None = Field(
        default=None, description="unit code bounding the study area; default: the territory"
    )
    cover: Cover = cover_field()
    weights: WeightsSpec = WeightsSpec()
    filters: AnalysisFilters = AnalysisFilters()
    weight_by_victims: bool = Field(default=False, description="count victims, not incidents")
    permutations: int = Field(
        default=0, ge=0, le=9999, description="conditional permutations (0: analytic only)"
    )
    seed: int | None = Field(default=None, description="seed of the permutations")
    fdr: bool = Field(default=False, description="false discovery rate correction of the bins")
    alpha: float = Field(default=0.05, gt=0, lt=0.5, description="significance, Local Moran")

    @model_validator(mode="after")
    def _cover_needs_cells(self) -> HotspotRequest:
        if isinstance(self.units, AdminUnits) and "cover" in self.model_fields_set:
            raise ValueError("cover applies to H3 and grid units; admin units are themselves")
        return self


class EmergingRequest(_Strict):
    """ArcGIS Pro's Emerging Hot Spot Analysis on a space-time cube of H3 or grid cells."""

    units: Annotated[H3Units | GridUnits, Field(discriminator="type")] = H3Units()
    area: str | None = Field(
        default=None, description="unit code bounding the study area; default: the territory"
    )
    cover: Cover = cover_field()
    weights: WeightsSpec = WeightsSpec()
    filters: AnalysisFilters = AnalysisFilters()
    weight_by_victims: bool = False
    time_step: Literal["week", "month", "quarter", "year"] = "month"
    time_lag: int = Field(
        default=1, ge=0, le=12, description="neighbourhood time step: previous steps included"
    )
    alpha: float = Field(default=0.10, gt=0, lt=0.5, description="significance of a bin (90 %)")
    trend_alpha: float = Field(
        default=0.05, gt=0, lt=0.5, description="significance of the Mann-Kendall trend"
    )
    fdr: bool = Field(default=False, description="Benjamini-Hochberg over all bins")


class GlobalMoran(BaseModel):
    """Global Moran's I of a Local Moran run (``summary.global_moran``), with esda's names.

    Row-standardised weights; the two z differ by their variance of I (Cliff and Ord
    1981): under normality it assumes the counts normal, under randomisation it uses
    their kurtosis (spdep's ``moran.test`` and ArcGIS Pro's Spatial Autocorrelation
    report the randomisation z).
    """

    i: float = Field(description="Moran's I (esda I)")
    expected: float = Field(description="E[I] = -1/(n-1) (esda EI)")
    variance_norm: float = Field(description="Var[I] under normality (esda VI_norm)")
    variance_rand: float = Field(description="Var[I] under randomisation (esda VI_rand)")
    z_norm: float = Field(description="(I - E[I]) / sqrt(variance_norm) (esda z_norm)")
    z_rand: float = Field(description="(I - E[I]) / sqrt(variance_rand) (esda z_rand)")
    p_norm: float = Field(description="two-sided normal p of z_norm (esda p_norm)")
    p_rand: float = Field(description="two-sided normal p of z_rand (esda p_rand)")
    p_sim: float | None = Field(
        description="pseudo p from the run's permutations of the counts (esda p_sim): "
        "(min(k, permutations - k) + 1) / (permutations + 1), k the permuted I at least "
        "the observed one"
    )


class AnalysisRunPublic(BaseModel):
    """One analysis run: what was asked, how far it got, and what it found."""

    id: int
    kind: str
    method: str
    parameters: dict[str, Any]
    status: str
    progress: float
    message: str | None
    summary: dict[str, Any] = Field(
        description="what the run found and counted: units (cells), cover, "
        "cells_added_for_incidents, incidents, counted; global_moran (a GlobalMoran) for "
        "Local Moran runs"
    )
    created_by: str
    created_at: datetime
    finished_at: datetime | None
    links: list[dict[str, str]] = []


class AnalysisRunList(BaseModel):
    """Analysis runs, newest first."""

    runs: list[AnalysisRunPublic]
