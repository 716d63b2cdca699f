"""Early-warning alerts (issue 19): the alarms of the nightly evaluation of every monitor,
with their series for a chart, and their state, changed by analysts (audited).

Below analyst a caller sees the published view: no alert of a sensitive monitor (not even
its existence), no count below ``privacy.min_count`` (observed values under it are
withheld, in the alert and in its series), and never a point: an alert's place is a unit
or the outline of a group of H3 cells."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query

from app import access
from app.deps import Analyst, ConnDep, PrincipalDep, SettingsDep
from app.schemas.monitors import AlertDetail, AlertList, AlertPatch
from app.services import monitors as service

router = APIRouter(prefix="/alerts", tags=["early warning"])

State = Literal["new", "acknowledged", "closed"]
AlertId = Annotated[int, Path(ge=1, le=2_147_483_647, description="the alert's id")]


@router.get("", response_model=AlertList, summary="Alerts, newest period first")
async def list_alerts(
    conn: ConnDep,
    settings: SettingsDep,
    who: PrincipalDep,
    monitor: Annotated[str | None, Query(max_length=64, description="a monitor's code")] = None,
    state: Annotated[
        list[State] | None, Query(description="new, acknowledged, closed (default: all)")
    ] = None,
    period: Annotated[
        str | None, Query(max_length=16, description="e.g. 2025-W51 or 2025-12")
    ] = None,
    unit: Annotated[str | None, Query(max_length=64, description="a unit's code")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 200,
) -> AlertList:
    """Alerts with their place, period, observed, expected, threshold, how many periods
    they have lasted and their state (the published view below analyst)."""
    published = access.sees_published_view(who)
    items = await service.list_alerts(
        conn, include_sensitive=not published, monitor=monitor,
        states=tuple(state or ()), period=period, unit=unit, limit=limit,
    )  # fmt: skip
    if published:
        items = [service.published(a, settings.privacy.min_count) for a in items]
    return AlertList(items=items)


@router.get("/{alert_id}", response_model=AlertDetail, summary="One alert and its series")
async def get_alert(
    alert_id: AlertId, conn: ConnDep, settings: SettingsDep, who: PrincipalDep
) -> AlertDetail:
    """One alert with its outline (GeoJSON; H3 groups) and the series of its last two
    years (observed, expected, threshold per period), enough to draw its chart."""
    published = access.sees_published_view(who)
    detail = await service.get_alert(conn, alert_id, include_sensitive=not published)
    return service.published(detail, settings.privacy.min_count) if published else detail


@router.patch("/{alert_id}", response_model=AlertDetail, summary="Acknowledge or close")
async def patch_alert(
    alert_id: AlertId, body: AlertPatch, conn: ConnDep, who: Analyst
) -> AlertDetail:
    """Acknowledge an alert (a note is required: what is being done) or close it; the
    change is audited (``GET /audit?entity=alert``). A closed alert stays closed."""
    return await service.change_state(
        conn, alert_id, body.state, body.note, who.actor, include_sensitive=True
    )
