"""Small-count suppression of statistics tables for callers below analyst.

The rule (``suppress``), applied to every cell (one unit x one combination of breakdowns):

1. *Primary*: a count below :data:`THRESHOLD` (0 to 4) is withheld, and so is every cell
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

from collections import defaultdict
from collections.abc import Mapping, Sequence

from app.schemas.stats import StatsRow, StatsTable

__all__ = ["THRESHOLD", "suppress"]

# Counts below this are never shown to the public.
THRESHOLD = 5
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


def suppress(
    table: StatsTable, vocabulary: Mapping[str, str], sensitive: frozenset[str]
) -> StatsTable:
    """The public view of ``table``; ``vocabulary`` maps category code → group.

    Returns a new table; ``table`` is not changed.
    """
    by = table.parameters.by
    scope = set(table.parameters.filters.categories) or set(vocabulary)
    rows = table.rows
    withheld = [_primary(r, by, scope, vocabulary, sensitive) for r in rows]
    primary = sum(withheld)
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
    if any(withheld):
        notes.append(_note(primary, sum(withheld) - primary, sensitive & scope))
    return table.model_copy(update={"rows": released, "notes": notes})


def _primary(
    row: StatsRow,
    by: Sequence[str],
    scope: set[str],
    vocabulary: Mapping[str, str],
    sensitive: frozenset[str],
) -> bool:
    """Whether the cell is withheld for itself: a small count or a sensitive category."""
    if row.count is None or row.count < THRESHOLD:
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


def _note(primary: int, secondary: int, sensitive: set[str]) -> str:
    named = f" ({', '.join(sorted(sensitive))})" if sensitive else ""
    return (
        f"Public view: {primary} cell(s) withheld because their count is below {THRESHOLD} "
        f"or they count a sensitive category{named}, and {secondary} more so that no "
        "withheld count can be recomputed from a total (count and rates null, suppressed: "
        "true). Empirical Bayes rates of a breakdown with any withheld unit are withheld "
        "too. A key with the analyst role sees every value."
    )
