"""The planners' view of a composite index: one row per unit with score, class, rank band,
the ranks it shares with units the data cannot order against it, change since the previous
period, its largest contributing indicators and the values the outlier treatment changed.

Read as a planner reads it:

- **ties are shown as ties**: units whose Monte Carlo rank bands overlap share the range of
  ranks they occupy together (1 to 2, written with an en dash; see
  :func:`indexes.rank.shared_ranks`), and the answer says that the data cannot order them;
- **a contribution** is the points one indicator adds to the score: with min-max
  normalisation, how far the unit stands above the lowest unit on that indicator, so 0 is
  "lowest of all", never "no violence"; zeros are never listed among the largest;
- **the outlier rule** that applied is stated, with each treated value and its value before
  (:mod:`indexes.treat`: not below 20 units unless the definition asks);
- **one default** for the Monte Carlo bands: the definition's ``sensitivity.runs`` (1,000)
  and ``sensitivity.seed`` (1), as in ``/indexes/{code}/sensitivity``.

Below the analyst role an index with an indicator counted from sensitive categories shows
no contribution value at all (:func:`compute_ranking`), no raw or treated value of any
indicator (a raw rate gives the exact count), and no scores under other treatments.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import pandas as pd
from sqlalchemy.ext.asyncio import AsyncConnection

import indexes
from app.access import sees_published_view
from app.core.errors import InvalidParameter, ProblemError
from app.core.settings import Settings
from app.schemas.indexes import (
    Contributor,
    IndexResultRow,
    IndexResults,
    IndexSensitivity,
    Ranking,
    RankingRow,
    SensitivityRequest,
    TreatmentComparisonRow,
)
from app.security import Principal
from app.services.index_data import DASH
from app.services.indexes import (
    compute_results,
    compute_sensitivity,
    get_definition,
    resolve_sensitivity,
)
from app.services.jobs import AnalysisFailed
from app.sql import stats as stats_sql
from indexes.rank import shared_ranks
from indexes.spec import IndexDefinition

__all__ = [
    "TOP_CONTRIBUTORS",
    "RankingDraft",
    "compute_ranking",
    "draft_ranking",
    "finish_ranking",
    "published_bands",
]

TOP_CONTRIBUTORS = 3
# A contribution at or below this (score points) is "the lowest unit": never listed.
ZERO = 1e-9


def published_bands(definition: IndexDefinition) -> tuple[int, int]:
    """The runs and seed of the published rank bands: the definition's."""
    return definition.sensitivity.runs, definition.sensitivity.seed


def _check_bands(
    definition: IndexDefinition, reader: Principal, runs: int | None, seed: int | None
) -> None:
    """Below analyst the bands are the published ones: a band over a chosen seed is the
    rank under weights anyone can redraw, and enough of them would pin indicators whose
    contributions are withheld."""
    if not sees_published_view(reader):
        return
    published = published_bands(definition)
    if runs not in (None, published[0]) or seed not in (None, published[1]):
        raise InvalidParameter(
            f"without an analyst key the rank band is the published one: runs="
            f"{published[0]} and seed={published[1]} (leave them out)"
        )


@dataclass(frozen=True)
class RankingDraft:
    """A ranking before its rank bands: the index computed for the period, who reads it,
    the indicators withheld from them, and the sensitivity run that gives the bands
    (``bands``: its parameters with every default resolved, the key of a stored run)."""

    definition: IndexDefinition
    results: IndexResults
    reader: Principal
    withheld: frozenset[str]
    bands: SensitivityRequest

    def failure(self, message: str, run_id: int) -> ProblemError:
        """The error a reader gets when the sensitivity run of the bands failed: its
        reason, in the same words for every indicator when the reader may not see which
        one (:func:`_public_error`), and without the run below the analyst role."""
        if self.withheld:
            return InvalidParameter(_public_error(message))
        if sees_published_view(self.reader):
            return InvalidParameter(message)
        return AnalysisFailed(message, run_id=run_id)


async def draft_ranking(
    conn: AsyncConnection,
    settings: Settings,
    who: Principal,
    code: str,
    period_text: str,
    *,
    reader: Principal,
    runs: int | None = None,
    seed: int | None = None,
    version: int | None = None,
    map_classes: bool = True,
) -> RankingDraft:
    """Everything of a ranking but its rank bands: the index for the period
    (:func:`compute_results`, a couple of index computations: cheap), and the parameters
    of the sensitivity run that gives the bands (the definition's runs and seed unless an
    analyst gives others). A bad index, version, period, runs or seed, and data the index
    cannot use, are refused here, before any run is stored. ``map_classes=False`` leaves the
    map classes out (:func:`compute_results`)."""
    record = await get_definition(conn, code, version)
    definition = indexes.load_definition(record.definition)
    _check_bands(definition, reader, runs, seed)
    withheld: set[str] = set()
    if sees_published_view(reader):
        sensitive = set((await conn.execute(stats_sql.select_sensitive_categories())).scalars())
        withheld = _withheld_indicators(definition, sensitive)
    with _scrubbed(withheld):
        results = await compute_results(
            conn, settings, who, record.code, period_text, record.version,
            map_classes=map_classes,
        )  # fmt: skip
    bands = await resolve_sensitivity(
        conn, settings, record.code, period_text, runs=runs, seed=seed, version=record.version
    )
    return RankingDraft(definition, results, reader, frozenset(withheld), bands)


def finish_ranking(draft: RankingDraft, bands: IndexSensitivity) -> Ranking:
    """The ranking of ``draft`` with the rank bands of its sensitivity run (see
    :func:`compute_ranking`)."""
    results, definition, withheld = draft.results, draft.definition, set(draft.withheld)
    notes = list(results.notes)
    total = len(definition.indicators)
    if withheld:
        notes = [*_public_notes(notes, withheld), _withheld_note(withheld, total)]
    shared, ties = _ties(results, bands)
    analyst = not sees_published_view(draft.reader)
    rows = [
        _ranking_row(r, results, bands, shared, definition, withheld, analyst) for r in results.rows
    ]
    return Ranking(
        index=results.code,
        version=results.version,
        title=results.title,
        period=results.period,
        previous_period=results.previous_period,
        runs=bands.runs,
        seed=bands.seed,
        treatment=results.treatment,
        indicators=results.indicators,
        contributions=_contribution_meaning(definition, len(results.rows)),
        ties=ties,
        treatment_comparison=None if withheld else _comparison(bands),
        rows=rows,
        notes=notes,
    )


async def compute_ranking(
    conn: AsyncConnection,
    settings: Settings,
    who: Principal,
    code: str,
    period_text: str,
    *,
    reader: Principal,
    runs: int | None = None,
    seed: int | None = None,
    version: int | None = None,
    map_classes: bool = True,
) -> Ranking:
    """The planners' view, computed here, rank bands included (for work that runs in a
    worker already, such as a periodic report; ``GET /rankings`` takes its bands from a
    sensitivity run instead): :func:`compute_results` joined with the rank bands of
    :func:`compute_sensitivity` (the definition's runs and seed unless an analyst gives
    others), the ranks units share, and each unit's largest contributing indicators.
    ``map_classes=False`` leaves the map classes out (a report shows ranks only).

    ``who`` computes the index; ``reader`` is who gets the page. Below the analyst role, when
    any indicator is counted from sensitive categories (:func:`_withheld_indicators`), no
    contribution value is shown at all: the contributions add up to the score and none is
    negative, so any listed value would bound the withheld ones (the score minus the listed
    ones, or an exact 0 when they add up to the score). ``top_indicators`` then names the
    released indicators in order of contribution, without values, and the notes on the
    withheld indicators (imputed values, outlier treatment, why the previous period is not
    computable) are left out (:func:`_public_notes`).
    """
    draft = await draft_ranking(
        conn, settings, who, code, period_text, reader=reader, runs=runs, seed=seed,
        version=version, map_classes=map_classes,
    )  # fmt: skip
    request = draft.bands
    with _scrubbed(set(draft.withheld)):
        bands = await compute_sensitivity(
            conn, settings, who, request.code, request.period, runs=request.runs,
            seed=request.seed, version=request.version,
        )  # fmt: skip
    return finish_ranking(draft, bands)


@contextmanager
def _scrubbed(withheld: set[str]) -> Iterator[None]:
    """An index error raised inside, in the same words for every indicator when some are
    withheld from the reader (whichever indicator it names)."""
    try:
        yield
    except indexes.IndexDataError as exc:
        if withheld:
            raise indexes.IndexDataError(_public_error(str(exc))) from None
        raise


def _rank_text(first: int | None, last: int | None) -> str:
    if first is None or last is None:
        return ""
    return str(first) if first == last else f"{first}{DASH}{last}"


def _ties(results: IndexResults, bands: IndexSensitivity) -> tuple[pd.DataFrame, list[str]]:
    """The ranks each unit shares, and a sentence per group the data cannot order."""
    band = {r.unit_code: r for r in bands.rows}
    codes = [r.unit_code for r in results.rows]
    nominal = pd.Series([r.rank for r in results.rows], index=codes, dtype=float)
    low = pd.Series([band[c].rank_q05 if c in band else None for c in codes], index=codes)
    high = pd.Series([band[c].rank_q95 if c in band else None for c in codes], index=codes)
    shared = shared_ranks(nominal, low.astype(float), high.astype(float))
    names = {r.unit_code: r.unit_name for r in results.rows}
    ties = []
    for _, members in shared.dropna().groupby("group", sort=True):
        if len(members) < 2:
            continue
        first, last = int(members["first"].iloc[0]), int(members["last"].iloc[0])
        listed = [names[c] for c in members.index]
        who = ", ".join(listed[:-1]) + f" and {listed[-1]}"
        ties.append(
            f"{who} share ranks {first}{DASH}{last}: their rank bands (5{DASH}95 %) overlap, "
            "so the data cannot order them."
        )
    if not ties and len(shared.dropna()):
        ties.append("No two rank bands overlap: the data order every unit.")
    return shared, ties


def _contributors(
    row: IndexResultRow,
    weights: dict[str, float],
    definition: IndexDefinition,
    withheld: set[str],
    names: dict[str, str],
) -> list[Contributor]:
    """The indicators adding the most points, largest first, none at 0."""
    if withheld:
        order = _released_order(row, weights, withheld, definition.aggregation)
        return [Contributor(code=c, name=names[c], contribution=None) for c in order]
    positive = [(c, v) for c, v in row.contributions.items() if v is not None and v > ZERO]
    return [
        Contributor(code=c, name=names[c], contribution=v)
        for c, v in sorted(positive, key=lambda item: -item[1])
    ]


def _ranking_row(
    r: IndexResultRow,
    results: IndexResults,
    bands: IndexSensitivity,
    shared: pd.DataFrame,
    definition: IndexDefinition,
    withheld: set[str],
    analyst: bool,
) -> RankingRow:
    names = {i.code: i.name or i.code for i in definition.indicators}
    b = next((x for x in bands.rows if x.unit_code == r.unit_code), None)
    first = _optional(shared.at[r.unit_code, "first"])
    last = _optional(shared.at[r.unit_code, "last"])
    group = shared.at[r.unit_code, "group"]
    partners = [] if pd.isna(group) else [c for c in shared.index[shared["group"] == group]]
    unit_names = {x.unit_code: x.unit_name for x in bands.rows}
    treated = [
        t if analyst else t.model_copy(update={"original": None, "treated": None})
        for t in r.treated_values
        if t.indicator not in withheld
    ]
    return RankingRow(
        ranks=_rank_text(first, last),
        rank_first=first,
        rank_last=last,
        shares_ranks_with=[unit_names.get(c, c) for c in partners if c != r.unit_code],
        rank=r.rank,
        unit_code=r.unit_code,
        unit_name=r.unit_name,
        score=r.score,
        map_class=r.map_class,
        median_rank=b.median_rank if b else None,
        rank_q05=b.rank_q05 if b else None,
        rank_q95=b.rank_q95 if b else None,
        previous_rank=r.previous_rank,
        rank_change=r.rank_change,
        top_indicators=_contributors(r, results.weights, definition, withheld, names)[
            :TOP_CONTRIBUTORS
        ],
        treated_values=treated,
    )


def _optional(value: object) -> int | None:
    return None if value is None or pd.isna(value) else int(value)


def _comparison(bands: IndexSensitivity) -> list[TreatmentComparisonRow]:
    return [
        TreatmentComparisonRow(
            unit_code=r.unit_code,
            unit_name=r.unit_name,
            score=r.score,
            rank=r.nominal_rank,
            score_untreated=r.score_untreated,
            rank_untreated=r.rank_untreated,
            score_jrc=r.score_jrc,
            rank_jrc=r.rank_jrc,
        )
        for r in bands.rows
    ]


def _contribution_meaning(definition: IndexDefinition, units: int) -> str:
    """What a contribution is, for the normalisation and aggregation of ``definition``."""
    norm = definition.normalisation
    if definition.aggregation == "arithmetic" and norm.method == "minmax" and norm.low == 0:
        return (
            "A contribution is the points one indicator adds to a unit's score (the "
            "contributions add up to the score): the indicator's weight times how far the "
            f"unit stands above the lowest of the {units} units on that indicator, on a "
            f"0{DASH}{norm.high:g} scale. A contribution of 0 means the lowest of the {units} "
            "on that indicator, not an absence of violence, and is never listed among the "
            "largest contributions."
        )
    return (
        "A contribution is the points one indicator adds to a unit's score (its weight times "
        f"its {norm.method}-normalised value, under {definition.aggregation} aggregation; the "
        "contributions add up to the score). Contributions of 0 or less are never listed "
        "among the largest."
    )


def _withheld_indicators(definition: IndexDefinition, sensitive: set[str]) -> set[str]:
    """Indicators whose values would show counts of sensitive categories to the public.

    A rate or count over a sensitive category gives the count with the census; a share's
    denominator is every incident of the unit, sensitive ones included.
    """
    return {
        i.code
        for i in definition.indicators
        if (source := i.source.incidents) is not None
        and (source.measure == "share" or set(source.categories) & sensitive)
    }


def _released_order(
    row: IndexResultRow, weights: dict[str, float], withheld: set[str], aggregation: str
) -> list[str]:
    """The released indicators of one unit, largest contribution first, ordered by a key
    computed from the released indicators alone (weight x normalised value; its logarithm
    under geometric aggregation), so that the order says nothing about the withheld ones.
    An indicator whose key is 0 (the unit is the lowest on it) is not listed, as a zero
    contribution never is.

    (Under geometric and Copeland aggregation the points are the unit's score times a share
    whose denominator sums over every indicator, withheld ones included: same order, but the
    fallback to the weights when that denominator is 0 would depend on them.)
    """
    key: dict[str, float] = {}
    for code in row.normalised:
        x, v = row.normalised.get(code), weights.get(code)
        if code in withheld or x is None or v is None:
            continue
        if aggregation == "geometric":
            if x <= 0:
                continue
            x = math.log(x)
        if v * x > 0:
            key[code] = v * x
    return sorted(key, key=lambda c: -key[c])  # stable: ties keep the definition's order


def _names_any(text: str, codes: set[str]) -> bool:
    """Whether a note or message names one of these indicator codes."""
    return any(re.search(rf"(?<![\w-]){re.escape(c)}(?![\w-])", text) for c in codes)


# The note of _Builder._denominator: about the census, not the incidents.
_CENSUS_NOTE = re.compile(r"[\w-]+: no \w+ population of age group ")


def _public_notes(notes: list[str], withheld: set[str]) -> list[str]:
    """The notes a public ranking keeps: none that is computed from a withheld indicator's
    values (an imputed value, which units were winsorised and the skew and kurtosis). Why
    the previous period's index is not computable is left out whichever indicator it names.
    Notes on the census denominator of an indicator depend on the population only and
    stay."""
    out = []
    for note in notes:
        if note.startswith("No rank change:"):
            out.append(note.split("(", 1)[0].rstrip() + ".")
        elif not _names_any(note, withheld) or _CENSUS_NOTE.match(note):
            out.append(note)
    return out


def _public_error(message: str) -> str:
    """An index error as a public caller reads it when the index has withheld indicators:
    which indicator is constant or missing is not said (the same words for every one)."""
    what = "an indicator of the index is constant" if "is constant" in message else None
    return (
        f"the index cannot be computed for this period: {what or 'its data are incomplete'} "
        "(a key with the analyst role sees which indicator)"
    )


def _withheld_note(withheld: set[str], total: int) -> str:
    listed = (
        "Every indicator of this index is counted from sensitive categories, so no "
        "contributing indicator is listed."
        if len(withheld) >= total
        else "The largest contributing indicators among the others are named, largest first, "
        "without their values (contribution: null)."
    )
    return (
        f"Public view: {len(withheld)} of the index's {total} indicators are counted from "
        f"sensitive categories or from a share of all incidents ({', '.join(sorted(withheld))}), "
        "and their contributions are withheld. Contributions add up to the score and none is "
        "negative, so any contribution shown would bound the withheld ones (the score minus "
        "those shown); none is shown. "
        f"{listed} Scores, ranks and rank bands use every indicator; notes computed from "
        "withheld indicators are left out. A key with the analyst role sees every "
        "contribution."
    )
