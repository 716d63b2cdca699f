"""SQL of the periodic report: the data's fingerprint, what ``/stats`` has no table for
(weekday x hour, the data quality annex), the latest hot spot runs, alert outlines, and
the stored reports."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import Insert, Select, TextClause, bindparam, select, text
from sqlalchemy.dialects.postgresql import insert as pg_insert

from app.models import report

__all__ = [
    "DATA_FINGERPRINT",
    "GEOREFERENCED",
    "alert_outlines",
    "count_incidents",
    "delay",
    "emerging_categories",
    "find_report",
    "georeferenced",
    "hotspot_cells",
    "insert_report",
    "latest_run",
    "rejected",
    "select_report",
    "select_report_file",
    "select_reports",
    "weekday_hour",
]

# Locations precise enough to map an incident at its place (the import's
# location_precision): the rest are approximate (a town or district centre).
GEOREFERENCED = ("exact", "street")

# Everything a report reads, as one text: a change to incidents, alerts, hot spot runs,
# imports, definitions, units or populations changes it (hashed into the data version).
DATA_FINGERPRINT = text(
    """
    SELECT concat_ws('|',
      (SELECT count(*) || ',' || coalesce(max(updated_at)::text, '') || ','
              || coalesce(max(deleted_at)::text, '') FROM incident),
      (SELECT count(*) || ',' || coalesce(max(updated_at)::text, '') FROM alert),
      (SELECT coalesce(max(id), 0) FROM analysis_run
        WHERE kind IN ('hotspots', 'emerging') AND status = 'completed'),
      (SELECT coalesce(max(id), 0) || ',' || count(*) FROM import_batch),
      (SELECT coalesce(max(id), 0) FROM index_definition),
      (SELECT coalesce(max(id), 0) FROM monitor_definition),
      (SELECT coalesce(max(id), 0) || ',' || count(*) FROM admin_unit),
      (SELECT coalesce(max(id), 0) || ',' || count(*) || ',' || coalesce(sum(value), 0)
         FROM population),
      (SELECT count(*) || ',' || bool_or(sensitive)::text FROM category))
    """
)


def count_incidents(start: datetime, end: datetime) -> TextClause:
    """How many live incidents occurred in [start, end)."""
    return text(
        "SELECT count(*) FROM incident WHERE deleted_at IS NULL "
        "AND occurred_at >= :start AND occurred_at < :end"
    ).bindparams(start=start, end=end)


def weekday_hour(
    categories: Sequence[str], start: datetime, end: datetime, timezone: str
) -> TextClause:
    """(weekday 0 = Monday, hour 0-23, count) of the categories' incidents in
    [start, end), in the territory's local time."""
    return text(
        """
        SELECT (extract(isodow FROM timezone(:tz, occurred_at)) - 1)::int AS weekday,
               extract(hour FROM timezone(:tz, occurred_at))::int AS hour,
               count(*) AS count
        FROM incident
        WHERE deleted_at IS NULL AND occurred_at >= :start AND occurred_at < :end
          AND category = ANY(:categories)
        GROUP BY 1, 2 ORDER BY 1, 2
        """
    ).bindparams(tz=timezone, start=start, end=end, categories=list(categories))


def georeferenced(start: datetime, end: datetime, level: int) -> TextClause:
    """(source, unit_name, incidents, georeferenced) of the incidents in [start, end),
    per source and unit of ``level`` (``unit_name`` null: in no unit of that level)."""
    return text(
        """
        SELECT i.source, u.name AS unit_name, count(*) AS incidents,
               count(*) FILTER (WHERE i.location_precision = ANY(:precise)) AS georeferenced
        FROM incident i
        LEFT JOIN admin_unit u ON u.level = :level AND u.id = ANY(i.unit_ids)
        WHERE i.deleted_at IS NULL AND i.occurred_at >= :start AND i.occurred_at < :end
        GROUP BY 1, 2 ORDER BY 1, 2
        """
    ).bindparams(start=start, end=end, level=level, precise=list(GEOREFERENCED))


def rejected(start: datetime, end: datetime) -> TextClause:
    """(batch_id, reason, rows) of the period's imports: the batches started in
    [start, end) and those that imported its incidents. A row's reasons are counted one
    by one, their quoted values left out (a reason quotes the bad value)."""
    return text(
        """
        WITH batches AS (
          SELECT id FROM import_batch WHERE started_at >= :start AND started_at < :end
          UNION
          SELECT DISTINCT unnest(import_batch_ids) FROM incident
          WHERE deleted_at IS NULL AND occurred_at >= :start AND occurred_at < :end
        )
        SELECT r.batch_id,
               regexp_replace(part, '''[^'']*''', '''…''', 'g') AS reason,
               count(*) AS rows
        FROM import_rejection r
        JOIN batches b ON b.id = r.batch_id
        CROSS JOIN LATERAL unnest(string_to_array(r.reason, '; ')) AS part
        GROUP BY 1, 2 ORDER BY 1, 3 DESC, 2
        """
    ).bindparams(start=start, end=end)


def delay(start: datetime, end: datetime, *, by_source: bool) -> TextClause:
    """(source, median_days, p90_days, incidents) of reported_at - occurred_at over the
    incidents of [start, end) with both times; one row ``all`` unless ``by_source``."""
    source = "source" if by_source else "'all'"
    return text(
        f"""
        SELECT {source} AS source,
               percentile_cont(0.5) WITHIN GROUP (ORDER BY d) AS median_days,
               percentile_cont(0.9) WITHIN GROUP (ORDER BY d) AS p90_days,
               count(*) AS incidents
        FROM (SELECT source,
                     extract(epoch FROM reported_at - occurred_at) / 86400.0 AS d
              FROM incident
              WHERE deleted_at IS NULL AND reported_at IS NOT NULL
                AND occurred_at >= :start AND occurred_at < :end) x
        GROUP BY 1 ORDER BY 1
        """
    ).bindparams(start=start, end=end)


def latest_run(kind: str, *, public_only: bool, sensitive: Sequence[str]) -> TextClause:
    """(id, method, parameters, created_at) of the latest completed run of ``kind``;
    ``public_only``: one whose category filter names categories, none sensitive (the
    runs published as public layers, app.ogc.layers.hotspot_layer)."""
    public = (
        """AND jsonb_array_length(coalesce(parameters->'filters'->'categories', '[]')) > 0
           AND NOT EXISTS (
             SELECT 1 FROM jsonb_array_elements_text(parameters->'filters'->'categories') c
             WHERE c = ANY(:sensitive))"""
        if public_only
        else ""
    )
    stmt = text(
        f"""
        SELECT id, method, parameters, created_at FROM analysis_run
        WHERE kind = :kind AND status = 'completed' {public}
        ORDER BY id DESC LIMIT 1
        """
    ).bindparams(kind=kind)
    return stmt.bindparams(sensitive=list(sensitive)) if public_only else stmt


def hotspot_cells(run_id: int) -> TextClause:
    """(cell_id, bin, wkb) of a run's cells with a significant class (bin not 0)."""
    return text(
        """
        SELECT cell_id, bin, ST_AsBinary(geom) AS wkb FROM analysis_cell
        WHERE run_id = :run AND bin IS NOT NULL AND bin <> 0 ORDER BY cell_id
        """
    ).bindparams(run=run_id)


def emerging_categories(run_id: int) -> TextClause:
    """(category, cells) of an emerging hot spot run, its categories with cells."""
    return text(
        """
        SELECT category, count(*) AS cells FROM analysis_cell
        WHERE run_id = :run AND category IS NOT NULL
        GROUP BY 1 ORDER BY 2 DESC, 1
        """
    ).bindparams(run=run_id)


def alert_outlines(ids: Sequence[int]) -> TextClause:
    """(id, wkb) of alerts: the outline of an H3 group, else its unit's polygon."""
    return text(
        """
        SELECT DISTINCT ON (a.id) a.id, ST_AsBinary(coalesce(a.geom, u.geom)) AS wkb
        FROM alert a LEFT JOIN admin_unit u ON u.code = a.unit_code
        WHERE a.id = ANY(:ids) ORDER BY a.id, u.level DESC
        """
    ).bindparams(bindparam("ids", list(ids)))


# --- stored reports ---------------------------------------------------------------------

_META = (
    report.c.id,
    report.c.definition,
    report.c.definition_version,
    report.c.period,
    report.c.language,
    report.c.audience,
    report.c.data_version,
    report.c.run_id,
    report.c.summary,
    report.c.created_by,
    report.c.created_at,
    (report.c.html.is_not(None)).label("has_html"),
    (report.c.pdf.is_not(None)).label("has_pdf"),
    (report.c.bundle.is_not(None)).label("has_zip"),
)


def insert_report(values: dict) -> Insert:
    """INSERT a built report (a second build of the same one stores nothing); returns
    its id."""
    return (
        pg_insert(report)
        .values(**values)
        .on_conflict_do_nothing(
            index_elements=["definition", "definition_version", "period", "data_version"]
        )
        .returning(report.c.id)
    )


def find_report(definition: str, version: int, period: str, data_version: int) -> Select:
    """The stored report of this definition version, period and data version, if any."""
    c = report.c
    return select(*_META).where(
        c.definition == definition,
        c.definition_version == version,
        c.period == period,
        c.data_version == data_version,
    )


def select_report(report_id: int) -> Select:
    """One stored report's metadata."""
    return select(*_META).where(report.c.id == report_id)


def select_reports(audiences: Sequence[str], limit: int) -> Select:
    """Stored reports of these audiences, newest first."""
    return (
        select(*_META)
        .where(report.c.audience.in_(audiences))
        .order_by(report.c.id.desc())
        .limit(limit)
    )


def select_report_file(report_id: int, column: str) -> Select:
    """(audience, the file) of one stored report: ``html``, ``pdf`` or ``bundle``."""
    return select(report.c.audience, report.c[column]).where(report.c.id == report_id)
