"""Disclosure control (app.services.disclosure) on hand-made tables: which cells are
withheld, the complementary cells, EB rates, that the input is left unchanged; and the
cell-key perturbation of counts."""

from __future__ import annotations

import itertools
import re

from app.schemas.stats import StatsFilters, StatsParameters, StatsRow, StatsTable
from app.services.disclosure import KEY_RANGE, NOISE, THRESHOLD, perturb, suppress

VOCABULARY = {"theft": "property", "robbery": "property_violent", "sexual_violence": "vaw",
              "homicide": "violent_death", "suicide": "violent_death"}  # fmt: skip
SENSITIVE = frozenset({"sexual_violence", "suicide"})


def _table(counts: dict[tuple[str, str | None], int], by: list[str], categories=()) -> StatsTable:
    rows = []
    for (unit, value), count in counts.items():
        extra = {by[0]: value} if by else {}
        rows.append(
            StatsRow(
                unit_code=unit,
                unit_name=unit,
                unit_level=1,
                **extra,
                count=count,
                population=1000.0,
                population_year=2022,
                population_sex="total",
                population_age_group="total",
                population_source="test",
                rate=count / 10,
                rate_eb_global=1.0,
                rate_eb_spatial=2.0,
                rse=0.1,
                unstable=count < 20,
            )
        )
    filters = StatsFilters(
        categories=list(categories),
        occurred_from=None,
        occurred_to=None,
        victim_sex=[],
        age_min=None,
        age_max=None,
        sources=[],
    )
    parameters = StatsParameters(
        level=1,
        units=sorted({u for u, _ in counts}),
        by=by,
        period="year",
        period_value=None,
        timezone="UTC",
        age_groups=[],
        filters=filters,
        per=1e5,
        unstable_below=20,
        weights={},
    )
    return StatsTable(rows=rows, parameters=parameters, notes=[])


def _lines(table: StatsTable, column: str) -> dict:
    out: dict = {}
    for r in table.rows:
        out.setdefault(getattr(r, column), []).append(r)
    return out


def test_small_and_sensitive_cells_and_their_complements_are_withheld():
    counts = {("A", "theft"): 50, ("A", "robbery"): 3, ("A", "homicide"): 9,
              ("B", "theft"): 40, ("B", "robbery"): 12, ("B", "homicide"): 8,
              ("C", "theft"): 30, ("C", "robbery"): 20, ("C", "homicide"): 6,
              ("A", "sexual_violence"): 100, ("B", "sexual_violence"): 90,
              ("C", "sexual_violence"): 80}  # fmt: skip
    table = _table(counts, ["category"])
    public = suppress(table, VOCABULARY, SENSITIVE)
    hidden = {(r.unit_code, r.category) for r in public.rows if r.suppressed}
    # Primary: A robbery (3 < 5) and every sexual violence cell, however large.
    assert {("A", "robbery"), ("A", "sexual_violence"), ("B", "sexual_violence"),
            ("C", "sexual_violence")} <= hidden  # fmt: skip
    # No line (a unit's categories, a category's units) has exactly one withheld cell.
    for column in ("unit_code", "category"):
        for line in _lines(public, "category" if column == "unit_code" else "unit_code").values():
            assert sum(r.suppressed for r in line) != 1
    # The robbery line's complement is its smallest other cell (B, 12).
    assert ("B", "robbery") in hidden and ("C", "robbery") not in hidden
    for r in public.rows:
        if r.suppressed:
            assert r.count is r.rate is r.rse is r.rate_eb_global is r.unstable is None
        else:
            assert r.count == counts[(r.unit_code, r.category)]
            assert (r.rate_eb_global is None) == any(
                o.suppressed for o in public.rows if o.category == r.category
            )
    assert public.notes and str(THRESHOLD) in public.notes[0]
    # The input is not changed.
    assert all(not r.suppressed and r.count is not None for r in table.rows)


def test_totals_over_sensitive_categories_are_withheld():
    counts = {(u, None): 500 for u in "ABC"}
    assert all(r.suppressed for r in suppress(_table(counts, []), VOCABULARY, SENSITIVE).rows)
    only_theft = _table(counts, [], categories=["theft", "robbery"])
    assert not any(r.suppressed for r in suppress(only_theft, VOCABULARY, SENSITIVE).rows)
    groups = {(u, g): 500 for u, g in itertools.product("ABC", ("violent_death", "property"))}
    public = suppress(_table(groups, ["category_group"]), VOCABULARY, SENSITIVE)
    # violent_death includes suicide; property then goes too, as its complement.
    assert all(r.suppressed for r in public.rows if r.category_group == "violent_death")
    assert all(r.suppressed for r in public.rows)


def test_zero_counts_are_withheld_too():
    counts = {("A", "theft"): 0, ("B", "theft"): 100, ("C", "theft"): 200}
    public = suppress(_table(counts, ["category"]), VOCABULARY, SENSITIVE)
    assert [r.suppressed for r in public.rows] == [True, True, False]


def test_perturbation_follows_the_noise_table_and_depends_only_on_the_cell():
    # Cell keys spread evenly over their range give the table's probabilities.
    steps = 10_000
    keys = [k * KEY_RANGE // steps for k in range(steps)]
    noise = [perturb(100, key) - 100 for key in keys]
    for value, probability in NOISE.items():
        assert abs(noise.count(value) - probability * steps) <= 1
    assert abs(sum(noise)) / steps < 0.001  # unbiased
    # Only the count and the key matter: the same incidents, the same published count;
    # the key wraps around (a sum of record keys modulo the range).
    assert [perturb(100, k + 3 * KEY_RANGE) for k in keys[:50]] == [100 + n for n in noise[:50]]


def test_perturbed_counts_are_never_small_and_zero_stays_zero():
    keys = range(0, KEY_RANGE, KEY_RANGE // 997)
    for count in range(THRESHOLD, THRESHOLD + 3):
        published = {perturb(count, k) for k in keys}
        assert min(published) == THRESHOLD and max(published) == count + 2
    assert {perturb(0, k) for k in keys} == {0}
    assert all(0 <= perturb(2, k) <= 4 for k in keys)  # withheld anyway (below the threshold)


def test_suppression_is_decided_on_the_true_counts():
    # A true 4 published as 6 is withheld, and with it the smallest other unit of the line.
    counts = {("A", "theft"): 6, ("B", "theft"): 5, ("C", "theft"): 30}
    table = _table(counts, ["category"], categories=["theft"])
    public = suppress(table, VOCABULARY, SENSITIVE, true_counts=[4, 5, 30])
    assert [r.suppressed for r in public.rows] == [True, True, False]
    assert public.rows[0].count is None and public.rows[2].count == 30
    assert any("perturbed" in n for n in public.notes)


def test_the_note_tells_no_more_than_the_withheld_rows():
    """Whether a withheld cell is small or withheld to protect another is not said: a
    hidden cell crossing the threshold (4 to 5, still withheld as a complement) leaves the
    note as it was."""
    base = {("A", "theft"): 50, ("B", "theft"): 40, ("C", "theft"): 60,
            ("A", "robbery"): 3, ("C", "robbery"): 30,
            ("A", "homicide"): 2, ("B", "homicide"): 2, ("C", "homicide"): 20}  # fmt: skip
    notes = []
    for b_robbery in (4, 5):  # small, then withheld as the robbery line's complement
        counts = {**base, ("B", "robbery"): b_robbery}
        public = suppress(_table(counts, ["category"]), VOCABULARY, SENSITIVE)
        hidden = {(r.unit_code, r.category) for r in public.rows if r.suppressed}
        assert hidden == {(u, c) for u in "AB" for c in ("robbery", "homicide")}
        notes.append(public.notes)
    assert notes[0] == notes[1]
    numbers = set(re.findall(r"\d+", " ".join(notes[0])))
    assert numbers <= {"4", str(THRESHOLD)}, notes[0]
