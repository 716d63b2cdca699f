"""Run Alembic migrations from code (``observatory migrate``, tests, service start-up)."""

from __future__ import annotations

from importlib.resources import files

from alembic import command
from alembic.config import Config


def alembic_config(url: str) -> Config:
    """An Alembic configuration for the database at ``url``, with the packaged migrations."""
    config = Config()
    config.set_main_option("script_location", str(files("migrations")))
    config.attributes["url"] = url
    return config


def upgrade(url: str, revision: str = "head") -> None:
    """Migrate the database at ``url`` to ``revision`` (the newest by default)."""
    command.upgrade(alembic_config(url), revision)
