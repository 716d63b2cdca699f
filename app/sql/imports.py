"""SQL for bulk incident imports: staging table, upsert, batch bookkeeping, rejections."""

from __future__ import annotations

from sqlalchemy import Select, TextClause, func, insert, select, text, update
from sqlalchemy.sql.dml import Insert, Update

from app.models import INCIDENT_FIELDS, import_batch, import_rejection
from app.sql.units import units_containing, units_nearest

# Columns of the staging table, in the order the COPY data carries them.
STAGING_COLUMNS = ("row_number", "source", "source_id", "longitude", "latitude", *INCIDENT_FIELDS)

CREATE_STAGING = text(
    """
    CREATE TEMP TABLE incident_staging (
        row_number integer, source text, source_id text, category text,
        occurred_at timestamptz, reported_at timestamptz,
        longitude double precision, latitude double precision,
        location_precision text, victim_sex text, victim_age smallint,
        victims_count smallint, weapon text, perpetrator_relation text, attributes jsonb
    ) ON COMMIT DROP
    """
)

TRUNCATE_STAGING = text("TRUNCATE incident_staging")

# A large batch is long: the per-request statement timeout must not cut it. And LLVM JIT,
# which the planner picks for the upsert's large cost estimate, costs ~12% per chunk.
IMPORT_SESSION = [text("SET LOCAL statement_timeout = 0"), text("SET LOCAL jit = off")]

COPY_STAGING = f"COPY incident_staging ({', '.join(STAGING_COLUMNS)}) FROM STDIN WITH (FORMAT csv)"
COPY_REJECTIONS = "COPY import_rejection (batch_id, row_number, source_id, reason, raw) FROM STDIN"

# Columns an import writes; an existing row is updated only when one of them changed.
_DATA = (*INCIDENT_FIELDS, "geom")


def upsert_from_staging() -> TextClause:
    """Insert new incidents, update changed ones, leave identical ones alone.

    Returns one row: how many were inserted and how many updated (``xmax = 0`` marks a
    freshly inserted tuple). Units come from a point-in-polygon join in the same pass; a
    point short of a level (just off a coarse coastline) takes the nearest unit within
    ``:tolerance_m``.
    """
    changed = ", ".join(f"i.{c}" for c in _DATA)
    incoming = ", ".join(f"EXCLUDED.{c}" for c in _DATA)
    assignments = ", ".join(f"{c} = EXCLUDED.{c}" for c in _DATA)
    selected = ", ".join("p.geom" if c == "geom" else f"s.{c}" for c in _DATA)
    return text(
        f"""
        WITH upserted AS (
            INSERT INTO incident AS i (
                source, source_id, {", ".join(_DATA)}, unit_ids, import_batch_id
            )
            SELECT s.source, s.source_id, {selected},
                   CASE WHEN cardinality(c.ids) < (SELECT count(DISTINCT level) FROM admin_unit)
                        THEN coalesce({units_nearest("p.geom")}, c.ids)
                        ELSE c.ids END,
                   :batch_id
            FROM incident_staging s
            CROSS JOIN LATERAL (
                SELECT ST_SetSRID(ST_MakePoint(s.longitude, s.latitude), 4326) AS geom
            ) p
            CROSS JOIN LATERAL (
                -- OFFSET 0 keeps this a subquery: inlined, the planner would run the
                -- point-in-polygon twice per row (once for CASE, once for its result).
                SELECT coalesce({units_containing("p.geom")}, '{{}}') AS ids OFFSET 0
            ) c
            ON CONFLICT (source, source_id) DO UPDATE
            SET {assignments}, unit_ids = EXCLUDED.unit_ids,
                import_batch_id = EXCLUDED.import_batch_id, updated_at = now()
            WHERE ({changed}) IS DISTINCT FROM ({incoming})
            RETURNING (xmax = 0) AS inserted
        )
        SELECT count(*) FILTER (WHERE inserted) AS inserted,
               count(*) FILTER (WHERE NOT inserted) AS updated
        FROM upserted
        """
    )


def insert_batch(filename: str, fmt: str, options: dict, created_by: str) -> Insert:
    return (
        insert(import_batch)
        .values(filename=filename, format=fmt, options=options, created_by=created_by)
        .returning(import_batch.c.id)
    )


def finish_batch(batch_id: int, **counts: int) -> Update:
    return (
        update(import_batch)
        .where(import_batch.c.id == batch_id)
        .values(status="completed", finished_at=func.now(), error=None, **counts)
    )


def fail_batch(batch_id: int, error: str) -> Update:
    return (
        update(import_batch)
        .where(import_batch.c.id == batch_id)
        .values(status="failed", finished_at=func.now(), error=error)
    )


# A batch is being written while the database session writing it holds this advisory
# lock (two int4 keys: this namespace, then the batch id). Its connection closing, for
# whatever reason (process killed, database restart, network), releases the lock and
# rolls the batch's transaction back, so a 'running' batch without the lock was
# interrupted and nothing of it is in the store.
BATCH_LOCK_NAMESPACE = 7_301

INTERRUPTED = (
    "interrupted: the process or database session importing this batch ended before it "
    "finished; nothing of the batch was stored. Run the same import again to complete it."
)


def lock_batch(batch_id: int) -> Select:
    """Session-level (not transaction-level): taken in the transaction that creates the
    batch, so the batch is never visible as 'running' without it."""
    return select(func.pg_advisory_lock(BATCH_LOCK_NAMESPACE, batch_id))


def unlock_batch(batch_id: int) -> Select:
    return select(func.pg_advisory_unlock(BATCH_LOCK_NAMESPACE, batch_id))


def interrupt_stale_batches() -> TextClause:
    """Mark every 'running' batch whose lock no session holds as failed, and return their
    ids. Safe against a batch finishing at the same moment: the importer commits its
    'completed' status before releasing the lock, and this UPDATE re-checks the status
    of a row changed under it (READ COMMITTED), so a finished batch is left alone."""
    return text(
        f"""
        UPDATE import_batch b
        SET status = 'failed', finished_at = now(), error = :reason
        WHERE b.status = 'running'
          AND NOT EXISTS (
              SELECT 1 FROM pg_locks l
              WHERE l.locktype = 'advisory'
                AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
                AND l.classid = {BATCH_LOCK_NAMESPACE}
                AND l.objid = CAST(b.id AS oid)
                AND l.objsubid = 2
                AND l.granted
          )
        RETURNING b.id
        """
    ).bindparams(reason=INTERRUPTED)


def select_batch(batch_id: int) -> Select:
    return select(import_batch).where(import_batch.c.id == batch_id)


def select_batches(limit: int, offset: int) -> Select:
    return select(import_batch).order_by(import_batch.c.id.desc()).limit(limit).offset(offset)


def select_rejections(batch_id: int, limit: int | None = None) -> Select:
    stmt = (
        select(
            import_rejection.c.row_number,
            import_rejection.c.source_id,
            import_rejection.c.reason,
            import_rejection.c.raw,
        )
        .where(import_rejection.c.batch_id == batch_id)
        .order_by(import_rejection.c.row_number)
    )
    return stmt if limit is None else stmt.limit(limit)
