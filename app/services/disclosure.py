"""Disclosure control of statistics tables for callers below analyst.

Counts are first perturbed with the *cell key method* (``perturb``; as in the ABS
TableBuilder and the 2021 censuses of England and Wales): every incident has a record key
(its id hashed with a secret seed of the installation), a cell's key is the sum of its
records' keys, and the key picks the cell's noise from a fixed table. The same incidents
always give the same published count, however the query is written, so repeating a query
does not average the noise away; and two tables that differ by a few incidents no longer
give those incidents' exact count by subtraction.

Then the suppression rule (``suppress``), decided on the true counts and applied to every
cell (one unit x one combination of breakdowns):

1. *Primary*: a count below the threshold (``privacy.min_count``, default
   :data:`THRESHOLD`: 0 to 4) is withheld, and so is every cell
   that counts a sensitive category of the vocabulary (``category.sensitive``: sexual and
   domestic violence, suicide), whatever its size.
2. *Complementary*: a table's lines (the cells that differ in one dimension only: the
   units of one breakdown, the categories of one unit, …) add up to totals another query
   shows. Where exactly one cell of a line is withheld it could be recomputed as the
   total minus the others, so the smallest shown cell of that line is withheld too;
   repeated until no line has a single withheld cell.
3. Withheld cells lose their count and every rate derived from it. Empirical Bayes rates
   borrow from every unit's count of their breakdown, so where any unit of a breakdown is
   withheld, that breakdown's EB rates are withheld for all units.
"""

from __future__ import annotations

import bisect
import itertools
from collections import defaultdict
from collections.abc import Mapping, Sequence

from app.schemas.stats import StatsRow, StatsTable

__all__ = ["KEY_RANGE", "NOISE", "THRESHOLD", "perturb", "suppress"]

# Counts below this are never shown to the public (the default of privacy.min_count).
THRESHOLD = 5
# The perturbation table: noise and its probability. Unbiased, variance 1.2, and no count
# moves by more than 2 (a rate by more than 2 / population).
NOISE = {-2: 0.1, -1: 0.2, 0: 0.4, 1: 0.2, 2: 0.1}
# Record keys are 32-bit (app.sql.stats.RECORD_KEY_MASK); cell keys are their sum modulo this.
KEY_RANGE = 2**32
_UPPER = list(itertools.accumulate(NOISE.values()))
_WITHHELD = {
    "count": None,
    "rate": None,
    "rate_eb_global": None,
    "rate_eb_spatial": None,
    "rse": None,
    "unstable": None,
    "suppressed": True,
}
_EB = {"rate_eb_global": None, "rate_eb_spatial": None}


def perturb(count: int, key_sum: int, threshold: int = THRESHOLD) -> int:
    """The published count of a cell of ``count`` incidents whose record keys sum to
    ``key_sum``: the count plus the noise its cell key picks from :data:`NOISE`.

    A count that can be shown stays at or above ``threshold``, so a published count is
    never a small one; smaller counts are withheld anyway (``suppress``).
    """
    if count == 0:
        return 0
    position = (key_sum % KEY_RANGE) / KEY_RANGE
    noise = list(NOISE)[min(bisect.bisect_right(_UPPER, position), len(NOISE) - 1)]
    return max(count + noise, threshold if count >= threshold else 0)


def suppress(
    table: StatsTable,
    vocabulary: Mapping[str, str],
    sensitive: frozenset[str],
    true_counts: Sequence[int] | None = None,
    threshold: int = THRESHOLD,
) -> StatsTable:
    """The public view of ``table``; ``vocabulary`` maps category code → group.

    ``true_counts`` (one per row) decide what is withheld when the table's counts are
    perturbed; by default the table's own counts. Counts below ``threshold`` are
    withheld. Returns a new table; ``table`` is not changed.
    """
    by = table.parameters.by
    scope = set(table.parameters.filters.categories) or set(vocabulary)
    rows = table.rows
    counts = [r.count for r in rows] if true_counts is None else true_counts
    withheld = [
        _primary(c is None or c < threshold, r, by, scope, vocabulary, sensitive)
        for c, r in zip(counts, rows, strict=True)
    ]
    # category_group follows from category: it is not a dimension of its own then.
    dims = ["unit_code", *(b for b in by if not (b == "category_group" and "category" in by))]
    _complementary(rows, dims, withheld)
    tainted = {_key(r, by) for r, hidden in zip(rows, withheld, strict=True) if hidden}
    released = []
    for r, hidden in zip(rows, withheld, strict=True):
        if hidden:
            released.append(r.model_copy(update=_WITHHELD))
        elif _key(r, by) in tainted:
            released.append(r.model_copy(update=_EB))
        else:
            released.append(r)
    notes = list(table.notes)
    if true_counts is not None:
        notes.append(_perturbation_note(threshold))
    if any(withheld):
        notes.append(_note(sum(withheld), sensitive & scope, threshold))
    return table.model_copy(update={"rows": released, "notes": notes})


def _primary(
    small: bool,
    row: StatsRow,
    by: Sequence[str],
    scope: set[str],
    vocabulary: Mapping[str, str],
    sensitive: frozenset[str],
) -> bool:
    """Whether the cell is withheld for itself: a small count or a sensitive category."""
    if small:
        return True
    if "category" in by:
        return row.category in sensitive
    if "category_group" in by:
        return any(c in sensitive and vocabulary.get(c) == row.category_group for c in scope)
    # A total over categories that include a sensitive one would give it away by
    # subtracting the other categories' counts.
    return bool(scope & sensitive)


def _key(row: StatsRow, columns: Sequence[str]) -> tuple:
    return tuple(getattr(row, c) for c in columns)


def _complementary(rows: Sequence[StatsRow], dims: Sequence[str], withheld: list[bool]) -> None:
    """Withhold (in place) the smallest shown cell of every line with one withheld cell."""
    changed = True
    while changed:
        changed = False
        for dim in dims:
            others = [d for d in dims if d != dim]
            lines: dict[tuple, list[int]] = defaultdict(list)
            for i, row in enumerate(rows):
                lines[_key(row, others)].append(i)
            for members in lines.values():
                hidden = [i for i in members if withheld[i]]
                if len(hidden) != 1 or len(members) < 2:
                    continue
                smallest = min((i for i in members if not withheld[i]), key=lambda i: rows[i].count)
                withheld[smallest] = True
                changed = True


def _note(withheld: int, sensitive: set[str], threshold: int) -> str:
    # One number, the withheld rows' own: how many were withheld for a small count and how
    # many to protect another would change when a hidden cell crosses the threshold.
    named = f" ({', '.join(sorted(sensitive))})" if sensitive else ""
    return (
        f"Public view: {withheld} cell(s) withheld (count and rates null, suppressed: true): "
        f"counts below {threshold}, cells that count a sensitive category{named}, and cells "
        "withheld so that no withheld count can be recomputed from a total. Empirical Bayes "
        "rates of a breakdown with any withheld unit are withheld too. A key with the "
        "analyst role sees every value."
    )


def _perturbation_note(threshold: int) -> str:
    return (
        "Public view: every count is perturbed by -2 to +2 (cell key method: the same "
        "incidents always give the same published count), rates follow from the published "
        f"counts, and shown counts are at least {threshold}; totals may differ slightly "
        "from the sum of their parts."
    )
