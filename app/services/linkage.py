"""Linkage runs of the death records (issue 21): read → ``linkage`` core → store once.

A run is an ``analysis_run`` of kind ``linkage``, computed by a worker's job like any
analysis (app.worker.tasks.WORKS): it reads every death record and the linkers' latest
decisions, calls :func:`linkage.link.link_records` (splink's Fellegi-Sunter model on
DuckDB, in a thread) and :func:`linkage.consolidate.consolidate`, and stores the pairs,
the clusters and the consolidated deaths in one transaction, deleting first whatever an
earlier attempt of the same run stored (a retried job stores them once). The run's summary
holds the model's parameters (m and u probabilities per comparison level) and counts.

Nothing is merged destructively: each agency's record stays as it came; a death is a
cluster of records, and the register reads the latest completed run's clusters.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pandas as pd
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from app.core.db import copy_csv, frame_to_csv
from app.core.errors import Conflict, InvalidParameter, NotFound
from app.core.settings import Settings
from app.schemas.linkage import LinkageRunRequest
from app.services.death_imports import death_secret
from app.services.death_rows import hash_name
from app.services.jobs import JobProgress
from app.sql import audit as audit_sql
from app.sql import linkage as sql

_SEX = {"female": "F", "male": "M"}
_PAIR_COLUMNS = (
    "run_id", "record_l", "record_r", "match_probability", "match_weight", "band", "decided",
)  # fmt: skip
_DEATH_COLUMNS = (
    "run_id", "cluster_id", "n_records", "sources", "n_sources", "in_police", "in_forensic",
    "in_health", "manner_police", "manner_forensic", "manner_health", "manners_disagree",
    "manner", "manner_from", "death_date", "unit_code", "same_source_duplicates",
)  # fmt: skip


def _or(value: float | None, default: float) -> float:
    return default if value is None else value


def run_parameters(request: LinkageRunRequest, settings: Settings) -> dict[str, Any]:
    """The run's parameters with every default filled in from ``linkage`` settings."""
    linkage = settings.linkage
    return {
        "match_threshold": _or(request.match_threshold, linkage.match_threshold),
        "review_threshold": _or(request.review_threshold, linkage.review_threshold),
        "keep_threshold": _or(request.keep_threshold, linkage.keep_threshold),
        "within_source": request.within_source,
        "seed": linkage.seed if request.seed is None else request.seed,
    }


def records_frame(rows: list, secret: bytes | None) -> tuple[pd.DataFrame, bool]:
    """The death records in the core's columns (``linkage.model.RECORD_COLUMNS``), and
    whether names are compared as hashed tokens: when any record's names are hashed,
    every record's are (the clear ones hashed here with the same secret)."""
    frame = pd.DataFrame(
        [r._mapping for r in rows],
        columns=[
            "id", "source", "given_name", "family_name", "names_hashed", "sex", "age",
            "birth_date", "death_date", "lon", "lat", "unit_code", "manner",
        ],
    )  # fmt: skip
    hashed = bool(frame["names_hashed"].any()) if len(frame) else False
    if hashed:
        if secret is None:
            raise InvalidParameter(
                "some death records hold hashed names but linkage.secret is not set in this "
                "process: set the installation's secret (and linkage.hash_names) in the worker"
            )
        clear = ~frame["names_hashed"].astype(bool)
        for column in ("given_name", "family_name"):
            frame.loc[clear, column] = frame.loc[clear, column].map(lambda v: hash_name(v, secret))
    frame["record_id"] = frame["id"].astype(str)
    frame["sex"] = frame["sex"].map(_SEX)
    frame["age"] = frame["age"].astype("Int64")
    return frame.drop(columns=["id", "names_hashed"]), hashed


async def run_linkage(
    engine: AsyncEngine, settings: Settings, parameters: dict, run_id: int, progress: JobProgress
) -> dict:
    """Link every death record, store the run's pairs, clusters and deaths once; return
    the run's summary (parameters with m/u probabilities, counts)."""
    from linkage.consolidate import consolidate
    from linkage.link import link_records
    from linkage.model import LinkageInputError, Thresholds

    request = LinkageRunRequest.model_validate(parameters)
    chosen = run_parameters(request, settings)
    await progress(0.05, "reading the death records")
    async with engine.connect() as conn:
        rows = (await conn.execute(sql.select_records_for_linkage())).all()
        decided = (await conn.execute(sql.select_latest_decisions())).all()
    if not rows:
        raise InvalidParameter("no death records to link: import some first (POST /deaths/records)")
    records, hashed = records_frame(rows, death_secret(settings))
    decisions = pd.DataFrame(
        [(str(d.record_l), str(d.record_r), d.decision) for d in decided],
        columns=["record_id_l", "record_id_r", "decision"],
    )
    await progress(0.15, f"linking {len(records)} records")
    try:
        thresholds = Thresholds(
            match=chosen["match_threshold"],
            review=chosen["review_threshold"],
            keep=chosen["keep_threshold"],
        )
        result = await asyncio.to_thread(
            link_records,
            records,
            decisions,
            thresholds=thresholds,
            hashed=hashed,
            within_source=chosen["within_source"],
            seed=chosen["seed"],
        )
        deaths = await asyncio.to_thread(consolidate, records, result.clusters)
    except LinkageInputError as exc:
        raise InvalidParameter(str(exc)) from exc
    await progress(0.9, "storing pairs, clusters and deaths")
    async with engine.begin() as conn:
        await _store(conn, run_id, result.pairs, result.clusters, deaths)
    return {
        "parameters": {**chosen, "model": result.parameters},
        "counts": {**result.counts, "deaths": len(deaths), "decisions": len(decisions)},
    }


async def _store(
    conn: AsyncConnection,
    run_id: int,
    pairs: pd.DataFrame,
    clusters: pd.DataFrame,
    deaths: pd.DataFrame,
) -> None:
    """A run's results, replacing an earlier attempt's (one transaction)."""
    for statement in sql.delete_run_results(run_id):
        await conn.execute(statement)
    left = pairs["record_id_l"].astype("int64")
    right = pairs["record_id_r"].astype("int64")
    stored_pairs = pd.DataFrame(
        {
            "run_id": run_id,
            "record_l": left.where(left < right, right),
            "record_r": right.where(left < right, left),
            # A decided pair that blocking never compared has none (NaN in the core).
            "match_probability": _or_none(pairs["match_probability"]),
            "match_weight": _or_none(pairs["match_weight"]),
            "band": pairs["band"].astype(str),
            "decided": pairs["decided"].astype(object).where(pairs["decided"].notna(), None),
        },
        columns=_PAIR_COLUMNS,
    )
    if len(stored_pairs):
        columns = ", ".join(_PAIR_COLUMNS)
        await copy_csv(
            conn,
            f"COPY linkage_pair ({columns}) FROM STDIN WITH (FORMAT csv)",
            frame_to_csv(stored_pairs),
        )
    stored_clusters = pd.DataFrame(
        {
            "run_id": run_id,
            "record_id": clusters["record_id"].astype("int64"),
            "cluster_id": clusters["cluster_id"].astype("int64"),
        }
    )
    if len(stored_clusters):
        await copy_csv(
            conn,
            "COPY linkage_cluster (run_id, record_id, cluster_id) FROM STDIN WITH (FORMAT csv)",
            frame_to_csv(stored_clusters),
        )
    if len(deaths):
        frame = deaths.assign(run_id=run_id, cluster_id=deaths["cluster_id"].astype("int64"))
        frame["death_date"] = pd.to_datetime(frame["death_date"]).dt.strftime("%Y-%m-%d")
        frame = frame[list(_DEATH_COLUMNS)].astype(object)
        frame = frame.where(frame.notna(), None)
        await copy_csv(
            conn,
            f"COPY linkage_death ({', '.join(_DEATH_COLUMNS)}) FROM STDIN WITH (FORMAT csv)",
            frame_to_csv(frame),
        )


def _or_none(values: pd.Series) -> pd.Series:
    """Floats with None for NaN (NULL in the store, not PostgreSQL's NaN)."""
    numbers = values.astype(float)
    return numbers.astype(object).where(numbers.notna(), None)


async def latest_run(conn: AsyncConnection) -> int | None:
    """The latest completed linkage run's id, or None."""
    return (await conn.execute(sql.select_latest_run())).scalar()


async def require_run(conn: AsyncConnection, run: int | None) -> int:
    """``run`` (404 when it is not a completed linkage run), else the latest one (404
    when there is none yet)."""
    if run is None:
        found = await latest_run(conn)
        if found is None:
            raise NotFound("no linkage run has completed yet: POST /linkage/runs")
        return found
    row = (await conn.execute(sql.select_linkage_run(run))).mappings().first()
    if row is None:
        raise NotFound(f"no linkage run {run}")
    if row["status"] != "completed":
        raise Conflict(f"linkage run {run} is {row['status']}")
    return run


async def decide_pair(
    conn: AsyncConnection, pair_id: int, decision: str, note: str | None, actor: str
) -> dict:
    """Store a linker's decision on a stored pair (kept, never overwritten: the latest
    counts) and audit it; return it. 404 for an unknown pair."""
    pair = (await conn.execute(sql.select_pair(pair_id))).mappings().first()
    if pair is None:
        raise NotFound(f"no linkage pair {pair_id}")
    stmt = sql.insert_decision(
        pair["record_l"], pair["record_r"], decision, note, pair_id, pair["run_id"], actor
    )
    row = dict((await conn.execute(stmt)).mappings().one())
    after = {
        "pair_id": pair_id,
        "record_l": pair["record_l"],
        "record_r": pair["record_r"],
        "decision": decision,
        "note": note,
    }
    await conn.execute(
        audit_sql.insert_audit(actor, "decide", "linkage_pair", pair_id, after=after)
    )
    return row


async def link_here(
    engine: AsyncEngine, settings: Settings, request: LinkageRunRequest, actor: str
) -> int:
    """Run a linkage in this process (``observatory link``, the demo); return the run's
    id (InvalidParameter when it failed, with why)."""
    from app.services.jobs import run_here

    parameters = run_parameters(request, settings)
    return await run_here(
        engine, sql.KIND, sql.METHOD, parameters, actor,
        lambda run_id, progress: run_linkage(engine, settings, parameters, run_id, progress),
    )  # fmt: skip
