"""Early-warning monitors (issue 19): versioned definitions of the count series watched
every night. Admins post them; anyone reads the non-sensitive ones (a definition holds
no data: it says what is watched and how); sensitive monitors are for analysts only."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response

from app import access
from app.deps import Admin, ConnDep, PrincipalDep
from app.schemas.monitors import MonitorList, MonitorRecord
from app.services import monitors as service

router = APIRouter(prefix="/monitors", tags=["early warning"])

_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": {"type": "object"}},
            "application/yaml": {"schema": {"type": "string"}},
        },
    }
}


@router.post(
    "",
    response_model=MonitorRecord,
    status_code=201,
    summary="Store a new version of a monitor definition (JSON or YAML); admin only",
    openapi_extra=_BODY,
)
async def post_monitor(
    request: Request, conn: ConnDep, who: Admin, response: Response
) -> MonitorRecord:
    """Store a JSON or YAML monitor as the next version of its code (422 names every
    invalid field, and detector parameters the detector does not take); audited."""
    definition = service.parse_definition(await request.body(), request.headers.get("content-type"))
    record = await service.store_definition(conn, definition, who.actor)
    response.headers["Location"] = str(request.url_for("get_monitor", code=record.code))
    return record


@router.get("", response_model=MonitorList, summary="Latest version of every monitor")
async def list_monitors(conn: ConnDep, who: PrincipalDep) -> MonitorList:
    """The latest version of every monitor; sensitive ones for analysts only."""
    include = not access.sees_published_view(who)
    return MonitorList(items=await service.list_definitions(conn, include_sensitive=include))


@router.get("/{code}", response_model=MonitorRecord, summary="One monitor definition")
async def get_monitor(
    code: str,
    conn: ConnDep,
    who: PrincipalDep,
    version: Annotated[int | None, Query(ge=1, description="default: the latest")] = None,
) -> MonitorRecord:
    """One version of a monitor (404 for a sensitive one below analyst)."""
    include = not access.sees_published_view(who)
    return await service.get_definition(conn, code, version, include_sensitive=include)
