"""What the routes, the CLI and the workers do: imports, statistics, analyses, exports and
the rest, over the database and the pure packages (``spatial``, ``indexes``,
``boundaries``)."""
