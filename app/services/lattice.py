"""The public query space of ``/stats``: the fixed lattice of tables a caller below analyst
may ask for.

Perturbation gives every set of incidents one noisy count (``app.services.disclosure``),
but a free query language lets an attacker compose as many different sets around one
incident as he likes (day windows, single years of age, sources, any set of categories)
and average their noise away, or bisect them until a row's presence gives the incident
away. Below analyst, a table is therefore made of cells of a fixed lattice, the way the
ONS restricts its flexible census tables:

- units: the units of a level, or units named by code;
- category: all categories, one category, or one category group (``by=category_group``);
- victim's sex: all, or one of female, male, unknown;
- age: all ages, or one of the declared age groups (``privacy.age_groups``);
- time: one whole month, quarter or year inside the published window
  (``privacy.published_from`` to ``privacy.published_to``).

Every public row is one such cell, so one incident lies in at most
``levels x 3 x 2 x 2 x 3`` published cells (:func:`cells_per_incident`), each with one
perturbation for as long as its incidents do not change.
"""

from __future__ import annotations

import dataclasses
from datetime import date, datetime
from zoneinfo import ZoneInfo

import pandas as pd

from app.core.errors import InvalidParameter
from app.core.settings import Settings
from app.services.stats import StatsQuery, parse_age_groups

__all__ = ["NotPublic", "cells_per_incident", "published_window", "restrict"]

_FREQ = {"year": "Y", "quarter": "Q", "month": "M"}
_FIRST_MONTHS = {"year": {1}, "quarter": {1, 4, 7, 10}, "month": set(range(1, 13))}


class NotPublic(InvalidParameter):
    """A /stats query outside the public lattice: 400, naming what a public caller may ask."""

    status, title = 400, "Not available without an analyst key"


def published_window(
    settings: Settings, granularity: str, today: date | None = None
) -> tuple[datetime, datetime]:
    """The whole periods of ``granularity`` inside the published window, as local
    aware bounds (start inclusive, end exclusive). The window's end defaults to the start
    of the current local month: only complete months are published."""
    tz = ZoneInfo(settings.territory.timezone)
    privacy = settings.privacy
    end = privacy.published_to or (today or datetime.now(tz).date()).replace(day=1)
    freq = _FREQ[granularity]
    first = pd.Period(privacy.published_from, freq=freq)
    if first.start_time.date() < privacy.published_from:
        first += 1  # a period that starts before the window is not whole inside it
    last = pd.Period(end, freq=freq)  # the period holding the end: not published
    return (
        first.start_time.to_pydatetime().replace(tzinfo=tz),
        last.start_time.to_pydatetime().replace(tzinfo=tz),
    )


def restrict(query: StatsQuery, settings: Settings, *, age_groups_given: bool) -> StatsQuery:
    """``query`` as a public table: refused (:class:`NotPublic`) outside the lattice, its
    time window clipped to the published one, so that its rows follow from the request
    alone (never from the data's first or last incident)."""
    f = query.filters
    start, end = published_window(settings, query.period)

    def refuse(what: str) -> NotPublic:
        window = {"published_from": str(start.date()), "published_to": str(end.date())}
        detail = f"Outside the public tables: {what}. {describe(settings, start, end)}"
        return NotPublic(detail, **window)

    breach = _filter_breach(query, settings, age_groups_given=age_groups_given) or (
        _period_breach(query, settings)
    )
    if breach:
        raise refuse(breach)
    clipped_from = max(start, f.occurred_from) if f.occurred_from else start
    clipped_to = min(end, f.occurred_to) if f.occurred_to else end
    if clipped_from >= clipped_to:
        raise refuse("the requested time lies outside the published window")
    filters = dataclasses.replace(f, occurred_from=clipped_from, occurred_to=clipped_to)
    return dataclasses.replace(query, filters=filters)


def _filter_breach(query: StatsQuery, settings: Settings, *, age_groups_given: bool) -> str:
    """Which of the query's filters leaves the lattice ('' for none)."""
    f = query.filters
    declared = parse_age_groups(settings.privacy.age_groups)
    if f.sources:
        return "source filters need an analyst key"
    if len(f.categories) > 1:
        return "several categories in one count need an analyst key"
    if len(f.victim_sex) > 1:
        return "several victim sexes in one count need an analyst key"
    if age_groups_given and query.age_groups != declared:
        return "other age groups than the declared ones need an analyst key"
    if (f.age_min, f.age_max) != (None, None) and not any(
        (f.age_min or 0) == g.first and f.age_max == g.last for g in declared
    ):
        return "an age range other than one declared age group needs an analyst key"
    return ""


def _period_breach(query: StatsQuery, settings: Settings) -> str:
    """Why the query's time is not whole periods ('' when it is)."""
    if "period" not in query.by:
        return "a public table covers whole periods"
    f = query.filters
    tz = ZoneInfo(settings.territory.timezone)
    for name, moment in (("occurred_from", f.occurred_from), ("occurred_to", f.occurred_to)):
        if moment is not None and not _on_boundary(moment.astimezone(tz), query.period):
            return f"{name} must be the first day of a {query.period}"
    return ""


def describe(settings: Settings, start: datetime, end: datetime) -> str:
    """What a public caller may ask, in one paragraph (the 400's detail)."""
    return (
        "Without an analyst key, /stats answers these tables: the units of a level (level=) "
        "or units by code (unit=); by= any of category, category_group, period, "
        "victim_sex, age_group; one period (period=2024, 2024-Q1 or 2024-03), or by=period "
        "with period=month, quarter or year and bounds on its first days "
        "(occurred_from=2024-01-01); at most one category, one victim_sex, and one "
        f"declared age group (age_min=15&age_max=29; groups {settings.privacy.age_groups}); "
        f"published from {start.date()} to {end.date()} (exclusive)."
    )


def cells_per_incident(levels: int) -> int:
    """How many public cells hold one incident: its unit at each level; all categories,
    its category or its group; all sexes or its own; all ages or its group; its month,
    quarter or year."""
    return levels * 3 * 2 * 2 * 3


def _on_boundary(moment: datetime, granularity: str) -> bool:
    return (
        moment.time() == datetime.min.time()
        and moment.day == 1
        and moment.month in _FIRST_MONTHS[granularity]
    )
