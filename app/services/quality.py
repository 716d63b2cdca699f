"""The data quality scorecard of every agency's death records, per period (issue 21).

The scores follow two frameworks, named so that a reader can place each number:

- the **Bogotá Protocol** on the quality of homicide data in Latin America and the
  Caribbean (2015): its criteria ask of a source's records that they cover every death
  (*coverage*: here the coherence with the other agencies, since a death the others hold
  and this one lacks is a gap), carry the variables the protocol lists (*completeness of
  the minimum variables*: sex, age, date, place, manner, instrument), locate the event
  (*georeferencing*, and at what precision), classify it in a standard way (*standard
  classification*: ICD-10, ICCS), are published *in time* and *agree with the other
  sources* (*inter-institutional consistency*);
- the **ESS quality dimensions** (European Statistical System, Regulation (EC) 223/2009
  art. 12): relevance, *accuracy and reliability* (here completeness and
  georeferencing), *timeliness and punctuality* (the reporting delay), *coherence and
  comparability* (share linked to other agencies, share with the same manner),
  accessibility and clarity.

A record belongs to a period by its date of death, else its date of registration. Only
the presence of a field is read, never its value: a scorecard holds no identifier.
"""

from __future__ import annotations

from datetime import date
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy.ext.asyncio import AsyncConnection

from app.schemas.linkage import SourceQuality
from app.sql import linkage as sql

# Fields whose completeness is scored (the share of records that have them).
FIELDS = (
    "given_name", "family_name", "person_key", "sex", "age", "birth_date", "death_date",
    "registered_at", "place", "manner", "icd10", "iccs",
)  # fmt: skip
# A record is reported in time when registered within this many days of the death.
TIMELY_DAYS = 30
CRITERIA = {
    "completeness": "share of records with each field (Bogotá Protocol: minimum variables; "
    "ESS: accuracy and reliability). place: a point or a unit",
    "georeferenced": "share of records with a point (Bogotá Protocol: georeferencing); "
    "precision: the records with a point by their stated precision",
    "unit_known": "share of records placed in a unit (district)",
    "timeliness": f"reporting delay in days, registration minus death (ESS: timeliness and "
    f"punctuality): median, 90th percentile, share within {TIMELY_DAYS} days",
    "coherence": "share of records linked to another agency's record of the same death, "
    "and among the linked ones whose manner another agency also recorded, the share where "
    "one of them records the same manner (Bogotá Protocol: inter-institutional "
    "consistency; ESS: coherence and comparability)",
}


def _share(mask: pd.Series) -> float | None:
    return None if len(mask) == 0 else round(float(mask.mean()), 4)


def score_source(frame: pd.DataFrame, source: str, linked_run: bool) -> SourceQuality:
    """One agency's scores from its records of the period (``select_quality_records``)."""
    n = len(frame)
    completeness: dict[str, float | None] = {}
    for field in FIELDS:
        present = frame["point"] | frame["unit_code"] if field == "place" else frame[field]
        completeness[field] = _share(present.astype(bool))
    points = frame[frame["point"].astype(bool)]
    precision = points["precision"].value_counts().sort_index()
    delays = pd.to_numeric(frame["delay_days"], errors="coerce").dropna().to_numpy(dtype=float)
    timeliness: dict[str, float | None] = {
        "records_with_both_dates": float(len(delays)),
        "median_days": float(np.median(delays)) if len(delays) else None,
        "p90_days": float(np.percentile(delays, 90)) if len(delays) else None,
        f"within_{TIMELY_DAYS}_days": _share(pd.Series(delays <= TIMELY_DAYS))
        if len(delays)
        else None,
    }
    coherence: dict[str, float | None] = {"linked": None, "same_manner": None}
    if linked_run and n:
        linked = frame["n_sources"].fillna(0).astype(int) > 1
        coherence["linked"] = _share(linked)
        comparable = linked & frame["manner"].astype(bool) & (frame["others_with_manner"] > 0)
        coherence["same_manner"] = _share(frame.loc[comparable, "same_manner"].astype(bool))
    return SourceQuality(
        source=source,
        records=n,
        completeness=completeness,
        georeferenced=_share(frame["point"].astype(bool)),
        precision={str(k): int(v) for k, v in precision.items()},
        unit_known=_share(frame["unit_code"].astype(bool)),
        timeliness=timeliness,
        coherence=coherence,
    )


async def quality(
    conn: AsyncConnection, start: date, end: date, run_id: int | None, sources: tuple[str, ...]
) -> list[SourceQuality]:
    """Every agency's scores for the records of [start, end), coherence from ``run_id``."""
    rows = (await conn.execute(sql.select_quality_records(start, end, run_id))).mappings().all()
    frame = pd.DataFrame([dict(r) for r in rows])
    out = []
    for source in sources:
        part = frame[frame["source"] == source] if len(frame) else _empty()
        out.append(score_source(part, source, run_id is not None))
    return out


def _empty() -> pd.DataFrame:
    columns = (*FIELDS, "point", "unit_code", "precision", "delay_days", "n_sources",
               "same_manner", "others_with_manner", "source")  # fmt: skip
    return pd.DataFrame({c: pd.Series(dtype=object) for c in columns if c != "place"})


def quality_csv_rows(sources: list[SourceQuality]) -> tuple[list[str], list[list[Any]]]:
    """The scorecard as a long table: source, dimension, measure, value."""
    header = ["source", "dimension", "measure", "value"]
    rows: list[list[Any]] = []
    for s in sources:
        rows.append([s.source, "records", "records", s.records])
        rows += [[s.source, "completeness", k, v] for k, v in s.completeness.items()]
        rows.append([s.source, "georeferenced", "share", s.georeferenced])
        rows += [[s.source, "precision", k, v] for k, v in s.precision.items()]
        rows.append([s.source, "unit_known", "share", s.unit_known])
        rows += [[s.source, "timeliness", k, v] for k, v in s.timeliness.items()]
        rows += [[s.source, "coherence", k, v] for k, v in s.coherence.items()]
    return header, rows


# The measures a source's chart shows, as (label, how to read it off the scores).
CHART_MEASURES = (
    ("given name", lambda s: s.completeness["given_name"]),
    ("family name", lambda s: s.completeness["family_name"]),
    ("sex", lambda s: s.completeness["sex"]),
    ("age", lambda s: s.completeness["age"]),
    ("date of birth", lambda s: s.completeness["birth_date"]),
    ("date of death", lambda s: s.completeness["death_date"]),
    ("place (point or unit)", lambda s: s.completeness["place"]),
    ("manner", lambda s: s.completeness["manner"]),
    ("ICD-10 / ICCS code", lambda s: max(s.completeness["icd10"] or 0, s.completeness["iccs"] or 0)
     if s.records else None),
    ("georeferenced (point)", lambda s: s.georeferenced),
    (f"registered within {TIMELY_DAYS} days", lambda s: s.timeliness[f"within_{TIMELY_DAYS}_days"]),
    ("linked to another agency", lambda s: s.coherence["linked"]),
    ("same manner as another agency", lambda s: s.coherence["same_manner"]),
)  # fmt: skip


def scorecard_svg(sources: list[SourceQuality], period: str) -> str:
    """One panel per agency: the share (%) of its records of ``period`` meeting each
    measure of :data:`CHART_MEASURES`, as SVG (the report's chart style)."""
    from matplotlib.figure import Figure

    from reports.charts import INK, MUTED, WIDTH_IN, style, to_svg

    labels = [label for label, _ in CHART_MEASURES]
    with style():
        fig = Figure(figsize=(WIDTH_IN, 0.6 + 0.23 * len(labels) * max(len(sources), 1)))
        axes = fig.subplots(max(len(sources), 1), 1, squeeze=False)[:, 0]
        for ax, score in zip(axes, sources, strict=False):
            values = [read(score) for _, read in CHART_MEASURES]
            shares = np.array([np.nan if v is None else 100 * v for v in values])
            y = np.arange(len(labels))[::-1]
            ax.barh(y, np.nan_to_num(shares), color=INK, height=0.6)
            for yi, share in zip(y, shares, strict=True):
                text = "n/a" if np.isnan(share) else f"{share:.0f} %"
                ax.text(min(np.nan_to_num(share), 100) + 1, yi, text, va="center", fontsize=7,
                        color=MUTED)  # fmt: skip
            ax.set_yticks(y, labels)
            ax.set_xlim(0, 112)
            ax.set_title(f"{score.source}: {score.records} records, {period}", loc="left")
        axes[-1].set_xlabel("share of the agency's records (%)")
        fig.tight_layout()
        return to_svg(fig, f"Data quality of each agency's death records, {period}")
