"""SQL for deaths from three agencies (issue 21): the death import's staging and upsert,
the records a linkage run reads, its stored pairs, clusters and consolidated deaths, the
linkers' decisions, and the reads of the register and the quality scorecard.

Only the linkage run and the linker's pair review read the identifier columns
(:data:`IDENTIFIER_COLUMNS`); every other statement here names the columns it reads.
"""

from __future__ import annotations

from datetime import date

from sqlalchemy import Insert, Select, TextClause, and_, func, insert, or_, select, text
from sqlalchemy.sql.dml import Delete

from app.models import (
    analysis_run,
    death_record,
    import_batch,
    linkage_cluster,
    linkage_death,
    linkage_decision,
    linkage_pair,
)
from app.services.death_rows import STAGING_COLUMNS

# The columns only the linker role and admins read (app.access.sees_identifiers).
IDENTIFIER_COLUMNS = ("given_name", "family_name", "person_key")
# A linkage run's analysis_run kind and method.
KIND, METHOD = "linkage", "fellegi_sunter"

CREATE_STAGING = text(
    """
    CREATE TEMP TABLE death_staging (
        row_number integer, source text, source_id text, given_name text, family_name text,
        person_key text, names_hashed boolean, sex text, age smallint, birth_date date,
        death_date date, registered_at date, longitude double precision,
        latitude double precision, location_precision text, unit_code text, manner_raw text,
        manner text, icd10 text, iccs text, attributes jsonb
    ) ON COMMIT DROP
    """
)
TRUNCATE_STAGING = text("TRUNCATE death_staging")
COPY_STAGING = f"COPY death_staging ({', '.join(STAGING_COLUMNS)}) FROM STDIN WITH (FORMAT csv)"
# Death imports run one at a time (a lock that conflicts with itself, not with reads):
# no two batches ever wait on each other's rows.
LOCK_RECORDS = text("LOCK TABLE death_record IN SHARE ROW EXCLUSIVE MODE")

# What an import writes; a stored record changes only when one of these differs.
_KEYS = ("row_number", "source", "source_id", "longitude", "latitude")
_DATA = (*(c for c in STAGING_COLUMNS if c not in _KEYS), "geom")


def insert_death_batch(
    filename: str, fmt: str, options: dict, created_by: str, warnings: list[str]
) -> Insert:
    """INSERT a running import batch of kind ``deaths``; returns its id."""
    return (
        insert(import_batch)
        .values(
            kind="deaths",
            filename=filename,
            format=fmt,
            options=options,
            created_by=created_by,
            warnings=warnings,
        )
        .returning(import_batch.c.id)
    )


def upsert_deaths() -> TextClause:
    """Insert new death records and update changed ones from the staging table; the unit
    of a record without one is the district (level 1) holding its point. Returns one row:
    inserted, updated."""
    data = ", ".join(_DATA)
    staged = ", ".join(
        "ST_SetSRID(ST_MakePoint(s.longitude, s.latitude), 4326)"
        if c == "geom"
        else "COALESCE(s.unit_code, ("
        "SELECT u.code FROM admin_unit_part p JOIN admin_unit u ON u.id = p.unit_id "
        "WHERE p.level = 1 AND ST_Intersects(p.geom, "
        "ST_SetSRID(ST_MakePoint(s.longitude, s.latitude), 4326)) ORDER BY p.unit_id LIMIT 1))"
        if c == "unit_code"
        else f"s.{c}"
        for c in _DATA
    )
    changed = " OR ".join(f"d.{c} IS DISTINCT FROM EXCLUDED.{c}" for c in _DATA)
    assignments = ", ".join(f"{c} = EXCLUDED.{c}" for c in _DATA)
    return text(
        f"""
        WITH written AS (
            INSERT INTO death_record AS d (
                source, source_id, {data}, import_batch_id, import_batch_ids)
            SELECT s.source, s.source_id, {staged},
                   CAST(:batch_id AS integer), ARRAY[CAST(:batch_id AS integer)]
            FROM death_staging s
            ORDER BY s.source, s.source_id
            ON CONFLICT (source, source_id) DO UPDATE
            SET {assignments}, import_batch_id = EXCLUDED.import_batch_id,
                import_batch_ids = d.import_batch_ids || EXCLUDED.import_batch_id,
                updated_at = now()
            WHERE {changed}
            RETURNING (xmax = 0) AS inserted
        )
        SELECT count(*) FILTER (WHERE inserted) AS inserted,
               count(*) FILTER (WHERE NOT inserted) AS updated
        FROM written
        """
    )


def select_unit_codes() -> Select:
    """Every loaded unit's code (a death row's unit_code must be one)."""
    return text("SELECT code FROM admin_unit")


# --- a linkage run ---------------------------------------------------------------------


def select_records_for_linkage() -> Select:
    """Every death record in the linkage core's columns (the identifiers included: only
    the run reads them, in the worker)."""
    d = death_record.c
    return select(
        d.id,
        d.source,
        d.given_name,
        d.family_name,
        d.names_hashed,
        d.sex,
        d.age,
        d.birth_date,
        d.death_date,
        func.ST_X(d.geom).label("lon"),
        func.ST_Y(d.geom).label("lat"),
        d.unit_code,
        d.manner,
    ).order_by(d.id)


def select_latest_decisions() -> TextClause:
    """The latest decision of every pair of records that still exist."""
    return text(
        """
        SELECT DISTINCT ON (record_l, record_r) record_l, record_r, decision
        FROM linkage_decision dec
        WHERE EXISTS (SELECT 1 FROM death_record d WHERE d.id = dec.record_l)
          AND EXISTS (SELECT 1 FROM death_record d WHERE d.id = dec.record_r)
        ORDER BY record_l, record_r, id DESC
        """
    )


def delete_run_results(run_id: int) -> list[Delete]:
    """A run's pairs, clusters and deaths (a retried job stores them again, once)."""
    return [
        table.delete().where(table.c.run_id == run_id)
        for table in (linkage_pair, linkage_cluster, linkage_death)
    ]


def insert_pairs() -> Insert:
    """INSERT a run's pairs (executemany)."""
    return insert(linkage_pair)


def insert_clusters() -> Insert:
    """INSERT a run's record → cluster rows (executemany)."""
    return insert(linkage_cluster)


def insert_deaths() -> Insert:
    """INSERT a run's consolidated deaths (executemany)."""
    return insert(linkage_death)


def select_latest_run() -> Select:
    """The id of the latest completed linkage run."""
    r = analysis_run.c
    return (
        select(r.id).where(r.kind == KIND, r.status == "completed").order_by(r.id.desc()).limit(1)
    )


def select_linkage_run(run_id: int) -> Select:
    """One linkage run (an analysis run of kind linkage)."""
    return select(analysis_run).where(analysis_run.c.id == run_id, analysis_run.c.kind == KIND)


def select_run_counts(run_id: int) -> TextClause:
    """Pairs per band and decision, and deaths, stored for a run."""
    return text(
        """
        SELECT (SELECT count(*) FROM linkage_pair WHERE run_id = :run_id) AS pairs,
               (SELECT count(*) FROM linkage_death WHERE run_id = :run_id) AS deaths,
               (SELECT count(*) FROM linkage_cluster WHERE run_id = :run_id) AS records
        """
    ).bindparams(run_id=run_id)


def count_records_since(run_id: int) -> TextClause:
    """Death records a run did not see: written (inserted or changed) after it started."""
    return text(
        """
        SELECT count(*) FROM death_record d
        WHERE d.updated_at > (SELECT created_at FROM analysis_run WHERE id = :run_id)
           OR NOT EXISTS (SELECT 1 FROM linkage_cluster c
                          WHERE c.run_id = :run_id AND c.record_id = d.id)
        """
    ).bindparams(run_id=run_id)


# --- the review of pairs (linker) ------------------------------------------------------

_RECORD_FIELDS = (
    "id", "source", "source_id", "given_name", "family_name", "person_key", "names_hashed",
    "sex", "age", "birth_date", "death_date", "unit_code", "manner", "manner_raw",
)  # fmt: skip


def select_pairs(run_id: int, band: str | None, undecided: bool, limit: int, offset: int):
    """A run's pairs, most probable first, each with both records (identifiers included:
    linker only) and the latest decision on the pair."""
    fields = ", ".join(f"'{f}', {{a}}.{f}" for f in _RECORD_FIELDS)
    left, right = fields.format(a="l"), fields.format(a="r")
    where = ["p.run_id = :run_id"]
    if band is not None:
        where.append("p.band = :band")
    if undecided:
        where.append("dec.decision IS NULL")
    return text(
        f"""
        SELECT p.id, p.run_id, p.match_probability, p.match_weight, p.band, p.decided,
               dec.decision, dec.note, dec.decided_by, dec.decided_at,
               json_build_object({left}) AS record_l, json_build_object({right}) AS record_r,
               count(*) OVER () AS matched
        FROM linkage_pair p
        JOIN death_record l ON l.id = p.record_l
        JOIN death_record r ON r.id = p.record_r
        LEFT JOIN LATERAL (
            SELECT decision, note, decided_by, decided_at FROM linkage_decision d
            WHERE d.record_l = p.record_l AND d.record_r = p.record_r
            ORDER BY d.id DESC LIMIT 1
        ) dec ON true
        WHERE {" AND ".join(where)}
        ORDER BY p.match_probability DESC NULLS LAST, p.id
        LIMIT :limit OFFSET :offset
        """
    ).bindparams(run_id=run_id, limit=limit, offset=offset, **({"band": band} if band else {}))


def select_pair(pair_id: int) -> Select:
    """One stored pair."""
    return select(linkage_pair).where(linkage_pair.c.id == pair_id)


def insert_decision(
    record_l: int,
    record_r: int,
    decision: str,
    note: str | None,
    pair_id: int,
    run_id: int,
    actor: str,
) -> Insert:
    """INSERT a linker's decision on a pair of records; returns it."""
    return (
        insert(linkage_decision)
        .values(
            record_l=record_l, record_r=record_r, decision=decision, note=note,
            pair_id=pair_id, run_id=run_id, decided_by=actor,
        )
        .returning(linkage_decision)
    )  # fmt: skip


# --- the register (analysts: no identifier) --------------------------------------------

_DEATH_FIELDS = (
    "cluster_id", "n_records", "sources", "n_sources", "in_police", "in_forensic",
    "in_health", "manner_police", "manner_forensic", "manner_health", "manners_disagree",
    "manner", "manner_from", "death_date", "unit_code", "same_source_duplicates",
)  # fmt: skip


def select_deaths(run_id: int, start: date | None, end: date | None, unit: str | None) -> Select:
    """A run's consolidated deaths dated in [start, end) (and of one unit), by date."""
    d = linkage_death.c
    where = [d.run_id == run_id]
    if start is not None:
        where.append(d.death_date >= start)
    if end is not None:
        where.append(d.death_date < end)
    if unit is not None:
        where.append(d.unit_code == unit)
    return (
        select(*(d[f] for f in _DEATH_FIELDS))
        .where(and_(*where))
        .order_by(d.death_date, d.cluster_id)
    )


def select_cluster_codings(run_id: int, cluster_ids: list[int]) -> TextClause:
    """Each source's own coding of the deaths of ``cluster_ids`` (the discrepancy lines):
    cluster, source, manner as the agency wrote it, its normalised manner, ICD-10, ICCS,
    and the agency's record id (shown to linkers only)."""
    return text(
        """
        SELECT c.cluster_id, d.source, d.source_id, d.manner_raw, d.manner, d.icd10, d.iccs
        FROM linkage_cluster c JOIN death_record d ON d.id = c.record_id
        WHERE c.run_id = :run_id AND c.cluster_id = ANY(:clusters)
        ORDER BY c.cluster_id, d.source, d.id
        """
    ).bindparams(run_id=run_id, clusters=cluster_ids)


# --- the quality scorecard -------------------------------------------------------------


def select_quality_records(start: date, end: date, run_id: int | None) -> TextClause:
    """Every death record dated in [start, end) (its death date, else its registration),
    with its fields' presence (never their values), its point's presence and precision,
    its reporting delay, and in the run: the number of sources of its cluster and whether
    another source of the cluster records the same manner."""
    return text(
        """
        SELECT d.id, d.source,
               d.given_name IS NOT NULL AS given_name, d.family_name IS NOT NULL AS family_name,
               d.person_key IS NOT NULL AS person_key,
               d.sex IS NOT NULL AND d.sex <> 'unknown' AS sex,
               d.age IS NOT NULL AS age, d.birth_date IS NOT NULL AS birth_date,
               d.death_date IS NOT NULL AS death_date,
               d.registered_at IS NOT NULL AS registered_at,
               d.geom IS NOT NULL AS point, d.unit_code IS NOT NULL AS unit_code,
               d.manner IS NOT NULL AS manner, d.icd10 IS NOT NULL AS icd10,
               d.iccs IS NOT NULL AS iccs,
               CASE WHEN d.geom IS NULL THEN NULL
                    ELSE COALESCE(NULLIF(lower(d.location_precision), ''), 'unstated') END
                   AS precision,
               d.registered_at - d.death_date AS delay_days,
               ld.n_sources, d.manner AS own_manner,
               (SELECT bool_or(o.manner = d.manner) FROM linkage_cluster oc
                  JOIN death_record o ON o.id = oc.record_id
                 WHERE oc.run_id = c.run_id AND oc.cluster_id = c.cluster_id
                   AND o.source <> d.source AND o.manner IS NOT NULL) AS same_manner,
               (SELECT count(*) FROM linkage_cluster oc
                  JOIN death_record o ON o.id = oc.record_id
                 WHERE oc.run_id = c.run_id AND oc.cluster_id = c.cluster_id
                   AND o.source <> d.source AND o.manner IS NOT NULL) AS others_with_manner
        FROM death_record d
        LEFT JOIN linkage_cluster c ON c.run_id = :run_id AND c.record_id = d.id
        LEFT JOIN linkage_death ld ON ld.run_id = c.run_id AND ld.cluster_id = c.cluster_id
        WHERE COALESCE(d.death_date, d.registered_at) >= :start
          AND COALESCE(d.death_date, d.registered_at) < :end
        ORDER BY d.id
        """
    ).bindparams(start=start, end=end, run_id=run_id if run_id is not None else -1)


def pair_filter(record_l: int, record_r: int):
    """WHERE clause: the pair of two records, in either order."""
    d = linkage_decision.c
    return or_(
        and_(d.record_l == record_l, d.record_r == record_r),
        and_(d.record_l == record_r, d.record_r == record_l),
    )
