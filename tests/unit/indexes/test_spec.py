"""Index definitions: parsing JSON / YAML and clear validation errors."""

from __future__ import annotations

import json

import pytest

from indexes import IndexDefinitionError, load_definition
from tests.unit.indexes.conftest import external

YAML = """
name: territorial-violence
version: 2
unit_level: 1
period: year
dimensions:
  - {code: lethal, weight: 2}
  - {code: gbv}
indicators:
  - code: homicide_rate
    source: {incidents: {categories: [homicide], measure: rate}}
    dimension: lethal
  - code: sexual_violence_f
    source:
      incidents: {categories: [rape, sexual_assault], victim_sex: female, age_min: 0, age_max: 17}
    dimension: gbv
    direction: "+"
  - code: police
    source: {external: police_per_100k}
    dimension: gbv
    direction: -1
    weight: 0.5
normalisation: {method: minmax}
aggregation: geometric
classes: {method: natural_breaks, k: 4}
"""


def test_yaml_definition_loads_with_defaults():
    definition = load_definition(YAML)
    assert definition.name == "territorial-violence"
    assert definition.version == 2
    assert definition.indicator_codes == ["homicide_rate", "sexual_violence_f", "police"]
    assert definition.directions == {"homicide_rate": 1, "sexual_violence_f": 1, "police": -1}
    assert definition.indicators[1].source.incidents.victim_sex == "female"
    assert definition.imputation == "none"
    assert definition.treatment.method == "jrc"
    assert (definition.treatment.winmax, definition.treatment.skew_threshold) == (5, 2.0)
    assert definition.treatment.kurtosis_threshold == 3.5
    assert (definition.normalisation.low, definition.normalisation.high) == (0.0, 100.0)
    assert definition.classes.k == 4


def test_json_text_and_mapping_give_the_same_definition():
    data = {"name": "x", "indicators": [external("a"), external("b")]}
    assert load_definition(json.dumps(data)) == load_definition(data)
    # A definition round-trips through its JSON dump (what results record).
    definition = load_definition(data)
    assert load_definition(definition.model_dump(mode="json")) == definition


def _error(data) -> str:
    with pytest.raises(IndexDefinitionError) as info:
        load_definition(data)
    return str(info.value)


def test_unknown_normalisation_is_named():
    message = _error({"name": "x", "indicators": [external("a")], "normalisation": "softmax"})
    assert "normalisation.method" in message
    assert "minmax" in message


def test_weights_must_be_positive():
    message = _error({"name": "x", "indicators": [external("a", weight=0), external("b")]})
    assert "indicators[0].weight" in message
    assert "greater than 0" in message
    message = _error(
        {
            "name": "x",
            "indicators": [external("a", dimension="d")],
            "dimensions": [{"code": "d", "weight": -1}],
        }
    )
    assert "dimensions[0].weight" in message


def test_unknown_dimension_is_named():
    message = _error(
        {
            "name": "x",
            "indicators": [external("a", dimension="lethal"), external("b", dimension="gbv ")],
            "dimensions": [{"code": "lethal"}],
        }
    )
    assert "indicators[1]" in message
    assert "gbv" in message


def test_unknown_dimension_reference_reports_declared_ones():
    message = _error(
        {
            "name": "x",
            "indicators": [external("a", dimension="lethal"), external("b", dimension="gbv")],
            "dimensions": [{"code": "lethal"}],
        }
    )
    assert "unknown dimension 'gbv' (declared: lethal)" in message


def test_duplicate_codes_are_listed():
    message = _error({"name": "x", "indicators": [external("a"), external("b"), external("a")]})
    assert "duplicate indicator codes: a" in message


def test_other_definition_errors():
    # every indicator needs a dimension when dimensions are declared
    assert "no dimension" in _error(
        {
            "name": "x",
            "indicators": [external("a", dimension="d"), external("b")],
            "dimensions": [{"code": "d"}],
        }
    )
    # an empty dimension
    assert "dimensions without indicators: e" in _error(
        {
            "name": "x",
            "indicators": [external("a", dimension="d")],
            "dimensions": [{"code": "d"}, {"code": "e"}],
        }
    )
    # goalposts normalisation needs goalposts on every indicator
    assert "goalposts" in _error(
        {"name": "x", "indicators": [external("a")], "normalisation": "goalposts"}
    )
    # unknown keys are errors, not silently dropped
    assert "wieght" in _error({"name": "x", "indicators": [external("a", wieght=2)]})
    # a source is exactly one of incidents / external
    assert "exactly one" in _error({"name": "x", "indicators": [{"code": "a", "source": {}}]})
    assert "age_min" in _error(
        {
            "name": "x",
            "indicators": [
                {
                    "code": "a",
                    "source": {"incidents": {"categories": ["x"], "age_min": 30, "age_max": 15}},
                }
            ],
        }
    )
    assert "direction" in _error({"name": "x", "indicators": [external("a", direction=2)]})
    assert "neither JSON nor YAML" in _error("name: [unclosed")
    assert "mapping" in _error("- just\n- a list\n")


def test_a_definition_stored_before_the_treatment_minimum_still_loads():
    # Version 1 of the shipped TVI as stored before min_units, seed, census_year,
    # description and denominator existed (the JSON dump of that time, shortened).
    stored = {
        "name": "territorial-violence", "version": 1, "title": "Territorial Violence Index",
        "description": "", "unit_level": 1, "period": "year",
        "indicators": [{
            "code": "youth_victimisation_rate",
            "name": "Violent victimisation of young people (15-29) per 100,000",
            "source": {"incidents": {"categories": ["assault"], "victim_sex": None,
                                     "age_min": 15, "age_max": 29, "measure": "rate"},
                       "external": None},
            "direction": 1, "weight": 1.0, "dimension": None, "transform": None,
            "goalposts": None,
        }],
        "dimensions": [], "imputation": "none",
        "treatment": {"method": "jrc", "winmax": 5, "skew_threshold": 2.0,
                      "kurtosis_threshold": 3.5},
        "normalisation": {"method": "minmax", "low": 0.0, "high": 100.0},
        "aggregation": "arithmetic", "classes": {"method": "quantiles", "k": 3},
        "sensitivity": {"runs": 1000, "weight_noise": 0.25, "normalisations": None,
                        "aggregations": None},
    }  # fmt: skip
    definition = load_definition(stored)
    assert definition.treatment.min_units == 20 and definition.sensitivity.seed == 1
    assert definition.census_year is None
    assert definition.indicators[0].source.incidents.denominator == "matching"
    assert definition.indicators[0].description == ""


def test_the_new_fields_are_validated():
    base = {"name": "x", "indicators": [external("a"), external("b")]}
    with pytest.raises(IndexDefinitionError, match=r"treatment\.min_units"):
        load_definition({**base, "treatment": {"method": "jrc", "min_units": 0}})
    with pytest.raises(IndexDefinitionError, match="census_year"):
        load_definition({**base, "census_year": 22})
    with pytest.raises(IndexDefinitionError, match=r"sensitivity\.seed"):
        load_definition({**base, "sensitivity": {"seed": -1}})
    bad = {"code": "r", "source": {"incidents": {"categories": ["x"], "denominator": "kids"}}}
    with pytest.raises(IndexDefinitionError, match="denominator"):
        load_definition({**base, "indicators": [bad]})
