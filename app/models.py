"""Tables (SQLAlchemy Core + GeoAlchemy2). Storage is EPSG:4326; migrations mirror this file."""

from __future__ import annotations

from geoalchemy2 import Geometry
from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    Computed,
    Date,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    SmallInteger,
    Table,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

SRID = 4326
ROLES = ("viewer", "analyst", "editor", "admin")
# Roles off the ladder (issue 21): a linker reads what an analyst reads, plus the
# deceased's identifiers of the death records, and reviews their linkage (app.security).
KEY_ROLES = (*ROLES, "linker")
SEXES = ("female", "male", "unknown")
# An incident's fields besides its key (source, source_id) and its point, in the one order
# that validation, staging, upserts and GeoJSON properties share.
INCIDENT_FIELDS = (
    "category",
    "occurred_at",
    "reported_at",
    "location_precision",
    "victim_sex",
    "victim_age",
    "victims_count",
    "weapon",
    "perpetrator_relation",
    "attributes",
)


def _timestamps() -> list[Column]:
    return [
        Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
        Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    ]


admin_unit = Table(
    "admin_unit",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("boundary_set", Text, nullable=False, server_default="default"),
    Column("level", SmallInteger, nullable=False),
    Column("code", Text, nullable=False, unique=True),
    Column("name", Text, nullable=False),
    Column("parent_id", Integer, ForeignKey("admin_unit.id", ondelete="SET NULL")),
    Column("geom", Geometry("MULTIPOLYGON", srid=SRID, spatial_index=False), nullable=False),
    Column("area_km2", Float, nullable=False),
    Column("attributes", JSONB, nullable=False, server_default=text("'{}'::jsonb")),
    *_timestamps(),
    CheckConstraint("level >= 0", name="level_non_negative"),
    CheckConstraint("ST_IsValid(geom)", name="geom_valid"),
    Index("ix_admin_unit_geom", "geom", postgresql_using="gist"),
    Index("ix_admin_unit_level", "level"),
)

# The units cut into small pieces (ST_Subdivide): point-in-polygon on pieces of at most
# 64 vertices is ~2x faster than on whole districts, and it is what every write uses.
admin_unit_part = Table(
    "admin_unit_part",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("unit_id", Integer, ForeignKey("admin_unit.id", ondelete="CASCADE"), nullable=False),
    Column("level", SmallInteger, nullable=False),
    Column("geom", Geometry("POLYGON", srid=SRID, spatial_index=False), nullable=False),
    Index("ix_admin_unit_part_geom", "geom", postgresql_using="gist"),
    Index("ix_admin_unit_part_unit_id", "unit_id"),
)

population = Table(
    "population",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("unit_id", Integer, ForeignKey("admin_unit.id", ondelete="CASCADE"), nullable=False),
    Column("year", SmallInteger, nullable=False),
    Column("sex", Text, nullable=False, server_default="total"),
    Column("age_group", Text, nullable=False, server_default="total"),
    Column("value", Float, nullable=False),
    Column("source", Text, nullable=False, server_default=""),
    CheckConstraint("sex IN ('total', 'female', 'male')", name="sex_known"),
    CheckConstraint("value >= 0", name="value_non_negative"),
    UniqueConstraint("unit_id", "year", "sex", "age_group"),
)

indicator_value = Table(
    "indicator_value",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("unit_id", Integer, ForeignKey("admin_unit.id", ondelete="CASCADE"), nullable=False),
    Column("period", Text, nullable=False),
    Column("indicator", Text, nullable=False),
    Column("sex", Text, nullable=False, server_default="total"),
    Column("age_group", Text, nullable=False, server_default="total"),
    Column("value", Float, nullable=False),
    Column("source", Text, nullable=False, server_default=""),
    UniqueConstraint("unit_id", "period", "indicator", "sex", "age_group"),
)

category = Table(
    "category",
    metadata,
    Column("code", Text, primary_key=True),
    Column("name", Text, nullable=False),
    Column("category_group", Text, nullable=False),
    # Sensitive categories (sexual, domestic violence) are never shown below the threshold.
    Column("sensitive", Boolean, nullable=False, server_default=text("false")),
    Column("description", Text, nullable=False, server_default=""),
)

import_batch = Table(
    "import_batch",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("kind", Text, nullable=False, server_default="incidents"),
    Column("filename", Text, nullable=False),
    Column("format", Text, nullable=False),
    Column("options", JSONB, nullable=False, server_default=text("'{}'::jsonb")),
    Column("created_by", Text, nullable=False),
    Column("status", Text, nullable=False, server_default="running"),
    Column("received", Integer, nullable=False, server_default="0"),
    Column("inserted", Integer, nullable=False, server_default="0"),
    Column("updated", Integer, nullable=False, server_default="0"),
    Column("unchanged", Integer, nullable=False, server_default="0"),
    Column("rejected", Integer, nullable=False, server_default="0"),
    # A short reason a caller may read: never SQL text nor backend process ids.
    Column("error", Text),
    Column("started_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("finished_at", DateTime(timezone=True)),
    # What the import noticed without rejecting a row, e.g. headers renamed (migration 0009).
    Column("warnings", JSONB, nullable=False, server_default=text("'[]'::jsonb")),
    # How far a running batch has got, 0..1 (migration 0013; set by a queued import).
    Column("progress", Float),
    CheckConstraint("status IN ('queued', 'running', 'completed', 'failed')", name="status_known"),
)

# The file of a queued import, until a worker has imported it (migration 0013): in the
# database, since the worker may run on another machine than the API that received it.
import_upload = Table(
    "import_upload",
    metadata,
    Column(
        "batch_id", Integer, ForeignKey("import_batch.id", ondelete="CASCADE"), primary_key=True
    ),
    Column("data", LargeBinary, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

import_rejection = Table(
    "import_rejection",
    metadata,
    Column(
        "batch_id", Integer, ForeignKey("import_batch.id", ondelete="CASCADE"), primary_key=True
    ),
    # 1-based data row number in the file (header excluded), so an analyst can find it.
    Column("row_number", Integer, primary_key=True),
    Column("source_id", Text),
    Column("reason", Text, nullable=False),
    Column("raw", JSONB, nullable=False),
)

incident = Table(
    "incident",
    metadata,
    Column("id", BigInteger, primary_key=True),
    Column("source", Text, nullable=False),
    Column("source_id", Text, nullable=False),
    Column("category", Text, ForeignKey("category.code", onupdate="CASCADE"), nullable=False),
    Column("occurred_at", DateTime(timezone=True), nullable=False),
    Column("reported_at", DateTime(timezone=True)),
    Column("geom", Geometry("POINT", srid=SRID, spatial_index=False), nullable=False),
    Column("location_precision", Text),
    Column("victim_sex", Text),
    Column("victim_age", SmallInteger),
    Column("victims_count", SmallInteger, nullable=False, server_default="1"),
    Column("weapon", Text),
    Column("perpetrator_relation", Text),
    Column("attributes", JSONB, nullable=False, server_default=text("'{}'::jsonb")),
    # Every admin unit (all levels) containing the point, set by a spatial join in PostGIS.
    Column("unit_ids", ARRAY(Integer), nullable=False, server_default=text("'{}'")),
    # Provenance only, deliberately without a foreign key: batches are never deleted, and
    # the per-row check would cost ~10% of a bulk import.
    Column("import_batch_id", Integer),
    *_timestamps(),
    Column("deleted_at", DateTime(timezone=True)),
    # Every batch that inserted or changed it, oldest first (import_batch_id is the last);
    # what each changed is in the audit log (migration 0009).
    Column("import_batch_ids", ARRAY(Integer), nullable=False, server_default=text("'{}'")),
    UniqueConstraint("source", "source_id"),
    CheckConstraint("victim_sex IN ('female', 'male', 'unknown')", name="victim_sex_known"),
    CheckConstraint("victim_age BETWEEN 0 AND 120", name="victim_age_range"),
    CheckConstraint("victims_count >= 1", name="victims_count_positive"),
    Index("ix_incident_geom", "geom", postgresql_using="gist"),
    Index("ix_incident_occurred_at", "occurred_at"),
    Index("ix_incident_category", "category"),
    Index("ix_incident_unit_ids", "unit_ids", postgresql_using="gin"),
)

api_key = Table(
    "api_key",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("name", Text, nullable=False),
    # The public part of the key, shown in lists and logs; the secret is stored hashed only.
    Column("prefix", Text, nullable=False, unique=True),
    Column("hash", Text, nullable=False),
    Column("role", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("last_used_at", DateTime(timezone=True)),
    Column("revoked_at", DateTime(timezone=True)),
    CheckConstraint(
        "role IN ('viewer', 'analyst', 'editor', 'admin', 'linker')", name="role_known"
    ),  # linker: migration 0015
)

audit_log = Table(
    "audit_log",
    metadata,
    Column("id", BigInteger, primary_key=True),
    Column("at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("actor", Text, nullable=False),
    Column("action", Text, nullable=False),
    Column("entity", Text, nullable=False),
    Column("entity_id", Text),
    Column("before", JSONB),
    Column("after", JSONB),
    Index("ix_audit_log_entity", "entity", "entity_id"),
    Index("ix_audit_log_at", "at"),
)


analysis_run = Table(
    "analysis_run",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("kind", Text, nullable=False),  # hotspots, emerging, kde, evaluation
    Column("method", Text, nullable=False),
    # Everything needed to run it again: method options, units, weights, filters.
    Column("parameters", JSONB, nullable=False),
    Column("status", Text, nullable=False, server_default="running"),
    Column("progress", Float, nullable=False, server_default="0"),
    Column("message", Text),
    Column("summary", JSONB, nullable=False, server_default=text("'{}'::jsonb")),
    Column("created_by", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("finished_at", DateTime(timezone=True)),
    CheckConstraint(
        "status IN ('running', 'completed', 'failed', 'cancelled')", name="status_known"
    ),
)

# A set of analysis cells whose polygons are stored once (migration 0006): an H3 grid or a
# square grid over a study area, shared by every run on it ("h3:9:<area hash>"), or the
# units of one run ("run:<id>", deleted with the run).
analysis_grid = Table(
    "analysis_grid",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("key", Text, nullable=False, unique=True),
    Column("kind", Text, nullable=False),  # h3, square, run
    Column("parameters", JSONB, nullable=False),  # enough to rebuild the grid
    Column("cells", Integer, nullable=False),
    Column("run_id", Integer, ForeignKey("analysis_run.id", ondelete="CASCADE")),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

analysis_grid_cell = Table(
    "analysis_grid_cell",
    metadata,
    Column(
        "grid_id", Integer, ForeignKey("analysis_grid.id", ondelete="CASCADE"), primary_key=True
    ),
    Column("cell_id", Text, primary_key=True),
    Column("geom", Geometry("GEOMETRY", srid=SRID, spatial_index=False), nullable=False),
    # The polygon as GeoJSON (7 decimals), computed once when the grid is stored.
    Column("geojson", Text, Computed("ST_AsGeoJSON(geom, 7)", persisted=True), nullable=False),
    Index("ix_analysis_grid_cell_geom", "geom", postgresql_using="gist"),
)

# One row per analysis unit (H3 cell, grid square or admin unit) of a run: its values.
# grid_id names the grid holding its polygon. No foreign keys: PostgreSQL checks them row
# by row, about a second per 200,000-cell run each; the service writes a run's grid
# first, and a trigger deletes a run's values with the run (migration 0006).
analysis_cell_value = Table(
    "analysis_cell_value",
    metadata,
    Column("run_id", Integer, primary_key=True),
    Column("cell_id", Text, primary_key=True),
    Column("count", Float, nullable=False),
    Column("z", Float),
    Column("p", Float),
    Column("p_sim", Float),
    Column("bin", SmallInteger),
    Column("i", Float),
    Column("quadrant", SmallInteger),
    Column("label", Text),
    Column("category", Text),
    Column("stats", JSONB, nullable=False, server_default=text("'{}'::jsonb")),
    Column("grid_id", Integer, nullable=False),
)

# The VIEW analysis_cell (migration 0006): analysis_cell_value joined with its polygon in
# analysis_grid_cell, with the columns the table had before (layers and tiles read it).
# Declared in its own MetaData so that Alembic never mistakes it for a table.
views = MetaData()
analysis_cell = Table(
    "analysis_cell",
    views,
    Column("run_id", Integer, primary_key=True),
    Column("cell_id", Text, primary_key=True),
    Column("geom", Geometry("GEOMETRY", srid=SRID, spatial_index=False), nullable=False),
    Column("count", Float, nullable=False),
    Column("z", Float),
    Column("p", Float),
    Column("p_sim", Float),
    Column("bin", SmallInteger),
    Column("i", Float),
    Column("quadrant", SmallInteger),
    Column("label", Text),
    Column("category", Text),
    Column("stats", JSONB, nullable=False),
)

# Versioned composite-index definitions (indexes.spec); a result names its version.
index_definition = Table(
    "index_definition",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("code", Text, nullable=False),
    Column("version", Integer, nullable=False),
    Column("definition", JSONB, nullable=False),
    Column("created_by", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    UniqueConstraint("code", "version"),
)

# The secret seed of the record keys behind the cell-key perturbation of public statistics
# (app.services.disclosure); one row, made by migration 0008.
cell_key_seed = Table(
    "cell_key_seed",
    metadata,
    Column("seed", BigInteger, nullable=False),
    Column("only_row", Boolean, primary_key=True, server_default=text("true")),
    CheckConstraint("only_row", name="only_row"),
)

# Early warning (issue 19, migration 0012): versioned monitor definitions
# (app.schemas.monitors) and the alerts their nightly evaluation raises.
monitor_definition = Table(
    "monitor_definition",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("code", Text, nullable=False),
    Column("version", Integer, nullable=False),
    Column("definition", JSONB, nullable=False),
    Column("created_by", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    UniqueConstraint("code", "version"),
)

alert = Table(
    "alert",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("monitor", Text, nullable=False),
    Column("monitor_version", Integer, nullable=False),
    # Copied from the monitor: every read filters on it (analysts only when true).
    Column("sensitive", Boolean, nullable=False),
    Column("place_kind", Text, nullable=False),
    Column("unit_code", Text),
    # A group of contiguous alarmed H3 cells is one alert; its outline is geom.
    Column("cells", ARRAY(Text), nullable=False, server_default=text("'{}'")),
    Column("geom", Geometry("MULTIPOLYGON", srid=SRID, spatial_index=False)),
    Column("first_period", Text, nullable=False),
    Column("period", Text, nullable=False),
    Column("period_start", DateTime(timezone=True), nullable=False),
    Column("observed", Float),
    Column("expected", Float),
    Column("threshold", Float),
    Column("lasted", Integer, nullable=False),
    Column("detail", JSONB, nullable=False),  # per place of the group, the latest period
    Column("series", JSONB, nullable=False),  # the last two years, for a chart
    Column("state", Text, nullable=False, server_default="new"),
    Column("note", Text),
    Column("state_changed_by", Text),
    Column("state_changed_at", DateTime(timezone=True)),
    *_timestamps(),
    CheckConstraint("state IN ('new', 'acknowledged', 'closed')", name="state_known"),
    CheckConstraint("place_kind IN ('unit', 'h3')", name="place_kind_known"),
    Index("ix_alert_monitor_state", "monitor", "state"),
    Index("ix_alert_geom", "geom", postgresql_using="gist"),
)

# The periodic report (issue 20, migration 0014): versioned report definitions
# (app.schemas.reports) and the built reports, one per definition version, period and
# data version (asking again for the same returns the stored one).
report_definition = Table(
    "report_definition",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("code", Text, nullable=False),
    Column("version", Integer, nullable=False),
    Column("definition", JSONB, nullable=False),
    Column("created_by", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    UniqueConstraint("code", "version"),
)

report = Table(
    "report",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("definition", Text, nullable=False),
    Column("definition_version", Integer, nullable=False),
    Column("period", Text, nullable=False),
    Column("language", Text, nullable=False),
    Column("audience", Text, nullable=False),
    # A fingerprint of the data it was built from (app.sql.reports.data_fingerprint).
    Column("data_version", BigInteger, nullable=False),
    Column("run_id", Integer, ForeignKey("analysis_run.id", ondelete="SET NULL")),
    Column("html", Text),
    Column("pdf", LargeBinary),
    Column("bundle", LargeBinary),
    Column("summary", JSONB, nullable=False, server_default=text("'{}'::jsonb")),
    Column("created_by", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    UniqueConstraint("definition", "definition_version", "period", "data_version"),
    CheckConstraint("audience IN ('public', 'analyst')", name="audience_known"),
)


# Deaths from three agencies (issue 21, migration 0015): every agency's record as it came,
# keyed on (source, source_id). The name parts (or their HMAC tokens, names_hashed) and
# person_key are the most sensitive data the service holds: they live in this table only,
# and only the linker role and admins read them (app.access.sees_identifiers).
MANNERS = ("homicide", "suicide", "accident", "undetermined", "natural", "other")
death_record = Table(
    "death_record",
    metadata,
    Column("id", BigInteger, primary_key=True),
    Column("source", Text, nullable=False),
    Column("source_id", Text, nullable=False),
    Column("given_name", Text),
    Column("family_name", Text),
    Column("person_key", Text),
    Column("names_hashed", Boolean, nullable=False, server_default=text("false")),
    Column("sex", Text),
    Column("age", SmallInteger),
    Column("birth_date", Date),
    Column("death_date", Date),
    # When the agency recorded the death (timeliness: the reporting delay).
    Column("registered_at", Date),
    Column("geom", Geometry("POINT", srid=SRID, spatial_index=False)),
    Column("location_precision", Text),
    # As given, else the district holding the point (set on import).
    Column("unit_code", Text),
    # The source's own coding, and the manner it normalises to (app.services.death_rows).
    Column("manner_raw", Text),
    Column("manner", Text),
    Column("icd10", Text),
    Column("iccs", Text),
    Column("attributes", JSONB, nullable=False, server_default=text("'{}'::jsonb")),
    Column("import_batch_id", Integer),
    Column("import_batch_ids", ARRAY(Integer), nullable=False, server_default=text("'{}'")),
    *_timestamps(),
    UniqueConstraint("source", "source_id"),
    CheckConstraint("sex IN ('female', 'male', 'unknown')", name="sex_known"),
    CheckConstraint("age BETWEEN 0 AND 130", name="age_range"),
    CheckConstraint(
        "manner IN ('homicide', 'suicide', 'accident', 'undetermined', 'natural', 'other')",
        name="manner_known",
    ),
    Index("ix_death_record_death_date", "death_date"),
)

# A linkage run is an analysis_run of kind 'linkage' (its summary: parameters, counts);
# its pairs (record_l < record_r), clusters and consolidated deaths go with it.
linkage_pair = Table(
    "linkage_pair",
    metadata,
    Column("id", BigInteger, primary_key=True),
    Column("run_id", Integer, ForeignKey("analysis_run.id", ondelete="CASCADE"), nullable=False),
    Column("record_l", BigInteger, nullable=False),
    Column("record_r", BigInteger, nullable=False),
    Column("match_probability", Float),
    Column("match_weight", Float),
    Column("band", Text, nullable=False),
    # The decision the run applied (the latest one at the time it ran).
    Column("decided", Text),
    CheckConstraint("band IN ('match', 'uncertain', 'non_match')", name="band_known"),
    CheckConstraint("decided IN ('accept', 'reject')", name="decided_known"),
    CheckConstraint("record_l < record_r", name="ordered"),
    Index("ix_linkage_pair_run_id_band", "run_id", "band"),
)

linkage_cluster = Table(
    "linkage_cluster",
    metadata,
    Column(
        "run_id",
        Integer,
        ForeignKey("analysis_run.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("record_id", BigInteger, primary_key=True),
    Column("cluster_id", BigInteger, nullable=False),
    Index("ix_linkage_cluster_run_id_cluster_id", "run_id", "cluster_id"),
)

# One row per consolidated death (a cluster) of a run: linkage.consolidate's columns.
linkage_death = Table(
    "linkage_death",
    metadata,
    Column(
        "run_id",
        Integer,
        ForeignKey("analysis_run.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("cluster_id", BigInteger, primary_key=True),
    Column("n_records", Integer, nullable=False),
    Column("sources", Text, nullable=False),
    Column("n_sources", Integer, nullable=False),
    Column("in_police", Boolean, nullable=False),
    Column("in_forensic", Boolean, nullable=False),
    Column("in_health", Boolean, nullable=False),
    Column("manner_police", Text),
    Column("manner_forensic", Text),
    Column("manner_health", Text),
    Column("manners_disagree", Boolean, nullable=False),
    Column("manner", Text),
    Column("manner_from", Text),
    Column("death_date", Date),
    Column("unit_code", Text),
    Column("same_source_duplicates", Boolean, nullable=False),
    Index("ix_linkage_death_run_id_death_date", "run_id", "death_date"),
)

# Every accept/reject a linker gave (never changed): the latest of a pair is respected
# by the next run.
linkage_decision = Table(
    "linkage_decision",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("record_l", BigInteger, nullable=False),
    Column("record_r", BigInteger, nullable=False),
    Column("decision", Text, nullable=False),
    Column("note", Text),
    Column("pair_id", BigInteger),
    Column("run_id", Integer),
    Column("decided_by", Text, nullable=False),
    Column("decided_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    CheckConstraint("decision IN ('accept', 'reject')", name="decision_known"),
    CheckConstraint("record_l < record_r", name="ordered"),
    Index("ix_linkage_decision_record_l_record_r", "record_l", "record_r"),
)

# Near-repeat risk zones (issue 19, migration 0016): each incident of a significant
# near-repeat run's filters (app.services.near_repeat) as a disc of the run's significant
# distance, valid for its significant time window after the incident. ``public_geom`` is
# the same zone without the point: the grid square holding the incident, grown by the
# distance (the published layer for non-sensitive runs).
risk_zone = Table(
    "risk_zone",
    metadata,
    Column("id", BigInteger, primary_key=True),
    Column("run_id", Integer, ForeignKey("analysis_run.id", ondelete="CASCADE"), nullable=False),
    Column(
        "incident_id", BigInteger, ForeignKey("incident.id", ondelete="CASCADE"), nullable=False
    ),
    # Copied from the run: its categories include a sensitive one (or all categories).
    Column("sensitive", Boolean, nullable=False),
    Column("distance_m", Float, nullable=False),
    Column("days", Float, nullable=False),
    Column("valid_from", DateTime(timezone=True), nullable=False),
    Column("valid_to", DateTime(timezone=True), nullable=False),
    Column("geom", Geometry("POLYGON", srid=SRID, spatial_index=False), nullable=False),
    Column("public_geom", Geometry("POLYGON", srid=SRID, spatial_index=False), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    UniqueConstraint("run_id", "incident_id"),
    Index("ix_risk_zone_valid_to", "valid_to"),
    Index("ix_risk_zone_geom", "geom", postgresql_using="gist"),
    Index("ix_risk_zone_public_geom", "public_geom", postgresql_using="gist"),
)

# Each incident's H3 cell at a resolution a monitor counts on (issue 19, migration 0018),
# filled lazily by the evaluation of the monitors (h3 in Python: no H3 extension here);
# cell 0 marks a point without a cell. A moved incident loses its rows (trigger).
incident_h3 = Table(
    "incident_h3",
    metadata,
    Column(
        "incident_id",
        BigInteger,
        ForeignKey("incident.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("resolution", SmallInteger, primary_key=True),
    Column("cell", BigInteger, nullable=False),
    CheckConstraint("resolution BETWEEN 0 AND 15", name="resolution_range"),
)

# Incident counts and coordinate sums per cell of the tile clustering grids (issue 22,
# migration 0019), kept by statement triggers on incident: per zoom (0-11) and category,
# and per month (in incident_tile_zone's time zone) at a few zooms. Read by
# app.sql.tiles.tile_cells for low-zoom incident tiles.
incident_tile_cell = Table(
    "incident_tile_cell",
    metadata,
    Column("z", SmallInteger, nullable=False),
    Column("cx", Integer, nullable=False),
    Column("cy", Integer, nullable=False),
    Column("category", Text, nullable=False),
    Column("n", Integer, nullable=False),
    Column("sum_lon", Float, nullable=False),
    Column("sum_lat", Float, nullable=False),
    # No unique key: a key's rows are signed deltas until compacted (migration 0019).
    Index("ix_incident_tile_cell_key", "z", "cx", "cy", "category"),
)
incident_tile_month = Table(
    "incident_tile_month",
    metadata,
    Column("z", SmallInteger, nullable=False),
    Column("cx", Integer, nullable=False),
    Column("cy", Integer, nullable=False),
    Column("category", Text, nullable=False),
    Column("month", Date, nullable=False),
    Column("n", Integer, nullable=False),
    Column("sum_lon", Float, nullable=False),
    Column("sum_lat", Float, nullable=False),
    Index("ix_incident_tile_month_key", "z", "cx", "cy", "category", "month"),
)
incident_tile_zone = Table(
    "incident_tile_zone",
    metadata,
    Column("one", Boolean, primary_key=True, server_default=text("true")),
    Column("timezone", Text, nullable=False),
    CheckConstraint("one", name="one_row"),
)
