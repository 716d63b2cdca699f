"""Load the category vocabulary (codes, groups, sensitive flags) from a CSV data file."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from sqlalchemy.ext.asyncio import AsyncEngine

from app.core.errors import InvalidFile
from app.sql import categories as sql

REQUIRED = ("code", "name", "category_group", "sensitive")


def read_categories(path: Path) -> list[dict]:
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    missing = [c for c in REQUIRED if c not in frame.columns]
    if missing:
        raise InvalidFile(f"{path.name}: missing column(s) {', '.join(missing)}")
    if "description" not in frame:
        frame["description"] = ""
    frame["code"] = frame["code"].str.strip().str.lower()
    if frame["code"].eq("").any() or frame["code"].duplicated().any():
        raise InvalidFile(f"{path.name}: category codes must be non-empty and unique")
    flags = frame["sensitive"].str.strip().str.lower()
    if not flags.isin(["true", "false", "1", "0", "yes", "no"]).all():
        raise InvalidFile(f"{path.name}: 'sensitive' must be true or false")
    frame["sensitive"] = flags.isin(["true", "1", "yes"])
    return frame[[*REQUIRED, "description"]].to_dict("records")


async def load_categories(engine: AsyncEngine, path: Path) -> int:
    rows = read_categories(path)
    async with engine.begin() as conn:
        await conn.execute(sql.upsert_categories(rows))
    return len(rows)
