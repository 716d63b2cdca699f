"""The periodic situational report (issue 20): report definitions, requests and the
stored reports' metadata.

A definition says which period kind it is built for (month, quarter, half-year, year),
its sections in order, the measures it counts (one category, a category group, or, for
analysts, several categories in one count), its language and its audience. Definitions
are stored versioned, like index and monitor definitions (:mod:`app.services.definitions`).
A ``public`` definition is built from what a caller without a key gets from ``/stats``,
``/rankings`` and ``/alerts``, so each of its measures must be one public table: one
category or one category group, never a sensitive one (checked against the vocabulary
when it is built).
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from app.core.errors import InvalidParameter

__all__ = [
    "Measure",
    "ReportDefinition",
    "ReportDefinitionList",
    "ReportDefinitionRecord",
    "ReportList",
    "ReportRecord",
    "ReportRequest",
    "load_report_definition",
]

Code = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$")]
SectionKey = Literal[
    "headline", "trend", "districts", "victims", "when", "where", "index", "quality", "methods"
]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Measure(_Strict):
    """One counted thing: a category, several categories, or a category group."""

    code: Code
    name: str
    categories: list[str] = Field(default_factory=list, description="category codes")
    category_group: str | None = Field(default=None, description="one category group")

    @model_validator(mode="after")
    def _one_kind(self) -> Measure:
        if bool(self.categories) == bool(self.category_group):
            raise ValueError(
                f"measure {self.code}: give either categories or a category_group, not both"
            )
        return self


class ReportDefinition(_Strict):
    """What a report holds and for whom (see the module docstring)."""

    name: Code
    version: int = 1
    title: str
    description: str = ""
    audience: Literal["public", "analyst"]
    language: Literal["en", "es"] = "en"
    period: Literal["month", "quarter", "half-year", "year"] = "quarter"
    sections: list[SectionKey] = Field(min_length=1)
    measures: list[Measure] = Field(min_length=1, description="the headline figures, in order")
    districts_measure: str = Field(description="the measure of the district table and map")
    victims_measure: str = Field(description="the measure of victims by sex and age group")
    vawg_measure: str | None = Field(
        default=None, description="analysts: violence against women and girls by age group"
    )
    when_measure: str | None = Field(
        default=None, description="analysts: the measure of the weekday x hour chart"
    )
    trend_months: int = Field(default=36, ge=12, le=120)
    index: str | None = Field(default=None, description="the composite index ranked")
    alerts: bool = True

    @model_validator(mode="after")
    def _consistent(self) -> ReportDefinition:
        codes = [m.code for m in self.measures]
        if len(set(codes)) != len(codes):
            raise ValueError("measure codes must be unique")
        if len(set(self.sections)) != len(self.sections):
            raise ValueError("a section is listed twice")
        for field in ("districts_measure", "victims_measure", "vawg_measure", "when_measure"):
            value = getattr(self, field)
            if value is not None and value not in codes:
                raise ValueError(f"{field} {value!r} is not one of the measures ({codes})")
        if self.audience == "public":
            self._public()
        return self

    def _public(self) -> None:
        """A public report is made of public tables only (app.services.lattice)."""
        if self.period == "half-year":
            raise ValueError(
                "a public report covers a month, a quarter or a year (the public tables' "
                "periods); a half-year needs the analyst audience"
            )
        for m in self.measures:
            if len(m.categories) > 1:
                raise ValueError(
                    f"measure {m.code}: a public count covers one category or one category "
                    "group (several categories in one count need the analyst audience)"
                )
        if self.vawg_measure or self.when_measure:
            raise ValueError("vawg_measure and when_measure are for the analyst audience only")

    def measure(self, code: str) -> Measure:
        """The measure ``code`` (it exists: checked when the definition was read)."""
        return next(m for m in self.measures if m.code == code)


def load_report_definition(source: bytes | str | dict) -> ReportDefinition:
    """A JSON or YAML text (or a mapping) → a validated definition; InvalidParameter (422)
    names every invalid field."""
    if isinstance(source, dict):
        data: Any = source
    else:
        try:
            data = yaml.safe_load(source)
        except yaml.YAMLError as exc:
            try:
                data = json.loads(source)
            except ValueError:
                raise InvalidParameter(f"the report definition is not YAML or JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise InvalidParameter("a report definition is a mapping (name, title, sections, ...)")
    try:
        return ReportDefinition.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'definition'}: {e['msg']}"
            for e in exc.errors()
        )
        raise InvalidParameter(f"invalid report definition: {problems}") from exc


class ReportDefinitionRecord(BaseModel):
    """One stored version of a report definition."""

    code: str
    version: int
    title: str
    audience: str
    created_by: str
    created_at: datetime
    definition: dict[str, Any]


class ReportDefinitionList(BaseModel):
    """The latest version of every report definition the caller may see."""

    items: list[ReportDefinitionRecord]


class ReportRequest(_Strict):
    """``POST /reports``: a definition (its latest version unless given) and a period."""

    definition: Code
    period: str = Field(
        max_length=16, description="2024Q3, 2024-07, 2024H2 or 2024", examples=["2024Q3"]
    )
    version: int | None = Field(default=None, ge=1, le=2_147_483_647)


class ReportRecord(BaseModel):
    """A stored report: what it was built from, and where its files are."""

    id: int
    definition: str
    definition_version: int
    period: str
    language: str
    audience: str
    data_version: int
    run_id: int | None
    created_by: str
    created_at: datetime
    summary: dict[str, Any] = Field(description="the headline figures and the sections built")
    formats: list[str] = Field(description="the files stored: html, pdf, zip")
    links: list[dict[str, str]] = Field(default_factory=list)


class ReportList(BaseModel):
    """Stored reports, newest first."""

    items: list[ReportRecord]
