"""Alembic environment: the URL comes from the settings, never from an ini file."""

from alembic import context
from sqlalchemy import create_engine, pool

from app.core.settings import get_settings
from app.models import metadata


def _include_object(obj, name, type_, reflected, compare_to):
    # PostGIS and its extensions own tables (spatial_ref_sys, topology...) we never manage.
    return not (type_ == "table" and reflected and compare_to is None)


def run_migrations_online() -> None:
    url = context.config.attributes.get("url") or get_settings().sqlalchemy_url
    engine = create_engine(url, poolclass=pool.NullPool)
    with engine.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=metadata,
            include_object=_include_object,
        )
        with context.begin_transaction():
            context.run_migrations()


run_migrations_online()
