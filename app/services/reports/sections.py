"""The sections about counts: headline, trend, districts, victims, when."""

from __future__ import annotations

from datetime import date

import geopandas as gpd
import pandas as pd

from app.schemas.reports import (
    Measure,
)
from app.services.denominators import read_units
from app.services.reports.context import (
    COUNTRY_LEVEL,
    DISTRICT_LEVEL,
    _Context,
    _count,
    _pct,
    _rows,
)
from app.services.reports.periods import _MONTHS, _add_months
from app.services.stats import VICTIM_SEXES
from app.sql import reports as sql
from reports.document import Section

# --- sections -------------------------------------------------------------------------------


async def _headline(ctx: _Context) -> Section:
    p = ctx.period
    before, year_before = p.shifted(-_MONTHS[p.kind]), p.shifted(-12)
    days_in_year = (date(p.start.year + 1, 1, 1) - date(p.start.year, 1, 1)).days
    records = []
    for m in ctx.definition.measures:
        now = await _rows(ctx, m, level=COUNTRY_LEVEL, period=p)
        prev = await _rows(ctx, m, level=COUNTRY_LEVEL, period=before)
        last = await _rows(ctx, m, level=COUNTRY_LEVEL, period=year_before)
        rate = now[0].rate if now else None
        records.append(
            {
                "measure": m.code,
                "period": _count(now),
                "previous": _count(prev),
                "year_before": _count(last),
                "change_previous_pct": _pct(_count(now), _count(prev)),
                "change_year_pct": _pct(_count(now), _count(last)),
                "rate_per_100k": rate,
                "projected_annual_rate": None if rate is None else rate * days_in_year / p.days,
            }
        )
    section = Section("headline", tables={"figures": pd.DataFrame.from_records(records)})
    section.notes.append(
        ctx.t(
            f"{p.label} against {before.label} and {year_before.label}. Rates per 100,000 "
            "residents are for the period (not annualised); the projected annual rate "
            f"multiplies the period's rate by {days_in_year} / {p.days:g} days.",
            f"{p.label} frente a {before.label} y {year_before.label}. Las tasas por 100 000 "
            "habitantes son del periodo (no anualizadas); la tasa anual proyectada "
            f"multiplica la del periodo por {days_in_year} / {p.days:g} días.",
        )
    )
    names = "; ".join(
        f"{ctx.name(m)}: {ctx.words(_codes(ctx, m))}" for m in ctx.definition.measures
    )
    section.notes.append(names + ".")
    return section


async def _trend(ctx: _Context) -> Section:
    p = ctx.period
    months = ctx.definition.trend_months
    start = _add_months(p.end, -months)
    frames = []
    for m in ctx.definition.measures:
        rows = await _rows(ctx, m, level=COUNTRY_LEVEL, months=(start, p.end))
        for r in rows or []:
            month = pd.Period(r.period, freq="M").start_time.to_pydatetime()
            frames.append(
                {
                    "month": r.period,
                    "group": m.code,
                    "count": None if r.count is None else float(r.count),
                    "in_period": p.start.replace(tzinfo=None) <= month < p.end.replace(tzinfo=None),
                }
            )
    section = Section("trend", tables={"monthly": pd.DataFrame.from_records(frames)})
    section.notes.append(
        ctx.t(
            f"Incidents per month, the last {months} months to the end of {p.label}.",
            f"Incidentes por mes, los últimos {months} meses hasta el final de {p.label}.",
        )
    )
    if any(f["count"] is None for f in frames):  # a public report's withheld months
        section.notes.append(
            ctx.t(
                "A gap in a line is a month whose count is withheld (see Methods), not a zero.",
                "Un hueco en una línea es un mes cuya cifra no se publica (ver Métodos), "
                "no un cero.",
            )
        )
    return section


async def _districts(ctx: _Context) -> Section:
    p = ctx.period
    m = ctx.definition.measure(ctx.definition.districts_measure)
    now = await _rows(ctx, m, level=DISTRICT_LEVEL, period=p) or []
    prev = await _rows(ctx, m, level=DISTRICT_LEVEL, period=p.shifted(-_MONTHS[p.kind])) or []
    before = {r.unit_code: r.count for r in prev}
    records = [
        {
            "unit_code": r.unit_code,
            "unit_name": r.unit_name,
            "count": None if r.count is None else float(r.count),
            "previous": None if before.get(r.unit_code) is None else float(before[r.unit_code]),
            "change_pct": _pct(r.count, before.get(r.unit_code)),
            "rate_per_100k": r.rate,
            "eb_rate_per_100k": r.rate_eb_global,
        }
        for r in now
    ]
    table = pd.DataFrame.from_records(records)
    units = await read_units(ctx.conn, level=DISTRICT_LEVEL)
    geometry = gpd.GeoDataFrame(
        {"unit_code": [u.code for u in units]}, geometry=[u.geometry for u in units], crs=4326
    )
    shown = table[["unit_code", "unit_name", "rate_per_100k"]] if len(table) else None
    maps = {}
    if shown is not None:
        frame = geometry.merge(shown.rename(columns={"rate_per_100k": "value"}), on="unit_code")
        maps["districts"] = frame[["unit_code", "unit_name", "value", "geometry"]]
    section = Section("districts", tables={"districts": table}, maps=maps)
    section.notes.append(
        ctx.t(
            f"{ctx.name(m)}. Empirical Bayes rates shrink each district's rate toward the "
            "national rate (global, Marshall 1991), steadier where counts are small.",
            f"{ctx.name(m)}. Las tasas bayesianas empíricas acercan la tasa de cada distrito a la "
            "nacional (global, Marshall 1991), más estables con pocos casos.",
        )
    )
    return section


async def _victims(ctx: _Context) -> Section:
    d = ctx.definition
    tables = {}
    for name, code in (("by_sex_age", d.victims_measure), ("vawg", d.vawg_measure)):
        if code is None or (name == "vawg" and ctx.public):
            continue
        m = d.measure(code)
        # Violence against women and girls: its female victims, by age group. The public
        # pyramid is one table per sex, as a public caller asks /stats (one victim_sex at
        # a time). In one table of every sex, an age group whose few victims of unknown
        # sex were withheld also lost its smaller shown cell (complementary suppression):
        # the demo's public pyramid had no female count at all.
        if name == "vawg":
            sexes: list[tuple[str, ...]] = [("female",)]
        else:
            sexes = [(s,) for s in VICTIM_SEXES] if ctx.public else [()]
        rows = []
        for sex in sexes:
            rows += await _rows(
                ctx, m, level=COUNTRY_LEVEL, period=ctx.period, by=("victim_sex", "age_group"),
                victim_sex=sex,
            ) or []  # fmt: skip
        tables[name] = pd.DataFrame.from_records(
            [
                {
                    "sex": r.victim_sex,
                    "age_group": r.age_group,
                    "count": None if r.count is None else float(r.count),
                }
                for r in rows
            ],
            columns=["sex", "age_group", "count"],
        )
    section = Section("victims", tables=tables)
    section.notes.append(
        ctx.t(
            f"Incidents of {ctx.name(d.measure(d.victims_measure)).lower()} by the victim's "
            "sex and age group.",
            f"Incidentes de {ctx.name(d.measure(d.victims_measure)).lower()} según el sexo y "
            "el grupo de edad de la víctima.",
        )
    )
    return section


def _codes(ctx: _Context, m: Measure) -> list[str]:
    if m.categories:
        return list(m.categories)
    return sorted(c for c, g in ctx.vocabulary.items() if g == m.category_group)


async def _when(ctx: _Context) -> Section:
    code = ctx.definition.when_measure
    if ctx.public or code is None:
        return Section(
            "when",
            empty=ctx.t(
                "The day of week and hour chart is not among the public tables; the "
                "observatory's analysts publish it on request.",
                "El gráfico por día de la semana y hora no forma parte de las tablas "
                "públicas; los analistas del observatorio lo publican a petición.",
            ),
        )
    m = ctx.definition.measure(code)
    p = ctx.period
    tz = ctx.settings.territory.timezone
    found = (await ctx.conn.execute(sql.weekday_hour(_codes(ctx, m), p.start, p.end, tz))).all()
    counts = {(r.weekday, r.hour): r.count for r in found}
    table = pd.DataFrame.from_records(
        [
            {"weekday": w, "hour": h, "count": float(counts.get((w, h), 0))}
            for w in range(7)
            for h in range(24)
        ]
    )
    section = Section("when", tables={"weekday_hour": table})
    section.notes.append(ctx.t(f"{ctx.name(m)}, local time.", f"{ctx.name(m)}, hora local."))
    return section
