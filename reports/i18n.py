"""Every word the report prints, in English and Spanish, and numbers and dates by Babel.

The renderer never writes a label itself: it asks a :class:`Lang` for it, so switching the
document's language switches every title, header, legend word and note phrase. Numbers and
dates follow Babel's Belize locales (``en_BZ``, ``es_BZ``: a decimal point and comma
thousands in both, as printed in Belize), month and day names follow the language.

Codes in the document's tables (measures, category groups, sex, hot spot patterns, alert
states) are translated when this catalogue knows them and otherwise printed as given, with
underscores as spaces: a new measure appears in the report before anyone translates it.
"""

from __future__ import annotations

import math
import re
from datetime import date, datetime

import pandas as pd
from babel import Locale
from babel.dates import format_skeleton, get_day_names, get_month_names
from babel.numbers import format_decimal, format_percent

LANGUAGES = ("en", "es")
LOCALES = {"en": "en_BZ", "es": "es_BZ"}

#: Fixed labels: key -> (English, Spanish).
LABELS: dict[str, tuple[str, str]] = {
    # cover, table of contents, page furniture
    "report_title": ("Citizen Security Report", "Informe de Seguridad Ciudadana"),
    "audience.public": ("Public edition", "Edición pública"),
    "audience.analyst": ("Analyst edition", "Edición para analistas"),
    "generated": ("Generated on {date}", "Generado el {date}"),
    "data_version": ("data version {version}", "versión de los datos {version}"),
    "definition": (
        "Report definition {name}, version {version}",
        "Definición del informe {name}, versión {version}",
    ),
    "contents": ("Contents", "Contenido"),
    "page": ("Page", "Página"),
    "page_of": ("of", "de"),
    "source_prefix": ("Source:", "Fuente:"),
    "missing_note": (
        "— : withheld (small count) or not available; a count is also withheld where it"
        " would let a small one be recomputed from a total.",
        "— : no publicado (cifra pequeña) o no disponible; también se omite una cifra que"
        " permitiría recalcular una pequeña a partir de un total.",
    ),
    "no_incidents": ("No incidents in the period.", "No hubo incidentes en el período."),
    "no_rows": ("none in the period.", "ninguna en el período."),
    "no_data": ("No data for this section.", "No hay datos para esta sección."),
    "figure_data": (
        "The figures behind this chart are in the CSV/XLSX bundle.",
        "Las cifras de este gráfico están en el paquete CSV/XLSX.",
    ),
    # periods
    "period.month": ("{month} {year}", "{month} de {year}"),
    "period.quarter": ("{ordinal} quarter {year}", "{ordinal} trimestre de {year}"),
    "period.half": ("{ordinal} half {year}", "{ordinal} semestre de {year}"),
    "period.year": ("Year {year}", "Año {year}"),
    "ordinal.1": ("First", "Primer"),
    "ordinal.2": ("Second", "Segundo"),
    "ordinal.3": ("Third", "Tercer"),
    "ordinal.4": ("Fourth", "Cuarto"),
    # section titles
    "section.headline": ("Headline figures", "Cifras principales"),
    "section.trend": ("Trend over three years", "Tendencia en tres años"),
    "section.districts": ("Districts", "Distritos"),
    "section.victims": ("Victims by sex and age", "Víctimas por sexo y edad"),
    "section.when": ("When: day of week and hour", "Cuándo: día de la semana y hora"),
    "section.where": ("Where: hot spots and alerts", "Dónde: puntos calientes y alertas"),
    "section.index": ("Composite index ranking", "Clasificación del índice compuesto"),
    "section.quality": ("Data quality annex", "Anexo de calidad de los datos"),
    "section.methods": ("Methods", "Métodos"),
    # table captions
    "table.headline.figures": ("Headline figures", "Cifras principales"),
    "table.trend.monthly": ("Months of the period", "Meses del período"),
    "table.districts.districts": ("Incidents by district", "Incidentes por distrito"),
    "table.victims.by_sex_age": (
        "Victims by sex and age group",
        "Víctimas por sexo y grupo de edad",
    ),
    "table.victims.vawg": (
        "Violence against women and girls",
        "Violencia contra las mujeres y las niñas",
    ),
    "table.when.weekday_hour": (
        "Incidents by day of week and hour",
        "Incidentes por día de la semana y hora",
    ),
    "table.where.hotspot_classes": (
        "Hot spot cells by class (and emerging hot spot categories)",
        "Celdas por clase de punto caliente (y categorías emergentes)",
    ),
    "table.where.alerts": (
        "Early-warning alerts of the period",
        "Alertas tempranas del periodo",
    ),
    "table.where.alert_series": (
        "Series of the period's alerts",
        "Series de las alertas del periodo",
    ),
    "table.index.ranking": ("Ranking", "Clasificación"),
    "table.quality.sources": (
        "Death records: quality by agency (%)",
        "Registros de defunciones: calidad por institución (%)",
    ),
    "table.quality.georeferenced": (
        "Share of incidents georeferenced",
        "Proporción de incidentes georreferenciados",
    ),
    "table.quality.rejected": (
        "Rows rejected in the period's imports",
        "Filas rechazadas en las importaciones del período",
    ),
    "table.quality.delay": (
        "Reporting delay (days from occurrence to report)",
        "Demora de la denuncia (días desde el hecho hasta la denuncia)",
    ),
    # column headers
    "col.measure": ("Measure", "Medida"),
    "col.period": ("Period", "Período"),
    "col.previous": ("Previous period", "Período anterior"),
    "col.year_before": ("A year earlier", "Un año antes"),
    "col.change_previous_pct": ("Change vs previous", "Cambio frente al anterior"),
    "col.change_year_pct": ("Change vs a year earlier", "Cambio frente a un año antes"),
    "col.rate_per_100k": ("Rate per 100,000", "Tasa por 100 000"),
    "col.projected_annual_rate": ("Projected annual rate", "Tasa anual proyectada"),
    "col.month": ("Month", "Mes"),
    "col.group": ("Group", "Grupo"),
    "col.count": ("Incidents", "Incidentes"),
    "col.in_period": ("In the period", "En el período"),
    "col.unit_code": ("Code", "Código"),
    "col.unit_name": ("District", "Distrito"),
    "col.change_pct": ("Change", "Cambio"),
    "col.eb_rate_per_100k": ("Smoothed rate (EB)", "Tasa suavizada (EB)"),
    "col.sex": ("Sex", "Sexo"),
    "col.age_group": ("Age group", "Grupo de edad"),
    "col.weekday": ("Day", "Día"),
    "col.hour": ("Hour", "Hora"),
    "col.category": ("Category", "Categoría"),
    "col.cells": ("Cells", "Celdas"),
    "col.alert_id": ("Alert", "Alerta"),
    "col.monitor": ("Monitor", "Monitor"),
    "col.monitor_name": ("Monitor", "Monitor"),
    "col.place": ("Place", "Lugar"),
    "col.observed": ("Observed", "Observado"),
    "col.expected": ("Expected", "Esperado"),
    "col.threshold": ("Threshold", "Umbral"),
    "col.periods_lasting": ("Periods lasting", "Períodos de duración"),
    "col.state": ("State", "Estado"),
    "col.rank": ("Rank", "Posición"),
    "col.score": ("Score", "Puntuación"),
    "col.band": ("Rank band", "Banda de posición"),
    "col.source": ("Source", "Fuente"),
    "col.incidents": ("Incidents", "Incidentes"),
    "col.georeferenced_pct": ("Georeferenced", "Georreferenciados"),
    "col.batch_id": ("Import", "Importación"),
    "col.reason": ("Reason", "Motivo"),
    "col.rows": ("Rows", "Filas"),
    "col.median_days": ("Median (days)", "Mediana (días)"),
    "col.p90_days": ("90th percentile (days)", "Percentil 90 (días)"),
    "col.records": ("Records", "Registros"),
    "col.completeness_pct": ("Complete fields", "Campos completos"),
    "col.timely_pct": ("In time", "A tiempo"),
    "col.median_delay_days": ("Median delay (days)", "Demora mediana (días)"),
    "col.linked_pct": ("Linked", "Enlazados"),
    "col.same_manner_pct": ("Same manner", "Misma manera"),
    "col.alarm": ("Alarm", "Alarma"),
    "col.female": ("Female", "Mujeres"),
    "col.male": ("Male", "Hombres"),
    "col.total": ("Total", "Total"),
    # headline cards
    "vs_previous": ("vs previous period", "frente al período anterior"),
    "vs_year_before": ("vs a year earlier", "frente a un año antes"),
    "per_100k": ("per 100,000 people", "por cada 100 000 habitantes"),
    "projected": ("projected annual rate {rate}", "tasa anual proyectada {rate}"),
    "withheld": ("withheld", "no publicado"),
    "no_change": ("no change", "sin cambio"),
    # charts
    "chart.trend": (
        "Incidents per month, last three years (the period shaded)",
        "Incidentes por mes, últimos tres años (el período sombreado)",
    ),
    "chart.trend.y": ("Incidents per month", "Incidentes por mes"),
    "chart.trend.period": ("Report period", "Período del informe"),
    "chart.pyramid": ("Victims by sex and age group", "Víctimas por sexo y grupo de edad"),
    "chart.pyramid.x": ("Victims", "Víctimas"),
    "chart.heat": (
        "Incidents by day of week and hour of day",
        "Incidentes por día de la semana y hora del día",
    ),
    "chart.heat.x": ("Hour of day", "Hora del día"),
    "chart.alert_series": (
        "Alerts of the period: observed, expected and threshold per week or month",
        "Alertas del periodo: observado, esperado y umbral por semana o mes",
    ),
    "chart.alarm": ("Alarm", "Alarma"),
    "chart.heat.legend": ("Incidents", "Incidentes"),
    # maps
    "map.districts": (
        "Rate per 100,000 people by district",
        "Tasa por cada 100 000 habitantes por distrito",
    ),
    "map.hotspots": (
        "Hot and cold spots (Getis-Ord Gi*)",
        "Puntos calientes y fríos (Getis-Ord Gi*)",
    ),
    "map.alerts": (
        "Areas with an early-warning alert in the period",
        "Zonas con una alerta temprana en el periodo",
    ),
    "map.no_value": ("Withheld or no data", "No publicado o sin datos"),
    "map.alert_area": ("Alert area", "Zona de alerta"),
    "map.district_boundary": ("District boundary", "Límite de distrito"),
    "map.north": ("North", "Norte"),
    "map.km": ("km", "km"),
    "gi.3": ("Hot spot, 99% confidence", "Punto caliente, confianza 99%"),
    "gi.2": ("Hot spot, 95% confidence", "Punto caliente, confianza 95%"),
    "gi.1": ("Hot spot, 90% confidence", "Punto caliente, confianza 90%"),
    "gi.0": ("Not significant", "No significativo"),
    "gi.-1": ("Cold spot, 90% confidence", "Punto frío, confianza 90%"),
    "gi.-2": ("Cold spot, 95% confidence", "Punto frío, confianza 95%"),
    "gi.-3": ("Cold spot, 99% confidence", "Punto frío, confianza 99%"),
    "yes": ("yes", "sí"),
    "no": ("no", "no"),
}

#: Codes that appear as values in the document's tables: code -> (English, Spanish).
VOCABULARY: dict[str, tuple[str, str]] = {
    # measures and category groups
    "major_crimes": ("Major crimes", "Delitos graves"),
    "homicides": ("Homicides", "Homicidios"),
    "shootings": ("Shootings", "Tiroteos"),
    "robberies": ("Robberies", "Robos"),
    "assaults": ("Assaults", "Agresiones"),
    "murders": ("Murders", "Asesinatos"),
    "property_crime": ("Property crime", "Delitos contra la propiedad"),
    "violent_crime": ("Violent crime", "Delitos violentos"),
    "sexual_violence": ("Sexual violence", "Violencia sexual"),
    "all_incidents": ("All incidents", "Todos los incidentes"),
    "violent_death": ("Violent deaths", "Muertes violentas"),
    "firearm": ("Firearm incidents", "Incidentes con arma de fuego"),
    "property_violent": ("Robbery", "Robo con violencia"),
    "property": ("Property crime", "Delitos contra la propiedad"),
    "violent": ("Violent crime", "Delitos violentos"),
    "violence_against_women": ("Violence against women", "Violencia contra las mujeres"),
    "vawg": ("Violence against women and girls", "Violencia contra las mujeres y las niñas"),
    # categories
    "homicide": ("Homicide", "Homicidio"),
    "shooting": ("Shooting", "Tiroteo"),
    "robbery": ("Robbery", "Robo"),
    "burglary": ("Burglary", "Robo en vivienda o local"),
    "theft": ("Theft", "Hurto"),
    "assault": ("Assault", "Agresión"),
    "domestic_violence": ("Domestic violence", "Violencia doméstica"),
    "road_traffic_death": ("Road-traffic death", "Muerte por tránsito"),
    "suicide": ("Suicide", "Suicidio"),
    # victims
    "female": ("Female", "Mujeres"),
    "male": ("Male", "Hombres"),
    "unknown": ("Unknown", "Desconocido"),
    # sources
    "police": ("Police", "Policía"),
    "forensic": ("Forensic medicine", "Medicina forense"),
    "health": ("Health", "Salud"),
    # alert states, bands
    "new": ("new", "nueva"),
    "open": ("open", "abierta"),
    "closed": ("closed", "cerrada"),
    "acknowledged": ("acknowledged", "reconocida"),
    "high": ("high", "alta"),
    "medium": ("medium", "media"),
    "low": ("low", "baja"),
    # emerging hot spot patterns (spatial.emerging.PATTERNS)
    "new hot spot": ("New hot spot", "Nuevo punto caliente"),
    "consecutive hot spot": ("Consecutive hot spot", "Punto caliente consecutivo"),
    "intensifying hot spot": ("Intensifying hot spot", "Punto caliente en intensificación"),
    "persistent hot spot": ("Persistent hot spot", "Punto caliente persistente"),
    "diminishing hot spot": ("Diminishing hot spot", "Punto caliente en disminución"),
    "sporadic hot spot": ("Sporadic hot spot", "Punto caliente esporádico"),
    "oscillating hot spot": ("Oscillating hot spot", "Punto caliente oscilante"),
    "historical hot spot": ("Historical hot spot", "Punto caliente histórico"),
    "new cold spot": ("New cold spot", "Nuevo punto frío"),
    "consecutive cold spot": ("Consecutive cold spot", "Punto frío consecutivo"),
    "intensifying cold spot": ("Intensifying cold spot", "Punto frío en intensificación"),
    "persistent cold spot": ("Persistent cold spot", "Punto frío persistente"),
    "diminishing cold spot": ("Diminishing cold spot", "Punto frío en disminución"),
    "sporadic cold spot": ("Sporadic cold spot", "Punto frío esporádico"),
    "oscillating cold spot": ("Oscillating cold spot", "Punto frío oscilante"),
    "historical cold spot": ("Historical cold spot", "Punto frío histórico"),
    "no pattern detected": ("No pattern detected", "Ningún patrón detectado"),
    # Gi* bins as the service names them in the hot spot classes table
    **{
        f"{kind} spot, {level}% confidence": (
            f"{kind.capitalize()} spot, {level}% confidence",
            f"Punto {'caliente' if kind == 'hot' else 'frío'}, confianza {level}%",
        )
        for kind in ("hot", "cold")
        for level in (90, 95, 99)
    },
}

MISSING = "—"
_PERIOD = re.compile(r"^(?P<year>\d{4})(?:(?P<q>Q[1-4])|(?P<h>H[12])|-(?P<m>\d{2}))?$")


def _is_missing(value: object) -> bool:
    if value is None:
        return True
    if value is pd.NA or value is pd.NaT:
        return True
    try:
        return bool(math.isnan(value))  # type: ignore[arg-type]
    except TypeError:
        return False


class Lang:
    """The report's language: labels, vocabulary, numbers and dates.

    ``Lang("es")("section.trend")`` is the Spanish title of the trend section; the number
    and date methods print through Babel's locale for the language.
    """

    def __init__(self, language: str) -> None:
        if language not in LANGUAGES:
            raise ValueError(f"language {language!r} is not one of {', '.join(LANGUAGES)}")
        self.language = language
        self.locale = Locale.parse(LOCALES[language])
        self._i = LANGUAGES.index(language)

    def __call__(self, key: str, **values: object) -> str:
        """The label ``key`` in this language, with ``{name}`` fields filled from ``values``."""
        text = LABELS[key][self._i]
        return text.format(**values) if values else text

    def has(self, key: str) -> bool:
        """Whether ``key`` is a fixed label."""
        return key in LABELS

    def term(self, code: object) -> str:
        """A code from a table (measure, group, sex, pattern, state) as a reader's word."""
        if _is_missing(code):
            return MISSING
        text = str(code)
        known = VOCABULARY.get(text) or VOCABULARY.get(text.lower())
        return known[self._i] if known else text.replace("_", " ")

    def column(self, name: str) -> str:
        """The header of column ``name`` (columns keep English names in CSV, not here)."""
        key = f"col.{name}"
        return self(key) if key in LABELS else name.replace("_", " ").capitalize()

    def source(self, line: str) -> str:
        """The source line with its prefix (``Source: …``), unless it already has one."""
        prefixes = {pair[i].lower() for pair in (LABELS["source_prefix"],) for i in (0, 1)}
        if line.split(" ", 1)[0].lower() in prefixes:
            return line
        return f"{self('source_prefix')} {line}"

    # -- numbers -----------------------------------------------------------------------

    def integer(self, value: object) -> str:
        """A count with thousands separators; missing values print as a dash."""
        if _is_missing(value):
            return MISSING
        return format_decimal(round(float(value)), format="#,##0", locale=self.locale)

    def decimal(self, value: object, digits: int = 1) -> str:
        """A number with ``digits`` decimals."""
        if _is_missing(value):
            return MISSING
        pattern = "#,##0" + ("." + "0" * digits if digits else "")
        return format_decimal(float(value), format=pattern, locale=self.locale)

    def _percent(self, value: float, digits: int) -> str:
        """``value`` percent (0-100 scale) in the locale's percent pattern (Babel)."""
        pattern = self.locale.percent_formats[None].pattern
        decimals = "0." + "0" * digits if digits else "0"
        pattern = re.sub(r"0(?=[^0-9#]*%)", decimals, pattern, count=1)
        return format_percent(value / 100, format=pattern, locale=self.locale)

    def change(self, pct: object) -> str:
        """A percentage change with its sign, e.g. ``+12.5%``; a change that rounds to zero
        has no sign."""
        if _is_missing(pct):
            return MISSING
        value = float(pct)
        text = self._percent(abs(value), 1)
        if not re.search(r"[1-9]", text):
            return text
        return ("+" if value > 0 else "\u2212") + text

    def percent(self, pct: object, digits: int = 1) -> str:
        """A share given in percent (0-100), e.g. ``93.4%``."""
        if _is_missing(pct):
            return MISSING
        return self._percent(float(pct), digits)

    # -- dates -------------------------------------------------------------------------

    def date(self, value: date | datetime) -> str:
        """A date in words (``30 September 2024``, ``30 de septiembre de 2024``)."""
        day = value.date() if isinstance(value, datetime) else value
        return format_skeleton("yMMMMd", day, locale=self.locale)

    def date_range(self, start: date, end: date) -> str:
        """``1 July 2024 - 30 September 2024``: both ends in words."""
        return f"{self.date(start)} \u2013 {self.date(end)}"

    def month_name(self, month: int, width: str = "wide") -> str:
        """The name of month 1-12 (``abbreviated`` for chart axes)."""
        name = get_month_names(width, locale=self.locale)[month]
        return name[:1].upper() + name[1:] if width == "wide" else name

    def month(self, yyyy_mm: str, width: str = "wide") -> str:
        """``2024-07`` as ``July 2024`` / ``julio de 2024``."""
        year, month = int(yyyy_mm[:4]), int(yyyy_mm[5:7])
        name = get_month_names(width, locale=self.locale)[month]
        text = self("period.month", month=name, year=year)
        return text[:1].upper() + text[1:]

    def weekday(self, day: int, width: str = "abbreviated") -> str:
        """Day 0 = Monday … 6 = Sunday, as a name."""
        name = get_day_names(width, locale=self.locale)[int(day)]
        return name[:1].upper() + name[1:]

    def period_name(self, label: str) -> str:
        """A period label (``2024Q3``, ``2024H2``, ``2024-07``, ``2024``) in words."""
        match = _PERIOD.match(label)
        if not match:
            return label
        year = match["year"]
        if match["q"]:
            return self("period.quarter", ordinal=self(f"ordinal.{match['q'][1]}"), year=year)
        if match["h"]:
            return self("period.half", ordinal=self(f"ordinal.{match['h'][1]}"), year=year)
        if match["m"]:
            return self.month(label)
        return self("period.year", year=year)
