"""Index definitions: a validated, versioned description of one composite index.

A definition is JSON or YAML. :func:`load_definition` validates it with the pydantic models
below and raises :class:`indexes.IndexDefinitionError` listing *every* problem, each with
its location (``indicators[2].weight: ...``). Unknown keys are errors, not silently dropped.

Example (YAML)::

    name: territorial-violence
    version: 1
    unit_level: 1
    period: year
    dimensions:
      - {code: lethal, name: Lethal violence, weight: 2}
      - {code: gbv, name: Violence against women}
    indicators:
      - code: homicide_rate
        name: Homicides per 100,000
        source: {incidents: {categories: [homicide], measure: rate}}
        dimension: lethal
      - code: sexual_violence_f
        name: Sexual violence against women and girls per 100,000
        source: {incidents: {categories: [rape, sexual_assault], victim_sex: female}}
        dimension: gbv
      - code: poverty
        name: Poverty headcount (%)
        source: {external: poverty_headcount}
        dimension: gbv
        weight: 0.5
    normalisation: minmax
    aggregation: arithmetic
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from indexes import IndexDefinitionError
from indexes.treat import MIN_UNITS

__all__ = [
    "AGGREGATIONS",
    "DEFAULT_SEED",
    "NORMALISATIONS",
    "Aggregation",
    "ClassesSpec",
    "Dimension",
    "Goalposts",
    "IncidentSource",
    "IndexDefinition",
    "Indicator",
    "IndicatorSource",
    "Normalisation",
    "NormalisationSpec",
    "SensitivitySpec",
    "TreatmentSpec",
    "load_definition",
]

Normalisation = Literal["minmax", "zscore", "rank", "percentile", "goalposts", "distance_to_best"]
Aggregation = Literal["arithmetic", "geometric", "copeland"]
NORMALISATIONS: tuple[str, ...] = Normalisation.__args__  # type: ignore[attr-defined]
AGGREGATIONS: tuple[str, ...] = Aggregation.__args__  # type: ignore[attr-defined]

Code = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z][A-Za-z0-9_.\-]*$")]
PositiveWeight = Annotated[float, Field(gt=0, allow_inf_nan=False)]
#: The Monte Carlo seed of a definition that names none: the same bands on every request.
DEFAULT_SEED = 1


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class IncidentSource(_Model):
    """An indicator the app derives from incidents (the engine only records it).

    ``measure``: ``count``; ``rate`` per 100,000 of the population; ``eb_rate`` (the
    rate smoothed by global Empirical Bayes toward the rate of all units together, the
    national rate when the units cover the territory); ``share`` of all incidents of the
    unit; ``change`` against the previous period.

    ``denominator`` of a rate: ``matching``, the population of the victims' sex and age
    range (all ages when that age group is not loaded, and the results say so);
    ``all_ages``, the population of the victims' sex, of all ages, whatever the victims'
    age range (so the name can say so once and for all).
    """

    categories: list[Annotated[str, Field(min_length=1)]] = Field(min_length=1)
    victim_sex: Literal["female", "male"] | None = None
    age_min: Annotated[int, Field(ge=0, le=130)] | None = None
    age_max: Annotated[int, Field(ge=0, le=130)] | None = None
    measure: Literal["count", "rate", "eb_rate", "share", "change"] = "rate"
    denominator: Literal["matching", "all_ages"] = "matching"

    @model_validator(mode="after")
    def _age_range(self) -> IncidentSource:
        if self.age_min is not None and self.age_max is not None and self.age_min > self.age_max:
            raise ValueError(f"age_min ({self.age_min}) is greater than age_max ({self.age_max})")
        return self


class IndicatorSource(_Model):
    """Where an indicator's raw values come from: exactly one of ``incidents``, ``external``."""

    incidents: IncidentSource | None = None
    external: Code | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> IndicatorSource:
        if (self.incidents is None) == (self.external is None):
            raise ValueError("give exactly one of 'incidents' or 'external'")
        return self


class Goalposts(_Model):
    """Goalposts of one indicator on its raw scale: ``low`` scores 0 and ``high`` 100
    (reversed for direction -1)."""

    low: float = Field(allow_inf_nan=False)
    high: float = Field(allow_inf_nan=False)

    @model_validator(mode="after")
    def _ordered(self) -> Goalposts:
        if not self.low < self.high:
            raise ValueError(f"goalposts need low < high (got low={self.low}, high={self.high})")
        return self


class Indicator(_Model):
    """One indicator: its code (the raw table's column), source, direction and weight.

    ``name`` and ``description`` say what is counted and per whom (the page and the exports
    show them). ``direction`` +1: a higher raw value means a higher index score (a higher
    priority); -1: the reverse. ``weight`` is relative to the other indicators of the same dimension
    (or of the index when there are no dimensions). ``transform`` is applied to the raw
    values before imputation and outlier treatment.
    """

    code: Code
    name: str = ""
    description: str = ""
    source: IndicatorSource
    direction: Literal[1, -1] = 1
    weight: PositiveWeight = 1.0
    dimension: Code | None = None
    transform: Literal["log1p", "sqrt"] | None = None
    goalposts: Goalposts | None = None

    @field_validator("direction", mode="before")
    @classmethod
    def _signs(cls, value: Any) -> Any:
        return {"+": 1, "-": -1, "+1": 1, "-1": -1}.get(value, value)


class Dimension(_Model):
    """A dimension (pillar) of the hierarchy indicators → dimensions → index."""

    code: Code
    name: str = ""
    weight: PositiveWeight = 1.0


def _from_string(value: Any) -> Any:
    return {"method": value} if isinstance(value, str) else value


class TreatmentSpec(_Model):
    """Outlier treatment: ``none`` or the JRC / COINr rule (see :mod:`indexes.treat`).

    The rule runs only on an index of at least ``min_units`` units (default
    :data:`indexes.treat.MIN_UNITS`, 20); a definition asks for it on fewer units by
    lowering ``min_units``.
    """

    method: Literal["none", "jrc"] = "jrc"
    min_units: Annotated[int, Field(ge=1)] = MIN_UNITS
    winmax: Annotated[int, Field(ge=0, le=1000)] = 5
    skew_threshold: Annotated[float, Field(gt=0)] = 2.0
    kurtosis_threshold: float = 3.5


class NormalisationSpec(_Model):
    """Normalisation method and the min-max bounds (COINr ``l_u``, default 0-100)."""

    method: Normalisation = "minmax"
    low: float = 0.0
    high: float = 100.0

    @model_validator(mode="after")
    def _bounds(self) -> NormalisationSpec:
        if not self.low < self.high:
            raise ValueError(f"normalisation needs low < high (got {self.low}, {self.high})")
        return self


class ClassesSpec(_Model):
    """Map classes of the index score (mapclassify)."""

    method: Literal["quantiles", "natural_breaks", "equal_interval"] = "quantiles"
    k: Annotated[int, Field(ge=2, le=20)] = 5


class SensitivitySpec(_Model):
    """Default assumptions of the Monte Carlo rank-uncertainty analysis: the runs and the
    seed every view uses unless a caller gives others (:data:`DEFAULT_SEED` when the
    definition names none)."""

    runs: Annotated[int, Field(ge=1, le=100_000)] = 1000
    seed: Annotated[int, Field(ge=0)] = DEFAULT_SEED
    weight_noise: Annotated[float, Field(ge=0, lt=1)] = 0.25
    normalisations: list[Normalisation] | None = None
    aggregations: list[Aggregation] | None = None


class IndexDefinition(_Model):
    """A versioned composite-index definition (see the module docstring for an example).

    ``census_year``: the census every rate of every period divides by (the latest one at or
    before it where a unit has none of that year), so that one index never mixes
    censuses; None: for each period, the latest census at or before the period's year,
    else the earliest after it, per denominator.
    """

    name: Code
    version: Annotated[int, Field(ge=1)] = 1
    title: str = ""
    title_es: str = ""  # the title in Spanish (the reports' other language); "": ``title``
    description: str = ""
    unit_level: Annotated[int, Field(ge=0, le=10)] = 1
    period: Literal["year", "quarter", "month"] = "year"
    census_year: Annotated[int, Field(ge=1800, le=2200)] | None = None
    indicators: list[Indicator] = Field(min_length=1)
    dimensions: list[Dimension] = Field(default_factory=list)
    imputation: Literal["none", "mean", "median"] = "none"
    treatment: Annotated[TreatmentSpec, Field(default_factory=TreatmentSpec)]
    normalisation: Annotated[NormalisationSpec, Field(default_factory=NormalisationSpec)]
    aggregation: Aggregation = "arithmetic"
    classes: Annotated[ClassesSpec, Field(default_factory=ClassesSpec)]
    sensitivity: Annotated[SensitivitySpec, Field(default_factory=SensitivitySpec)]

    _coerce_treatment = field_validator("treatment", mode="before")(_from_string)
    _coerce_normalisation = field_validator("normalisation", mode="before")(_from_string)
    _coerce_classes = field_validator("classes", mode="before")(_from_string)

    @model_validator(mode="after")
    def _consistent(self) -> IndexDefinition:
        problems: list[str] = []
        for label, codes in (
            ("indicator", [i.code for i in self.indicators]),
            ("dimension", [d.code for d in self.dimensions]),
        ):
            duplicates = sorted(c for c, n in Counter(codes).items() if n > 1)
            if duplicates:
                problems.append(f"duplicate {label} codes: {', '.join(duplicates)}")
        known = {d.code for d in self.dimensions}
        for position, indicator in enumerate(self.indicators):
            where = f"indicators[{position}] ({indicator.code})"
            if self.dimensions and indicator.dimension is None:
                problems.append(f"{where}: no dimension, but the index declares dimensions")
            elif indicator.dimension is not None and indicator.dimension not in known:
                declared = ", ".join(sorted(known)) or "none"
                problems.append(
                    f"{where}: unknown dimension {indicator.dimension!r} (declared: {declared})"
                )
            if self.normalisation.method == "goalposts" and indicator.goalposts is None:
                problems.append(f"{where}: goalposts normalisation needs goalposts {{low, high}}")
        used = {i.dimension for i in self.indicators}
        empty = [d.code for d in self.dimensions if d.code not in used]
        if empty:
            problems.append(f"dimensions without indicators: {', '.join(empty)}")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @property
    def indicator_codes(self) -> list[str]:
        """The indicator codes, in definition order (the columns the raw table must have)."""
        return [i.code for i in self.indicators]

    @property
    def directions(self) -> dict[str, int]:
        """Direction (+1 / -1) of each indicator."""
        return {i.code: i.direction for i in self.indicators}


def _format_errors(error: ValidationError) -> str:
    lines = []
    for item in error.errors():
        location = ""
        for part in item["loc"]:
            if isinstance(part, int):
                location += f"[{part}]"
            else:
                location += f".{part}" if location else str(part)
        message = item["msg"].removeprefix("Value error, ")
        given = item.get("input")
        if item["type"] != "value_error" and isinstance(given, str | int | float | bool):
            message += f" (got {given!r})"
        lines.append(f"{location or 'definition'}: {message}")
    return "invalid index definition:\n" + "\n".join(f"- {line}" for line in lines)


def load_definition(source: str | bytes | Mapping[str, Any] | IndexDefinition) -> IndexDefinition:
    """Parse and validate an index definition.

    Parameters
    ----------
    source : str, bytes, mapping or IndexDefinition
        JSON or YAML text (JSON is tried first; YAML is a superset of it), an already
        parsed mapping, or a definition (returned as is).

    Returns
    -------
    IndexDefinition
        The validated, immutable definition.

    Raises
    ------
    indexes.IndexDefinitionError
        If the text does not parse, or the definition is invalid. The message lists every
        problem with its location, e.g. ``indicators[1].weight: Input should be greater
        than 0``, ``normalisation.method: Input should be 'minmax', ...``.
    """
    if isinstance(source, IndexDefinition):
        return source
    if isinstance(source, bytes):
        source = source.decode("utf-8")
    if isinstance(source, str):
        try:
            data: Any = json.loads(source)
        except json.JSONDecodeError:
            import yaml

            try:
                data = yaml.safe_load(source)
            except yaml.YAMLError as exc:
                raise IndexDefinitionError(f"definition is neither JSON nor YAML: {exc}") from exc
    else:
        data = source
    if not isinstance(data, Mapping):
        raise IndexDefinitionError(
            f"a definition must be a mapping (JSON object), got {type(data).__name__}"
        )
    try:
        return IndexDefinition.model_validate(dict(data))
    except ValidationError as exc:
        raise IndexDefinitionError(_format_errors(exc)) from exc
