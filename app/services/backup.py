"""Backups: the whole database to one pg_dump archive (custom format), and back.

The archive holds every table, sequence, view, trigger and index of the service (data and
schema), but not the extensions themselves: a restore creates a missing extension
(``CREATE EXTENSION IF NOT EXISTS``) and otherwise keeps the one installed, so PostGIS's
types keep their identity for the connections of a running service. A restore runs in
one transaction (``pg_restore --single-transaction --exit-on-error``): it replaces the
tables of the archive completely or changes nothing.

The password never appears on a command line (``ps`` shows those) nor in a log: the
tools get it in ``PGPASSWORD``, and their messages are scrubbed of it.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from app.core.cluster import PG_BIN
from app.core.settings import Settings
from app.core.versions import DATA_CHANNEL, KEYS_CHANNEL

log = logging.getLogger("observatory")


class BackupError(RuntimeError):
    """A backup or a restore failed; the message says why (without secrets)."""


@dataclass(frozen=True)
class BackupSummary:
    """A backup written: its file, size and how many tables it holds."""

    path: Path
    size_bytes: int
    tables: int


@dataclass(frozen=True)
class _Target:
    """Connection arguments for the PostgreSQL tools, and the secret kept apart."""

    args: list[str]
    env: dict[str, str]
    password: str | None
    where: str  # user@host:port/db, for messages


def _target(settings: Settings) -> _Target:
    params = conninfo_to_dict(settings.libpq_url)
    password = params.pop("password", None)
    args = [f"--{flag}={params[key]}" for key, flag in
            (("host", "host"), ("port", "port"), ("user", "username"), ("dbname", "dbname"))
            if params.get(key)]  # fmt: skip
    env = {**os.environ, "PGCONNECT_TIMEOUT": "5"}
    if password:
        env["PGPASSWORD"] = password
    for key in ("sslmode", "sslrootcert", "sslcert", "sslkey"):
        if key in params:
            env[f"PG{key.upper()}"] = str(params[key])
    where = (
        f"{params.get('user', '')}@{params.get('host', '')}:{params.get('port', 5432)}"
        f"/{params.get('dbname', '')}"
    )
    return _Target(args, env, password, where)


def _tool(name: str) -> str:
    """The PostgreSQL 15 client tools of the private cluster, else those on the PATH."""
    path = PG_BIN / name
    if path.exists():
        return str(path)
    found = shutil.which(name)
    if found is None:
        raise BackupError(f"{name} is not installed (Debian package postgresql-client-15)")
    return found


def _run(args: list[str], target: _Target, what: str) -> str:
    result = subprocess.run(args, env=target.env, capture_output=True, text=True)
    if result.returncode != 0:
        raise BackupError(f"{what} failed: {redact(result.stderr.strip(), target.password)}")
    return result.stdout


def redact(text: str, password: str | None) -> str:
    """The text with the password, if any, replaced by ``***``."""
    return text.replace(password, "***") if password else text


def backup_database(settings: Settings, path: Path) -> BackupSummary:
    """Dump the database to ``path``. The archive is written beside it and renamed when
    complete, so an interrupted backup never leaves a file that looks like one."""
    target = _target(settings)
    path = path.resolve()
    partial = path.with_name(path.name + ".partial")
    log.info("backup of %s to %s", target.where, path)
    try:
        _run(
            [_tool("pg_dump"), *target.args, "--format=custom", "--compress=6",
             f"--file={partial}"],
            target, "pg_dump",
        )  # fmt: skip
        tables = sum(1 for entry in _toc(partial, target) if " TABLE DATA " in entry)
        partial.replace(path)
    finally:
        partial.unlink(missing_ok=True)
    return BackupSummary(path, path.stat().st_size, tables)


def restore_database(settings: Settings, path: Path) -> BackupSummary:
    """Replace the tables of the database by those of the archive at ``path``, in one
    transaction, then tell every worker that data and keys may have changed."""
    target = _target(settings)
    path = path.resolve()
    toc = _toc(path, target)
    extensions = [_extension_name(e) for e in toc if " EXTENSION - " in e]
    log.info("restore of %s from %s", target.where, path)
    with psycopg.connect(settings.libpq_url, autocommit=True, connect_timeout=5) as conn:
        for name in extensions:
            conn.execute(sql.SQL("CREATE EXTENSION IF NOT EXISTS {}").format(sql.Identifier(name)))
    with tempfile.TemporaryDirectory(prefix="observatory-restore-") as tmp:
        listing = Path(tmp) / "toc.list"
        listing.write_text("\n".join(e for e in toc if not _is_extension(e)) + "\n")
        _run(
            [_tool("pg_restore"), *target.args, "--clean", "--if-exists", "--no-owner",
             "--no-privileges", "--single-transaction", "--exit-on-error",
             f"--use-list={listing}", str(path)],
            target, "pg_restore",
        )  # fmt: skip
    # Caches of tiles, counts and keys in running workers key on these notifications.
    with psycopg.connect(settings.libpq_url, autocommit=True, connect_timeout=5) as conn:
        conn.execute("SELECT pg_notify(%s, ''), pg_notify(%s, '')", [DATA_CHANNEL, KEYS_CHANNEL])
    tables = sum(1 for entry in toc if " TABLE DATA " in entry)
    return BackupSummary(path, path.stat().st_size, tables)


def _toc(path: Path, target: _Target) -> list[str]:
    """The archive's table of contents (``pg_restore --list``), without comment lines;
    also proves the file is a readable pg_dump archive."""
    if not path.is_file():
        raise BackupError(f"no backup file {path}")
    listing = _run([_tool("pg_restore"), "--list", str(path)], target, f"reading {path.name}")
    return [line for line in listing.splitlines() if line and not line.startswith(";")]


def _is_extension(entry: str) -> bool:
    """``EXTENSION - postgis`` and ``COMMENT - EXTENSION postgis`` entries."""
    return " EXTENSION - " in entry or " COMMENT - EXTENSION " in entry


def _extension_name(entry: str) -> str:
    return entry.split(" EXTENSION - ", 1)[1].split()[0]
