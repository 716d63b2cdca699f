"""``observatory``: everything an administrator does from a shell."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from app.core.settings import Settings, get_settings

T = TypeVar("T")
console = Console()
cli = typer.Typer(help="Crime observatory: PostGIS store, analyses and map services.")
db_cli = typer.Typer(help="The private PostgreSQL + PostGIS cluster.")
import_cli = typer.Typer(help="Load boundaries, incidents, populations, indicators, categories.")
keys_cli = typer.Typer(
    help="API keys and their roles (viewer < analyst < editor < admin; linker: an analyst "
    "who also reads the deaths' identifiers)."
)
cli.add_typer(db_cli, name="db")
cli.add_typer(import_cli, name="import")
cli.add_typer(keys_cli, name="keys")
index_cli = typer.Typer(help="Composite indexes: compute a ranking from a stored definition.")
cli.add_typer(index_cli, name="index")

CLI_ACTOR = f"cli:{os.environ.get('USER', 'admin')}"
FileArg = Annotated[Path, typer.Argument(exists=True, dir_okay=False, readable=True)]


def _with_engine(fn: Callable[[Any], Awaitable[T]], settings: Settings | None = None) -> T:
    from app.core.db import create_engine

    async def run() -> T:
        engine = create_engine(settings or get_settings())
        try:
            return await fn(engine)
        finally:
            await engine.dispose()

    return asyncio.run(run())


def _fail(message: str) -> None:
    console.print(f"[red]error:[/red] {message}")
    raise typer.Exit(1)


def _guard(fn: Callable[[], T]) -> T:
    """Turn the service's expected errors into one clear line and exit code 1."""
    from sqlalchemy.exc import OperationalError, ProgrammingError

    from app.core.errors import ProblemError
    from app.core.settings import NoPrivateCluster
    from app.services.backup import BackupError
    from boundaries import BoundaryError

    try:
        return fn()
    except (ProblemError, BoundaryError, NoPrivateCluster, BackupError) as exc:
        console.print(f"[red]error:[/red] {getattr(exc, 'detail', None) or str(exc)}")
        # Files checked whole list every bad row (categories, population, indicators).
        for row in getattr(exc, "extra", {}).get("rows", []):
            code = f" ({row['code']})" if row.get("code") else ""
            console.print(f"  row {row['row']}{code}: {row['reason']}")
        raise typer.Exit(1) from None
    except ProgrammingError as exc:
        if exc.orig.__class__.__name__ == "UndefinedTable":
            _fail("the database schema is out of date: run `observatory migrate`")
        raise
    except OperationalError as exc:
        from app.core.errors import transaction_conflict

        if transaction_conflict(exc):  # psycopg files deadlocks as operational errors too
            _fail("another session wrote the same rows at the same time (deadlock): run it again")
        _fail(
            f"the database is not reachable ({exc.orig.__class__.__name__}): start it with "
            "`observatory db start`, or check OBSERVATORY_DATABASE_URL"
        )
        raise


# -- database ----------------------------------------------------------------------------


@db_cli.command("start")
def db_start() -> None:
    """Create (first time) and start the private cluster on 127.0.0.1."""
    from app.core.cluster import Cluster

    settings = get_settings()
    if not settings.uses_private_cluster:
        _fail("OBSERVATORY_DATABASE_URL is set: the database is managed elsewhere")
    cluster = Cluster(settings.database)
    _guard(cluster.start)
    console.print(f"PostgreSQL {cluster.status()}")


@db_cli.command("stop")
def db_stop() -> None:
    """Stop the private cluster."""
    from app.core.cluster import Cluster

    cluster = Cluster(get_settings().database)
    cluster.stop()
    console.print(f"PostgreSQL {cluster.status()}")


@db_cli.command("status")
def db_status() -> None:
    """Say whether the private cluster exists and runs."""
    from app.core.cluster import Cluster

    settings = get_settings()
    if not settings.uses_private_cluster:
        console.print("external database (OBSERVATORY_DATABASE_URL)")
        return
    console.print(f"PostgreSQL {Cluster(settings.database).status()}")


@cli.command()
def migrate() -> None:
    """Create or upgrade the schema (PostGIS extension, tables, indexes)."""
    from app.core.migrate import upgrade

    upgrade(get_settings().sqlalchemy_url)
    console.print("database schema is up to date")


# -- imports -----------------------------------------------------------------------------


@import_cli.command("boundaries")
def import_boundaries_cmd(
    file: FileArg,
    level: Annotated[int, typer.Option(help="0 country, 1 district, 2 …")],
    code_field: Annotated[str, typer.Option(help="field holding the unit code")] = "code",
    name_field: Annotated[str, typer.Option(help="field holding the unit name")] = "name",
    parent_field: Annotated[str | None, typer.Option(help="field with the parent code")] = None,
    layer: Annotated[str | None, typer.Option(help="GeoPackage layer")] = None,
    replace: Annotated[
        bool, typer.Option(help="delete units of this level missing from the file")
    ] = False,
) -> None:
    """Load GeoJSON, GeoPackage or zipped Shapefile boundaries (any CRS)."""
    from app.services.boundaries import import_boundaries

    settings = get_settings()
    report = _guard(
        lambda: _with_engine(
            lambda engine: import_boundaries(
                engine,
                file,
                level=level,
                code_field=code_field,
                name_field=name_field,
                parent_field=parent_field,
                layer=layer,
                actor=CLI_ACTOR,
                replace=replace,
                tolerance_m=settings.territory.tolerance_m,
            )
        )
    )
    _print_report(report)


@import_cli.command("incidents")
def import_incidents_cmd(
    file: FileArg,
    source: Annotated[
        str | None, typer.Option(help="reporting agency, if no source column")
    ] = None,
    format: Annotated[str | None, typer.Option(help="csv, geojson or gpkg")] = None,
    crs: Annotated[str | None, typer.Option(help="CRS of the coordinates")] = None,
    map: Annotated[
        list[str] | None, typer.Option(help="OURS=THEIRS column mapping, repeatable")
    ] = None,
    delimiter: str = ",",
    encoding: str = "utf-8",
    layer: Annotated[str | None, typer.Option(help="GeoPackage layer")] = None,
    set_: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            help="COLUMN=VALUE for every row without one, e.g. category=shooting; repeatable",
        ),
    ] = None,
) -> None:
    """Import incidents from CSV, GeoJSON or GeoPackage: idempotent, lossless, one batch."""
    from app.services.imports import import_incidents
    from app.services.incident_rows import ReadOptions

    columns = _pairs(map, "--map", "OURS=THEIRS")
    constants = _pairs(set_, "--set", "COLUMN=VALUE")
    options = _guard(
        lambda: ReadOptions(
            source=source,
            format=format,
            columns=columns,
            crs=crs,
            layer=layer,
            delimiter=delimiter,
            encoding=encoding,
            constants=constants,
        )
    )
    settings = get_settings()
    with _progress() as progress:
        report = _guard(
            lambda: _with_engine(
                lambda engine: import_incidents(
                    engine, settings, file, options, actor=CLI_ACTOR, progress=progress
                )
            )
        )
    _print_report(report)
    if report.rejected:
        console.print(
            f"{report.rejected} rejected rows: GET /imports/{report.batch_id}/rejections.csv"
        )


@import_cli.command("deaths")
def import_deaths_cmd(
    file: FileArg,
    source: Annotated[
        str | None, typer.Option(help="the agency (police, forensic, health), if no source column")
    ] = None,
    format: Annotated[str | None, typer.Option(help="csv, geojson or gpkg")] = None,
    crs: Annotated[str | None, typer.Option(help="CRS of the coordinates")] = None,
    map: Annotated[
        list[str] | None, typer.Option(help="OURS=THEIRS column mapping, repeatable")
    ] = None,
    delimiter: str = ",",
    encoding: str = "utf-8",
    layer: Annotated[str | None, typer.Option(help="GeoPackage layer")] = None,
) -> None:
    """Import one agency's death records (issue 21): lossless, one batch; names hashed
    when linkage.hash_names is on. Then `observatory link`."""
    from app.services.death_imports import import_deaths
    from app.services.incident_rows import ReadOptions

    columns = _pairs(map, "--map", "OURS=THEIRS")
    options = _guard(
        lambda: ReadOptions(
            source=source, format=format, columns=columns, crs=crs, layer=layer,
            delimiter=delimiter, encoding=encoding,
        )
    )  # fmt: skip
    settings = get_settings()
    report = _guard(
        lambda: _with_engine(
            lambda engine: import_deaths(engine, settings, file, options, actor=CLI_ACTOR)
        )
    )
    _print_report(report)
    if report.rejected:
        console.print(
            f"{report.rejected} rejected rows: GET /imports/{report.batch_id}/rejections.csv"
        )


def _pairs(items: list[str] | None, option: str, form: str) -> dict[str, str]:
    """``NAME=VALUE`` options as a mapping (names and values trimmed)."""
    pairs = {}
    for item in items or []:
        name, sep, value = item.partition("=")
        if not sep:
            _fail(f"{option} needs {form} (got {item!r})")
        pairs[name.strip()] = value.strip()
    return pairs


@import_cli.command("population")
def import_population_cmd(file: FileArg) -> None:
    """Denominators: long CSV unit_code, year, sex, age_group, value, source."""
    from app.services.tables import import_population

    _print_report(
        _guard(lambda: _with_engine(lambda e: import_population(e, file, actor=CLI_ACTOR)))
    )


@import_cli.command("indicators")
def import_indicators_cmd(file: FileArg) -> None:
    """External indicators: long CSV unit_code, period, indicator, sex, age_group, value, source."""
    from app.services.tables import import_indicators

    _print_report(
        _guard(lambda: _with_engine(lambda e: import_indicators(e, file, actor=CLI_ACTOR)))
    )


@import_cli.command("categories")
def import_categories_cmd(
    file: FileArg,
    replace: Annotated[
        bool, typer.Option(help="delete the stored categories the file lacks (if unused)")
    ] = False,
) -> None:
    """Category vocabulary: CSV code, name, category_group, sensitive, description.
    Upserts by code (POST /categories does the same); a change is a new, audited version."""
    from app.services.categories import load_categories

    report = _guard(
        lambda: _with_engine(lambda e: load_categories(e, file, actor=CLI_ACTOR, replace=replace))
    )
    _print_report(report)


# -- keys --------------------------------------------------------------------------------


@keys_cli.command("create")
def keys_create(
    role: Annotated[str, typer.Option(help="viewer, analyst, editor, admin, or linker")],
    name: Annotated[str, typer.Option(help="who or what uses the key")] = "unnamed",
) -> None:
    """Create a key; it is shown once and stored hashed."""
    from app.services.keys import create_key

    key = _guard(
        lambda: _with_engine(lambda e: create_key(e, role=role, name=name, actor=CLI_ACTOR))
    )
    console.print(f"{role} key for {name!r} (shown once):")
    print(key)


@keys_cli.command("list")
def keys_list(
    all_keys: Annotated[bool, typer.Option("--all", help="also revoked keys")] = False,
) -> None:
    """List keys with their last use (never their secrets)."""
    from app.services.keys import list_keys

    rows = _guard(lambda: _with_engine(list_keys))
    table = Table("id", "name", "prefix", "role", "created", "last used", "revoked")
    for r in rows:
        if r.revoked_at is not None and not all_keys:
            continue
        table.add_row(
            str(r.id), r.name, r.prefix, r.role, _when(r.created_at),
            _when(r.last_used_at) or "never", _when(r.revoked_at),
        )  # fmt: skip
    console.print(table)
    if not all_keys:
        console.print("[dim]revoked keys hidden; --all shows them[/dim]")


@keys_cli.command("rotate")
def keys_rotate(key_id: int) -> None:
    """Replace a key by a new one with the same name and role; the old key stops working
    at once. The new secret is shown once."""
    from app.services.keys import rotate_key

    new_id, key = _guard(lambda: _with_engine(lambda e: rotate_key(e, key_id, actor=CLI_ACTOR)))
    console.print(f"key {key_id} revoked; its replacement is key {new_id} (shown once):")
    print(key)


@keys_cli.command("revoke")
def keys_revoke(key_id: int) -> None:
    """Revoke a key by id; requests with it get 401 from now on."""
    from app.services.keys import revoke_key

    _guard(lambda: _with_engine(lambda e: revoke_key(e, key_id, actor=CLI_ACTOR)))
    console.print(f"key {key_id} revoked")


def _when(moment: Any) -> str:
    """A timestamp to the minute in UTC ('' for none): last use is recorded per minute."""
    return "" if moment is None else moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


# -- backups -----------------------------------------------------------------------------


@cli.command()
def backup(
    file: Annotated[Path, typer.Argument(dir_okay=False, help="archive to write")],
) -> None:
    """Write the whole database to FILE (pg_dump custom format, compressed)."""
    from app.services.backup import backup_database

    summary = _guard(lambda: backup_database(get_settings(), file))
    console.print(
        f"backup written to {file} ({summary.size_bytes:,} bytes, {summary.tables} tables)"
    )


@cli.command()
def restore(
    file: FileArg,
    yes: Annotated[bool, typer.Option("--yes", help="do not ask for confirmation")] = False,
) -> None:
    """Replace the database's tables by those in FILE (made by `observatory backup`).
    One transaction: a restore that fails leaves the database as it was."""
    from app.services.backup import restore_database

    settings = get_settings()
    if not yes:
        typer.confirm(
            f"Replace every table of the database with the contents of {file}?", abort=True
        )
    summary = _guard(lambda: restore_database(settings, file))
    console.print(f"restored {summary.tables} tables from {file}")
    console.print("[dim]run `observatory migrate` if the backup is older than this version[/dim]")


# -- analyses ----------------------------------------------------------------------------


@cli.command()
def hotspots(
    output: Annotated[Path, typer.Option("--output", "-o", help="result: .geojson or .csv")],
    method: Annotated[str, typer.Option(help="gi_star or local_moran")] = "gi_star",
    units: Annotated[str, typer.Option(help="h3, grid or admin")] = "h3",
    resolution: Annotated[int, typer.Option(help="H3 resolution")] = 8,
    cell_size: Annotated[float, typer.Option(help="grid cell side, metres")] = 1000,
    level: Annotated[int, typer.Option(help="admin level")] = 1,
    area: Annotated[str | None, typer.Option(help="unit code bounding the study area")] = None,
    cover: Annotated[
        str, typer.Option(help="study-area cells: center (+ cells with incidents) or intersects")
    ] = "center",
    weights: Annotated[
        str | None, typer.Option(help="queen, rook, h3, knn or distance_band")
    ] = None,
    k: Annotated[int, typer.Option(help="neighbours for knn")] = 8,
    distance: Annotated[float | None, typer.Option(help="band for distance_band, m")] = None,
    category: Annotated[list[str] | None, typer.Option(help="category code, repeatable")] = None,
    occurred_from: Annotated[str | None, typer.Option("--from", help="ISO date")] = None,
    occurred_to: Annotated[str | None, typer.Option("--to", help="ISO date, exclusive")] = None,
    sex: Annotated[list[str] | None, typer.Option(help="victim sex, repeatable")] = None,
    age_min: int | None = None,
    age_max: int | None = None,
    unit: Annotated[str | None, typer.Option(help="only incidents in this unit")] = None,
    victims: Annotated[bool, typer.Option(help="count victims, not incidents")] = False,
    permutations: Annotated[int, typer.Option(help="conditional permutations")] = 0,
    seed: Annotated[int | None, typer.Option(help="seed of the permutations")] = None,
    fdr: Annotated[bool, typer.Option(help="false discovery rate correction")] = False,
    bandwidth: Annotated[float | None, typer.Option(help="KDE search radius, m")] = None,
    kde_cell_size: Annotated[float | None, typer.Option(help="KDE cell side, m")] = None,
) -> None:
    """Hot spots of the filtered incidents: Gi*, Local Moran or optimized Gi* written as
    GeoJSON or CSV, or a kernel density surface when the output ends in .tif."""
    from pydantic import ValidationError

    from app.schemas.analyses import HotspotRequest
    from app.services.hotspots import run_hotspots, write_result
    from app.services.jobs import run_here

    unit_spec = {
        "h3": {"type": "h3", "resolution": resolution},
        "grid": {"type": "grid", "cell_size_m": cell_size},
        "admin": {"type": "admin", "level": level},
    }.get(units)
    if unit_spec is None:
        _fail("--units must be h3, grid or admin")
    try:
        request = HotspotRequest.model_validate(
            {
                "method": method,
                "units": unit_spec,
                "area": area,
                **({"cover": cover} if units != "admin" else {}),
                "weights": {"type": weights, "k": k, "distance_m": distance},
                "filters": {
                    "categories": category or [],
                    "occurred_from": occurred_from,
                    "occurred_to": occurred_to,
                    "victim_sex": sex or [],
                    "age_min": age_min,
                    "age_max": age_max,
                    "unit": unit,
                },
                "weight_by_victims": victims,
                "permutations": permutations,
                "seed": seed,
                "fdr": fdr,
            }
        )
    except ValidationError as exc:
        _fail("; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()))
    settings = get_settings()
    if output.suffix.lower() in (".tif", ".tiff"):
        _write_kde(settings, request, output, bandwidth, kde_cell_size)
        return

    async def run(engine):
        run_id = await run_here(
            engine, "hotspots", request.method, request.model_dump(mode="json"), CLI_ACTOR,
            lambda run_id, progress: run_hotspots(engine, settings, request, run_id, progress),
        )  # fmt: skip
        return run_id, await write_result(engine, run_id, output)

    run_id, summary = _guard(lambda: _with_engine(run))
    console.print(f"analysis run {run_id} written to {output}")
    _print_report(summary)


@cli.command()
def emerging(
    output: Annotated[Path, typer.Option("--output", "-o", help="result: .geojson or .csv")],
    units: Annotated[str, typer.Option(help="h3 or grid")] = "h3",
    resolution: Annotated[int, typer.Option(help="H3 resolution")] = 8,
    cell_size: Annotated[float, typer.Option(help="grid cell side, metres")] = 1000,
    area: Annotated[str | None, typer.Option(help="unit code bounding the study area")] = None,
    cover: Annotated[
        str, typer.Option(help="study-area cells: center (+ cells with incidents) or intersects")
    ] = "center",
    step: Annotated[str, typer.Option(help="week, month, quarter or year")] = "month",
    time_lag: Annotated[int, typer.Option(help="neighbourhood time steps")] = 1,
    category: Annotated[list[str] | None, typer.Option(help="category code, repeatable")] = None,
    occurred_from: Annotated[str | None, typer.Option("--from", help="ISO date")] = None,
    occurred_to: Annotated[str | None, typer.Option("--to", help="ISO date, exclusive")] = None,
    fdr: Annotated[bool, typer.Option(help="false discovery rate over all bins")] = False,
) -> None:
    """Emerging hot spots (ArcGIS Pro categories) of the filtered incidents."""
    from pydantic import ValidationError

    from app.schemas.analyses import EmergingRequest
    from app.services.emerging import run_emerging
    from app.services.hotspots import write_result
    from app.services.jobs import run_here

    unit_spec = {"h3": {"type": "h3", "resolution": resolution},
                 "grid": {"type": "grid", "cell_size_m": cell_size}}.get(units)  # fmt: skip
    if unit_spec is None:
        _fail("--units must be h3 or grid")
    try:
        request = EmergingRequest.model_validate(
            {
                "units": unit_spec,
                "area": area,
                "cover": cover,
                "time_step": step,
                "time_lag": time_lag,
                "fdr": fdr,
                "filters": {
                    "categories": category or [],
                    "occurred_from": occurred_from,
                    "occurred_to": occurred_to,
                },
            }
        )
    except ValidationError as exc:
        _fail("; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()))
    settings = get_settings()

    async def run(engine):
        run_id = await run_here(
            engine, "emerging", "space_time_gi_star", request.model_dump(mode="json"), CLI_ACTOR,
            lambda run_id, progress: run_emerging(engine, settings, request, run_id, progress),
        )  # fmt: skip
        return run_id, await write_result(engine, run_id, output)

    run_id, summary = _guard(lambda: _with_engine(run))
    console.print(f"analysis run {run_id} written to {output}")
    _print_report(summary)


def _write_kde(
    settings: Settings,
    request: Any,
    output: Path,
    bandwidth: float | None,
    cell_size: float | None,
) -> None:
    import shutil

    from app.schemas.surfaces import KdeQuery
    from app.services.surfaces import geotiff_file, kde_surface

    query = KdeQuery(
        filters=request.filters,
        bandwidth_m=bandwidth,
        cell_size_m=cell_size,
        victims=request.weight_by_victims,
    )
    surface = _guard(lambda: _with_engine(lambda e: kde_surface(e, settings, query)))
    written = geotiff_file(surface, settings.territory.projected_crs)
    shutil.move(written, output)
    console.print(
        f"kernel density ({surface.bandwidth:,.0f} m radius, {surface.cell_size:,.0f} m cells, "
        f"incidents per km²) written to {output} in {settings.territory.projected_crs}"
    )


@index_cli.command("compute")
def index_compute(
    name: Annotated[str, typer.Argument(help="index code, e.g. territorial-violence")],
    period: Annotated[str, typer.Option(help="period of the index, e.g. 2024")],
    version: Annotated[int | None, typer.Option(help="definition version (default latest)")] = None,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="also write CSV")] = None,
) -> None:
    """Compute an index for one period and print the ranking (1 = highest priority)."""
    from app.security import Principal
    from app.services.indexes import compute_results

    settings = get_settings()
    who = Principal(role="admin", name=CLI_ACTOR)

    async def run(engine):
        async with engine.connect() as conn:
            return await compute_results(conn, settings, who, name, period, version)

    results = _guard(lambda: _with_engine(run))
    table = Table(
        "rank", "unit", "score", "class", "change", "top contributors",
        title=f"{results.title or results.code} v{results.version}, {results.period}",
    )  # fmt: skip
    for row in results.rows:
        top = sorted(  # a contribution of 0 is "lowest unit on it": never listed as top
            ((k, v) for k, v in row.contributions.items() if v is not None and v > 0),
            key=lambda kv: kv[1],
            reverse=True,
        )[:3]
        table.add_row(
            str(row.rank),
            f"{row.unit_name} ({row.unit_code})",
            "" if row.score is None else f"{row.score:.1f}",
            "" if row.map_class is None else str(row.map_class),
            "" if row.rank_change is None else f"{row.rank_change:+d}",
            ", ".join(f"{k} {v:.1f}" for k, v in top),
        )
    console.print(table)
    for note in results.notes:
        console.print(f"[dim]note: {note}[/dim]")
    if output is not None:
        records = [
            {"rank": r.rank, "unit_code": r.unit_code, "unit_name": r.unit_name,
             "score": r.score, "class": r.map_class, "rank_change": r.rank_change,
             **{f"contribution_{k}": v for k, v in r.contributions.items()}}
            for r in results.rows
        ]  # fmt: skip
        from app.files.exports import csv_text  # formula-leading text neutralised, as every export

        columns = list(dict.fromkeys(k for r in records for k in r))
        lines = ([r.get(c) for c in columns] for r in records)
        output.write_text(csv_text(columns, lines), encoding="utf-8", newline="")
        console.print(f"written to {output}")


# -- early warning (issue 19) -------------------------------------------------------------

monitors_cli = typer.Typer(help="Early warning: monitored count series and their detectors.")
alerts_cli = typer.Typer(help="Early warning: the alerts monitors raised.")
cli.add_typer(monitors_cli, name="monitors")
cli.add_typer(alerts_cli, name="alerts")


@monitors_cli.command("list")
def monitors_list() -> None:
    """List every monitor (latest version): places, step, detector, sensitivity."""
    from app.services.monitors import list_definitions

    async def run(engine):
        async with engine.connect() as conn:
            return await list_definitions(conn, include_sensitive=True)

    records = _guard(lambda: _with_engine(run))
    table = Table("code", "version", "places", "step", "detector", "min count", "sensitive")
    for r in records:
        d = r.definition
        places = d["places"]
        where = f"H3 res {places['resolution']}"
        if places["kind"] == "units":
            where = f"units level {places['level']}"
        table.add_row(r.code, str(r.version), where, d["step"], d["detector"]["name"],
                      str(d["min_count"]), "yes" if r.sensitive else "")  # fmt: skip
    console.print(table)


@monitors_cli.command("run")
def monitors_run(
    monitor: Annotated[
        list[str] | None, typer.Option("--monitor", "-m", help="only this monitor (repeatable)")
    ] = None,
    load_defaults: Annotated[
        bool, typer.Option(help="first store the shipped monitors that are not stored yet")
    ] = True,
    periods: Annotated[
        int, typer.Option(min=1, max=104, help="the latest N complete periods, oldest first")
    ] = 1,
) -> None:
    """Evaluate the monitors at their latest complete period and store their alerts."""
    from app.services.monitors import evaluate_all, load_default_definitions

    settings = get_settings()

    async def run(engine):
        if load_defaults:
            await load_default_definitions(engine, actor=CLI_ACTOR)
        return await evaluate_all(
            engine, settings.territory.timezone, codes=monitor or None, periods=periods,
            progress=lambda code: console.print(f"[dim]evaluating {code}[/dim]"),
        )  # fmt: skip

    outcomes = _guard(lambda: _with_engine(run))
    table = Table("monitor", "period", "places", "evaluated", "alarms", "new alerts", "updated")
    for o in outcomes:
        table.add_row(o.monitor, o.period or "", str(o.places), str(o.evaluated), str(o.alarms),
                      str(o.alerts_new), str(o.alerts_updated))  # fmt: skip
    console.print(table)


@alerts_cli.command("list")
def alerts_list(
    monitor: Annotated[str | None, typer.Option(help="only this monitor")] = None,
    state: Annotated[
        list[str] | None, typer.Option(help="new, acknowledged or closed (repeatable)")
    ] = None,
) -> None:
    """List alerts, newest period first (sensitive ones included: this is the shell)."""
    from app.services.monitors import list_alerts

    async def run(engine):
        async with engine.connect() as conn:
            return await list_alerts(
                conn, include_sensitive=True, monitor=monitor, states=tuple(state or ())
            )

    alerts = _guard(lambda: _with_engine(run))
    table = Table("id", "monitor", "place", "period", "observed", "expected", "threshold",
                  "lasted", "state")  # fmt: skip

    def num(v: float | None) -> str:
        return "" if v is None else f"{v:.1f}"

    for a in alerts:
        cells = f"{len(a.cells)} H3 cell{'s' if len(a.cells) > 1 else ''}"
        place = a.unit_name or a.unit or f"{cells} from {a.cells[0]}"
        table.add_row(str(a.id), a.monitor, place, a.period, num(a.observed), num(a.expected),
                      num(a.threshold), str(a.lasted), a.state)  # fmt: skip
    console.print(table)


# -- record linkage of deaths (issue 21) ---------------------------------------------------


@cli.command()
def link(
    within_source: Annotated[
        bool, typer.Option(help="also link records of the same agency (duplicates)")
    ] = False,
    seed: Annotated[int | None, typer.Option(help="seed (default: linkage.seed)")] = None,
) -> None:
    """Link the death records of the police, forensic service and health registry in this
    process (as POST /linkage/runs does in a worker) and print the run's counts."""
    from app.schemas.linkage import LinkageRunRequest
    from app.services.linkage import link_here
    from app.sql.linkage import select_linkage_run

    settings = get_settings()
    request = LinkageRunRequest(within_source=within_source, seed=seed)

    async def run(engine) -> dict:
        run_id = await link_here(engine, settings, request, "cli")
        async with engine.connect() as conn:
            row = (await conn.execute(select_linkage_run(run_id))).mappings().one()
        return {"run": run_id, **row["summary"].get("counts", {})}

    counts = _guard(lambda: _with_engine(run))
    console.print(
        f"linkage run {counts['run']}: {counts.get('records')} records, "
        f"{counts.get('pairs_compared')} pairs compared, {counts.get('deaths')} deaths; "
        f"pairs by band {counts.get('pairs_by_band')}"
    )


# -- demo and serving --------------------------------------------------------------------


@cli.command()
def demo(
    incidents: Annotated[int, typer.Option(help="synthetic incidents to generate")] = 60_000,
    seed: Annotated[int, typer.Option(help="random seed of the synthetic incidents")] = 42,
) -> None:
    """Load the Belize demo: real districts and census, SYNTHETIC incidents."""
    from app.demo.load import load_demo

    settings = get_settings()
    with _progress() as progress:
        report = _guard(
            lambda: _with_engine(
                lambda e: load_demo(e, settings, incidents=incidents, seed=seed, progress=progress)
            )
        )
    if report.incidents is None:
        console.print(f"demo already loaded ({report.existing_incidents} synthetic incidents)")
    else:
        _print_report(report.incidents)


@cli.command()
def serve(
    host: Annotated[str, typer.Option(help="bind address")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port")] = 8000,
    workers: Annotated[int, typer.Option(help="worker processes")] = 1,
) -> None:
    """Serve the API with uvicorn."""
    import uvicorn

    uvicorn.run("app.main:create_app", factory=True, host=host, port=port, workers=workers)


@cli.command()
def up(
    host: str = "127.0.0.1",
    port: int = 8000,
    incidents: Annotated[int, typer.Option(help="synthetic demo incidents")] = 60_000,
) -> None:
    """Everything for a first look: start PostGIS, migrate, load the demo, print keys, start
    a worker, serve."""
    from app.services.keys import demo_keys

    settings = get_settings()
    if settings.uses_private_cluster:
        db_start()
    migrate()
    demo(incidents=incidents, seed=42)
    keys = _guard(lambda: _with_engine(lambda e: demo_keys(e, settings)))
    keys_file = settings.database.data_dir.resolve().parent / "demo-keys.json"
    console.print(f"\n[bold]Demo API keys[/bold] (also in {keys_file}):")
    for role, key in keys.items():
        console.print(f"  {role:8} {key}")
    # The analyses run in a worker process beside the API (the job queue, app.worker).
    worker_process = subprocess.Popen([sys.executable, "-m", "app.cli", "worker"])
    console.print(f"worker started (pid {worker_process.pid}); more: `observatory worker`")
    console.print(f"\nServing on http://{host}:{port}  (API docs: http://{host}:{port}/docs)\n")
    try:
        serve(host=host, port=port, workers=1)
    finally:
        if worker_process.poll() is None:
            worker_process.terminate()
        try:
            worker_process.wait(timeout=settings.worker.shutdown_s + 10)
        except subprocess.TimeoutExpired:
            worker_process.kill()


@cli.command()
def worker(
    concurrency: Annotated[
        int | None, typer.Option(help="jobs at once (default: worker.concurrency)", min=1)
    ] = None,
    queues: Annotated[
        list[str] | None,
        typer.Option("--queues", help="queues, comma-separated (default: analyses,schedules)"),
    ] = None,
) -> None:
    """Take jobs (analyses, schedules) from the queue until stopped (Ctrl-C, SIGTERM).

    Start as many as the machines allow, on this machine or others: every worker given
    the same database shares the queue."""
    import logging

    from app.worker.queue import QUEUES
    from app.worker.run import run_worker

    names = [q.strip() for item in queues or [] for q in item.split(",") if q.strip()]
    if other := sorted(set(names) - set(QUEUES)):  # allowed: a job may be sent anywhere
        console.print(f"[yellow]note:[/yellow] {', '.join(other)} not among {', '.join(QUEUES)}")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    settings = get_settings()
    asyncio.run(run_worker(settings, concurrency=concurrency, queues=names or None))


# -- helpers -----------------------------------------------------------------------------


def _progress():
    """A rich progress bar fed by the services' (stage, done, total) callbacks."""

    class _Bar:
        def __enter__(self):
            self.bar = Progress(
                TextColumn("{task.description:>9}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=console,
                transient=False,
            )
            self.bar.__enter__()
            self.tasks: dict[str, Any] = {}
            return self

        def __call__(self, stage: str, done: int, total: int) -> None:
            if stage not in self.tasks:
                self.tasks[stage] = self.bar.add_task(stage, total=total)
            self.bar.update(self.tasks[stage], completed=done, total=total)

        def __exit__(self, *exc):
            return self.bar.__exit__(*exc)

    return _Bar()


def _print_report(report: Any) -> None:
    data = report if isinstance(report, dict) else getattr(report, "__dict__", report)
    if hasattr(report, "model_dump"):
        data = report.model_dump()
    console.print_json(json.dumps(data, default=str))


# -- the periodic report (issue 20) --------------------------------------------------------

report_cli = typer.Typer(help="The periodic situational report, built from the database.")
cli.add_typer(report_cli, name="report")
_REPORT_KINDS = {"monthly": "month", "quarterly": "quarter", "half-yearly": "half-year",
                 "annual": "year"}  # fmt: skip


def _report_command(name: str, kind: str) -> None:
    @report_cli.command(name)
    def build(
        period: Annotated[str, typer.Option(help="e.g. 2024Q3, 2024-07, 2024H2, 2024")],
        out: Annotated[Path, typer.Option(help="the file: .pdf, .html or .zip (tables)")],
        definition: Annotated[
            str, typer.Option(help="a stored report definition (GET /reports/definitions)")
        ] = "quarterly-public",
        language: Annotated[
            str | None, typer.Option(help="en or es (default: the definition's)")
        ] = None,
    ) -> None:
        """Build the report for one period in this process and write it (not stored)."""
        from app.services.reports import build_here
        from reports import render

        suffix = out.suffix.lower()
        if suffix not in (".pdf", ".html", ".zip"):
            raise typer.BadParameter("--out must end in .pdf, .html or .zip")
        if language not in (None, "en", "es"):
            raise typer.BadParameter("--language must be en or es")
        settings = get_settings()
        doc = _guard(lambda: _with_engine(lambda e: build_here(
            e, settings, definition, period, kind=kind, language=language)))  # fmt: skip
        if suffix == ".zip":
            out.write_bytes(render.bundle(doc))
        elif suffix == ".html":
            out.write_text(render.render_html(doc), encoding="utf-8")
        else:
            out.write_bytes(render.render_pdf(doc))
        console.print(f"{doc.definition} v{doc.definition_version} {doc.period_label} → {out}")

    build.__doc__ = f"Build the {name} report for one {kind} and write it (not stored)."


for _name, _kind in _REPORT_KINDS.items():
    _report_command(_name, _kind)


def main() -> None:
    """The ``observatory`` command."""
    cli()


if __name__ == "__main__":
    main()
