"""Shared helpers for the linkage tests: truth from the generator, pairwise scores."""

from __future__ import annotations

import itertools

import pandas as pd


def true_pairs(records: pd.DataFrame, key: str = "death_id") -> set[tuple[str, str]]:
    """Every (l, r) pair of record ids (l < r) that describe the same death."""
    pairs: set[tuple[str, str]] = set()
    for _, group in records.groupby(key):
        pairs.update(itertools.combinations(sorted(group["record_id"]), 2))
    return pairs


def cluster_pairs(clusters: pd.DataFrame) -> set[tuple[str, str]]:
    """Every (l, r) pair of record ids (l < r) placed in one cluster."""
    return true_pairs(clusters, key="cluster_id")


def precision_recall(
    found: set[tuple[str, str]], truth: set[tuple[str, str]]
) -> tuple[float, float, float]:
    """Pairwise precision, recall and F1."""
    hits = len(found & truth)
    precision = hits / len(found) if found else 0.0
    recall = hits / len(truth) if truth else 0.0
    f1 = 2 * precision * recall / (precision + recall) if hits else 0.0
    return precision, recall, f1
