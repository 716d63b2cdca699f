"""The layers the service publishes (OGC API Features collections and vector tiles).

Every layer is declared here, in code: a table (or join), its geometry, its feature id,
its properties, the rows it shows and the role it needs. The features and tiles routers
only read these declarations, so adding a layer is one declaration, never a new router,
and a table that is not declared here (victims' data above all) is never reachable.

Some layers come in families that follow the data: one layer per loaded admin level
(with the latest value of every composite index defined on that level) and one per
completed hot spot run. :func:`build_catalog` expands them against the database.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from sqlalchemy import (
    ColumnElement,
    Float,
    FromClause,
    Integer,
    Select,
    Text,
    column,
    func,
    literal,
    literal_column,
    select,
)
from sqlalchemy.dialects.postgresql import JSONB, array
from sqlalchemy.ext.asyncio import AsyncConnection

from app.models import (
    admin_unit,
    alert,
    analysis_cell,
    analysis_run,
    category,
    incident,
    risk_zone,
)

log = logging.getLogger("observatory")

JsonType = Literal["string", "integer", "number", "boolean", "date-time", "array", "object"]
StyleKind = Literal["units", "hotspots", "incidents", "alerts", "risk_zones"]


@dataclass(frozen=True)
class Field:
    """One property of a layer's features: its name, SQL expression and JSON type."""

    name: str
    expr: ColumnElement[Any]
    type: JsonType = "string"
    description: str = ""
    # Usable in simple property filters and CQL2 (arrays and objects are not).
    queryable: bool = True
    # Encoded into vector tiles (large JSON fields stay out of tiles).
    in_tiles: bool = True
    # The least role that sees the value; below it the key is there with null.
    role: str | None = None
    # Values are lowercase codes: a filter's value is lowercased (category=Homicide).
    lowercase: bool = False
    # A closed vocabulary: a filter on another value is a 400 that names these.
    values: tuple[str, ...] = ()


@dataclass(frozen=True)
class Parameter:
    """A named filter of a layer beside ``name=value`` on a property: a bound on one
    (``occurred_from``, ``age_min``) or the unit that holds a feature (``unit``). Every
    door of the layer takes it (items, tiles, and ``/incidents`` for the incidents),
    parsed once (``app.ogc.filters``); a caller who does not see ``field`` may not use it.
    """

    name: str
    # The property whose values it reads.
    field: str
    type: JsonType
    condition: Callable[[Any], ColumnElement[bool]]
    description: str = ""
    minimum: int | None = None
    maximum: int | None = None
    # The parameter this one may not exceed (age_min <= age_max).
    not_above: str | None = None
    # A value must name a row of this query (a unit code), else a 400 says so.
    lookup: Callable[[Any], Select] | None = None


@dataclass(frozen=True)
class TileOptions:
    """How a layer's vector tiles are made: zoom range, point clusters, size bounds."""

    minzoom: int = 0
    maxzoom: int = 22
    # Below this zoom, points are aggregated into clusters (one feature per grid cell
    # with its count); None: never. Polygons are never aggregated.
    cluster_below: int | None = None
    # The most features one tile carries; the rest are left out.
    max_features: int = 50_000
    # Simplification grid of ST_AsMVTGeom (the tile's 4096-unit extent).
    extent: int = 4096
    buffer: int = 64


@dataclass(frozen=True)
class Layer:
    """A published layer: one OGC API Features collection and one vector tile source."""

    id: str
    title: str
    description: str
    source: FromClause
    geom: ColumnElement[Any]
    feature_id: ColumnElement[Any]
    id_type: Literal["integer", "string"]
    geometry_type: Literal["Point", "MultiPolygon", "Polygon"]
    fields: tuple[Field, ...]
    style: StyleKind
    # Rows the layer shows (fixed conditions: live incidents, one level, one run).
    where: tuple[ColumnElement[bool], ...] = ()
    # The property that the ``datetime`` parameter filters on (None: no temporal extent).
    datetime_field: str | None = None
    # The least role that may read the layer; None: public.
    role: str | None = None
    tiles: TileOptions = field(default_factory=TileOptions)
    keywords: tuple[str, ...] = ()
    # Named filters beside the properties (``Parameter``).
    parameters: tuple[Parameter, ...] = ()

    def field(self, name: str) -> Field | None:
        """The field called ``name``, or None."""
        return next((f for f in self.fields if f.name == name), None)

    @property
    def queryables(self) -> tuple[Field, ...]:
        """The fields a filter may name (before the caller's role is applied)."""
        return tuple(f for f in self.fields if f.queryable)


# --- incidents (analysts and above) ------------------------------------------------------


def _unit_id(code: Any) -> Select:
    return select(admin_unit.c.id).where(admin_unit.c.code == code)


def _in_unit(code: Any) -> ColumnElement[bool]:
    # The unit's id as a subquery: the statement stays one (cached per filters), and
    # the GIN index on unit_ids still serves it (the subquery runs once, first).
    return incident.c.unit_ids.contains(array([_unit_id(code).scalar_subquery()]))


def _unit_codes(fast: int = 4) -> str:
    """SQL: the codes of the units that hold an incident, country first (``unit_ids`` is
    stored in level order, ``app.sql.units``), as a JSON array.

    The id -> code map is built once per statement (an InitPlan) and looked up per id,
    by position for up to ``fast`` levels (a territory's usual country, districts,
    constituencies and localities), through ``unnest`` beyond. A join to admin_unit per
    feature cost ~6 ms a page of 1,000 features and ``unnest`` for all ~3 ms; this adds
    nothing measurable to the page."""
    codes = "(SELECT jsonb_object_agg(u.id, u.code) FROM admin_unit u)"
    arms = " ".join(
        f"WHEN {n} THEN json_build_array("
        + ", ".join(f"{codes} ->> (incident.unit_ids[{k}])::text" for k in range(1, n + 1))
        + ")"
        for n in range(fast + 1)
    )
    every = f"to_json(ARRAY(SELECT {codes} ->> x::text FROM unnest(incident.unit_ids) AS x))"
    return f"CASE coalesce(cardinality(incident.unit_ids), 0) {arms} ELSE {every} END"


def incidents_layer() -> Layer:
    """The incidents: the one declaration behind ``/collections/incidents``, its tiles
    and ``GET /incidents`` (a view of this layer: the same filters and features)."""
    c = incident.c
    # Tiles carry what a map shows on a click; the full record is one items request away
    # (a z14 tile over Belize City holds ~10,000 points).
    fields = (
        Field("source", c.source, in_tiles=False),
        Field("source_id", c.source_id, in_tiles=False),
        Field("category", c.category, lowercase=True),
        Field("occurred_at", c.occurred_at, "date-time", "When it happened (UTC)."),
        Field(
            "reported_at", c.reported_at, "date-time", "When it was reported (UTC).", in_tiles=False
        ),
        Field("location_precision", c.location_precision, in_tiles=False),
        Field("victim_sex", c.victim_sex, lowercase=True, values=("female", "male", "unknown")),
        Field("weapon", c.weapon),
        Field("perpetrator_relation", c.perpetrator_relation, in_tiles=False),
        Field("victim_age", c.victim_age, "integer", "Age of the victim in years."),
        Field("victims_count", c.victims_count, "integer", "Number of victims."),
        Field("attributes", c.attributes, "object", queryable=False, in_tiles=False),
        Field("created_at", c.created_at, "date-time", in_tiles=False),
        Field("updated_at", c.updated_at, "date-time", in_tiles=False),
        Field(
            "units",
            literal_column(_unit_codes()),
            "array",
            "Codes of the admin units that hold it, country first (the unit parameter).",
            queryable=False,
            in_tiles=False,
        ),
    )
    local = "; without a zone, local time of the territory (2024-01-01)"
    parameters = (
        Parameter(
            "occurred_from", "occurred_at", "date-time", lambda v: c.occurred_at >= v,
            f"occurred at or after (inclusive){local}",
        ),
        Parameter(
            "occurred_to", "occurred_at", "date-time", lambda v: c.occurred_at < v,
            f"occurred before (exclusive){local}",
        ),
        Parameter(
            "age_min", "victim_age", "integer", lambda v: c.victim_age >= v,
            "victim aged at least (years)", minimum=0, maximum=120, not_above="age_max",
        ),
        Parameter(
            "age_max", "victim_age", "integer", lambda v: c.victim_age <= v,
            "victim aged at most (years)", minimum=0, maximum=120,
        ),
        Parameter(
            "unit", "units", "string", _in_unit,
            "in this admin unit: a code of any level (BZ-CY)", lookup=_unit_id,
        ),
    )  # fmt: skip
    return Layer(
        id="incidents",
        title="Incidents",
        description="Georeferenced incidents (points). Analysts and above only: point "
        "locations and victim attributes are never public.",
        source=incident,
        geom=c.geom,
        feature_id=c.id,
        id_type="integer",
        geometry_type="Point",
        fields=fields,
        style="incidents",
        where=(c.deleted_at.is_(None),),
        datetime_field="occurred_at",
        role="analyst",
        tiles=TileOptions(minzoom=0, maxzoom=22, cluster_below=12, max_features=20_000),
        keywords=("incidents", "crime", "points"),
        parameters=parameters,
    )


# --- admin units, one layer per level, with the latest composite index values ---------

LEVEL_TITLES = {0: "Country", 1: "Districts", 2: "Constituencies", 3: "Localities"}


@dataclass(frozen=True)
class IndexColumn:
    """The latest values of one composite index, as properties of its level's units."""

    code: str
    title: str
    period: str
    version: int
    # unit code -> (score, rank, class)
    values: dict[str, tuple[float | None, int | None, int | None]]

    @property
    def prefix(self) -> str:
        """The index code as the start of a property name (``-`` is ``_``)."""
        return self.code.replace("-", "_")


def units_layer(level: int, indexes: tuple[IndexColumn, ...] = ()) -> Layer:
    """The admin units of one level, with the latest values of ``indexes`` as
    properties (``<code>_score``, ``_rank``, ``_class``, ``_period``)."""
    c = admin_unit.c
    parent = admin_unit.alias("parent")
    source: FromClause = admin_unit.outerjoin(parent, parent.c.id == c.parent_id)
    fields = [
        Field("code", c.code, description="Unit code (ISO 3166-2 for districts)."),
        Field("name", c.name),
        Field("level", c.level, "integer", "0 country, 1 district, 2 …"),
        Field("parent_code", parent.c.code, description="Code of the enclosing unit."),
        Field("area_km2", c.area_km2, "number", "Area in square kilometres."),
    ]
    for index in indexes:
        if not index.values:
            continue
        # One JSON parameter rather than a VALUES list of 4 parameters a unit: a tile is
        # planned on every request (custom plans), and 48 parameters cost 3 ms to plan.
        rows = [
            {"code": code, "score": score, "rank": rank, "class": klass}
            for code, (score, rank, klass) in index.values.items()
        ]
        table = (
            func.jsonb_to_recordset(literal(rows, JSONB))
            .table_valued(
                column("code", Text),
                column("score", Float),
                column("rank", Integer),
                column("class", Integer),
            )
            .render_derived(name=f"ix_{index.prefix}", with_types=True)
        )
        source = source.outerjoin(table, table.c.code == c.code)
        p = index.prefix
        fields += [
            Field(f"{p}_score", table.c.score, "number", f"{index.title}: score (0-100)."),
            Field(f"{p}_rank", table.c.rank, "integer", f"{index.title}: rank (1 = highest)."),
            Field(f"{p}_class", table.c["class"], "integer", f"{index.title}: map class."),
            Field(
                f"{p}_period",
                literal(index.period, Text),
                description=f"{index.title}: period of these values (version {index.version}).",
            ),
        ]
    title = LEVEL_TITLES.get(level, f"Admin units, level {level}")
    return Layer(
        id=f"units-{level}",
        title=title,
        description=f"Administrative units of level {level} ({title.lower()}), "
        "with the latest value of every composite index defined on this level.",
        source=source,
        geom=c.geom,
        feature_id=c.code,
        id_type="string",
        geometry_type="MultiPolygon",
        fields=tuple(fields),
        style="units",
        where=(c.level == level,),
        tiles=TileOptions(minzoom=0, maxzoom=16, max_features=100_000),
        keywords=("boundaries", "admin units"),
    )


# --- hot spot runs, one layer per completed run -------------------------------------------


def hotspot_layer(
    run_id: int,
    kind: str,
    method: str,
    created_at: Any,
    parameters: dict,
    sensitive: frozenset[str] = frozenset(),
) -> Layer:
    """A stored hot spot or emerging hot spot run.

    Public only when its category filter leaves out every sensitive category (a run over
    all categories counts them too), and then only its classes (bin, label, category):
    Gi* z is linear in the cell counts and the weights follow from the public cells, so
    z, p and the Local Moran values stay with analysts, as do the counts."""
    categories = set((parameters.get("filters") or {}).get("categories") or ())
    public = bool(categories) and not categories & sensitive
    analyst = "analyst"
    c = analysis_cell.c
    units = parameters.get("units")
    grid = units.get("type", "cells") if isinstance(units, dict) else "cells"
    fields = (
        Field("cell_id", c.cell_id, description="H3 index, grid cell or unit code."),
        Field("count", c.count, "number", "Incidents (or victims) in the cell.", role=analyst),
        Field("z", c.z, "number", "Gi* z-score (or Local Moran z).", role=analyst),
        Field("p", c.p, "number", "Two-sided p-value.", role=analyst),
        Field("p_sim", c.p_sim, "number", "Pseudo p-value from permutations.", role=analyst),
        Field(
            "bin",
            c.bin,
            "integer",
            "Gi_Bin: +3/+2/+1 hot spot at 99/95/90 % confidence, -3/-2/-1 cold, 0 none.",
        ),
        Field("i", c.i, "number", "Local Moran's I.", role=analyst),
        Field(
            "quadrant",
            c.quadrant,
            "integer",
            "Local Moran quadrant: 1 HH, 2 LH, 3 LL, 4 HL.",
            role=analyst,
        ),
        Field("label", c.label, description="Cluster label (HH, LL, LH, HL) where significant."),
        Field("category", c.category, description="Emerging hot spot category."),
        Field("stats", c.stats, "object", queryable=False, in_tiles=False, role=analyst),
    )
    what = "Emerging hot spots" if kind == "emerging" else "Hot spots"
    return Layer(
        id=f"hotspots-{run_id}",
        title=f"{what}, run {run_id} ({method}, {grid})",
        description=f"Analysis run {run_id}: {method} on {grid} units, created "
        f"{created_at:%Y-%m-%d %H:%M} UTC. Its parameters and filters: "
        f"/analyses/{run_id}?format=run.",
        source=analysis_cell,
        geom=c.geom,
        feature_id=c.cell_id,
        id_type="string",
        geometry_type="Polygon",
        fields=fields,
        style="hotspots",
        where=(c.run_id == run_id,),
        role=None if public else analyst,
        tiles=TileOptions(minzoom=0, maxzoom=18, max_features=200_000),
        keywords=("hot spots", method),
    )


# --- early-warning alerts (issue 19) ---------------------------------------------------------

ALERT_STATES = ("new", "acknowledged", "closed")


def alerts_layer(*, sensitive: bool) -> Layer:
    """The alerts of the monitors (``alerts``: public, non-sensitive monitors;
    ``alerts-sensitive``: analysts only). A unit's alert is drawn with the unit's outline,
    a group of H3 cells with its own; never a point. Counts (observed, expected,
    threshold) are for analysts: the public sees where and since when, not how many."""
    a = alert.c
    unit = admin_unit.alias("alert_unit")
    analyst = "analyst"
    fields = (
        Field("monitor", a.monitor, description="The monitor's code (GET /monitors)."),
        Field("period", a.period, description="The latest period alarmed (2025-W51, 2025-12)."),
        Field("first_period", a.first_period, description="The period the alert was raised."),
        Field("lasted", a.lasted, "integer", "Consecutive alarmed periods up to `period`."),
        Field("state", a.state, description="new, acknowledged or closed.", values=ALERT_STATES),
        Field("unit_code", a.unit_code, description="The unit (alerts on units)."),
        Field("cells", func.array_length(a.cells, 1), "integer", "H3 cells of the group."),
        Field("observed", a.observed, "number", "Incidents in the period.", role=analyst),
        Field("expected", a.expected, "number", "Expected incidents.", role=analyst),
        Field("threshold", a.threshold, "number", "Upper threshold.", role=analyst),
    )
    which = "sensitive monitors (analysts only)" if sensitive else "non-sensitive monitors"
    return Layer(
        id="alerts-sensitive" if sensitive else "alerts",
        title="Alerts, sensitive monitors" if sensitive else "Alerts",
        description=f"Early-warning alerts of the {which}: places whose count rose above "
        "the threshold of their monitor's detector. GET /alerts/{id} gives the series.",
        source=alert.outerjoin(unit, unit.c.code == a.unit_code),
        geom=func.coalesce(a.geom, unit.c.geom),
        feature_id=a.id,
        id_type="integer",
        geometry_type="MultiPolygon",
        fields=fields,
        style="alerts",
        where=(a.sensitive.is_(sensitive),),
        role=analyst if sensitive else None,
        tiles=TileOptions(minzoom=0, maxzoom=18, max_features=50_000),
        keywords=("early warning", "alerts"),
    )


# --- near-repeat risk zones (issue 19) ------------------------------------------------------


def risk_zones_layer(*, exact: bool) -> Layer:
    """The live near-repeat risk zones (``app.services.near_repeat``): only zones whose
    window is open now (expired ones are never served).

    ``risk_zones`` is public and holds the zones of runs over non-sensitive categories
    only, each drawn without its incident's point: the grid square that holds the
    incident grown by the zone's distance, with the day it expires. ``risk_zones-exact``
    (analysts) holds every zone as the disc around its incident, with the incident's id
    and category and the zone's window to the second."""
    z = risk_zone.c
    now = func.now()
    run = analysis_run.c
    # A run's zones show once it has completed (a cancelled or failed one's never).
    live = (
        z.valid_from <= now,
        z.valid_to > now,
        incident.c.deleted_at.is_(None),
        run.status == "completed",
    )
    common = (
        Field("run_id", z.run_id, "integer", "The near-repeat run (GET /analyses/{run_id})."),
        Field("distance_m", z.distance_m, "number", "The zone's significant distance (m)."),
        Field("days", z.days, "number", "The zone's significant time window (days)."),
    )
    source = risk_zone.join(incident, incident.c.id == z.incident_id).join(
        analysis_run, run.id == z.run_id
    )
    keywords = ("near repeat", "risk zones", "early warning")
    if not exact:
        expires = func.to_char(func.timezone("UTC", z.valid_to), "YYYY-MM-DD")
        return Layer(
            id="risk_zones",
            title="Near-repeat risk zones",
            description="Where near-repeat analyses (Knox test) found the risk raised after "
            "an incident, while it lasts: for each recent incident of a non-sensitive "
            "category, the 500 m grid square (or larger) that holds it, grown by the "
            "significant distance. No incident point is shown.",
            source=source,
            geom=z.public_geom,
            feature_id=z.id,
            id_type="integer",
            geometry_type="Polygon",
            fields=(*common, Field("expires", expires, description="UTC day it expires.")),
            style="risk_zones",
            where=(*live, z.sensitive.is_(False)),
            tiles=TileOptions(minzoom=0, maxzoom=16, max_features=50_000),
            keywords=keywords,
        )
    return Layer(
        id="risk_zones-exact",
        title="Near-repeat risk zones (exact)",
        description="Every live near-repeat risk zone as the disc of the significant "
        "distance around its incident, valid for the significant time after it. Analysts "
        "only: the disc's centre is the incident's point.",
        source=source,
        geom=z.geom,
        feature_id=z.id,
        id_type="integer",
        geometry_type="Polygon",
        fields=(
            *common,
            Field("incident_id", z.incident_id, "integer", "The incident."),
            Field("category", incident.c.category, lowercase=True),
            Field("sensitive", z.sensitive, "boolean", "From a run over sensitive categories."),
            Field("valid_from", z.valid_from, "date-time", "The incident's time (UTC)."),
            Field("valid_to", z.valid_to, "date-time", "When the zone expires (UTC)."),
        ),
        style="risk_zones",
        where=live,
        datetime_field="valid_from",
        role="analyst",
        tiles=TileOptions(minzoom=0, maxzoom=18, max_features=50_000),
        keywords=keywords,
    )


# --- the catalog ----------------------------------------------------------------------------

# How many of the most recent hot spot runs are published as layers.
MAX_RUN_LAYERS = 50


async def build_catalog(
    conn: AsyncConnection, index_columns: dict[int, tuple[IndexColumn, ...]] | None = None
) -> dict[str, Layer]:
    """Every layer, in the order the collections list shows them."""
    index_columns = index_columns or {}
    levels = (
        await conn.execute(select(admin_unit.c.level).distinct().order_by(admin_unit.c.level))
    ).scalars()
    layers = [units_layer(level, index_columns.get(level, ())) for level in levels]
    layers.append(incidents_layer())
    # An alerts layer once it has an alert (a collection needs an extent).
    kinds = set((await conn.execute(select(alert.c.sensitive).distinct())).scalars())
    layers += [alerts_layer(sensitive=k) for k in (False, True) if k in kinds]
    # Risk-zone layers once a zone is live (the public one: a non-sensitive zone).
    z = risk_zone.c
    live = (
        await conn.execute(select(z.sensitive).where(z.valid_to > func.now()).distinct())
    ).scalars()
    live_kinds = set(live)
    if live_kinds:
        layers.append(risk_zones_layer(exact=True))
    if False in live_kinds:
        layers.append(risk_zones_layer(exact=False))
    r = analysis_run.c
    runs = await conn.execute(
        select(r.id, r.kind, r.method, r.created_at, r.parameters)
        .where(r.kind.in_(("hotspots", "emerging")), r.status == "completed")
        .order_by(r.id.desc())
        .limit(MAX_RUN_LAYERS)
    )
    sensitive = frozenset(
        (await conn.execute(select(category.c.code).where(category.c.sensitive))).scalars()
    )
    layers += [hotspot_layer(*run, sensitive=sensitive) for run in runs]
    return {layer.id: layer for layer in layers}


def bbox_of(layer: Layer) -> ColumnElement[Any]:
    """SQL: the extent of a layer's rows (for collection metadata)."""
    return select(func.ST_Extent(layer.geom)).select_from(layer.source).where(*layer.where)
