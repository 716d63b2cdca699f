"""The consolidated register of deaths and its disagreements (issue 21), read from the
latest completed linkage run (or a named one).

A death is a cluster of agency records. Its manner is consolidated by one documented
rule (:data:`MANNER_RULE`, the linkage core's): the forensic service's manner wins, else
the police's, else the health registry's. Nothing here reads or returns an identifier of
the deceased: the agencies' record ids appear in the discrepancy lines for the linker
role and admins only.
"""

from __future__ import annotations

import re
from collections import Counter
from datetime import date
from typing import Any

import pandas as pd
from sqlalchemy.ext.asyncio import AsyncConnection

from app.core.errors import InvalidParameter
from app.schemas.linkage import DeathPublic, DiscrepancyLine, SourceCoding
from app.services.periods import parse_period
from app.sql import linkage as sql

MANNER_RULE = (
    "forensic service's manner wins (autopsy), else the police's, else the health "
    "registry's; a death no agency gave a manner for is counted as 'unknown'"
)
SOURCES = ("police", "forensic", "health")
_QUARTER = re.compile(r"^(\d{4})[Qq]([1-4])$")


def period_bounds(period: str | None, timezone: str) -> tuple[str | None, date | None, date | None]:
    """A period such as ``2024``, ``2024-Q3`` (or ``2024Q3``) or ``2024-03`` → (label,
    first day, day after the last); (None, None, None) for none. Death dates are calendar
    dates of the territory, so the bounds are dates."""
    if period is None:
        return None, None, None
    text = _QUARTER.sub(r"\1-Q\2", period.strip())
    _, label, start, end = parse_period(text, timezone)
    if label is None or start is None or end is None:
        raise InvalidParameter(f"period must be one period, e.g. 2024 or 2024-Q3 (got {period!r})")
    return label, start.date(), end.date()


async def select_deaths(
    conn: AsyncConnection, run_id: int, start: date | None, end: date | None, unit: str | None
) -> list[dict[str, Any]]:
    """The run's consolidated deaths of the period (and unit), by date."""
    rows = (await conn.execute(sql.select_deaths(run_id, start, end, unit))).mappings().all()
    return [dict(r) for r in rows]


async def discrepancy_lines(
    conn: AsyncConnection, run_id: int, deaths: list[dict[str, Any]], *, identifiers: bool
) -> tuple[list[DiscrepancyLine], dict[str, list[DiscrepancyLine]]]:
    """Deaths whose agencies' manners differ, and deaths one agency alone recorded (by
    agency), each with every agency's own coding (record ids only with ``identifiers``)."""
    differ = [d for d in deaths if d["manners_disagree"]]
    alone = [d for d in deaths if d["n_sources"] == 1]
    wanted = [d["cluster_id"] for d in differ + alone]
    codings: dict[int, list[SourceCoding]] = {}
    if wanted:
        rows = (await conn.execute(sql.select_cluster_codings(run_id, wanted))).mappings()
        for r in rows:
            coding = SourceCoding(
                source=r["source"],
                manner=r["manner"],
                manner_raw=r["manner_raw"],
                icd10=r["icd10"],
                iccs=r["iccs"],
                source_id=r["source_id"] if identifiers else None,
            )
            codings.setdefault(r["cluster_id"], []).append(coding)

    def line(d: dict[str, Any]) -> DiscrepancyLine:
        fields = {k: d[k] for k in DiscrepancyLine.model_fields if k != "codings"}
        return DiscrepancyLine(**fields, codings=codings.get(d["cluster_id"], []))

    single: dict[str, list[DiscrepancyLine]] = {}
    for d in alone:
        single.setdefault(d["sources"], []).append(line(d))
    return [line(d) for d in differ], single


def summary(deaths: list[dict[str, Any]], capture: bool = True) -> dict[str, Any]:
    """Counts of the consolidated deaths: by the set of agencies that recorded each, by
    how many, by agency, by consolidated manner and by unit; and the multiple-systems
    estimate of all deaths (recorded or not) when ``linkage.capture`` can make one."""
    by_sources = Counter(d["sources"] for d in deaths)
    found_by = Counter(
        {3: "all three", 2: "two", 1: "one"}.get(d["n_sources"], "other") for d in deaths
    )
    by_source = {s: sum(1 for d in deaths if d[f"in_{s}"]) for s in SOURCES}
    by_manner = Counter(d["manner"] or "unknown" for d in deaths)
    by_unit = Counter(d["unit_code"] or "unknown" for d in deaths)
    return {
        "deaths": len(deaths),
        "by_sources": dict(sorted(by_sources.items())),
        "found_by": {k: found_by.get(k, 0) for k in ("all three", "two", "one")},
        "by_source": by_source,
        "by_manner": dict(sorted(by_manner.items())),
        "manner_rule": MANNER_RULE,
        "by_unit": dict(sorted(by_unit.items())),
        "estimate": _estimate(deaths) if capture else None,
    }


def _estimate(deaths: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The log-linear multiple-systems estimate from the three agencies' overlaps
    (``linkage.capture``), as JSON; None when the module or the data cannot give one."""
    try:
        from linkage import capture
    except ImportError:
        return None
    if not deaths:
        return None
    frame = pd.DataFrame(deaths)
    try:
        cells = capture.overlap_cells(frame)
        estimate = capture.loglinear(cells)
    except (ValueError, ArithmeticError) as exc:
        return {"error": str(exc)}
    return _jsonable(estimate.as_dict() if hasattr(estimate, "as_dict") else estimate)


def _jsonable(value: Any) -> Any:
    """A result object (a dataclass, numpy numbers) as plain JSON values."""
    import dataclasses

    import numpy as np

    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {k: _jsonable(v) for k, v in dataclasses.asdict(value).items()}
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, float) and value != value:
        return None
    return value


def death_models(deaths: list[dict[str, Any]]) -> list[DeathPublic]:
    """The deaths as their public schema (no identifier)."""
    return [DeathPublic(**d) for d in deaths]
