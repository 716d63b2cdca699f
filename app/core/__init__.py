"""Infrastructure every part of the service stands on: settings, the database engine and the
private cluster, migrations, errors as problem+json, caches, the data version, metrics,
rate and body limits. Nothing here knows a route, a layer or a statistic."""
