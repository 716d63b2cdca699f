"""Labels, numbers and dates in the report's two languages (Babel's Belize locales)."""

from __future__ import annotations

from datetime import date, datetime

import numpy as np
import pytest

from reports.i18n import LABELS, MISSING, Lang
from reports.maps import _nice_length, class_breaks, metric_crs

from .conftest import make_document

#: Labels that are the same word in both languages.
SAME = {"col.monitor", "col.monitor_name", "col.total", "map.km", "no"}


def test_every_label_has_both_languages_and_spanish_differs():
    for key, (en, es) in LABELS.items():
        assert en and es, key
        if key not in SAME:
            assert en != es, key


def test_numbers_follow_belize_conventions_in_both_languages():
    for language in ("en", "es"):
        lang = Lang(language)
        assert lang.integer(12345.4) == "12,345"
        assert lang.decimal(1185.64) == "1,185.6"
        assert lang.change(4.6) == "+4.6%"
        assert lang.change(-5.25) == "\u22125.2%"  # half to even, as Babel rounds
        assert lang.change(0.01) == "0.0%"
        assert lang.percent(97.34) == "97.3%"
        for missing in (None, np.nan, float("nan")):
            assert lang.integer(missing) == MISSING
            assert lang.change(missing) == MISSING


def test_dates_and_periods_in_words():
    en, es = Lang("en"), Lang("es")
    assert en.date(date(2024, 9, 30)) == "30 September 2024"
    assert es.date(datetime(2024, 9, 30, 23, 0)) == "30 de septiembre de 2024"
    assert en.period_name("2024Q3") == "Third quarter 2024"
    assert es.period_name("2024Q3") == "Tercer trimestre de 2024"
    assert es.period_name("2024H2") == "Segundo semestre de 2024"
    assert en.period_name("2024-07") == "July 2024"
    assert es.period_name("2024-07") == "Julio de 2024"
    assert es.period_name("2024") == "Año 2024"
    assert en.weekday(0) == "Mon" and es.weekday(6, "wide") == "Domingo"
    assert es.month_name(1, "abbreviated") == "ene"


def test_codes_are_translated_and_unknown_ones_printed_readably():
    es = Lang("es")
    assert es.term("major_crimes") == "Delitos graves"
    assert es.term("intensifying hot spot") == "Punto caliente en intensificación"
    assert es.term("hot spot, 99% confidence") == "Punto caliente, confianza 99%"
    assert es.term("stolen_bicycles") == "stolen bicycles"
    assert es.column("unit_name") == "Distrito"
    with pytest.raises(ValueError, match="language 'fr'"):
        Lang("fr")


def test_maps_are_drawn_in_the_utm_zone_of_the_country():
    doc = make_document()
    assert metric_crs(doc.basemap["country"]).to_epsg() == 32616  # Belize: UTM 16N
    assert _nice_length(190_000) == 50_000  # a third of 190 km, rounded down to 50 km
    assert _nice_length(9_000) == 2_500


def test_class_breaks_are_fisher_jenks_upper_bounds():
    values = np.array([1, 2, 3, 10, 11, 12, 30, 31, 32, 60, 61, 62, 100, 101, np.nan])
    # five well separated groups: natural breaks put each group in its own class
    assert class_breaks(values).tolist() == [3, 12, 32, 62, 101]
    assert class_breaks(np.array([5.0, 7.0, np.nan])).tolist() == [5, 7]  # fewer values
    assert class_breaks(np.array([np.nan])).tolist() == []


def test_class_breaks_equal_mapclassify_fisher_jenks():
    # the reference: mapclassify's FisherJenks (the renderer uses jenkspy, lighter to import)
    import mapclassify

    rng = np.random.default_rng(7)
    for n in (6, 9, 40):
        values = rng.gamma(2.0, 40.0, n)
        assert np.allclose(class_breaks(values), mapclassify.FisherJenks(values, k=5).bins)


def test_the_source_line_gets_one_prefix():
    es = Lang("es")
    assert es.source("Observatorio del Delito") == "Fuente: Observatorio del Delito"
    assert es.source("Fuente: observatorio del delito") == "Fuente: observatorio del delito"
    assert Lang("en").source("Source: police") == "Source: police"
