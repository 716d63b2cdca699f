"""Early warning (issue 19): monitor definitions and the alerts their evaluation raises.

A monitor says which incidents to count (categories or category groups, victim sex, age
range, source), where (the units of one level, or the H3 cells of one resolution), per
which time step (ISO week or month, local time of the territory), which detector of
:mod:`surveillance` to run with which parameters, and the count below which no alert is
raised. Definitions are stored versioned, like index definitions; ``sensitive`` monitors
and their alerts are for analysts only.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from app.core.errors import InvalidParameter

__all__ = [
    "AlertDetail",
    "AlertList",
    "AlertPatch",
    "AlertRecord",
    "Detector",
    "IncidentSelection",
    "MonitorDefinition",
    "MonitorList",
    "MonitorRecord",
    "Places",
    "SeriesPoint",
    "load_monitor",
]

Code = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$")]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class IncidentSelection(_Strict):
    """Which incidents a monitor counts (every condition holds; none given: all)."""

    categories: list[str] = Field(default_factory=list, description="category codes")
    category_groups: list[str] = Field(
        default_factory=list, description="category groups (categories.csv category_group)"
    )
    victim_sex: Literal["female", "male", "unknown"] | None = None
    age_min: int | None = Field(default=None, ge=0, le=120)
    age_max: int | None = Field(default=None, ge=0, le=120)
    source: str | None = Field(default=None, description="only incidents of this source")

    @model_validator(mode="after")
    def _ages(self) -> IncidentSelection:
        if self.age_min is not None and self.age_max is not None and self.age_min > self.age_max:
            raise ValueError("age_min must not exceed age_max")
        return self


class Places(_Strict):
    """Where: every unit of ``level``, or every H3 cell of ``resolution`` with incidents."""

    kind: Literal["units", "h3"]
    level: int | None = Field(default=None, ge=0, le=5, description="units: the level")
    resolution: int | None = Field(default=None, ge=4, le=10, description="h3: the resolution")

    @model_validator(mode="after")
    def _one(self) -> Places:
        if self.kind == "units" and (self.level is None or self.resolution is not None):
            raise ValueError("places of kind 'units' need a level (and no resolution)")
        if self.kind == "h3" and (self.resolution is None or self.level is not None):
            raise ValueError("places of kind 'h3' need a resolution (and no level)")
        return self


class Detector(_Strict):
    """A detector of :mod:`surveillance` and its keyword parameters (R's defaults if none).

    ``ears``: method C1/C2/C3, baseline, alpha, min_sigma. ``farrington``: b, w, reweight,
    alpha, trend, no_periods, past_weeks_not_included, threshold_method (``nbPlugin``
    with no_periods 10 and past_weeks_not_included 26 is Noufaily et al. 2013). ``glrnb``:
    see :func:`surveillance.glrnb.glrnb`.
    """

    name: Literal["ears", "farrington", "glrnb"]
    parameters: dict[str, Any] = Field(default_factory=dict)


class MonitorDefinition(_Strict):
    """One monitored family of count series (one per place)."""

    name: Code
    version: int = 1
    title: str
    title_es: str = Field(default="", description='the title in Spanish; "": the title')
    description: str = ""
    incidents: IncidentSelection = Field(default_factory=IncidentSelection)
    places: Places
    step: Literal["week", "month"]
    detector: Detector
    min_count: int = Field(
        default=3, ge=1, description="no alert where the period's count is below this"
    )
    sensitive: bool = Field(default=False, description="monitor and alerts: analysts only")


def load_monitor(source: bytes | str | dict) -> MonitorDefinition:
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
                raise InvalidParameter(
                    f"the monitor definition is not YAML or JSON: {exc}"
                ) from exc
    if not isinstance(data, dict):
        raise InvalidParameter("a monitor definition is a mapping (name, title, places, ...)")
    try:
        return MonitorDefinition.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'definition'}: {e['msg']}"
            for e in exc.errors()
        )
        raise InvalidParameter(f"invalid monitor definition: {problems}") from exc


class MonitorRecord(BaseModel):
    """One stored version of a monitor definition."""

    code: str
    version: int
    title: str = ""
    sensitive: bool = False
    created_by: str
    created_at: datetime
    definition: dict[str, Any]


class MonitorList(BaseModel):
    """The latest version of every monitor the caller may see."""

    items: list[MonitorRecord]


class SeriesPoint(BaseModel):
    """One period of an alert's series: what was counted and what was expected."""

    period: str
    observed: float | None
    expected: float | None = None
    threshold: float | None = None
    alarm: bool = False
    reason: str | None = Field(default=None, description="why no threshold, if none")


class AlertRecord(BaseModel):
    """An alarm of the latest evaluated period, kept while it lasts.

    For a group of contiguous H3 cells, observed, expected and threshold are the sums over
    its cells (the threshold sum is a summary, not a test of the group)."""

    id: int
    monitor: str
    monitor_version: int
    title: str = ""
    sensitive: bool
    place_kind: Literal["unit", "h3"]
    unit: str | None = Field(default=None, description="unit code (places of kind units)")
    unit_name: str | None = None
    cells: list[str] = Field(default_factory=list, description="H3 cells of the group")
    period: str = Field(description="the latest period alarmed")
    first_period: str = Field(description="the period the alert was raised for")
    observed: float | None
    expected: float | None
    threshold: float | None
    lasted: int = Field(description="consecutive alarmed periods up to `period`")
    state: Literal["new", "acknowledged", "closed"]
    note: str | None = None
    state_changed_by: str | None = None
    state_changed_at: datetime | None = None
    created_at: datetime
    updated_at: datetime


class AlertList(BaseModel):
    """Alerts, newest period first."""

    items: list[AlertRecord]


class AlertDetail(AlertRecord):
    """An alert with its series over the last two years, for a chart."""

    series: list[SeriesPoint]
    outline: dict[str, Any] | None = Field(default=None, description="GeoJSON geometry")


class AlertPatch(_Strict):
    """An analyst acknowledges an alert (with a note) or closes it."""

    state: Literal["acknowledged", "closed"]
    note: str | None = Field(default=None, max_length=2000)
