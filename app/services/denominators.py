"""Units and their census denominators, shared by ``/stats`` and the composite indexes.

A rate divides a count by the population of the matching unit, sex and age group. Which
census a period uses is decided here, once: the latest census year at or before the
period's year, else the earliest after it (:meth:`Populations.pick`).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import shapely
from sqlalchemy.ext.asyncio import AsyncConnection

from app.core.errors import InvalidParameter
from app.sql import stats as sql

__all__ = [
    "Census",
    "Populations",
    "Unit",
    "age_group_of",
    "population_age",
    "population_sex",
    "read_populations",
    "read_units",
]


@dataclass(frozen=True)
class Unit:
    """An administrative unit: database id, code, name, level and geometry (EPSG:4326)."""

    id: int
    code: str
    name: str
    level: int
    geometry: shapely.Geometry


async def read_units(
    conn: AsyncConnection, *, level: int | None = None, codes: Sequence[str] = ()
) -> list[Unit]:
    """The units with these codes (all must exist), else every unit of ``level``.

    Raises InvalidParameter naming the unknown codes. An empty level gives an empty list:
    the caller says what it needed.
    """
    rows = (await conn.execute(sql.select_units(level=level, codes=codes))).all()
    if codes:
        found = {r.code for r in rows}
        if missing := [c for c in codes if c not in found]:
            raise InvalidParameter(f"unknown unit code(s): {', '.join(missing)}")
    return [Unit(r.id, r.code, r.name, r.level, shapely.from_wkb(bytes(r.wkb))) for r in rows]


class Census(NamedTuple):
    """One population figure: census (or estimate) year, value and its source."""

    year: int
    value: float
    source: str | None


class Populations:
    """Every population figure of a set of units, by (unit id, sex, age group)."""

    def __init__(self, entries: dict[tuple[int, str, str], list[Census]]) -> None:
        self._entries = entries

    def pick(self, unit_id: int, sex: str, age_group: str, year: int) -> Census | None:
        """The figure for ``year``: the latest at or before it, else the earliest after it."""
        entries = self._entries.get((unit_id, sex, age_group), ())
        if not entries:
            return None
        before = [e for e in entries if e.year <= year]
        return before[-1] if before else entries[0]


async def read_populations(conn: AsyncConnection, unit_ids: Sequence[int]) -> Populations:
    """Every population row of these units (all years, sexes and age groups)."""
    out: dict[tuple[int, str, str], list[Census]] = defaultdict(list)
    for r in (await conn.execute(sql.select_population(unit_ids))).all():
        out[(r.unit_id, r.sex, r.age_group)].append(Census(r.year, r.value, r.source))
    for entries in out.values():
        entries.sort()
    return Populations(dict(out))


def population_sex(row_sex: str | None, filter_sexes: Iterable[str], by_sex: bool) -> str | None:
    """The population sex for a row: the victims' sex when known, else total.

    None when the victims' sex is unknown (no population matches them).
    """
    if by_sex:
        return row_sex if row_sex in ("female", "male") else None
    wanted = set(filter_sexes)
    if wanted == {"unknown"}:
        return None
    known = wanted - {"unknown"}
    return known.pop() if len(known) == 1 else "total"


def age_group_of(age_min: int | None, age_max: int | None) -> str:
    """The census age group of an age filter: ``total``, ``15-29`` or ``65+``."""
    if age_min is None and age_max is None:
        return "total"
    first = age_min or 0
    return f"{first}+" if age_max is None else f"{first}-{age_max}"


def population_age(
    row_age: str | None, age_min: int | None, age_max: int | None, by_age: bool
) -> str | None:
    """The population age group for a row: its age bucket, else the filter's range.

    None for the buckets no census has (``other``, ``unknown``).
    """
    if by_age:
        return row_age if row_age not in (sql.OTHER_AGE, sql.UNKNOWN) else None
    return age_group_of(age_min, age_max)
