"""The crime observatory service: FastAPI + PostGIS orchestration of the pure packages."""

import os
from pathlib import Path

# numba (under esda) reads its cache location once, when first imported: set it first.
os.environ.setdefault("NUMBA_CACHE_DIR", str(Path(".data/numba-cache").resolve()))
