"""Prometheus metrics (``/metrics``), in the text exposition format."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from app.core.metrics import CONTENT_TYPE_LATEST, refresh_queue_stats

router = APIRouter(tags=["health"])


@router.get(
    "/metrics",
    summary="Prometheus metrics: requests, latencies, tile cache, pool, data version, queue",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}},
)
async def metrics(request: Request) -> Response:
    """The Prometheus exposition of this worker (public, like ``/health``): request counts
    and latencies per route template, tile cache, connection pool, data version, job queue."""
    # Public like /health: it holds counts per route template, never data or paths.
    await refresh_queue_stats(request.app.state)
    return Response(request.app.state.metrics.exposition(), media_type=CONTENT_TYPE_LATEST)
