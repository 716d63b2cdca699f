"""One settings object for the whole service (env prefix ``OBSERVATORY_``, nested with ``__``).

A TOML file named by ``OBSERVATORY_CONFIG_FILE`` supplies a country's territory settings
(see ``config/``); environment variables override it. Nothing else in the project reads
``os.environ``.
"""

from __future__ import annotations

from datetime import date
from functools import lru_cache
from importlib.resources import files
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

DATA_DIR = Path(str(files("app") / "data"))


class NoPrivateCluster(RuntimeError):
    """No database URL is set and the private cluster has not been created yet."""


class DatabaseSettings(BaseModel):
    """The private cluster the CLI manages (ignored when ``database_url`` is set)."""

    data_dir: Path = Path(".data/postgres")
    host: str = "127.0.0.1"
    port: int = 5433
    name: str = "observatory"
    user: str = "observatory"
    pool_size: int = 10
    statement_timeout_ms: int = 60_000

    @property
    def password_file(self) -> Path:
        """The generated password, kept beside the data directory (mode 600)."""
        data_dir = self.data_dir.resolve()
        return data_dir.parent / f"{data_dir.name}.password"

    @property
    def password(self) -> str:
        """The private cluster's password (``app.core.cluster`` generates it)."""
        if not self.password_file.exists():
            raise NoPrivateCluster(
                f"no private cluster at {self.data_dir.resolve()}: run `observatory db start` "
                "or set OBSERVATORY_DATABASE_URL"
            )
        return self.password_file.read_text().strip()

    @property
    def private_url(self) -> str:
        """``postgresql://`` URL of the private cluster."""
        return f"postgresql://{self.user}:{self.password}@{self.host}:{self.port}/{self.name}"


class TerritorySettings(BaseModel):
    """The country (or city) the service runs for. Data, not code: Belize is only the default."""

    name: str = "Belize"
    # Metric CRS for distances, grids and buffers (UTM 16N suits Belize).
    projected_crs: str = "EPSG:32616"
    # Local time zone: naive timestamps in imported files are read in it.
    timezone: str = "America/Belize"
    # Incidents farther than this outside the loaded country outline are rejected
    # (coarse outlines cut off coastal points and cayes).
    tolerance_m: float = Field(default=2_000, ge=0)
    # Used only while no boundaries are loaded: (west, south, east, north) in degrees.
    bbox: tuple[float, float, float, float] | None = (-89.3, 15.8, -87.4, 18.6)
    categories_file: Path = DATA_DIR / "categories.csv"
    # Towns and villages the maps label (CSV: name, latitude, longitude, population; see
    # app/settlements.py); None for none. Belize's is GeoNames' places of 500 people or more.
    settlements_file: Path | None = DATA_DIR / "belize" / "settlements.csv"


class ApiSettings(BaseModel):
    """The HTTP API: page sizes, body limits, CORS, rate limits, proxies and links."""

    default_limit: int = Field(default=1_000, ge=1)
    max_limit: int = Field(default=10_000, ge=1)
    # File uploads (POST /boundaries, /imports); larger bodies are a 413.
    max_upload_mb: int = Field(default=200, ge=1)
    # An import file larger than this (MB) is imported by a worker, as a job: POST
    # /imports answers 202 at once (so does ``?async=true`` for any size). Size, not rows:
    # it is known before the file is read (25 MB: some 200,000-300,000 CSV rows).
    async_import_mb: float = Field(default=25.0, ge=0)
    # Every other request body (JSON): one incident, an index spec, an analysis request
    # fit in a few KB, so a megabyte is generous and keeps parsing cheap.
    max_body_kb: int = Field(default=1024, ge=1)
    cors_origins: list[str] = ["*"]
    # Requests a minute per API key (anonymous callers: per client address), per worker
    # process; None turns rate limiting off (app.core.ratelimit).
    rate_limit_per_minute: int | None = Field(default=None, ge=1)
    # Requests a caller may make at once after a quiet spell; None: one minute's worth.
    rate_limit_burst: int | None = Field(default=None, ge=1)
    # Reverse proxies in front of the service that append to X-Forwarded-For; 0 means
    # the header is ignored (anyone can send it) and the connection's peer is the client.
    trusted_proxy_hops: int = Field(default=0, ge=0, le=10)
    # The address clients reach the service at, ``https://host[/prefix]``: every absolute
    # link (OGC, TileJSON, styles, the QGIS project) starts with it, whatever a request's
    # headers say. Unset: the request's Host, and X-Forwarded-Proto/-Host/-Prefix only
    # from trusted_proxy_hops proxies (app.ogc.links).
    public_url: str | None = None
    # Requests slower than this many seconds are logged (route, status, time), and event
    # loop blocks longer than ``loop_block_s`` with the stack that held the loop
    # (app.core.watchdog); None turns either off.
    slow_request_s: float | None = Field(default=1.0, gt=0)
    loop_block_s: float | None = Field(default=0.5, gt=0)

    @field_validator("public_url")
    @classmethod
    def _public_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value.strip())
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError("api.public_url must be an http(s) URL, e.g. https://host/prefix")
        if parts.query or parts.fragment or "@" in parts.netloc:
            raise ValueError("api.public_url takes no user, query or fragment")
        return f"{parts.scheme}://{parts.netloc}{parts.path.rstrip('/')}"

    @model_validator(mode="after")
    def _default_within_max(self) -> ApiSettings:
        if self.default_limit > self.max_limit:
            raise ValueError("api.default_limit must not exceed api.max_limit")
        return self


class TileSettings(BaseModel):
    """Vector tiles: the in-process cache, zoom limits and HTTP caching."""

    # In-process cache of encoded tiles per worker (least recently used beyond this size).
    cache_mb: int = Field(default=256, ge=0)
    # Browser / proxy caching of tiles (Cache-Control max-age); ETags revalidate after it.
    max_age_s: int = Field(default=60, ge=0)
    # Deepest zoom served; beyond it clients overzoom the last tiles.
    max_zoom: int = Field(default=22, ge=0, le=24)


class AnalysisSettings(BaseModel):
    """Analyses: the largest grids and cubes, how long a request waits, the warm-up."""

    # Largest number of cells (H3 or grid) one analysis may build.
    max_cells: int = Field(default=300_000, ge=100)
    # Largest space-time cube (cells x time steps) of an emerging hot spot analysis: about
    # 70 bytes and 1.2 microseconds a bin on these 2-core machines, so ~1.4 GB and ~25 s.
    max_cube_bins: int = Field(default=20_000_000, ge=1_000)
    # How long a request waits for its analysis before answering 202 with the run's URL.
    wait_s: float = Field(default=2.0, ge=0)
    # How long a GET that computes (the KDE surface and hot areas, an index's sensitivity)
    # waits for its run before answering 202 with the run's Location: QGIS and scripts
    # ask with one GET and expect the file.
    read_wait_s: float = Field(default=30.0, ge=0)
    # Compile esda's numba kernels at start-up so no analyst's first run pays for it
    # (about 50 s on 2 cores); the compiled code is cached on disk (NUMBA_CACHE_DIR,
    # default .data/numba-cache) and loads in about a second at the next start.
    warm_up: bool = True


class WorkerSettings(BaseModel):
    """The job queue's workers (``observatory worker``, app.worker) and its schedules."""

    # Jobs one worker process runs at once (each analysis holds a core while it computes).
    concurrency: int = Field(default=1, ge=1, le=64)
    # How often a worker records that it is alive, and how long a silent one is taken for
    # dead: its running job then goes back to the queue for another worker.
    heartbeat_s: float = Field(default=10, gt=0)
    stalled_s: float = Field(default=30, gt=0)
    # A worker hears of new jobs at once (LISTEN/NOTIFY) and also looks every poll_s, in
    # case a notification was missed (a reconnection, a busy moment).
    poll_s: float = Field(default=1.0, gt=0)
    # On SIGINT/SIGTERM running jobs get this long to finish, then go back to the queue.
    shutdown_s: float = Field(default=10, ge=0)
    # Attempts of a job that meets a transient database error, waiting retry_wait_s ** n
    # seconds before attempt n + 1 (2, 4, 8, 16 s); bad input fails at once.
    max_attempts: int = Field(default=5, ge=1, le=20)
    retry_wait_s: int = Field(default=2, ge=1, le=60)
    # Periodic tasks: task name -> cron (5 fields, or 6 with seconds last), read in
    # ``timezone`` (None: territory.timezone), e.g. "0 2 * * *" at 02:00 local time. A slot
    # missed while no worker ran runs once when one starts, if missed by at most
    # missed_slot_s (default: a year), not once per missed slot.
    # evaluate_monitors: every early-warning monitor at its latest complete period (issue 19).
    # build_reports: the stored report definitions for the period just ended (issue 20),
    # on the first day of each quarter.
    schedules: dict[str, str] = {
        "housekeeping": "17 3 * * *",
        "evaluate_monitors": "41 2 * * *",
        "build_reports": "30 4 1 1,4,7,10 *",
    }
    timezone: str | None = None
    missed_slot_s: float = Field(default=366 * 86_400, ge=0)
    # Finished jobs older than this are deleted by the housekeeping task.
    keep_finished_h: int = Field(default=24 * 30, ge=1)


class PrivacySettings(BaseModel):
    """What callers below analyst may ask of ``/stats`` (the public lattice,
    ``app.services.lattice``) and what they get (``app.services.disclosure``)."""

    # Public statistics withhold counts below this (and every sensitive category), and
    # never publish a perturbed count below it.
    min_count: int = Field(default=5, ge=1)
    # The published window: public tables cover the whole months, quarters or years
    # inside it, never the data's first or last incident. None for the end: up to the
    # start of the current month (local time), so only complete months are published.
    published_from: date = date(2021, 1, 1)
    published_to: date | None = None
    # The only age groups a public table may break down or filter by.
    age_groups: str = "0-14,15-29,30-44,45-64,65+"

    @model_validator(mode="after")
    def _window_in_order(self) -> PrivacySettings:
        if self.published_to is not None and self.published_to <= self.published_from:
            raise ValueError("privacy.published_to must be after privacy.published_from")
        return self


class LinkageSettings(BaseModel):
    """Deaths from three agencies (issue 21): the agencies, the match bands, name hashing."""

    # The agencies whose death records are imported; a row of any other source is
    # rejected. Their names are the linkage core's (linkage.model.SOURCES).
    sources: tuple[str, ...] = ("police", "forensic", "health")
    # When an agency may not share names in clear: each name part is stored as HMAC-SHA256
    # tokens of its normalised words under ``secret`` (per installation; keep it secret
    # and never change it, or stored tokens no longer match new ones).
    hash_names: bool = False
    secret: SecretStr | None = None
    # Match probability bands (linkage.model.Thresholds): match >= match_threshold; the
    # uncertain band a linker reviews from review_threshold; pairs below keep_threshold
    # are not stored.
    match_threshold: float = Field(default=0.95, ge=0, le=1)
    review_threshold: float = Field(default=0.5, ge=0, le=1)
    keep_threshold: float = Field(default=0.1, ge=0, le=1)
    seed: int = 42

    @model_validator(mode="after")
    def _secret_when_hashing(self) -> LinkageSettings:
        if self.hash_names and (self.secret is None or len(self.secret.get_secret_value()) < 16):
            raise ValueError(
                "linkage.hash_names needs linkage.secret: at least 16 characters, per installation"
            )
        if not self.keep_threshold <= self.review_threshold <= self.match_threshold:
            raise ValueError("linkage thresholds must satisfy keep <= review <= match")
        return self


class Settings(BaseSettings):
    """Every setting of the service: ``OBSERVATORY_*`` environment variables (nested with
    ``__``), then the TOML file named by ``OBSERVATORY_CONFIG_FILE``, then these defaults."""

    model_config = SettingsConfigDict(
        env_prefix="OBSERVATORY_", env_nested_delimiter="__", extra="ignore"
    )

    environment: Literal["development", "test", "production"] = "development"
    config_file: Path | None = None
    # Any PostGIS database (OBSERVATORY_DATABASE_URL); unset means the private cluster.
    database_url: SecretStr | None = None
    database: DatabaseSettings = DatabaseSettings()
    territory: TerritorySettings = TerritorySettings()
    api: ApiSettings = ApiSettings()
    tiles: TileSettings = TileSettings()
    analysis: AnalysisSettings = AnalysisSettings()
    worker: WorkerSettings = WorkerSettings()
    privacy: PrivacySettings = PrivacySettings()
    linkage: LinkageSettings = LinkageSettings()

    @classmethod
    def settings_customise_sources(  # noqa: D102 - pydantic-settings' hook, documented there
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        config_file = env_settings().get("config_file")
        if config_file:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=Path(config_file)))
        return tuple(sources)

    @property
    def libpq_url(self) -> str:
        """``postgresql://`` URL of the external or the private database."""
        if self.database_url is not None:
            url = self.database_url.get_secret_value()
        else:
            url = self.database.private_url
        for prefix in ("postgresql+psycopg://", "postgres://"):
            if url.startswith(prefix):
                return "postgresql://" + url[len(prefix) :]
        return url

    @property
    def sqlalchemy_url(self) -> str:
        """The same URL for SQLAlchemy with the psycopg 3 driver."""
        return "postgresql+psycopg://" + self.libpq_url[len("postgresql://") :]

    @property
    def uses_private_cluster(self) -> bool:
        """Whether the service runs on the private cluster the CLI manages."""
        return self.database_url is None


@lru_cache
def get_settings() -> Settings:
    """The settings of this process, read once."""
    return Settings()
