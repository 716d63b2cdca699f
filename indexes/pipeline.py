"""The whole COINr-style build of one index: screen → transform → impute → treat →
normalise → aggregate → contributions → rank and classes.

:func:`compute_index` is re-exported as :func:`indexes.compute_index`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from indexes import IndexDataError
from indexes.aggregate import aggregate, shift_positive
from indexes.contribution import contributions
from indexes.impute import ImputationNote, impute
from indexes.normalise import normalise
from indexes.rank import Classes, classify, rank_scores
from indexes.screen import select_indicators
from indexes.spec import IndexDefinition, load_definition
from indexes.treat import TreatmentNote, treat, treatment_rule
from indexes.weights import Hierarchy, hierarchy

__all__ = [
    "ENGINE",
    "IndexResult",
    "compare_treatments",
    "compute_index",
    "normalised_for",
    "prepare",
    "treatment_of",
    "with_treatment",
]

#: Conventions of this engine, recorded in every result's parameters.
ENGINE: dict[str, Any] = {
    "package": "indexes",
    "convention": "OECD/JRC Handbook 2008; COINr (Becker et al. 2022)",
    "skew_kurtosis": "e1071 type 2 (COINr skew/kurt): G1 and excess G2",
    "treatment_fallback": "log_CT on the original values (COINr combine_treat = FALSE)",
    "rank_ties": "min (rank 1 = highest score)",
    "geometric_positive": "minmax low <= 0 -> low = 1 (COINr l_u = c(1, 100)); else x - min + 1",
    "copeland_draw_tolerance": 1e-12,
    "percentile": "100 * (rank_min - 1) / (n - 1)",
    "zscore_sd": "n - 1",
}


@dataclass(frozen=True)
class IndexResult:
    """Everything one run of an index produced, and how (see :func:`compute_index`).

    Attributes
    ----------
    name, version : str, int
        Name and version of the definition the result came from.
    definition : IndexDefinition
    raw : pandas.DataFrame
        The indicator columns as given (float copy, definition order).
    imputed : pandas.DataFrame
        After the optional transform and the imputation.
    treated : pandas.DataFrame
        After outlier treatment.
    normalised : pandas.DataFrame
        Direction-adjusted normalised values actually aggregated.
    dimension_scores : pandas.DataFrame
        One column per dimension (none without dimensions).
    score : pandas.Series
        Index score (higher = higher priority).
    rank : pandas.Series of Int64
        1 = highest score; ties share the minimum rank.
    classes : pandas.Series of Int64
        Map class 1..k (k = highest scores).
    class_bins : tuple of float
        Upper bounds of the classes.
    contributions : pandas.DataFrame
        Each indicator's contribution in score points (rows sum to the score).
    contribution_shares : pandas.DataFrame
        The same as shares of the score (rows sum to 1).
    weights : pandas.Series
        Effective indicator weights (sum to 1).
    imputation_notes : tuple of ImputationNote
    treatment_notes : tuple of TreatmentNote
    parameters : dict
        Everything needed to rebuild the run: the full definition (JSON-able) under
        ``"definition"``, and the values the engine derived (normalisation bounds, shifts,
        weights) and its conventions.
    """

    name: str
    version: int
    definition: IndexDefinition
    raw: pd.DataFrame
    imputed: pd.DataFrame
    treated: pd.DataFrame
    normalised: pd.DataFrame
    dimension_scores: pd.DataFrame
    score: pd.Series
    rank: pd.Series
    classes: pd.Series
    class_bins: tuple[float, ...]
    contributions: pd.DataFrame
    contribution_shares: pd.DataFrame
    weights: pd.Series
    imputation_notes: tuple[ImputationNote, ...] = ()
    treatment_notes: tuple[TreatmentNote, ...] = ()
    parameters: dict[str, Any] = field(default_factory=dict)

    def table(self, top: int = 3) -> pd.DataFrame:
        """One row per unit, by rank: rank, score, class, dimension scores and the ``top``
        indicators with the largest contributions (``top_1`` ...)."""
        frame = pd.DataFrame({"rank": self.rank, "score": self.score, "class": self.classes})
        frame = frame.join(self.dimension_scores)
        order = np.argsort(-self.contributions.to_numpy(), axis=1, kind="stable")
        codes = np.asarray(self.contributions.columns)
        for j in range(min(top, codes.size)):
            frame[f"top_{j + 1}"] = codes[order[:, j]]
        return frame.sort_values(["rank", "score"], ascending=[True, False], kind="stable")


def _transform(frame: pd.DataFrame, definition: IndexDefinition) -> pd.DataFrame:
    out = frame.copy()
    for indicator in definition.indicators:
        if indicator.transform is None:
            continue
        x = frame[indicator.code]
        if indicator.transform == "log1p":
            if (x <= -1).any():
                raise IndexDataError(f"log1p transform of {indicator.code!r} needs values > -1")
            out[indicator.code] = np.log1p(x)
        else:
            if (x < 0).any():
                raise IndexDataError(f"sqrt transform of {indicator.code!r} needs values >= 0")
            out[indicator.code] = np.sqrt(x)
    return out


def prepare(
    raw: pd.DataFrame, definition: IndexDefinition
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, tuple, tuple]:
    """Screen, transform, impute and treat: ``(raw, imputed, treated, imp_notes, treat_notes)``."""
    selected = select_indicators(raw, definition.indicator_codes)
    transformed = _transform(selected, definition)
    imputed, imputation_notes = impute(transformed, definition.imputation)
    spec = definition.treatment
    treated, treatment_notes = treat(
        imputed,
        spec.method,
        min_units=spec.min_units,
        winmax=spec.winmax,
        skew_threshold=spec.skew_threshold,
        kurtosis_threshold=spec.kurtosis_threshold,
    )
    return selected, imputed, treated, imputation_notes, treatment_notes


def normalised_for(
    treated: pd.DataFrame, definition: IndexDefinition, method: str, aggregation: str
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Normalise ``treated`` with ``method``, made positive when ``aggregation`` is geometric.

    Returns the frame and the parameters used (``low``, ``high``, ``shifts``).
    """
    low, high = definition.normalisation.low, definition.normalisation.high
    if aggregation == "geometric" and method == "minmax" and low <= 0 < high - 1:
        low = 1.0  # COINr's vignette: Normalise(..., l_u = c(1, 100)) before a_gmean
    goalposts = {
        i.code: (i.goalposts.low, i.goalposts.high)
        for i in definition.indicators
        if i.goalposts is not None
    }
    normalised = normalise(
        treated, definition.directions, method, low=low, high=high, goalposts=goalposts
    )
    shifts: dict[str, float] = {}
    if aggregation == "geometric":
        normalised, shifts = shift_positive(normalised)
    return normalised, {"method": method, "low": low, "high": high, "shifts": shifts}


def compute_index(raw: pd.DataFrame, definition: Any, *, classes: bool = True) -> IndexResult:
    """Build a composite index from a raw indicator table.

    Parameters
    ----------
    raw : pandas.DataFrame
        Rows = units (index = unit ids), columns include every indicator code of the
        definition (others are ignored). Not modified.
    definition : IndexDefinition, mapping, or JSON / YAML text
        Validated with :func:`indexes.spec.load_definition`.
    classes : bool, default True
        Classify the scores for a choropleth (:func:`indexes.rank.classify`). ``False``
        leaves every class missing and no bins: for work that shows ranks only, since
        mapclassify compiles its numba kernels on import (~90 MiB, seconds).

    Returns
    -------
    IndexResult

    Raises
    ------
    indexes.IndexDefinitionError
        Invalid definition.
    indexes.IndexDataError
        Missing columns, missing values with ``imputation: none`` (naming the cells),
        constant indicators, values a transform or normaliser cannot take.

    Notes
    -----
    Steps and conventions follow COINr's ``Screen → Impute → Treat → Normalise →
    Aggregate`` (Becker et al. 2022) and the OECD/JRC Handbook (2008); each module's
    docstring gives its formula. The result's ``parameters["definition"]`` rebuilds the
    same result: ``compute_index(raw, result.parameters["definition"])``.

    Examples
    --------
    >>> import pandas as pd
    >>> raw = pd.DataFrame(
    ...     {"homicide": [30.0, 10.0, 20.0], "police": [2.0, 6.0, 4.0]}, index=["A", "B", "C"]
    ... )
    >>> result = compute_index(raw, {
    ...     "name": "demo",
    ...     "indicators": [
    ...         {"code": "homicide", "source": {"external": "homicide"}},
    ...         {"code": "police", "source": {"external": "police"}, "direction": -1},
    ...     ],
    ...     "treatment": "none",
    ... })
    >>> result.score.round(1).tolist()
    [100.0, 0.0, 50.0]
    >>> result.rank.tolist()
    [1, 3, 2]

    References
    ----------
    OECD/JRC (2008). Handbook on Constructing Composite Indicators.
    https://doi.org/10.1787/9789264043466-en

    Becker, W. et al. (2022). COINr: An R package for developing composite indicators.
    JOSS 7(78), 4567. https://doi.org/10.21105/joss.04567
    """
    definition = load_definition(definition)
    selected, imputed, treated, imputation_notes, treatment_notes = prepare(raw, definition)
    weights: Hierarchy = hierarchy(definition)
    method, agg = definition.normalisation.method, definition.aggregation
    normalised, norm_parameters = normalised_for(treated, definition, method, agg)
    aggregated = aggregate(normalised, weights, agg)
    effective = weights.effective
    points, shares = contributions(normalised, effective, aggregated.score, agg)
    ranks = rank_scores(aggregated.score)
    classes = (
        classify(aggregated.score, definition.classes.method, definition.classes.k)
        if classes
        else Classes.none(aggregated.score)
    )
    parameters = {
        "definition": definition.model_dump(mode="json"),
        "normalisation": norm_parameters,
        "aggregation": agg,
        "weights": {
            "effective": {k: float(v) for k, v in effective.items()},
            "within_dimension": {k: float(v) for k, v in weights.within.items()},
            "dimensions": {k: float(v) for k, v in weights.dimension_weights.items()},
        },
        "classes": {"method": classes.method, "k": classes.k, "bins": list(classes.bins)},
        "treatment": treatment_of(definition, len(selected)),
        "units": len(selected),
        "engine": dict(ENGINE),
    }
    return IndexResult(
        name=definition.name,
        version=definition.version,
        definition=definition,
        raw=selected,
        imputed=imputed,
        treated=treated,
        normalised=normalised,
        dimension_scores=aggregated.dimension_scores,
        score=aggregated.score,
        rank=ranks,
        classes=classes.classes,
        class_bins=classes.bins,
        contributions=points,
        contribution_shares=shares,
        weights=effective,
        imputation_notes=imputation_notes,
        treatment_notes=treatment_notes,
        parameters=parameters,
    )


def treatment_of(definition: IndexDefinition, units: int) -> dict[str, Any]:
    """Which outlier rule applies to ``units`` units: method, minimum, whether it runs, and
    the rule in plain words (:func:`indexes.treat.treatment_rule`)."""
    spec = definition.treatment
    return {
        "method": spec.method,
        "min_units": spec.min_units,
        "units": units,
        "applied": spec.method != "none" and units >= spec.min_units,
        "rule": treatment_rule(
            spec.method,
            units,
            min_units=spec.min_units,
            winmax=spec.winmax,
            skew_threshold=spec.skew_threshold,
            kurtosis_threshold=spec.kurtosis_threshold,
        ),
    }


def with_treatment(
    definition: Any, method: str, *, min_units: int | None = None
) -> IndexDefinition:
    """The same definition with another outlier treatment (``min_units`` 1 forces the rule
    on any number of units)."""
    definition = load_definition(definition)
    update: dict[str, Any] = {"method": method}
    if min_units is not None:
        update["min_units"] = min_units
    treatment = definition.treatment.model_copy(update=update)
    return definition.model_copy(update={"treatment": treatment})


def compare_treatments(raw: pd.DataFrame, definition: Any) -> pd.DataFrame:
    """Scores and ranks per unit as defined, without any outlier treatment, and with the
    JRC rule applied whatever the number of units.

    Columns ``score``, ``rank`` (as defined), ``score_untreated``, ``rank_untreated``,
    ``score_jrc``, ``rank_jrc``; a variant that cannot be computed (the log fallback
    making an indicator constant, say) is NaN.
    """
    definition = load_definition(definition)
    columns: dict[str, pd.Series] = {}
    variants = {
        "": definition,
        "_untreated": with_treatment(definition, "none"),
        "_jrc": with_treatment(definition, "jrc", min_units=1),
    }
    index = None
    for suffix, variant in variants.items():
        try:
            result = compute_index(raw, variant, classes=False)
        except IndexDataError:
            continue
        index = result.score.index
        columns[f"score{suffix}"] = result.score.astype(float)
        columns[f"rank{suffix}"] = result.rank.astype("Int64")
    frame = pd.DataFrame(columns, index=index)
    for suffix in variants:
        for column in (f"score{suffix}", f"rank{suffix}"):
            if column not in frame:
                frame[column] = pd.Series(np.nan, index=frame.index, dtype="Float64")
    return frame[[f"{c}{s}" for s in variants for c in ("score", "rank")]]
