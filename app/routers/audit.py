"""The audit log (admin): who changed what and when, filtered and paged, JSON or CSV
(written by :mod:`app.files.exports`)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

import orjson
from fastapi import APIRouter, Query, Request, Response

from app.core.errors import InvalidParameter
from app.deps import Admin, ReaderDep, SettingsDep
from app.files.exports import CSV, csv_text
from app.params import split_list
from app.schemas.audit import AuditEntry, AuditPage
from app.sql import audit as sql

router = APIRouter(prefix="/audit", tags=["audit"])

CSV_COLUMNS = ("id", "at", "actor", "action", "entity", "entity_id", "before", "after")


@router.get(
    "",
    response_model=AuditPage,
    summary="Audit log entries, newest first, filtered and paged",
    responses={200: {"content": {"text/csv": {}}}},
)
async def audit_log(
    request: Request,
    reader: ReaderDep,
    settings: SettingsDep,
    _: Admin,
    actor: Annotated[
        list[str] | None, Query(description="e.g. key:3:alice or cli:root; repeatable")
    ] = None,
    action: Annotated[
        list[str] | None, Query(description="create, update, delete, restore, import, …")
    ] = None,
    entity: Annotated[
        list[str] | None, Query(description="incident, api_key, import_batch, …")
    ] = None,
    entity_id: Annotated[str | None, Query(description="id of one entity")] = None,
    at_from: Annotated[datetime | None, Query(alias="from", description="inclusive")] = None,
    at_to: Annotated[datetime | None, Query(alias="to", description="exclusive")] = None,
    limit: Annotated[
        int | None, Query(ge=1, description="page size; clamped to the maximum")
    ] = None,
    before: Annotated[
        int | None, Query(ge=1, description="cursor: the last id of the previous page")
    ] = None,
    format: Annotated[Literal["json", "csv"], Query(description="json or csv")] = "json",
) -> Response:
    """Who changed what and when, newest first (incidents, API keys, imports and the
    rest), with each record before and after the change. Admin keys only (401 without
    a key, 403 below admin). Filter by actor, action, entity, entity id and time (``from``
    and ``to`` need a time zone: 422 without one); page with ``before``, the ``next`` link
    giving the following page. ``format=csv`` answers CSV, the next page in a ``Link`` header."""
    for name, moment in (("from", at_from), ("to", at_to)):
        if moment is not None and moment.tzinfo is None:
            raise InvalidParameter(f"{name} needs a time zone, e.g. 2025-01-01T00:00:00Z")
    if at_from is not None and at_to is not None and at_from >= at_to:
        raise InvalidParameter("from must be before to")
    page_size = min(limit or settings.api.default_limit, settings.api.max_limit)
    filters = sql.AuditFilter(
        actors=tuple(actor or ()),  # names may hold commas: repeat the parameter instead
        actions=split_list(action),
        entities=split_list(entity),
        entity_id=entity_id,
        at_from=at_from,
        at_to=at_to,
    )
    async with reader.connect() as conn:
        rows = await conn.execute(sql.select_entries(filters, before=before, limit=page_size))
        entries = [AuditEntry.model_validate(dict(r)) for r in rows.mappings()]
    has_more = len(entries) > page_size
    entries = entries[:page_size]
    next_url = None
    if has_more:
        next_url = str(request.url.include_query_params(before=entries[-1].id, limit=page_size))
    if format == "csv":
        headers = {"Link": f'<{next_url}>; rel="next"'} if next_url else None
        return Response(_csv(entries), media_type=CSV, headers=headers)
    links = [{"rel": "self", "type": "application/json", "href": str(request.url)}]
    if next_url:
        links.append({"rel": "next", "type": "application/json", "href": next_url})
    page = AuditPage(entries=entries, number_returned=len(entries), links=links)
    return Response(page.model_dump_json(), media_type="application/json")


def _csv(entries: list[AuditEntry]) -> str:
    """One row per entry; before and after as JSON text."""
    rows = [
        [e.id, e.at.isoformat(), e.actor, e.action, e.entity, e.entity_id,
         _json(e.before), _json(e.after)]
        for e in entries
    ]  # fmt: skip
    return csv_text(CSV_COLUMNS, rows)


def _json(value: object) -> str:
    return "" if value is None else orjson.dumps(value).decode()
