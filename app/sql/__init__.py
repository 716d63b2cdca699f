"""The SQL of each concern, as SQLAlchemy Core statements that the services execute."""
