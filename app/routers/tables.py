"""Statistical tables (admin): population denominators and external indicators, each
uploaded as a long CSV, as ``observatory import population`` / ``indicators`` load them.

A file is all or nothing: any invalid row is a 422 listing the bad rows (``rows``), and
nothing is written; otherwise its rows are upserted in one transaction and audited.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated

from fastapi import APIRouter, File, UploadFile

from app.deps import Admin, EngineDep, SettingsDep
from app.files.uploads import saved_upload
from app.schemas.tables import TableReportPublic
from app.services.tables import import_indicators, import_population

router = APIRouter(tags=["tables"])

RESPONSES = {
    401: {"description": "No API key."},
    403: {"description": "The key is not an admin key."},
    413: {"description": "The file exceeds the upload limit."},
    422: {"description": "Unreadable file, missing columns, or invalid rows (listed)."},
}


@router.post(
    "/population",
    response_model=TableReportPublic,
    summary="Import population denominators (long CSV; upsert)",
    responses=RESPONSES,
)
async def post_population(
    who: Admin,
    engine: EngineDep,
    settings: SettingsDep,
    file: Annotated[
        UploadFile,
        File(
            description="CSV: unit_code, year, value (required); sex (total, female, male), "
            "age_group (total, 15-29, 65+ …), source (optional)."
        ),
    ],
) -> TableReportPublic:
    """Denominators for rates, upserted on (unit, year, sex, age group)."""
    with saved_upload(file, max_mb=settings.api.max_upload_mb, suffixes=(".csv",)) as path:
        report = await import_population(engine, path, actor=who.actor)
    return TableReportPublic(**asdict(report))


@router.post(
    "/indicators",
    response_model=TableReportPublic,
    summary="Import external indicator values (long CSV; upsert)",
    responses=RESPONSES,
)
async def post_indicators(
    who: Admin,
    engine: EngineDep,
    settings: SettingsDep,
    file: Annotated[
        UploadFile,
        File(
            description="CSV: unit_code, period (2024, 2024-Q1, 2024-03), indicator, value "
            "(required); sex, age_group, source (optional)."
        ),
    ],
) -> TableReportPublic:
    """Indicator values for composite indexes, upserted on (unit, period, indicator, sex,
    age group)."""
    with saved_upload(file, max_mb=settings.api.max_upload_mb, suffixes=(".csv",)) as path:
        report = await import_indicators(engine, path, actor=who.actor)
    return TableReportPublic(**asdict(report))
