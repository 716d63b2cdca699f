"""Schemas for disaggregated statistics: one row per unit and breakdown, with rates."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

# Columns of a row in order; a breakdown column is present only when it was asked for.
UNIT_COLUMNS = ("unit_code", "unit_name", "unit_level")
BREAKDOWN_COLUMNS = ("category", "category_group", "period", "victim_sex", "age_group")
VALUE_COLUMNS = (
    "count",
    "population",
    "population_year",
    "population_sex",
    "population_age_group",
    "population_source",
    "rate",
    "rate_eb_global",
    "rate_eb_spatial",
    "rse",
    "unstable",
    "suppressed",
)


class StatsRow(BaseModel):
    """Counts and rates per 100,000 of one unit and one combination of breakdowns."""

    model_config = ConfigDict(extra="forbid")

    unit_code: str
    unit_name: str
    unit_level: int
    category: str | None = None
    category_group: str | None = None
    period: str | None = Field(
        default=None, description="`2024`, `2024-Q1` or `2024-03` (local time)."
    )
    victim_sex: str | None = Field(default=None, description="female, male or unknown.")
    age_group: str | None = Field(
        default=None, description="A requested age group, `unknown`, or `other`."
    )
    count: int | None = Field(
        ge=0, description="Incidents (not victims); null when withheld (see `suppressed`)."
    )
    population: float | None = Field(
        description="Denominator: population of the matching year, sex and age group; null "
        "when none is loaded."
    )
    population_year: int | None
    population_sex: str | None = Field(description="total, female or male.")
    population_age_group: str | None
    population_source: str | None
    rate: float | None = Field(description="count / population x 100,000.")
    rate_eb_global: float | None = Field(
        description="Empirical Bayes rate per 100,000 toward the overall rate (Marshall 1991)."
    )
    rate_eb_spatial: float | None = Field(
        description="Empirical Bayes rate per 100,000 toward the neighbourhood's rate."
    )
    rse: float | None = Field(description="Poisson relative standard error, 1 / sqrt(count).")
    unstable: bool | None = Field(
        description="Fewer than 20 incidents: do not over-read the rate (null when withheld)."
    )
    suppressed: bool = Field(
        default=False,
        description="Withheld for callers below analyst (small count, sensitive category, "
        "or withheld so that another withheld cell cannot be recomputed): count and rates "
        "are null.",
    )


class StatsFilters(BaseModel):
    """The incident filters a table was computed with."""

    categories: list[str]
    occurred_from: datetime | None
    occurred_to: datetime | None
    victim_sex: list[str]
    age_min: int | None
    age_max: int | None
    sources: list[str]


class StatsParameters(BaseModel):
    """Everything needed to ask for the same table again, and how it was computed."""

    level: int | None
    units: list[str]
    by: list[str]
    period: str = Field(description="Granularity: month, quarter or year.")
    period_value: str | None = Field(description="The one period asked for, e.g. `2024`.")
    timezone: str
    age_groups: list[str]
    filters: StatsFilters
    per: float
    unstable_below: int
    weights: dict
    sensitive_categories: list[str] = Field(
        default=[],
        description="Categories flagged sensitive: withheld from callers below analyst, "
        "with every total that includes them.",
    )


class StatsTable(BaseModel):
    """A table of counts and rates by unit (and by category, period, sex or age group),
    with the parameters that give it again and notes on how to read it."""

    rows: list[StatsRow]
    parameters: StatsParameters
    notes: list[str]
