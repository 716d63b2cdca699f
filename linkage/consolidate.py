"""The consolidated register: one row per death (cluster), each agency's record left as it came.

Rules (the Inter-Agency Group can read them here and in the service's methods notes):

Manner
    Each source's manner is the most frequent manner among that source's records in the
    cluster (ties: the record with the smallest id). The consolidated manner is the forensic
    service's, else the police's, else the health registry's, else another source's (sorted
    by name): the autopsy is the examination made to establish the manner of death, the
    police record the circumstances, and the death certificate often codes violent deaths
    with little detail (ICD-10 Y10-Y34, "event of undetermined intent"). A source without a
    recorded manner is skipped, not counted as a disagreement.
Disagreement
    ``manners_disagree`` is true when the records of the cluster carry at least two
    different manners (whatever their source), e.g. police homicide vs forensic undetermined.
Date of death
    The health registry's (the death certificate is the legal record of the date), else the
    forensic service's, else the police's; within a source the earliest date.
Place
    A point (lon, lat) from the police (the scene, georeferenced by the officer), else the
    forensic service, else the health registry; ``unit_code`` from the record that gave the
    point, else the first source in the same order that has a unit. ``place_from`` names it.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from linkage.model import CONSOLIDATED_COLUMNS, SOURCES, LinkageInputError, validate_records

MANNER_ORDER = ("forensic", "police", "health")
DATE_ORDER = ("health", "forensic", "police")
PLACE_ORDER = ("police", "forensic", "health")


def _rank(order: tuple[str, ...], sources: pd.Series) -> pd.Series:
    """Position of each source in a priority order; other sources after, by name."""
    others = sorted(set(sources) - set(order))
    position = {s: i for i, s in enumerate((*order, *others))}
    return sources.map(position)


def consolidate(records: pd.DataFrame, clusters: pd.DataFrame) -> pd.DataFrame:
    """One row per cluster (= one death) with the columns of ``CONSOLIDATED_COLUMNS``.

    ``records`` as given to :func:`linkage.link.link_records`; ``clusters`` its result's
    ``clusters`` (record_id, cluster_id). A record missing from ``clusters`` is an error.
    """
    recs = validate_records(records)
    merged = recs.merge(clusters[["record_id", "cluster_id"]], on="record_id", how="left")
    if merged["cluster_id"].isna().any():
        missing = merged.loc[merged["cluster_id"].isna(), "record_id"].head(5).tolist()
        raise LinkageInputError(f"records without a cluster: {', '.join(missing)}")
    merged = merged.sort_values(["cluster_id", "record_id"]).reset_index(drop=True)

    cluster_ids = merged["cluster_id"].to_numpy()
    starts = np.flatnonzero(np.r_[True, cluster_ids[1:] != cluster_ids[:-1]])
    out = pd.DataFrame(index=pd.Index(cluster_ids[starts], name="cluster_id"))
    # the records are sorted by cluster: one split gives every cluster's ids (a groupby
    # with a Python aggregation is 100 times slower on 300,000 records)
    out["record_ids"] = [a.tolist() for a in np.split(merged["record_id"].to_numpy(), starts[1:])]
    out["n_records"] = np.diff(np.r_[starts, len(merged)])
    present = merged.groupby(["cluster_id", "source"]).size().unstack(fill_value=0).gt(0)
    present = present.reindex(out.index)
    labels = pd.Series("", index=out.index)
    for source in sorted(present.columns):
        labels = labels + np.where(present[source], source + "+", "")
    out["sources"] = labels.str.rstrip("+")
    out["n_sources"] = present.sum(axis=1)
    for source in SOURCES:
        out[f"in_{source}"] = present.get(source, False)
    out["same_source_duplicates"] = out["n_records"] > out["n_sources"]

    per_source = _manner_per_source(merged)
    for source in SOURCES:
        out[f"manner_{source}"] = per_source.get(source, pd.Series(dtype=object)).reindex(out.index)
    out["manners_disagree"] = merged.groupby("cluster_id")["manner"].nunique().gt(1)
    manner, manner_from = _first_by_priority(per_source, merged["source"], MANNER_ORDER)
    out["manner"] = manner.reindex(out.index)
    out["manner_from"] = manner_from.reindex(out.index)

    dated = merged[merged["death_date"].notna()].copy()
    dated["rank"] = _rank(DATE_ORDER, dated["source"])
    first_date = dated.sort_values(["cluster_id", "rank", "death_date"]).groupby("cluster_id")
    out["death_date"] = first_date["death_date"].first().reindex(out.index)

    _place(merged, out)
    out = out.reset_index()
    for col in [c for c in out.columns if c.startswith(("manner", "death_date", "unit_code"))]:
        out[col] = out[col].astype(object).where(out[col].notna(), None)
    return out.loc[:, list(CONSOLIDATED_COLUMNS)]


def _manner_per_source(merged: pd.DataFrame) -> dict[str, pd.Series]:
    """{source: Series cluster_id -> that source's manner} (mode; ties: smallest record id)."""
    known = merged[merged["manner"].notna()]
    tally = (
        known.groupby(["cluster_id", "source", "manner"])
        .agg(n=("record_id", "size"), first_id=("record_id", "first"))  # sorted by id
        .reset_index()
        .sort_values(["cluster_id", "source", "n", "first_id"], ascending=[True, True, False, True])
        .drop_duplicates(["cluster_id", "source"])
    )
    return {
        source: group.set_index("cluster_id")["manner"] for source, group in tally.groupby("source")
    }


def _first_by_priority(
    per_source: dict[str, pd.Series], sources: pd.Series, order: tuple[str, ...]
) -> tuple[pd.Series, pd.Series]:
    """The value of the first source (in priority order) that has one, and that source."""
    value = pd.Series(dtype=object)
    origin = pd.Series(dtype=object)
    others = sorted(set(sources) - set(order))
    for source in (*order, *others):
        series = per_source.get(source)
        if series is None:
            continue
        new = series[~series.index.isin(value.index)]
        value = pd.concat([value, new])
        origin = pd.concat([origin, pd.Series(source, index=new.index, dtype=object)])
    return value, origin


def _place(merged: pd.DataFrame, out: pd.DataFrame) -> None:
    """Point and unit by the place rule, written into ``out`` (indexed by cluster_id)."""
    merged = merged.assign(rank=_rank(PLACE_ORDER, merged["source"]))
    ordered = merged.sort_values(["cluster_id", "rank", "record_id"])
    pointed = ordered[ordered["lon"].notna() & ordered["lat"].notna()]
    first_point = pointed.drop_duplicates("cluster_id").set_index("cluster_id")
    out["lon"] = first_point["lon"].reindex(out.index)
    out["lat"] = first_point["lat"].reindex(out.index)
    out["place_from"] = first_point["source"].reindex(out.index)
    unit_of_point = first_point["unit_code"].reindex(out.index)
    united = ordered[ordered["unit_code"].notna()].drop_duplicates("cluster_id")
    first_unit = united.set_index("cluster_id").reindex(out.index)
    out["unit_code"] = unit_of_point.where(unit_of_point.notna(), first_unit["unit_code"])
    no_point = out["place_from"].isna()
    out.loc[no_point, "place_from"] = first_unit.loc[no_point, "source"]
    out["place_from"] = out["place_from"].astype(object).where(out["place_from"].notna(), None)
