"""the shipped indexes name what they count: a new version of each, if unchanged

Revision ID: 0011
Revises: 0010

Issue 17: the shipped definitions of ``territorial-violence`` and
``violence-against-women`` (``app/data/indexes``) now name each indicator for what it
counts and per whom (``youth_victimisation_rate`` is renamed
``youth_violence_per_100k_residents`` and ``sexual_violence_girls_rate``
``girls_sexual_violence_per_100k_females``: both are per 100,000 residents of all ages, as no
age-specific population is loaded), describe the smoothing, divide every period by the 2022
census (``census_year``) and fix the Monte Carlo seed. A database loaded before stores them
as version 1 and the loader never replaces a stored code, so this migration stores the new
definition as the next version of each code whose latest version is still the one shipped
before (compared as JSON, the version number aside). A definition an administrator changed
is left alone. Old versions stay: they still load (every new field has a default) and
results name the version they came from. Downgrade removes the versions stored here.
"""

import json
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ACTOR = "migration 0011 (issue 17: names that say what is counted)"

# The definitions as shipped before (their JSON as stored, version 1).
BEFORE = {
    "territorial-violence": {
        "name": "territorial-violence",
        "version": 1,
        "title": "Territorial Violence Index",
        "description": "Priority ranking of Belize districts by "
        "lethal violence, violence in public space "
        "and violence against women, per 100,000 "
        "residents. Higher score = higher priority.",
        "unit_level": 1,
        "period": "year",
        "indicators": [
            {
                "code": "homicide_rate",
                "name": "Homicides per 100,000 (EB-smoothed)",
                "source": {
                    "incidents": {
                        "categories": ["homicide"],
                        "victim_sex": None,
                        "age_min": None,
                        "age_max": None,
                        "measure": "eb_rate",
                    },
                    "external": None,
                },
                "direction": 1,
                "weight": 2.0,
                "dimension": "lethal",
                "transform": None,
                "goalposts": None,
            },
            {
                "code": "shooting_rate",
                "name": "Shootings per 100,000 (EB-smoothed)",
                "source": {
                    "incidents": {
                        "categories": ["shooting"],
                        "victim_sex": None,
                        "age_min": None,
                        "age_max": None,
                        "measure": "eb_rate",
                    },
                    "external": None,
                },
                "direction": 1,
                "weight": 1.0,
                "dimension": "lethal",
                "transform": None,
                "goalposts": None,
            },
            {
                "code": "robbery_rate",
                "name": "Robberies per 100,000",
                "source": {
                    "incidents": {
                        "categories": ["robbery"],
                        "victim_sex": None,
                        "age_min": None,
                        "age_max": None,
                        "measure": "rate",
                    },
                    "external": None,
                },
                "direction": 1,
                "weight": 1.0,
                "dimension": "street",
                "transform": None,
                "goalposts": None,
            },
            {
                "code": "youth_victimisation_rate",
                "name": "Violent victimisation of young people (15-29) per 100,000",
                "source": {
                    "incidents": {
                        "categories": [
                            "homicide",
                            "shooting",
                            "robbery",
                            "assault",
                            "sexual_violence",
                            "domestic_violence",
                        ],
                        "victim_sex": None,
                        "age_min": 15,
                        "age_max": 29,
                        "measure": "rate",
                    },
                    "external": None,
                },
                "direction": 1,
                "weight": 1.0,
                "dimension": "street",
                "transform": None,
                "goalposts": None,
            },
            {
                "code": "vaw_rate",
                "name": "Sexual and domestic violence "
                "against women per 100,000 women "
                "(EB-smoothed)",
                "source": {
                    "incidents": {
                        "categories": ["sexual_violence", "domestic_violence"],
                        "victim_sex": "female",
                        "age_min": None,
                        "age_max": None,
                        "measure": "eb_rate",
                    },
                    "external": None,
                },
                "direction": 1,
                "weight": 1.0,
                "dimension": "gbv",
                "transform": None,
                "goalposts": None,
            },
        ],
        "dimensions": [
            {"code": "lethal", "name": "Lethal and firearm violence", "weight": 2.0},
            {"code": "street", "name": "Violence in public space", "weight": 1.0},
            {"code": "gbv", "name": "Violence against women", "weight": 1.0},
        ],
        "imputation": "none",
        "treatment": {
            "method": "jrc",
            "winmax": 5,
            "skew_threshold": 2.0,
            "kurtosis_threshold": 3.5,
        },
        "normalisation": {"method": "minmax", "low": 0.0, "high": 100.0},
        "aggregation": "arithmetic",
        "classes": {"method": "quantiles", "k": 3},
        "sensitivity": {
            "runs": 1000,
            "weight_noise": 0.25,
            "normalisations": None,
            "aggregations": None,
        },
    },
    "violence-against-women": {
        "name": "violence-against-women",
        "version": 1,
        "title": "Violence Against Women and Girls Index",
        "description": "Priority ranking of Belize districts by "
        "reported sexual and domestic violence "
        "against women and girls, per 100,000 "
        "women. Higher score = higher priority.",
        "unit_level": 1,
        "period": "year",
        "indicators": [
            {
                "code": "sexual_violence_f_rate",
                "name": "Sexual violence against women and girls per 100,000 women (EB-smoothed)",
                "source": {
                    "incidents": {
                        "categories": ["sexual_violence"],
                        "victim_sex": "female",
                        "age_min": None,
                        "age_max": None,
                        "measure": "eb_rate",
                    },
                    "external": None,
                },
                "direction": 1,
                "weight": 1.0,
                "dimension": "sexual",
                "transform": None,
                "goalposts": None,
            },
            {
                "code": "sexual_violence_girls_rate",
                "name": "Sexual violence against girls (0-17) per 100,000 (EB-smoothed)",
                "source": {
                    "incidents": {
                        "categories": ["sexual_violence"],
                        "victim_sex": "female",
                        "age_min": None,
                        "age_max": 17,
                        "measure": "eb_rate",
                    },
                    "external": None,
                },
                "direction": 1,
                "weight": 1.0,
                "dimension": "sexual",
                "transform": None,
                "goalposts": None,
            },
            {
                "code": "domestic_violence_f_rate",
                "name": "Domestic violence against women per 100,000 women",
                "source": {
                    "incidents": {
                        "categories": ["domestic_violence"],
                        "victim_sex": "female",
                        "age_min": None,
                        "age_max": None,
                        "measure": "rate",
                    },
                    "external": None,
                },
                "direction": 1,
                "weight": 1.0,
                "dimension": "domestic",
                "transform": None,
                "goalposts": None,
            },
            {
                "code": "domestic_violence_share",
                "name": "Domestic violence as a share of all incidents (%)",
                "source": {
                    "incidents": {
                        "categories": ["domestic_violence"],
                        "victim_sex": None,
                        "age_min": None,
                        "age_max": None,
                        "measure": "share",
                    },
                    "external": None,
                },
                "direction": 1,
                "weight": 0.5,
                "dimension": "domestic",
                "transform": None,
                "goalposts": None,
            },
        ],
        "dimensions": [
            {"code": "sexual", "name": "Sexual violence", "weight": 1.0},
            {"code": "domestic", "name": "Domestic violence", "weight": 1.0},
        ],
        "imputation": "none",
        "treatment": {
            "method": "jrc",
            "winmax": 5,
            "skew_threshold": 2.0,
            "kurtosis_threshold": 3.5,
        },
        "normalisation": {"method": "minmax", "low": 0.0, "high": 100.0},
        "aggregation": "arithmetic",
        "classes": {"method": "quantiles", "k": 3},
        "sensitivity": {
            "runs": 1000,
            "weight_noise": 0.25,
            "normalisations": None,
            "aggregations": None,
        },
    },
}

# The definitions as shipped now (app/data/indexes at this revision).
AFTER = {
    "territorial-violence": {
        "name": "territorial-violence",
        "version": 1,
        "title": "Territorial Violence Index",
        "description": "Priority ranking of Belize districts by "
        "lethal violence, violence in public space "
        "and violence against women, per 100,000 "
        "residents of the 2022 census. Higher score = "
        "higher priority.",
        "unit_level": 1,
        "period": "year",
        "census_year": 2022,
        "indicators": [
            {
                "code": "homicide_rate",
                "name": "Homicides per 100,000 residents (EB-smoothed toward the national rate)",
                "description": "Homicides per 100,000 "
                "residents of all ages (2022 "
                "census), smoothed by "
                "Empirical Bayes toward the "
                "national rate: counts per "
                "district are small, so one "
                "or two homicides must not "
                "swing a small district's "
                "rank. The most reliable and "
                "comparable violence "
                "indicator (UNODC, SDG "
                "16.1.1).",
                "source": {
                    "incidents": {
                        "categories": ["homicide"],
                        "victim_sex": None,
                        "age_min": None,
                        "age_max": None,
                        "measure": "eb_rate",
                        "denominator": "matching",
                    },
                    "external": None,
                },
                "direction": 1,
                "weight": 2.0,
                "dimension": "lethal",
                "transform": None,
                "goalposts": None,
            },
            {
                "code": "shooting_rate",
                "name": "Shootings per 100,000 residents (EB-smoothed toward the national rate)",
                "description": "Shootings per 100,000 "
                "residents of all ages (2022 "
                "census), smoothed by "
                "Empirical Bayes toward the "
                "national rate (small "
                "counts). Firearm violence "
                "predicts homicide and is "
                "where gun-violence "
                "programmes act.",
                "source": {
                    "incidents": {
                        "categories": ["shooting"],
                        "victim_sex": None,
                        "age_min": None,
                        "age_max": None,
                        "measure": "eb_rate",
                        "denominator": "matching",
                    },
                    "external": None,
                },
                "direction": 1,
                "weight": 1.0,
                "dimension": "lethal",
                "transform": None,
                "goalposts": None,
            },
            {
                "code": "robbery_rate",
                "name": "Robberies per 100,000 residents",
                "description": "Robberies per 100,000 "
                "residents of all ages (2022 "
                "census), not smoothed: "
                "frequent enough for a crude "
                "rate. Violent property crime "
                "in public space, the crime "
                "that most shapes perceived "
                "insecurity.",
                "source": {
                    "incidents": {
                        "categories": ["robbery"],
                        "victim_sex": None,
                        "age_min": None,
                        "age_max": None,
                        "measure": "rate",
                        "denominator": "matching",
                    },
                    "external": None,
                },
                "direction": 1,
                "weight": 1.0,
                "dimension": "street",
                "transform": None,
                "goalposts": None,
            },
            {
                "code": "youth_violence_per_100k_residents",
                "name": "Violence against people aged 15\u201329, "
                "per 100,000 residents of all ages",
                "description": "Incidents of homicide, "
                "shooting, robbery, assault, "
                "sexual and domestic violence "
                "with a victim aged 15\u201329, "
                "per 100,000 residents of ALL "
                "ages (2022 census): no "
                "population aged 15\u201329 is "
                "loaded, so this is not a "
                "rate among young people; it "
                "weighs where violence "
                "against the age group "
                "prevention programmes target "
                "is frequent.",
                "source": {
                    "incidents": {
                        "categories": [
                            "homicide",
                            "shooting",
                            "robbery",
                            "assault",
                            "sexual_violence",
                            "domestic_violence",
                        ],
                        "victim_sex": None,
                        "age_min": 15,
                        "age_max": 29,
                        "measure": "rate",
                        "denominator": "all_ages",
                    },
                    "external": None,
                },
                "direction": 1,
                "weight": 1.0,
                "dimension": "street",
                "transform": None,
                "goalposts": None,
            },
            {
                "code": "vaw_rate",
                "name": "Sexual and domestic violence "
                "against women and girls per 100,000 "
                "female residents (EB-smoothed "
                "toward the national rate)",
                "description": "Sexual and domestic violence "
                "with a female victim of any "
                "age, per 100,000 female "
                "residents of all ages (2022 "
                "census; district female "
                "counts derived from SIB sex "
                "ratios), smoothed by "
                "Empirical Bayes toward the "
                "national rate because sexual "
                "violence counts are small in "
                "the smaller districts.",
                "source": {
                    "incidents": {
                        "categories": ["sexual_violence", "domestic_violence"],
                        "victim_sex": "female",
                        "age_min": None,
                        "age_max": None,
                        "measure": "eb_rate",
                        "denominator": "matching",
                    },
                    "external": None,
                },
                "direction": 1,
                "weight": 1.0,
                "dimension": "gbv",
                "transform": None,
                "goalposts": None,
            },
        ],
        "dimensions": [
            {"code": "lethal", "name": "Lethal and firearm violence", "weight": 2.0},
            {"code": "street", "name": "Violence in public space", "weight": 1.0},
            {"code": "gbv", "name": "Violence against women", "weight": 1.0},
        ],
        "imputation": "none",
        "treatment": {
            "method": "jrc",
            "min_units": 20,
            "winmax": 5,
            "skew_threshold": 2.0,
            "kurtosis_threshold": 3.5,
        },
        "normalisation": {"method": "minmax", "low": 0.0, "high": 100.0},
        "aggregation": "arithmetic",
        "classes": {"method": "quantiles", "k": 3},
        "sensitivity": {
            "runs": 1000,
            "seed": 1,
            "weight_noise": 0.25,
            "normalisations": None,
            "aggregations": None,
        },
    },
    "violence-against-women": {
        "name": "violence-against-women",
        "version": 1,
        "title": "Violence Against Women and Girls Index",
        "description": "Priority ranking of Belize districts by "
        "reported sexual and domestic violence "
        "against women and girls, per 100,000 "
        "female residents of the 2022 census. "
        "Higher score = higher priority.",
        "unit_level": 1,
        "period": "year",
        "census_year": 2022,
        "indicators": [
            {
                "code": "sexual_violence_f_rate",
                "name": "Sexual violence against women and "
                "girls per 100,000 female "
                "residents (EB-smoothed toward the "
                "national rate)",
                "description": "Sexual violence with a "
                "female victim of any age "
                "(SDG 5.2), per 100,000 "
                "female residents of all "
                "ages (2022 census, derived "
                "from SIB sex ratios), "
                "smoothed by Empirical "
                "Bayes toward the national "
                "rate because counts are "
                "small outside Belize and "
                "Cayo districts.",
                "source": {
                    "incidents": {
                        "categories": ["sexual_violence"],
                        "victim_sex": "female",
                        "age_min": None,
                        "age_max": None,
                        "measure": "eb_rate",
                        "denominator": "matching",
                    },
                    "external": None,
                },
                "direction": 1,
                "weight": 1.0,
                "dimension": "sexual",
                "transform": None,
                "goalposts": None,
            },
            {
                "code": "girls_sexual_violence_per_100k_females",
                "name": "Sexual violence against girls "
                "(0\u201317) per 100,000 female "
                "residents of all ages "
                "(EB-smoothed toward the national "
                "rate)",
                "description": "Sexual violence with a "
                "female victim aged 0\u201317, "
                "per 100,000 female "
                "residents of ALL ages "
                "(2022 census): no "
                "population of girls is "
                "loaded, so this is not a "
                "rate among girls; it gives "
                "child protection its own "
                "signal, as most reported "
                "victims of sexual violence "
                "in the region are minors. "
                "Smoothed by Empirical "
                "Bayes toward the national "
                "rate.",
                "source": {
                    "incidents": {
                        "categories": ["sexual_violence"],
                        "victim_sex": "female",
                        "age_min": None,
                        "age_max": 17,
                        "measure": "eb_rate",
                        "denominator": "all_ages",
                    },
                    "external": None,
                },
                "direction": 1,
                "weight": 1.0,
                "dimension": "sexual",
                "transform": None,
                "goalposts": None,
            },
            {
                "code": "domestic_violence_f_rate",
                "name": "Domestic violence against women and girls per 100,000 female residents",
                "description": "Domestic violence with a "
                "female victim of any age "
                "(SDG 5.2.1), per 100,000 "
                "female residents of all "
                "ages (2022 census), not "
                "smoothed: the most "
                "frequent form of violence "
                "against women, frequent "
                "enough for a crude rate.",
                "source": {
                    "incidents": {
                        "categories": ["domestic_violence"],
                        "victim_sex": "female",
                        "age_min": None,
                        "age_max": None,
                        "measure": "rate",
                        "denominator": "matching",
                    },
                    "external": None,
                },
                "direction": 1,
                "weight": 1.0,
                "dimension": "domestic",
                "transform": None,
                "goalposts": None,
            },
            {
                "code": "domestic_violence_share",
                "name": "Domestic violence as a share of all incidents (%)",
                "description": "Domestic violence "
                "incidents (any victim) as "
                "a percentage of all the "
                "district's incidents of "
                "the year: where it is a "
                "large part of what police "
                "record, services for "
                "survivors matter most "
                "relative to other needs.",
                "source": {
                    "incidents": {
                        "categories": ["domestic_violence"],
                        "victim_sex": None,
                        "age_min": None,
                        "age_max": None,
                        "measure": "share",
                        "denominator": "matching",
                    },
                    "external": None,
                },
                "direction": 1,
                "weight": 0.5,
                "dimension": "domestic",
                "transform": None,
                "goalposts": None,
            },
        ],
        "dimensions": [
            {"code": "sexual", "name": "Sexual violence", "weight": 1.0},
            {"code": "domestic", "name": "Domestic violence", "weight": 1.0},
        ],
        "imputation": "none",
        "treatment": {
            "method": "jrc",
            "min_units": 20,
            "winmax": 5,
            "skew_threshold": 2.0,
            "kurtosis_threshold": 3.5,
        },
        "normalisation": {"method": "minmax", "low": 0.0, "high": 100.0},
        "aggregation": "arithmetic",
        "classes": {"method": "quantiles", "k": 3},
        "sensitivity": {
            "runs": 1000,
            "seed": 1,
            "weight_noise": 0.25,
            "normalisations": None,
            "aggregations": None,
        },
    },
}


def upgrade() -> None:
    bind = op.get_bind()
    for code, before in BEFORE.items():
        latest = bind.execute(
            sa.text(
                "SELECT version, (definition - 'version') = (CAST(:before AS jsonb) - 'version') "
                "AS unchanged FROM index_definition WHERE code = :code "
                "ORDER BY version DESC LIMIT 1"
            ),
            {"code": code, "before": json.dumps(before)},
        ).first()
        if latest is None or not latest.unchanged:
            continue
        version = latest.version + 1
        bind.execute(
            sa.text(
                "INSERT INTO index_definition (code, version, definition, created_by) "
                "VALUES (:code, :version, CAST(:definition AS jsonb), :actor)"
            ),
            {
                "code": code,
                "version": version,
                "definition": json.dumps({**AFTER[code], "version": version}),
                "actor": ACTOR,
            },
        )


def downgrade() -> None:
    op.get_bind().execute(
        sa.text("DELETE FROM index_definition WHERE created_by = :actor"), {"actor": ACTOR}
    )
