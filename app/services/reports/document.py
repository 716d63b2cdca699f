"""The report's document: its sections assembled, the checks before a build, the data
version."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta

import geopandas as gpd
from sqlalchemy.ext.asyncio import AsyncConnection

from app.core.errors import InvalidParameter
from app.core.settings import Settings
from app.schemas.reports import (
    ReportDefinition,
    ReportDefinitionRecord,
    load_report_definition,
)
from app.security import PUBLIC, Principal
from app.services import lattice
from app.services.denominators import read_units
from app.services.reports.context import ANALYST, COUNTRY_LEVEL, DISTRICT_LEVEL, _Context
from app.services.reports.index import _index
from app.services.reports.methods import _methods
from app.services.reports.periods import ReportPeriod, check_ended
from app.services.reports.quality import _quality
from app.services.reports.sections import _districts, _headline, _trend, _victims, _when
from app.services.reports.where import _where
from app.sql import reports as sql
from app.sql import stats as stats_sql
from reports.document import ReportDocument, Section, short_version

# --- the data version ---------------------------------------------------------------------


async def data_version(conn: AsyncConnection) -> int:
    """A fingerprint of everything a report reads, as a positive 52-bit integer (exact
    in JSON for JavaScript clients, whose numbers are doubles)."""
    text = (await conn.execute(sql.DATA_FINGERPRINT)).scalar_one()
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big") >> 12


# --- the document ---------------------------------------------------------------------------

_SECTIONS = {
    "headline": _headline,
    "trend": _trend,
    "districts": _districts,
    "victims": _victims,
    "when": _when,
    "where": _where,
    "index": _index,
    "quality": _quality,
}


def reader_of(definition: ReportDefinition) -> Principal:
    """Who a report's statistics are computed for: the anonymous public, or an analyst."""
    return PUBLIC if definition.audience == "public" else ANALYST


async def _basemap(conn: AsyncConnection) -> dict[str, gpd.GeoDataFrame]:
    out = {}
    for name, level in (("country", COUNTRY_LEVEL), ("districts", DISTRICT_LEVEL)):
        units = await read_units(conn, level=level)
        out[name] = gpd.GeoDataFrame(
            {"unit_code": [u.code for u in units], "unit_name": [u.name for u in units]},
            geometry=[u.geometry for u in units],
            crs=4326,
        )
    return out


async def build_document(
    conn: AsyncConnection,
    settings: Settings,
    record: ReportDefinitionRecord,
    period: ReportPeriod,
    *,
    data: int | None = None,
) -> ReportDocument:
    """The report of ``record`` for ``period``, computed from the service's own answers."""
    definition = load_report_definition(record.definition)
    vocabulary = dict((await conn.execute(stats_sql.select_categories())).all())
    sensitive = frozenset((await conn.execute(stats_sql.select_sensitive_categories())).scalars())
    _check_measures(definition, vocabulary, sensitive)
    ctx = _Context(
        conn, settings, definition, period, reader_of(definition), vocabulary, sensitive,
        es=definition.language == "es",
    )  # fmt: skip
    check_request(settings, record, period)
    data = await data_version(conn) if data is None else data
    incidents = (await conn.execute(sql.count_incidents(period.start, period.end))).scalar_one()
    sections = []
    for key in definition.sections:
        if key == "methods":
            continue
        if incidents == 0:
            sections.append(
                Section(
                    key,
                    empty=ctx.t(
                        f"No incidents were recorded in {period.label}.",
                        f"No se registraron incidentes en {period.label}.",
                    ),
                )
            )
        else:
            sections.append(await _SECTIONS[key](ctx))
    if "methods" in definition.sections:
        methods = await _methods(ctx, record.version, data)
        sections.insert(definition.sections.index("methods"), methods)
    return ReportDocument(
        definition=definition.name,
        definition_version=record.version,
        language=definition.language,
        audience=definition.audience,
        period_label=period.label,
        period_start=period.start.date(),
        period_end=(period.end - timedelta(days=1)).date(),
        territory=settings.territory.name,
        data_version=data,
        generated_at=datetime.now(UTC),
        sections=sections,
        basemap=await _basemap(conn),
        source_line=ctx.t(
            f"Source: {settings.territory.name} crime observatory, data version "
            f"{short_version(data)}.",
            f"Fuente: observatorio del delito de {settings.territory.name}, versión de los "
            f"datos {short_version(data)}.",
        ),
    )


def _check_measures(
    definition: ReportDefinition, vocabulary: dict[str, str], sensitive: frozenset[str]
) -> None:
    """Every measure names known categories; a public one no sensitive category."""
    groups = set(vocabulary.values())
    for m in definition.measures:
        if unknown := sorted(set(m.categories) - set(vocabulary)):
            raise InvalidParameter(f"measure {m.code}: unknown category(ies) {', '.join(unknown)}")
        if m.category_group and m.category_group not in groups:
            raise InvalidParameter(f"measure {m.code}: unknown category group {m.category_group}")
        hidden = set(m.categories) & sensitive or {
            c for c, g in vocabulary.items() if g == m.category_group and c in sensitive
        }
        if definition.audience == "public" and hidden:
            raise InvalidParameter(
                f"measure {m.code} counts sensitive categories ({', '.join(sorted(hidden))}): "
                "not in a public report"
            )


def check_request(settings: Settings, record: ReportDefinitionRecord, period: ReportPeriod) -> None:
    """What a report of ``record`` for ``period`` needs before anything is queued (a
    422 otherwise): an ended period and, for a public report, a month, quarter or year
    inside the published window (``privacy.published_*``), the public tables' periods."""
    check_ended(period)
    if record.audience != "public":
        return
    if period.stats_label is None:
        raise InvalidParameter(
            f"a public report covers a month, a quarter or a year (the public tables' "
            f"periods), not a {period.kind}; the analyst definitions cover {period.label}"
        )
    start, end = lattice.published_window(settings, period.kind)
    if period.start < start or period.end > end:
        raise InvalidParameter(
            f"period {period.label} is outside the published window ({start.date()} to "
            f"{end.date()}): a public report covers published periods only"
        )


# --- files ----------------------------------------------------------------------------------
