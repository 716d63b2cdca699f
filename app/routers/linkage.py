"""Record linkage of deaths (issue 21): runs (a worker's job), the review of uncertain
pairs by the linker role, and the linkers' decisions, kept and respected by the next run.

Roles: a run's parameters and counts are for analysts (no identifier in them); starting
a run, the pairs (both records, names included) and decisions are the linker's (and
admins').
"""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request, Response

from app.core.errors import NotFound
from app.deps import Analyst, ConnDep, EngineDep, SettingsDep, require
from app.schemas.linkage import (
    Decision,
    DecisionPublic,
    LinkageRunPublic,
    LinkageRunRequest,
    PairPage,
    PairPublic,
)
from app.security import Principal
from app.services import jobs
from app.services import linkage as service
from app.sql import linkage as sql

router = APIRouter(prefix="/linkage", tags=["linkage"])

Linker = Annotated[Principal, require("linker")]


async def _run_public(request: Request, conn, run_id: int) -> LinkageRunPublic:
    row = (await conn.execute(sql.select_linkage_run(run_id))).mappings().first()
    if row is None:
        raise NotFound(f"no linkage run {run_id}")
    stored = (await conn.execute(sql.select_run_counts(run_id))).mappings().one()
    summary = row["summary"] or {}
    parameters = summary.get("parameters") or row["parameters"]
    url = str(request.url_for("get_linkage_run", run_id=run_id))
    pairs = str(request.url_for("list_linkage_pairs"))
    return LinkageRunPublic(
        id=row["id"],
        status=row["status"],
        progress=row["progress"],
        message=row["message"],
        parameters=parameters,
        counts=summary.get("counts", {}),
        stored=dict(stored),
        created_by=row["created_by"],
        created_at=row["created_at"],
        finished_at=row["finished_at"],
        links=[
            {"rel": "self", "type": "application/json", "href": url},
            {
                "rel": "pairs",
                "type": "application/json",
                "href": f"{pairs}?run={run_id}&band=uncertain",
            },
        ],
    )


@router.post(
    "/runs",
    status_code=201,
    response_model=LinkageRunPublic,
    summary="Link the death records of every agency (a job)",
    responses={202: {"model": LinkageRunPublic, "description": "still running: poll Location"}},
)
async def create_linkage_run(
    request: Request,
    engine: EngineDep,
    settings: SettingsDep,
    who: Linker,
    body: LinkageRunRequest | None = None,
) -> Response:
    """Link every death record (police, forensic service, health registry) with splink's
    Fellegi-Sunter model, respecting the linkers' latest decisions; store the pairs, the
    clusters (one per death) and the consolidated deaths. A worker computes it: 201 when
    done within ``analysis.wait_s``, else 202 with the run's URL. Linker key (or admin)."""
    body = body or LinkageRunRequest()
    parameters = service.run_parameters(body, settings)
    run_id, done = await jobs.launch_run(
        request.app.state.queue, engine, settings, who.actor, sql.KIND, sql.METHOD,
        parameters, body.model_dump(mode="json"),
    )  # fmt: skip
    async with engine.connect() as conn:
        run = await _run_public(request, conn, run_id)
    if run.status == "failed":
        raise jobs.AnalysisFailed(run.message or "the linkage failed", run_id=run_id)
    return Response(
        run.model_dump_json(),
        status_code=201 if done else 202,
        media_type="application/json",
        headers={"Location": run.links[0]["href"]},
    )


@router.get("/runs/{run_id}", response_model=LinkageRunPublic, summary="A linkage run")
async def get_linkage_run(
    request: Request, run_id: int, conn: ConnDep, _: Analyst
) -> LinkageRunPublic:
    """A linkage run: status, parameters (the prior, the m and u probabilities and Bayes
    factor of every comparison level, blocking rules, thresholds), counts (records, pairs
    compared per blocking rule, pairs per band, clusters by size, decisions applied) and
    what it stored. Analyst key and above (no identifier in it)."""
    return await _run_public(request, conn, run_id)


@router.get("/pairs", response_model=PairPage, summary="Pairs of records to review")
async def list_linkage_pairs(
    conn: ConnDep,
    _: Linker,
    band: Literal["match", "uncertain", "non_match"] | None = None,
    run: Annotated[int | None, Query(description="a run id; default: the latest")] = None,
    undecided: Annotated[bool, Query(description="only pairs nobody decided yet")] = False,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> PairPage:
    """A run's pairs (of one band: ``uncertain`` is the linkers' review list), most
    probable first, each with both agency records side by side (names included) and the
    latest decision on it. Linker key (or admin)."""
    run_id = await service.require_run(conn, run)
    rows = (
        (await conn.execute(sql.select_pairs(run_id, band, undecided, limit, offset)))
        .mappings()
        .all()
    )
    matched = rows[0]["matched"] if rows else 0
    return PairPage(
        run_id=run_id,
        numberMatched=matched,
        pairs=[PairPublic(**{k: v for k, v in r.items() if k != "matched"}) for r in rows],
    )


@router.post(
    "/pairs/{pair_id}/decision",
    status_code=201,
    response_model=DecisionPublic,
    summary="Accept or reject a pair: the next run respects it",
)
async def decide_linkage_pair(
    pair_id: int, body: Decision, conn: ConnDep, who: Linker
) -> DecisionPublic:
    """Say whether the two records of a pair describe one death (``accept``: the next
    run links them whatever their probability) or two (``reject``: the next run never
    links them, splitting their cluster if need be), with a note. Every decision is kept
    and audited; the latest one on a pair counts. Linker key (or admin)."""
    row = await service.decide_pair(conn, pair_id, body.decision, body.note, who.actor)
    return DecisionPublic(**row)
