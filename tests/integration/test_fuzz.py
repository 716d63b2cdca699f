"""Property-based fuzzing of every operation in ``/openapi.json`` with schemathesis.

Two properties, whatever the input: no 5xx, and every 4xx is ``application/problem+json``.
The budget is fixed (examples per operation and generation mode, derandomised with a
fixed seed, no deadline), so a CI run is repeatable and bounded.

Valid random writes revoke keys, delete incidents and replace boundaries, so the fuzzed
app gets its own database in the suite's cluster (migrated, with the Belize boundaries,
categories, 200 incidents and an admin key); the shared test database is checked to be
untouched afterwards. Schemathesis runs the app's lifespan in its own event loop.

Left out or narrowed, to keep the budget (each says why):

- ``GET /indexes/{code}/sensitivity``, ``GET /rankings``: Monte Carlo over up to
  ``MAX_RUNS`` runs per valid example; ``GET /analyses/kde.tif`` and
  ``/analyses/kde/areas``: a KDE raster at any bandwidth and cell size. Seconds each.
- ``POST /analyses/{hotspots,emerging-hotspots,evaluate,kde}``, ``POST
  /indexes/{code}/sensitivity``: invalid inputs only; a valid one starts an analysis run
  (and compiles numba kernels) in the background.
- ``/keys`` operations never revoke or rotate the fuzzer's own key (``assume``).
"""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest
import schemathesis
from hypothesis import HealthCheck, assume, given, seed
from hypothesis import settings as hypothesis_settings
from hypothesis.errors import Unsatisfiable
from pydantic import SecretStr
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.schemas import BaseSchema

from app import security
from app.core.cluster import Cluster
from app.core.migrate import upgrade
from app.core.settings import Settings
from app.main import create_app
from app.services.boundaries import import_boundaries
from app.services.categories import load_categories
from tests.conftest import BELIZE, auth, call_service
from tests.integration.helpers import import_csv, write_incident_csv
from tests.integration.test_malformed import fingerprint

PROBLEM = "application/problem+json"
EXAMPLES = 20
SEED = 20261129
FUZZ_DB = "observatory_fuzz"
SLOW_READS = {
    "indexes-get_sensitivity",
    "rankings-get_ranking",
    "analyses-get_kde_geotiff",
    "analyses-get_kde_areas",
}
INVALID_ONLY = {
    "analyses-create_hotspots",
    "analyses-create_emerging_hotspots",
    "analyses-create_evaluation",
    "analyses-create_kde",
    "indexes-create_sensitivity",
}


@schemathesis.check
def problem_json_errors(ctx, response, case) -> bool | None:
    """Every client error is RFC 9457 problem+json (FastAPI's defaults are plain JSON)."""
    if 400 <= response.status_code < 500:
        content_type = response.headers.get("content-type", [""])
        content_type = content_type[0] if isinstance(content_type, list) else content_type
        if not content_type.startswith(PROBLEM):
            raise AssertionError(
                f"{response.status_code} answered as {content_type!r}, not {PROBLEM}"
            )
    return None


CHECKS = [not_a_server_error, problem_json_errors]
FIXED_BUDGET = hypothesis_settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,  # no example database: every run draws the same examples
    suppress_health_check=list(HealthCheck),
)


@pytest.fixture(scope="module")
def store_before(base_data, db_url: str) -> dict[str, tuple[int, str | None]]:
    with psycopg.connect(db_url, autocommit=True) as conn:
        return fingerprint(conn)


@pytest.fixture(scope="module")
def fuzz_settings(cluster: Cluster, base_data: Settings, tmp_path_factory) -> Settings:
    """A fresh, migrated database with the same base data as the suite's, for the fuzzer."""
    db = cluster.settings
    server = f"postgresql://{db.user}:{cluster.password}@{db.host}:{db.port}"
    with psycopg.connect(f"{server}/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{FUZZ_DB}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{FUZZ_DB}"')
    settings = base_data.model_copy(
        update={
            "database_url": SecretStr(f"{server}/{FUZZ_DB}"),
            # Answer 202 at once: the fuzzer never waits for a run it started.
            "analysis": base_data.analysis.model_copy(update={"wait_s": 0}),
        }
    )
    upgrade(settings.sqlalchemy_url)
    call_service(settings, lambda e: load_categories(e, settings.territory.categories_file))
    for level, name, code, label in (
        (0, "belize_adm0_naturalearth_10m.geojson", "ISO_A2", "ADMIN"),
        (1, "belize_adm1_districts.geojson", "iso_3166_2", "district"),
    ):
        path: Path = BELIZE / "boundaries" / name
        call_service(
            settings,
            lambda e, path=path, level=level, code=code, label=label: import_boundaries(
                e, path, level=level, code_field=code, name_field=label, actor="fuzz"
            ),
        )
    csv = write_incident_csv(tmp_path_factory.mktemp("fuzz") / "i.csv", n=200, source="fuzz")
    import_csv(settings, csv)
    return settings


@pytest.fixture(scope="module")
def admin(fuzz_settings: Settings) -> tuple[int, str]:
    """The fuzzer's admin key: (id, key)."""
    key, prefix, key_hash = security.new_key()
    with psycopg.connect(fuzz_settings.libpq_url, autocommit=True) as conn:
        key_id = conn.execute(
            "INSERT INTO api_key (name, prefix, hash, role) VALUES (%s, %s, %s, 'admin') "
            "RETURNING id",
            ["fuzz-admin", prefix, key_hash],
        ).fetchone()[0]
    return key_id, key


@pytest.fixture(scope="module")
def schema(fuzz_settings: Settings, store_before) -> BaseSchema:
    return schemathesis.openapi.from_asgi("/openapi.json", create_app(fuzz_settings))


def fuzz(schema: BaseSchema, admin: tuple[int, str], *, keys_last: bool) -> tuple[list, list]:
    """Fuzz every operation: (operations fuzzed, failures).

    Each operation and generation mode gets its own Hypothesis run with the fixed budget.
    Failures are collected rather than raised, so one run reports every failing operation.
    """
    admin_id, key = admin
    headers = auth(key)
    operations = [result.ok() for result in schema.get_all_operations()]
    # Key operations last: a rotated or revoked key is not the fuzzer's, but a new one is.
    operations.sort(key=lambda op: op.path.startswith("/keys") if keys_last else False)
    fuzzed: list[str] = []
    failures: list[str] = []
    for operation in operations:
        operation_id = operation.definition.raw.get("operationId")
        if operation_id in SLOW_READS:
            continue
        name = f"{operation.method.upper()} {operation.path}"
        fuzzed.append(name)
        modes = [GenerationMode.NEGATIVE] if operation_id in INVALID_ONLY else list(GenerationMode)
        for mode in modes:

            @FIXED_BUDGET
            @seed(SEED)
            @given(case=operation.as_strategy(generation_mode=mode))
            def one(case) -> None:
                assume(str((case.path_parameters or {}).get("key_id")) != str(admin_id))
                case.call_and_validate(headers=headers, checks=CHECKS)

            try:
                one()
            except Unsatisfiable:
                pass  # an operation without parameters has no invalid inputs to draw
            # Failed checks arrive as schemathesis' FailureGroup, a BaseExceptionGroup.
            except (Exception, BaseExceptionGroup) as exc:
                # Hypothesis' report leads with the failing case; keep that, not the
                # whole server traceback that follows it.
                failures.append(f"{name} ({mode.value}): {type(exc).__name__}: {str(exc)[:3000]}")
    return fuzzed, failures


def test_no_5xx_and_every_error_is_problem_json(schema, admin) -> None:
    fuzzed, failures = fuzz(schema, admin, keys_last=True)
    assert len(fuzzed) > 40 and "POST /incidents" in fuzzed, fuzzed  # the document was read
    assert not failures, "\n\n".join(failures)


def test_the_shared_test_database_was_not_touched(db_url: str, store_before) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        assert fingerprint(conn) == store_before
