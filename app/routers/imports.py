"""Bulk incident imports (editor): upload a file, read the report, download rejected rows."""

from __future__ import annotations

from typing import Annotated

import orjson
from fastapi import APIRouter, Depends, File, Form, Query, Request, Response, UploadFile

from app.access import IDENTIFIERS_ROLE, check_role
from app.core.errors import InvalidParameter, NotFound
from app.deps import ConnDep, Editor, EngineDep, PrincipalDep, SettingsDep
from app.files.exports import CSV, download
from app.files.uploads import CHUNK as MB
from app.files.uploads import saved_upload
from app.schemas.imports import ImportBatchDetail, ImportBatchList, ImportBatchPublic
from app.security import Principal
from app.services import monitors
from app.services.import_jobs import queue_import
from app.services.imports import import_incidents, interrupt_stale_batches, rejections_csv
from app.services.incident_rows import FORMATS, ReadOptions
from app.sql import imports as sql

router = APIRouter(prefix="/imports", tags=["imports"])

REJECTIONS_SHOWN = 1_000


async def _editor_or_linker(who: PrincipalDep) -> Principal:
    """Editors read batches of incidents; linkers (issue 21) their batches of deaths."""
    if not who.has(IDENTIFIERS_ROLE):
        check_role(who, "editor")
    return who


EditorOrLinker = Annotated[Principal, Depends(_editor_or_linker)]


async def _check_kind(conn, batch_id: int, who: Principal) -> None:
    """404 for an unknown batch; 401/403 below the role its kind needs: a batch of death
    records holds the deceased's names in its rejected rows (linker and admin only)."""
    kind = (await conn.execute(sql.select_batch(batch_id))).mappings().first()
    if kind is None:
        raise NotFound(f"no import batch {batch_id}")
    check_role(who, IDENTIFIERS_ROLE if kind["kind"] == "deaths" else "editor")


def _links(request: Request, batch_id: int) -> list[dict[str, str]]:
    return [
        {
            "rel": "self",
            "type": "application/json",
            "href": str(request.url_for("get_import", batch_id=batch_id)),
        },
        {
            "rel": "rejections",
            "type": "text/csv",
            "href": str(request.url_for("get_import_rejections", batch_id=batch_id)),
        },
    ]


def _columns(columns: str | None) -> dict[str, str]:
    if not columns:
        return {}
    try:
        mapping = orjson.loads(columns)
    except orjson.JSONDecodeError:
        mapping = None
    if not isinstance(mapping, dict) or not all(isinstance(v, str) for v in mapping.values()):
        raise InvalidParameter(
            'columns must be a JSON object mapping our names to yours, e.g. {"category": "tipo"}'
        )
    return mapping


def _constants(constants: str | None) -> dict[str, str]:
    """The constants form field: a JSON object of our column names to one value each
    (text or a number, e.g. {"category": "shooting", "victims_count": 1})."""
    if not constants:
        return {}
    try:
        mapping = orjson.loads(constants)
    except orjson.JSONDecodeError:
        mapping = None
    if not isinstance(mapping, dict) or not all(
        isinstance(v, str | int | float) and not isinstance(v, bool) for v in mapping.values()
    ):
        raise InvalidParameter(
            "constants must be a JSON object of our column names to one value each, e.g. "
            '{"category": "shooting"}'
        )
    return {k: v if isinstance(v, str) else str(v) for k, v in mapping.items()}


@router.post(
    "",
    status_code=201,
    response_model=ImportBatchDetail,
    summary="Import incidents",
    responses={202: {"model": ImportBatchDetail, "description": "queued: a worker imports it"}},
)
async def create_import(
    request: Request,
    engine: EngineDep,
    conn: ConnDep,
    settings: SettingsDep,
    who: Editor,
    file: Annotated[UploadFile, File(description="CSV, GeoJSON or GeoPackage")],
    source: Annotated[str | None, Form(description="reporting agency, if no source column")] = None,
    format: Annotated[str | None, Form(description="csv, geojson or gpkg")] = None,
    crs: Annotated[str | None, Form(description="CRS of the coordinates, e.g. EPSG:32616")] = None,
    columns: Annotated[str | None, Form(description='JSON: {"category": "tipo", …}')] = None,
    constants: Annotated[
        str | None,
        Form(
            description="JSON: one value for a column where the file has none, e.g. "
            '{"category": "shooting"} (the file\'s own values win)'
        ),
    ] = None,
    delimiter: Annotated[str, Form(max_length=1)] = ",",
    encoding: Annotated[str, Form()] = "utf-8",
    layer: Annotated[str | None, Form(description="GeoPackage layer")] = None,
    run_async: Annotated[
        bool,
        Query(
            alias="async",
            description="import as a job (answer 202 at once); files larger than "
            "api.async_import_mb always are",
        ),
    ] = False,
) -> Response:
    """Import one incident file as one batch: valid rows upserted on (source, source_id),
    every rejected row kept with its reasons. A large file (or ``?async=true``) is
    imported by a worker: 202 with the queued batch, whose URL shows its status."""
    options = ReadOptions(
        source=source,
        format=format,
        columns=_columns(columns),
        constants=_constants(constants),
        crs=crs,
        layer=layer,
        delimiter=delimiter,
        encoding=encoding,
    )
    suffixes = tuple(FORMATS) if format is None else (*FORMATS, ".dat")
    with saved_upload(file, max_mb=settings.api.max_upload_mb, suffixes=suffixes) as path:
        if run_async or path.stat().st_size > settings.api.async_import_mb * MB:
            batch_id = await queue_import(
                request.app.state.queue,
                engine,
                path,
                options,
                actor=who.actor,
                filename=file.filename or path.name,
            )
            return _answer(await _detail(request, conn, batch_id), 202)
        report = await import_incidents(
            engine,
            settings,
            path,
            options,
            actor=who.actor,
            filename=file.filename or path.name,
        )
    if report.inserted or report.updated:  # early warning sees the new incidents now
        await monitors.defer_evaluation(request.app.state.queue, conn)
    return _answer(await _detail(request, conn, report.batch_id), 201)


def _answer(detail: ImportBatchDetail, status: int) -> Response:
    """The batch as JSON, with its URL as Location."""
    return Response(
        detail.model_dump_json(),
        status_code=status,
        media_type="application/json",
        headers={"Location": detail.links[0]["href"]},
    )


@router.get("", response_model=ImportBatchList, summary="Recent import batches")
async def list_imports(
    request: Request,
    conn: ConnDep,
    _: Editor,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> ImportBatchList:
    """Import batches, newest first, with their status and counts. Editor keys and above.
    A batch whose importing process ended without finishing is marked failed first."""
    await interrupt_stale_batches(conn)
    rows = (await conn.execute(sql.select_batches(limit, offset))).mappings().all()
    return ImportBatchList(
        batches=[ImportBatchPublic(**r, links=_links(request, r["id"])) for r in rows]
    )


@router.get("/{batch_id}", response_model=ImportBatchDetail, summary="One batch and its rejections")
async def get_import(
    request: Request, batch_id: int, conn: ConnDep, who: EditorOrLinker
) -> ImportBatchDetail:
    """One import batch with its first rejected rows and why each was refused (the CSV
    link has them all). Editor keys and above; 404 for an unknown batch. A batch of death
    records (kind ``deaths``: its rows hold names) is for linker keys and admins only."""
    await _check_kind(conn, batch_id, who)
    return await _detail(request, conn, batch_id)


@router.get("/{batch_id}/rejections.csv", summary="Every rejected row with its reason, as CSV")
async def get_import_rejections(batch_id: int, conn: ConnDep, who: EditorOrLinker) -> Response:
    """Every row of a batch that was refused, with its reason and the row as read, as
    CSV. Editor keys and above (a batch of death records: linker keys and admins only);
    404 for an unknown batch."""
    await _check_kind(conn, batch_id, who)
    rows = (await conn.execute(sql.select_rejections(batch_id))).all()
    return download(rejections_csv(rows), CSV, f"import-{batch_id}-rejected.csv")


async def _detail(request: Request, conn, batch_id: int) -> ImportBatchDetail:
    await interrupt_stale_batches(conn)
    batch = (await conn.execute(sql.select_batch(batch_id))).mappings().first()
    if batch is None:
        raise NotFound(f"no import batch {batch_id}")
    rows = (
        (await conn.execute(sql.select_rejections(batch_id, REJECTIONS_SHOWN + 1))).mappings().all()
    )
    return ImportBatchDetail(
        **batch,
        links=_links(request, batch_id),
        rejections=[dict(r) for r in rows[:REJECTIONS_SHOWN]],
        rejections_truncated=len(rows) > REJECTIONS_SHOWN,
    )
