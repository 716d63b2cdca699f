"""SQL for admin units and for assigning incidents to the units that contain them."""

from __future__ import annotations

import json

from sqlalchemy import Select, TextClause, func, select, text


def units_containing(point: str) -> str:
    """SQL expression: ids of the units containing ``point``, one per level, ordered by level.

    It tests the subdivided pieces (``admin_unit_part``). A point on a shared border
    belongs to the unit with the lowest id, so counts per unit never count it twice.
    """
    return f"""(
        SELECT array_agg(s.unit_id ORDER BY s.level) FROM (
            SELECT DISTINCT ON (unit_part.level) unit_part.unit_id, unit_part.level
            FROM admin_unit_part unit_part
            WHERE ST_Intersects(unit_part.geom, {point})
            ORDER BY unit_part.level, unit_part.unit_id
        ) s
    )"""


def units_nearest(point: str) -> str:
    """SQL expression: per level, the containing unit or else the nearest one within
    ``:tolerance_m`` metres (coarse coastlines leave coastal points just outside).

    The first, planar test in degrees is a superset of the metric one (one degree of
    longitude is 111,320 m x cos(latitude) at most) and lets the spatial index discard
    far units, so points far from every unit of a level cost almost nothing.
    """
    return f"""(
        SELECT array_agg(s.id ORDER BY s.level) FROM (
            SELECT DISTINCT ON (near.level) near.id, near.level FROM admin_unit near
            WHERE ST_DWithin(
                    near.geom, {point},
                    :tolerance_m / (111320 * greatest(cos(radians(ST_Y({point}))), 0.01)))
              AND ST_DWithin(near.geom::geography, ({point})::geography, :tolerance_m)
            ORDER BY near.level, ST_Distance(near.geom, {point}), near.id
        ) s
    )"""


def refresh_unit_parts() -> list[TextClause]:
    """Statements that rebuild the subdivided pieces of every unit (run after any change)."""
    return [
        text("DELETE FROM admin_unit_part"),
        text(
            "INSERT INTO admin_unit_part (unit_id, level, geom) "
            "SELECT id, level, ST_Subdivide(geom, 64) FROM admin_unit"
        ),
        text("ANALYZE admin_unit_part"),
    ]


def assign_incident_units(where: str = "TRUE") -> list[TextClause]:
    """Statements, run in order, that set ``unit_ids`` of the incidents matching ``where``
    (a fixed SQL condition on ``i`` with bound parameters): point-in-polygon first, then
    the nearest unit within ``:tolerance_m`` for the few rows left short of a level."""
    return [
        text(
            f"""UPDATE incident i SET unit_ids = coalesce({units_containing("i.geom")}, '{{}}')
            WHERE {where}"""
        ),
        text(
            f"""UPDATE incident i SET unit_ids = coalesce({units_nearest("i.geom")}, i.unit_ids)
            WHERE {where}
              AND cardinality(i.unit_ids) < (SELECT count(DISTINCT level) FROM admin_unit)"""
        ),
    ]


# --- The units lock: boundary uploads and incident writes never interleave ------------------
#
# An incident's units are computed from the boundaries its statement sees. A boundary
# upload replaces units and reassigns every incident in one transaction; a write that
# ran meanwhile computed its units against the boundaries being replaced, in a row the
# reassignment's snapshot never sees, and kept the old district for good (issue 14).
#
# So both sides take one transaction-level advisory lock (two int4 keys: the namespace
# below, then 0; released at commit or rollback): every transaction that computes
# incidents' units (API create, move, restore; each import batch's upsert transaction)
# takes it SHARED, so writes still run together; a boundary upload takes it EXCLUSIVE, so
# it runs alone: it waits for the writes in progress, and the writes that come after it
# wait until it has committed.
#
# Snapshots (READ COMMITTED, the service's level): each statement takes its own snapshot,
# so a writer's statements after the lock see the boundaries of the upload it waited for,
# and the upload's reassignment sees every row of the writes it waited for. The lock must
# be a statement of its own, before the statement that computes units (under REPEATABLE
# READ it would have to be the transaction's first statement).
#
# Deadlocks: each side takes the lock before it holds any row lock, and holds no other
# lock the other side waits for while it waits: an import also holds its batch's
# session-level lock (``app.sql.imports.BATCH_LOCK_NAMESPACE``, another namespace) which
# only its own session ever takes; ``app.sql.indexes.lock_code`` locks are single-bigint
# keys (another key space) that neither side takes. A writer queued behind a waiting
# upload holds nothing yet.
#
# Not covered: plain-SQL writes to ``incident`` (psql, scripts) do not take the lock; they
# should not run during a boundary upload (or should take lock_units_shared() first).
UNITS_LOCK_NAMESPACE = 7_302


def lock_units_shared() -> Select:
    """Wait for any boundary upload to commit, then keep uploads out until this
    transaction ends. Taken by every transaction that assigns units to incidents, before
    it computes them and before it locks any incident row."""
    return select(func.pg_advisory_xact_lock_shared(UNITS_LOCK_NAMESPACE, 0))


def lock_units_exclusive() -> Select:
    """Wait for the incident writes in progress to commit, then keep every incident write
    out until this transaction ends. A boundary upload's first statement (after its
    statement timeout), before it touches any unit or incident."""
    return select(func.pg_advisory_xact_lock(UNITS_LOCK_NAMESPACE, 0))


# --- Boundary import -------------------------------------------------------------------------


def upsert_units(level: int, rows: list[dict], boundary_set: str = "default") -> TextClause:
    """Insert or update units by ``code``; returns one row per unit: ``code, inserted``.

    ``rows`` are dicts with ``code``, ``name``, ``parent_code`` (None or the code of a unit
    of ``level - 1``), ``wkb`` (hex WKB or EWKB, lon/lat) and optionally ``flags`` (a list
    of strings such as ``"outside_territory"``, kept in ``attributes.flags``; an update
    replaces the unit's flags). They travel as one bound JSON array, so the whole level is
    one statement. Polygons become MultiPolygons, the SRID is 4326 and ``area_km2`` is the
    geodesic area.
    """
    return text(
        """
        WITH src AS (
            SELECT r.code, r.name, r.parent_code,
                   ST_Multi(ST_SetSRID(ST_GeomFromEWKB(decode(r.wkb, 'hex')), 4326)) AS geom,
                   CASE WHEN jsonb_array_length(coalesce(r.flags, '[]')) > 0
                        THEN jsonb_build_object('flags', r.flags) ELSE '{}'::jsonb
                   END AS attributes
            FROM jsonb_to_recordset(CAST(:rows AS jsonb))
                AS r(code text, name text, parent_code text, wkb text, flags jsonb)
        )
        INSERT INTO admin_unit AS u
            (boundary_set, level, code, name, parent_id, geom, area_km2, attributes, updated_at)
        SELECT :boundary_set, :level, s.code, s.name, p.id, s.geom,
               ST_Area(s.geom::geography) / 1e6, s.attributes, now()
        FROM src s
        LEFT JOIN admin_unit p ON p.code = s.parent_code AND p.level = :level - 1
        ON CONFLICT (code) DO UPDATE SET
            boundary_set = EXCLUDED.boundary_set,
            level = EXCLUDED.level,
            name = EXCLUDED.name,
            parent_id = EXCLUDED.parent_id,
            geom = EXCLUDED.geom,
            area_km2 = EXCLUDED.area_km2,
            attributes = (u.attributes - 'flags') || EXCLUDED.attributes,
            updated_at = now()
        RETURNING u.code, (xmax = 0) AS inserted
        """
    ).bindparams(rows=json.dumps(rows), level=level, boundary_set=boundary_set)


def delete_units_missing(level: int, codes: list[str]) -> TextClause:
    """Delete the units of ``level`` whose code is not in ``codes``; returns their codes.

    Their population and indicator rows go with them (``ON DELETE CASCADE``) and their
    children lose their parent (``SET NULL``).
    """
    return text(
        """
        DELETE FROM admin_unit
        WHERE level = :level AND NOT (code = ANY(CAST(:codes AS text[])))
        RETURNING code
        """
    ).bindparams(level=level, codes=list(codes))


def select_units_wkb(level: int) -> TextClause:
    """``code, name, wkb`` (bytes, lon/lat) of the units of ``level``, by code."""
    return text(
        """
        SELECT code, name, ST_AsBinary(geom) AS wkb
        FROM admin_unit WHERE level = :level ORDER BY code
        """
    ).bindparams(level=level)


def select_orphans_wkb(level: int) -> TextClause:
    """``code, wkb`` of the units of ``level`` that have no parent, by code."""
    return text(
        """
        SELECT code, ST_AsBinary(geom) AS wkb
        FROM admin_unit WHERE level = :level AND parent_id IS NULL ORDER BY code
        """
    ).bindparams(level=level)


def update_parents(level: int, links: list[dict]) -> TextClause:
    """Set ``parent_id`` of units of ``level`` from ``links`` (dicts ``code, parent_code``)."""
    return text(
        """
        UPDATE admin_unit c SET parent_id = p.id, updated_at = now()
        FROM jsonb_to_recordset(CAST(:links AS jsonb)) AS l(code text, parent_code text)
        JOIN admin_unit p ON p.code = l.parent_code AND p.level = :level - 1
        WHERE c.code = l.code AND c.level = :level
        """
    ).bindparams(links=json.dumps(links), level=level)


def snapshot_incident_units() -> TextClause:
    """Copy every incident's ``unit_ids`` into a temporary table dropped at commit."""
    return text(
        """
        CREATE TEMPORARY TABLE incident_units_before ON COMMIT DROP AS
        SELECT id, unit_ids FROM incident
        """
    )


def count_changed_incident_units() -> TextClause:
    """How many incidents' ``unit_ids`` differ from :func:`snapshot_incident_units`."""
    return text(
        """
        SELECT count(*) FROM incident i JOIN incident_units_before b USING (id)
        WHERE i.unit_ids IS DISTINCT FROM b.unit_ids
        """
    )


# --- Serving units as GeoJSON (built in PostGIS) -------------------------------------------


def _feature(simplify: float | None) -> str:
    geom = "u.geom" if simplify is None else "ST_SimplifyPreserveTopology(u.geom, :simplify)"
    return f"""json_build_object(
            'type', 'Feature',
            'id', u.code,
            'geometry', ST_AsGeoJSON({geom})::json,
            'properties', json_build_object(
                'code', u.code, 'name', u.name, 'level', u.level,
                'parent_code', p.code, 'area_km2', u.area_km2,
                'flags', coalesce(u.attributes -> 'flags', '[]'::jsonb)
            )
        )"""


def select_units_geojson(level: int | None = None, simplify: float | None = None) -> TextClause:
    """One row, one column: the units of ``level`` (all levels when None) as a GeoJSON
    FeatureCollection text, ordered by level and code; ``simplify`` is a
    ``ST_SimplifyPreserveTopology`` tolerance in degrees."""
    where = "TRUE" if level is None else "u.level = :level"
    stmt = text(
        f"""
        SELECT json_build_object(
            'type', 'FeatureCollection',
            'features', coalesce(json_agg(f.feature ORDER BY f.level, f.code), '[]'::json)
        )::text
        FROM (
            SELECT u.level, u.code, {_feature(simplify)} AS feature
            FROM admin_unit u LEFT JOIN admin_unit p ON p.id = u.parent_id
            WHERE {where}
        ) f
        """
    )
    params: dict = {}
    if level is not None:
        params["level"] = level
    if simplify is not None:
        params["simplify"] = simplify
    return stmt.bindparams(**params)


def select_unit_geojson(code: str, simplify: float | None = None) -> TextClause:
    """The unit ``code`` as a GeoJSON Feature text (no row when the code is unknown)."""
    stmt = text(
        f"""
        SELECT {_feature(simplify)}::text
        FROM admin_unit u LEFT JOIN admin_unit p ON p.id = u.parent_id
        WHERE u.code = :code
        """
    )
    params: dict = {"code": code}
    if simplify is not None:
        params["simplify"] = simplify
    return stmt.bindparams(**params)


def set_local_statement_timeout(milliseconds: int) -> TextClause:
    """Raise (or lower) ``statement_timeout`` for the rest of the current transaction only."""
    return text("SELECT set_config('statement_timeout', :value, true)").bindparams(
        value=f"{int(milliseconds)}ms"
    )
