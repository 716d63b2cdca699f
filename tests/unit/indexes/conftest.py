"""Shared fixtures of the ``indexes`` unit tests: a small district table and definitions."""

from __future__ import annotations

import copy

import pandas as pd
import pytest

RTOL = 1e-9
ATOL = 1e-9


def external(code: str, **extra) -> dict:
    """An indicator entry sourced from an external indicator of the same code."""
    return {"code": code, "name": code, "source": {"external": code}, **extra}


@pytest.fixture
def raw() -> pd.DataFrame:
    """Six districts, three indicators with distinct values (no ties, no outliers)."""
    return pd.DataFrame(
        {
            "homicide": [30.0, 12.0, 8.0, 20.0, 5.0, 16.0],
            "robbery": [110.0, 60.0, 90.0, 40.0, 20.0, 70.0],
            "police": [3.0, 5.0, 2.0, 6.0, 9.0, 4.0],
        },
        index=pd.Index(["BZ", "CY", "CZL", "OW", "SC", "TOL"], name="unit"),
    )


@pytest.fixture
def definition() -> dict:
    """Two dimensions, police presence with direction -1, no treatment."""
    return copy.deepcopy(
        {
            "name": "test-index",
            "version": 3,
            "indicators": [
                external("homicide", dimension="lethal", weight=2),
                external("robbery", dimension="property"),
                external("police", dimension="property", direction=-1),
            ],
            "dimensions": [
                {"code": "lethal", "weight": 1},
                {"code": "property", "weight": 1},
            ],
            "treatment": "none",
        }
    )
