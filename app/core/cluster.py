"""The private PostgreSQL 15 + PostGIS 3 cluster that development, the demo and tests run on.

PostgreSQL refuses to run as root, so when the shell is root every server command runs as
the ``postgres`` system user (``runuser``). The cluster listens on 127.0.0.1 only and
authenticates with a generated password kept beside the data directory (mode 600).
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from app.core.settings import DatabaseSettings, NoPrivateCluster

PG_BIN = Path("/usr/lib/postgresql/15/bin")
POSTGIS_CONTROL = Path("/usr/share/postgresql/15/extension/postgis.control")
POSTGIS_PACKAGE = "postgresql-15-postgis-3"


class ClusterError(NoPrivateCluster):
    """The private cluster cannot be created or started; the message says what to do."""


def _is_root() -> bool:
    return os.geteuid() == 0


@dataclass(frozen=True)
class Cluster:
    """The service's private PostgreSQL cluster, run from ``database.data_dir`` with ``pg_ctl``."""

    settings: DatabaseSettings

    @property
    def data_dir(self) -> Path:
        """The cluster's data directory, as an absolute path."""
        return self.settings.data_dir.resolve()

    @property
    def password_file(self) -> Path:
        """The file that holds the database password."""
        return self.settings.password_file

    @property
    def log_file(self) -> Path:
        """The server's log, in the data directory."""
        return self.data_dir / "server.log"

    @property
    def password(self) -> str:
        """The database password."""
        return self.settings.password

    @property
    def url(self) -> str:
        """The connection URL of the private cluster."""
        return self.settings.private_url

    # -- state ---------------------------------------------------------------

    def is_initialised(self) -> bool:
        """Whether ``initdb`` has made the data directory."""
        return (self.data_dir / "PG_VERSION").exists()

    def is_running(self) -> bool:
        """Whether a server runs on the data directory (``pg_ctl status``)."""
        if not self.is_initialised():
            return False
        result = self._run_as_owner([str(PG_BIN / "pg_ctl"), "status", "-D", str(self.data_dir)])
        return result.returncode == 0

    def status(self) -> str:
        """One line for ``observatory db status``: created or not, running or stopped, where."""
        if not self.is_initialised():
            return f"not created ({self.data_dir})"
        state = "running" if self.is_running() else "stopped"
        return f"{state} on {self.settings.host}:{self.settings.port} ({self.data_dir})"

    # -- commands ------------------------------------------------------------

    def start(self) -> None:
        """Create the cluster if needed, start it, and make sure the database exists."""
        ensure_postgis()
        if not self.is_initialised():
            self._init()
        if not self.is_running():
            result = self._run_as_owner(
                [
                    str(PG_BIN / "pg_ctl"),
                    "start",
                    "-w",
                    "-t",
                    "60",
                    "-D",
                    str(self.data_dir),
                    "-l",
                    str(self.log_file),
                    "-o",
                    f"-p {self.settings.port} -k {self.data_dir}",
                ]
            )
            if result.returncode != 0:
                tail = self.log_file.read_text()[-2000:] if self.log_file.exists() else ""
                raise ClusterError(f"PostgreSQL did not start:\n{result.stderr}\n{tail}")
        self._create_database()

    def stop(self) -> None:
        """Stop the server if it runs (fast shutdown: open sessions are cut)."""
        if self.is_running():
            self._run_as_owner(
                [str(PG_BIN / "pg_ctl"), "stop", "-w", "-m", "fast", "-D", str(self.data_dir)],
                check=True,
            )

    def destroy(self) -> None:
        """Stop and delete the cluster (tests use throw-away clusters)."""
        self.stop()
        shutil.rmtree(self.data_dir, ignore_errors=True)
        self.password_file.unlink(missing_ok=True)

    # -- internals -----------------------------------------------------------

    def _init(self) -> None:
        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        self.data_dir.mkdir(mode=0o700, exist_ok=True)
        self.password_file.write_text(secrets.token_urlsafe(24) + "\n")
        self.password_file.chmod(0o600)
        # initdb reads the password from a file the server user can read; remove it after.
        tmp = Path(tempfile.mkdtemp(prefix="observatory-initdb-"))
        pwfile = tmp / "password"
        shutil.copyfile(self.password_file, pwfile)
        if _is_root():
            shutil.chown(self.data_dir, "postgres", "postgres")
            shutil.chown(tmp, "postgres", "postgres")
            shutil.chown(pwfile, "postgres", "postgres")
        try:
            self._run_as_owner(
                [
                    str(PG_BIN / "initdb"),
                    "-D",
                    str(self.data_dir),
                    "-U",
                    self.settings.user,
                    f"--pwfile={pwfile}",
                    "--auth-local=scram-sha-256",
                    "--auth-host=scram-sha-256",
                    "--encoding=UTF8",
                    "--locale=C.UTF-8",
                ],
                check=True,
            )
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        conf = self.data_dir / "postgresql.conf"
        with conf.open("a") as fh:
            fh.write(
                "\n# observatory: private cluster, loopback only\n"
                "listen_addresses = '127.0.0.1'\n"
                "max_connections = 100\n"
                "shared_buffers = 512MB\n"
                "work_mem = 32MB\n"
                "maintenance_work_mem = 256MB\n"
                "max_wal_size = 4GB\n"
                # On 2 cores the planner's parallel plans lose 3x on small tile/page
                # queries (DESIGN.md section 7); analyses may raise it per session.
                "max_parallel_workers_per_gather = 0\n"
            )

    def _create_database(self) -> None:
        import psycopg

        s = self.settings
        admin = f"postgresql://{s.user}:{self.password}@{s.host}:{s.port}/postgres"
        with psycopg.connect(admin, autocommit=True) as conn:
            exists = conn.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", [s.name]
            ).fetchone()
            if not exists:
                conn.execute(f'CREATE DATABASE "{s.name}"')

    def _run_as_owner(self, args: list[str], *, check: bool = False) -> subprocess.CompletedProcess:
        if _is_root():
            args = ["runuser", "-u", "postgres", "--", *args]
        result = subprocess.run(args, capture_output=True, text=True, cwd="/")
        if check and result.returncode != 0:
            raise ClusterError(f"{' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
        return result


def ensure_postgis() -> None:
    """Install PostGIS from Debian when root, else say exactly what to install."""
    if not (PG_BIN / "initdb").exists():
        missing = "postgresql-15 " + POSTGIS_PACKAGE
    elif not POSTGIS_CONTROL.exists():
        missing = POSTGIS_PACKAGE
    else:
        return
    if not _is_root():
        raise ClusterError(
            f"PostgreSQL 15 with PostGIS 3 is not installed. Install it with:\n"
            f"  sudo apt-get update && sudo apt-get install -y {missing}\n"
            "or point OBSERVATORY_DATABASE_URL at an existing PostGIS database."
        )
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run(["apt-get", "install", "-y", "-qq", *missing.split()], check=True, env=env)


def wait_until_ready(url: str, timeout_s: float = 30) -> None:
    """Wait for a database URL (psycopg form) to accept connections."""
    import psycopg

    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with psycopg.connect(url, connect_timeout=2):
                return
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)
