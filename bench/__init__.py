"""Reproducible benchmarks of the observatory service (run as ``python -m bench.<name>``)."""
