"""Uploaded files: saved to a temporary file with their suffix, within the size limit."""

from __future__ import annotations

import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from fastapi import UploadFile

from app.core.errors import InvalidFile, PayloadTooLarge

CHUNK = 1 << 20


@contextmanager
def saved_upload(upload: UploadFile, *, max_mb: int, suffixes: tuple[str, ...]) -> Iterator[Path]:
    """Yield the upload as a file on disk (deleted afterwards); 413 beyond ``max_mb``."""
    name = upload.filename or "upload"
    suffix = Path(name).suffix.lower()
    if suffix not in suffixes:
        raise InvalidFile(f"{name!r}: unsupported file type; use one of {', '.join(suffixes)}")
    limit = max_mb * CHUNK
    if upload.size is not None and upload.size > limit:
        raise PayloadTooLarge(f"{name!r} is larger than the {max_mb} MB upload limit")
    tmp = Path(tempfile.mkdtemp(prefix="observatory-upload-"))
    # Keep the user's file name (made safe) so that error messages name their file.
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", Path(name).stem)[:100] or "upload"
    path = tmp / f"{safe}{suffix}"
    try:
        written = 0
        with path.open("wb") as out:
            while chunk := upload.file.read(CHUNK):
                written += len(chunk)
                if written > limit:
                    raise PayloadTooLarge(f"{name!r} is larger than the {max_mb} MB upload limit")
                out.write(chunk)
        yield path
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
