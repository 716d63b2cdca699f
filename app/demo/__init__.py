"""The Belize demo: synthetic incidents (``incidents``, seeded, marked SYNTHETIC) and the
loader that puts the real boundaries, populations and the demo into a database (``load``).
Data, not a service: the product never depends on it."""
