"""Probabilistic linkage of death records across agencies: splink (Fellegi-Sunter) on DuckDB.

The run, phase by phase (``counts["seconds"]`` times each):

``prepare``   normalise names (lower case, accents and punctuation dropped) unless hashed,
              derive blocking keys (Soundex of each name, or the hashed token itself), the
              year-month of death and the age at death when only the birth date is known.
``count``     exact number of pairs each blocking rule adds (splink's
              ``count_comparisons_from_blocking_rules``, marginal: a pair is counted under
              the first rule that generates it).
``train``     u probabilities from random pairs (``estimate_u_using_random_sampling``,
              seeded), the prior (lambda) from deterministic rules with an assumed recall,
              m probabilities by expectation maximisation in two sessions (blocked on the
              names: trains dates, age, sex, place; blocked on date of death and unit, or on
              birth date when there are no death dates: trains the names).
``predict``   score every blocked pair, keep those with probability >= ``Thresholds.keep``.
``cluster``   connected components of the links (see :func:`_clusters`).

Comparisons (a comparison whose columns are empty in all but one source is left out, so
that EM never estimates a parameter from nothing):

- given and family name: Jaro-Winkler >= 0.92, >= 0.80, else (exact levels only when the
  names are hashed tokens: similarity between hashes means nothing);
- date of death: same day, within 1, 3, 7 days, else;
- age: same birth date, birth dates one typing error apart, age within 1, within 3 years;
- sex: same or not;
- place: within 1 km, within 10 km (both points known), same unit (a point missing), else.

Records of one source are distinct deaths as a rule (an agency does not register the same
death twice, and the service's import already refuses duplicate rows), so by default only
pairs from different sources are compared (splink ``link_only``). ``within_source=True``
also compares records of the same source (``link_and_dedupe``) for an agency known to hold
duplicates. A cluster may still hold two records of one source through a third record; the
consolidation flags it (``same_source_duplicates``) for the analysts rather than cutting it.

Thresholds (defaults in :class:`linkage.model.Thresholds`): a pair links at match
probability >= 0.95; 0.5-0.95 is the uncertain band the analysts review. Measured on FEBRL
4a/4b (``tests/unit/linkage/test_febrl.py``) and on the synthetic deaths
(``linkage.synthetic``): see bench/README.md, section "Record linkage".
"""

from __future__ import annotations

import logging
import re
import time
import unicodedata
from collections.abc import Callable
from typing import Any

import duckdb
import numpy as np
import pandas as pd
import splink
import splink.comparison_library as cl
from splink import DuckDBAPI, Linker, SettingsCreator, block_on
from splink.blocking_analysis import count_comparisons_from_blocking_rules
from splink.internals.exceptions import SplinkException

from linkage.model import (
    CLUSTER_COLUMNS,
    PAIR_COLUMNS,
    LinkageResult,
    Thresholds,
    validate_decisions,
    validate_records,
)

# splink logs every SQL step at INFO; the worker's log wants the run, not the steps
_SPLINK_LOG_LEVEL = logging.WARNING

# Pairs sampled for the u probabilities, and the cap on EM training pairs: enough for stable
# estimates (splink's own guidance is 1e6-1e7 for u), small enough for the 60 s benchmark.
U_MAX_PAIRS = 2e6
EM_MAX_PAIRS = 2e6

# The deterministic rules below find about this share of true matches (measured on FEBRL
# 4 and the synthetic deaths: names, and birth or death date, typed identically). It turns
# their count into the prior; EM then refines m, not the prior.
DETERMINISTIC_RECALL = 0.6

_KM_SQL = (
    "6371.0 * 2 * asin(sqrt(pow(sin(radians(lat_r - lat_l) / 2), 2) + "
    "cos(radians(lat_l)) * cos(radians(lat_r)) * pow(sin(radians(lon_r - lon_l) / 2), 2)))"
)


def link_records(
    records: pd.DataFrame,
    decisions: pd.DataFrame | None = None,
    *,
    thresholds: Thresholds | None = None,
    hashed: bool = False,
    within_source: bool = False,
    seed: int = 42,
) -> LinkageResult:
    """Link the records that describe the same death; respect analysts' decisions.

    Parameters
    ----------
    records
        One row per agency record (columns in :mod:`linkage.model`).
    decisions
        Analysts' decisions on pairs: ``accept`` forces a link, ``reject`` forbids one
        (even when the two records are joined through a third: see :func:`_clusters`).
    thresholds
        Band edges; :class:`~linkage.model.Thresholds` defaults.
    hashed
        Names are hashed tokens: compared and blocked on exact equality only.
    within_source
        Also compare records of the same source (default: only across sources).
    seed
        Seed of the random sampling for u probabilities (same data, same seed, same result).

    Returns
    -------
    LinkageResult
        Pairs, clusters, parameters and counts.
    """
    thresholds = thresholds or Thresholds()
    seconds: dict[str, float] = {}
    cpu_seconds: dict[str, float] = {}
    clock = _Clock(seconds, cpu_seconds)
    with clock("prepare"):
        recs = validate_records(records)
        dec = validate_decisions(decisions)
        prepared = _prepare(recs, hashed)
        sources = sorted(prepared["source"].unique())
        link_type = _link_type(len(sources), within_source)
        comparisons = _comparisons(prepared, hashed, within_source)
        rules = _blocking_rules(prepared, hashed, within_source)

    parameters: dict[str, Any] = {
        "thresholds": thresholds.as_dict(),
        "seed": seed,
        "hashed": hashed,
        "within_source": within_source,
        "link_type": link_type,
        "splink_version": splink.__version__,
        "blocking_rules": [_rule_sql(r) for r in rules],
    }
    counts: dict[str, Any] = {
        "records": len(recs),
        "records_by_source": {k: int(v) for k, v in recs["source"].value_counts().items()},
    }
    if link_type is None or not comparisons or not rules:
        scored = _empty_scored()
        counts.update(pairs_compared=0, pairs_by_blocking_rule={})
        parameters.update(**{"lambda": None, "comparisons": []})
    else:
        scored = _run_splink(
            prepared, sources, link_type, comparisons, rules, thresholds, seed, clock, counts
        )
        parameters.update(_parameters_from(scored.attrs.pop("model")))

    with clock("cluster"):
        pairs = _merge_decisions(scored, dec, thresholds)
        clusters, cluster_counts = _clusters(recs, pairs, thresholds, within_source)
    counts.update(cluster_counts)
    counts["pairs_by_band"] = {b: int(n) for b, n in pairs["band"].value_counts().items()}
    counts["seconds"] = seconds
    counts["cpu_seconds"] = cpu_seconds
    return LinkageResult(
        pairs=pairs, clusters=clusters, parameters=parameters, counts=counts, thresholds=thresholds
    )


class _Clock:
    """Times phases into dicts, wall and CPU (process-wide, all threads): ``with clock("x"):``.

    On a busy machine the wall time says how long the worker waited, the CPU time what the
    run itself cost.
    """

    def __init__(self, seconds: dict[str, float], cpu_seconds: dict[str, float]) -> None:
        self.seconds = seconds
        self.cpu_seconds = cpu_seconds

    def __call__(self, phase: str) -> _Clock:
        self.phase = phase
        return self

    def __enter__(self) -> None:
        self.start = time.perf_counter()
        self.cpu_start = time.process_time()

    def __exit__(self, *exc: object) -> None:
        for into, elapsed in (
            (self.seconds, time.perf_counter() - self.start),
            (self.cpu_seconds, time.process_time() - self.cpu_start),
        ):
            into[self.phase] = round(into.get(self.phase, 0.0) + elapsed, 3)


def _link_type(n_sources: int, within_source: bool) -> str | None:
    if within_source:
        return "dedupe_only" if n_sources == 1 else "link_and_dedupe"
    return "link_only" if n_sources > 1 else None


# --- prepare ----------------------------------------------------------------------------

_SOUNDEX_CODES = {
    **dict.fromkeys("bfpv", "1"),
    **dict.fromkeys("cgjkqsxz", "2"),
    **dict.fromkeys("dt", "3"),
    "l": "4",
    **dict.fromkeys("mn", "5"),
    "r": "6",
}


def soundex(name: str | None) -> str | None:
    """American Soundex of the first word of a name (``robert`` -> ``R163``).

    h and w do not separate letters with the same code; vowels do (the US census rule).
    """
    if not name:
        return None
    word = re.sub("[^a-z]", "", name.lower().split()[0] if name.split() else "")
    if not word:
        return None
    code = word[0].upper()
    last = _SOUNDEX_CODES.get(word[0], "")
    for ch in word[1:]:
        digit = _SOUNDEX_CODES.get(ch, "")
        if digit and digit != last:
            code += digit
            if len(code) == 4:
                break
        if ch not in "hw":
            last = digit
    return code.ljust(4, "0")


def normalise_name(name: object) -> str | None:
    """Lower case, accents and punctuation dropped, one space between words."""
    if not isinstance(name, str):
        return None
    text = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode().lower()
    text = re.sub(r"[^a-z ]+", " ", text.replace("'", ""))
    text = " ".join(text.split())
    return text or None


def _map_unique(series: pd.Series, fn: Callable[[Any], Any]) -> pd.Series:
    """Apply fn once per distinct value (names repeat a lot)."""
    uniques = series.dropna().unique()
    table = {v: fn(v) for v in uniques}
    return series.map(table).astype("object").where(series.notna(), None)


def _prepare(recs: pd.DataFrame, hashed: bool) -> pd.DataFrame:
    out = pd.DataFrame({"unique_id": recs["record_id"], "source": recs["source"]})
    for col, key in (("given_name", "given_key"), ("family_name", "family_key")):
        names = recs[col] if hashed else _map_unique(recs[col], normalise_name)
        out[col] = names
        out[key] = names if hashed else _map_unique(names, soundex)
    out["sex"] = recs["sex"]
    death = pd.to_datetime(recs["death_date"])
    birth = pd.to_datetime(recs["birth_date"])
    out["death_date"] = death
    out["death_ym"] = (death.dt.year * 100 + death.dt.month).astype("Int64")
    day = (death - pd.Timestamp("1970-01-05")).dt.days  # a Monday
    out["death_fortnight"] = (day // 14).astype("Int64")
    out["death_fortnight_late"] = ((day + 7) // 14).astype("Int64")
    out["birth_date"] = birth
    # the text form for the one-typing-error level, formatted once per distinct date
    out["birth_str"] = _map_unique(birth, lambda d: d.strftime("%Y%m%d"))
    out["birth_year"] = birth.dt.year.astype("Int64")
    age_from_dates = ((death - birth).dt.days // 365.25).astype("Int64")
    out["age"] = recs["age"].fillna(age_from_dates).astype("Int64")
    out["lat"] = recs["lat"]
    out["lon"] = recs["lon"]
    out["unit_code"] = recs["unit_code"]
    return out


def _available(prepared: pd.DataFrame, columns: tuple[str, ...], within_source: bool) -> bool:
    """Whether two compared records can both have these columns (all of them)."""
    known = prepared[list(columns)].notna().all(axis=1)
    if within_source:
        return int(known.sum()) >= 2
    return prepared.loc[known, "source"].nunique() >= 2


# --- the model ----------------------------------------------------------------------------


_OTHER_NAME = {"given_name": "family_name", "family_name": "given_name"}


def _name_comparison(col: str, hashed: bool) -> Any:
    """Exact, Jaro-Winkler >= 0.92, >= 0.80, swapped with the other name part, else.

    The swapped level catches given and family names entered in each other's fields (a
    frequent clerical error, and a matter of convention for compound Hispanic names).
    Hashed names keep only the exact and swapped levels: similar hashes mean nothing.
    """
    other = _OTHER_NAME[col]
    levels: list[dict[str, Any]] = [
        {
            "sql_condition": f"{col}_l IS NULL OR {col}_r IS NULL",
            "is_null_level": True,
            "label_for_charts": f"{col} missing",
        },
        {"sql_condition": f"{col}_l = {col}_r", "label_for_charts": f"same {col}"},
    ]
    if hashed:
        swapped = f"{col}_l = {other}_r OR {other}_l = {col}_r"
    else:
        jw = "jaro_winkler_similarity"
        swapped = f"{jw}({col}_l, {other}_r) >= 0.92 OR {jw}({other}_l, {col}_r) >= 0.92"
        levels += [
            {
                "sql_condition": f"{jw}({col}_l, {col}_r) >= 0.92",
                "label_for_charts": f"{col} Jaro-Winkler >= 0.92",
            },
            {
                "sql_condition": f"{jw}({col}_l, {col}_r) >= 0.8",
                "label_for_charts": f"{col} Jaro-Winkler >= 0.80",
            },
        ]
    levels += [
        {"sql_condition": swapped, "label_for_charts": f"{col} swapped with {other}"},
        {"sql_condition": "ELSE", "label_for_charts": "all other"},
    ]
    return cl.CustomComparison(
        output_column_name=col, comparison_description=col, comparison_levels=levels
    )  # fmt: skip


def _age_comparison(birth: bool, age: bool) -> Any:
    """Same birth date, one typing error apart, age within 1, 3 years (levels the data has)."""
    both_birth = "birth_date_l IS NOT NULL AND birth_date_r IS NOT NULL"
    both_age = "age_l IS NOT NULL AND age_r IS NOT NULL"
    typo = "damerau_levenshtein(birth_str_l, birth_str_r) <= 1"
    levels: list[dict[str, Any]] = [
        {
            "sql_condition": f"NOT ({both_birth}) AND NOT ({both_age})",
            "is_null_level": True,
            "label_for_charts": "birth date or age missing",
        },
    ]
    if birth:
        levels += [
            {"sql_condition": "birth_date_l = birth_date_r", "label_for_charts": "same birth date"},
            {
                "sql_condition": f"{both_birth} AND {typo}",
                "label_for_charts": "birth dates one typing error apart",
            },
        ]
    if age:
        levels += [
            {
                "sql_condition": f"{both_age} AND abs(age_l - age_r) <= 1",
                "label_for_charts": "age within 1 year",
            },
            {
                "sql_condition": f"{both_age} AND abs(age_l - age_r) <= 3",
                "label_for_charts": "age within 3 years",
            },
        ]
    levels.append({"sql_condition": "ELSE", "label_for_charts": "all other"})
    return cl.CustomComparison(
        output_column_name="age",
        comparison_description="birth date, else age at death",
        comparison_levels=levels,
    )  # fmt: skip


def _place_comparison(points: bool, units: bool) -> Any:
    """Within 1 km, within 10 km (both points), same unit (a point missing), else."""
    both_points = (
        "lat_l IS NOT NULL AND lat_r IS NOT NULL AND lon_l IS NOT NULL AND lon_r IS NOT NULL"
    )
    both_units = "unit_code_l IS NOT NULL AND unit_code_r IS NOT NULL"
    levels: list[dict[str, Any]] = [
        {
            "sql_condition": f"NOT ({both_points}) AND NOT ({both_units})",
            "is_null_level": True,
            "label_for_charts": "place missing",
        },
    ]
    if points:
        levels += [
            {
                "sql_condition": f"{both_points} AND {_KM_SQL} <= 1",
                "label_for_charts": "within 1 km",
            },
            {
                "sql_condition": f"{both_points} AND {_KM_SQL} <= 10",
                "label_for_charts": "within 10 km",
            },
        ]
    if units:
        levels.append(
            {
                "sql_condition": f"NOT ({both_points}) AND unit_code_l = unit_code_r",
                "label_for_charts": "same unit (a point missing)",
            }
        )
    levels.append({"sql_condition": "ELSE", "label_for_charts": "all other"})
    return cl.CustomComparison(
        output_column_name="place",
        comparison_description="distance between the points, else the same unit",
        comparison_levels=levels,
    )  # fmt: skip


def _comparisons(prepared: pd.DataFrame, hashed: bool, within_source: bool) -> list[Any]:
    def has(*cols: str) -> bool:
        return _available(prepared, cols, within_source)

    out = []
    for col in ("given_name", "family_name"):
        if has(col):
            out.append(_name_comparison(col, hashed))
    if has("death_date"):
        out.append(
            cl.AbsoluteDateDifferenceAtThresholds(
                "death_date", input_is_string=False, metrics=["day"] * 3, thresholds=[1, 3, 7]
            )
        )
    if has("age") or has("birth_date"):
        out.append(_age_comparison(has("birth_date"), has("age")))
    if has("sex"):
        out.append(cl.ExactMatch("sex"))
    if has("lat", "lon") or has("unit_code"):
        out.append(_place_comparison(has("lat", "lon"), has("unit_code")))
    return out


# Blocking rules, most specific first; a rule is used only when its columns can be compared.
# Two fortnight keys: 14-day periods, and the same periods shifted by 7 days. Two dates at
# most 7 days apart always share one of them (to miss both, a boundary of each kind would
# have to fall between them, and those lie 7 days apart), so a death recorded up to a week
# off still meets its match; a month key would compare twice as many pairs.
# family Soundex + fortnight: misspelt given names; given Soundex + unit + fortnight: a
# misspelt or changed family name; given Soundex + day: idem, in another unit; day + unit +
# sex: both names wrong or missing; both Soundex + birth year: a date of death far off;
# birth date: a death registered under other names; and swapped names (below).
_BLOCKING_KEYS: tuple[tuple[str, ...], ...] = (
    ("family_key", "death_fortnight"),
    ("family_key", "death_fortnight_late"),
    ("given_key", "unit_code", "death_fortnight"),
    ("given_key", "unit_code", "death_fortnight_late"),
    ("given_key", "death_date"),
    ("death_date", "unit_code", "sex"),
    ("family_key", "given_key", "birth_year"),
    ("birth_date",),
)
# Registers without dates of death (FEBRL-like lists of persons) need rules on names and
# place alone. They are left out when death dates exist: on 100,000 records a source, unit +
# a common name's Soundex would put tens of millions of pairs through the model.
_UNDATED_KEYS: tuple[tuple[str, ...], ...] = (
    ("unit_code", "family_key"),
    ("unit_code", "given_key"),
    ("given_key", "family_key"),
)


def _blocking_rules(prepared: pd.DataFrame, hashed: bool, within_source: bool) -> list[Any]:
    keys = _BLOCKING_KEYS
    if not _available(prepared, ("death_date",), within_source):
        keys = keys + _UNDATED_KEYS
    rules: list[Any] = [block_on(*k) for k in keys if _available(prepared, k, within_source)]
    if _available(prepared, ("given_key", "family_key"), within_source):
        # given and family names entered in each other's fields (the swapped name level)
        rules.append("l.given_key = r.family_key AND l.family_key = r.given_key")
    return rules


def _rule_sql(rule: Any) -> str:
    if isinstance(rule, str):
        return rule
    return rule.get_blocking_rule("duckdb").blocking_rule_sql


def _training_rules(prepared: pd.DataFrame, within_source: bool) -> list[Any]:
    """EM sessions: one blocked on names (trains the rest), one on dates (trains names)."""
    rules = []
    if _available(prepared, ("family_key", "given_key", "death_ym"), within_source):
        # the month keeps the namesakes of common names out: EM sees mostly matches
        rules.append(block_on("family_key", "given_key", "death_ym"))
    elif _available(prepared, ("family_key", "given_key"), within_source):
        rules.append(block_on("family_key", "given_key"))
    if _available(prepared, ("death_date", "unit_code"), within_source):
        rules.append(block_on("death_date", "unit_code"))
    elif _available(prepared, ("death_date",), within_source):
        rules.append(block_on("death_date"))
    elif _available(prepared, ("birth_date",), within_source):
        rules.append(block_on("birth_date"))
    return rules


def _deterministic_rules(prepared: pd.DataFrame, within_source: bool) -> list[Any]:
    rules = []
    for keys in (
        ("given_name", "family_name", "death_date"),
        ("given_name", "family_name", "birth_date"),
    ):
        if _available(prepared, keys, within_source):
            rules.append(block_on(*keys))
    return rules


def _run_splink(
    prepared: pd.DataFrame,
    sources: list[str],
    link_type: str,
    comparisons: list[Any],
    rules: list[Any],
    thresholds: Thresholds,
    seed: int,
    clock: _Clock,
    counts: dict[str, Any],
) -> pd.DataFrame:
    con = duckdb.connect()
    try:
        db_api = DuckDBAPI(connection=con)
        tables = [
            db_api.register(
                prepared[prepared["source"] == s].drop(columns="source").reset_index(drop=True),
                table_name=f"linkage_input_{i}",
                dataset_display_name=s,
            )
            for i, s in enumerate(sources)
        ]
        inputs = tables if len(tables) > 1 else tables[0]
        with clock("count"):
            per_rule = count_comparisons_from_blocking_rules(
                inputs,
                blocking_rules=rules,
                link_type=link_type,
                record_sample_proportion=1.0,
            )
        counts["pairs_by_blocking_rule"] = {
            r["blocking_rule"]: int(r["marginal_comparison_count"]) for r in per_rule
        }
        counts["pairs_compared"] = int(sum(counts["pairs_by_blocking_rule"].values()))
        settings = SettingsCreator(
            link_type=link_type,
            comparisons=comparisons,
            blocking_rules_to_generate_predictions=rules,
            retain_intermediate_calculation_columns=False,
            retain_matching_columns=False,
        )
        linker = Linker(inputs, settings, log_level=_SPLINK_LOG_LEVEL)
        with clock("train"):
            notes = _train(linker, prepared, within_source=link_type != "link_only", seed=seed)
        with clock("predict"):
            predictions = linker.inference.predict(threshold_match_probability=thresholds.keep)
            scored = predictions.as_pandas_dataframe()
        scored = scored[["unique_id_l", "unique_id_r", "match_probability", "match_weight"]]
        scored = scored.rename(columns={"unique_id_l": "record_id_l", "unique_id_r": "record_id_r"})
        scored.attrs["model"] = linker.misc.save_model_to_json()
        scored.attrs["model"]["training_notes"] = notes
        return scored
    finally:
        con.close()


# The prior is kept inside these bounds: on a handful of records the deterministic count can
# reach 1 (every possible pair "matches"), and a prior of 1 has no match weight.
LAMBDA_BOUNDS = (1e-8, 0.5)


def _train(linker: Linker, prepared: pd.DataFrame, *, within_source: bool, seed: int) -> list[str]:
    """u, lambda and m; returns what could not be trained (tiny inputs), for the parameters."""
    notes: list[str] = []
    deterministic = _deterministic_rules(prepared, within_source)
    if deterministic:
        linker.training.estimate_probability_two_random_records_match(
            deterministic, recall=DETERMINISTIC_RECALL
        )
        prior = linker.misc.save_model_to_json()["probability_two_random_records_match"]
        bounded = min(max(prior, LAMBDA_BOUNDS[0]), LAMBDA_BOUNDS[1])
        if bounded != prior:
            # splink's training sets the same attribute; there is no public setter
            linker._settings_obj._probability_two_random_records_match = bounded
            notes.append(f"lambda {prior:.3g} from the deterministic rules bounded to {bounded}")
    linker.training.estimate_u_using_random_sampling(max_pairs=U_MAX_PAIRS, seed=seed)
    # below this many records every blocked pair trains (splink's sampling probe would
    # find nothing to sample on small inputs anyway)
    max_pairs = EM_MAX_PAIRS if len(prepared) > 20_000 else None
    for rule in _training_rules(prepared, within_source):
        try:
            linker.training.estimate_parameters_using_expectation_maximisation(
                rule, max_pairs=max_pairs
            )
        except (ValueError, ZeroDivisionError, SplinkException) as exc:
            # too few pairs to iterate on: the m probabilities keep their defaults
            notes.append(f"EM blocked on {_rule_sql(rule)} skipped: {exc}")
    return notes


def _parameters_from(model: dict[str, Any]) -> dict[str, Any]:
    """The m and u probabilities per level and the prior, from splink's saved model."""
    comparisons = []
    for comp in model.get("comparisons", []):
        levels = []
        for level in comp.get("comparison_levels", []):
            if level.get("is_null_level"):
                continue
            m, u = level.get("m_probability"), level.get("u_probability")
            levels.append(
                {
                    "label": level.get("label_for_charts"),
                    "m_probability": m,
                    "u_probability": u,
                    "bayes_factor": (m / u) if m is not None and u else None,
                }
            )
        comparisons.append({"name": comp.get("output_column_name"), "levels": levels})
    return {
        "lambda": model.get("probability_two_random_records_match"),
        "comparisons": comparisons,
        "training_notes": model.get("training_notes", []),
    }


# --- decisions and clusters -----------------------------------------------------------------


def _empty_scored() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "record_id_l": pd.Series(dtype="object"),
            "record_id_r": pd.Series(dtype="object"),
            "match_probability": pd.Series(dtype="float64"),
            "match_weight": pd.Series(dtype="float64"),
        }
    )


def _merge_decisions(
    scored: pd.DataFrame, decisions: pd.DataFrame, thresholds: Thresholds
) -> pd.DataFrame:
    """Scored pairs (ordered l < r) with their decision; decided pairs never scored added."""
    pairs = scored.copy()
    swap = pairs["record_id_l"] > pairs["record_id_r"]
    pairs.loc[swap, ["record_id_l", "record_id_r"]] = pairs.loc[
        swap, ["record_id_r", "record_id_l"]
    ].to_numpy()
    pairs = pairs.drop_duplicates(["record_id_l", "record_id_r"])
    pairs = pairs.merge(decisions, on=["record_id_l", "record_id_r"], how="outer")
    pairs = pairs.rename(columns={"decision": "decided"})
    pairs["band"] = [
        ("match" if d == "accept" else "non_match") if np.isnan(p) else thresholds.band(p)
        for p, d in zip(pairs["match_probability"], pairs["decided"], strict=True)
    ]
    pairs["decided"] = pairs["decided"].astype("object").where(pairs["decided"].notna(), None)
    pairs = pairs.sort_values(["record_id_l", "record_id_r"]).reset_index(drop=True)
    return pairs.loc[:, list(PAIR_COLUMNS)]


def _clusters(
    recs: pd.DataFrame, pairs: pd.DataFrame, thresholds: Thresholds, within_source: bool
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Clusters: links merged strongest first, never against a reject or a source's rule.

    A link is a pair at or above the match threshold, or an accepted pair. Accepted links
    are merged first, then the model's links by decreasing match weight (ties by ids, so a
    run is reproducible). A merge is refused when it would put in one cluster

    - two records an analyst rejected as a pair: a reject holds even when the two records
      are joined only through others (a-c-b): the weaker of the links a-c and c-b, the one
      that would complete the join, is refused (``links_refused_reject``);
    - two records of the same source, unless ``within_source`` (an agency registers a death
      once; the one-to-one rule of splink's ``cluster_using_single_best_links``): the
      weaker link loses (``links_refused_same_source``). An accepted link is exempt: the
      analyst has seen the two records.

    An accepted link that would join a rejected pair is not merged and is counted in
    ``decision_conflicts`` for the analysts to resolve: the reject wins.
    """
    ids = recs["record_id"].tolist()
    source_of = dict(zip(ids, recs["source"], strict=True))
    known = pairs["record_id_l"].isin(source_of) & pairs["record_id_r"].isin(source_of)
    accepted = pairs[known & (pairs["decided"] == "accept")]
    model = pairs[
        known & (pairs["match_probability"] >= thresholds.match) & pairs["decided"].isna()
    ].sort_values(["match_weight", "record_id_l", "record_id_r"], ascending=[False, True, True])
    rejects = pairs[known & (pairs["decided"] == "reject")]
    rejected: dict[str, set[str]] = {}
    for a, b in zip(rejects["record_id_l"], rejects["record_id_r"], strict=True):
        rejected.setdefault(a, set()).add(b)
        rejected.setdefault(b, set()).add(a)

    forest = _Forest(ids, source_of)
    conflicts = 0
    for a, b in zip(accepted["record_id_l"], accepted["record_id_r"], strict=True):
        if forest.separated_by_reject(a, b, rejected):
            conflicts += 1
        else:
            forest.union(a, b)
    refused_reject = refused_source = 0
    for a, b in zip(model["record_id_l"], model["record_id_r"], strict=True):
        if forest.find(a) == forest.find(b):
            continue
        if forest.separated_by_reject(a, b, rejected):
            refused_reject += 1
        elif not within_source and forest.sources_overlap(a, b):
            refused_source += 1
        else:
            forest.union(a, b)

    clusters = pd.DataFrame({"record_id": ids, "root": [forest.find(r) for r in ids]})
    # the smallest id of each cluster: "first" after sorting (a "min" over strings falls
    # back to Python, one call per cluster)
    first = clusters.sort_values("record_id").groupby("root")["record_id"].first()
    clusters["cluster_id"] = clusters["root"].map(first)
    clusters = clusters.loc[:, list(CLUSTER_COLUMNS)]
    sizes = clusters.groupby("cluster_id").size()
    counts = {
        "clusters": len(sizes),
        "clusters_by_size": {int(k): int(v) for k, v in sizes.value_counts().sort_index().items()},
        "decisions_applied": int((known & pairs["decided"].notna()).sum()),
        "decisions_unknown_records": int((~known & pairs["decided"].notna()).sum()),
        "links_refused_reject": refused_reject,
        "links_refused_same_source": refused_source,
        "decision_conflicts": conflicts,
    }
    return clusters, counts


class _Forest:
    """Union-find over record ids that keeps each cluster's members and sources."""

    def __init__(self, ids: list[str], source_of: dict[str, str]) -> None:
        self.parent = {r: r for r in ids}
        self.members = {r: [r] for r in ids}
        self.sources = {r: {source_of[r]} for r in ids}

    def find(self, r: str) -> str:
        root = r
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[r] != root:  # path compression
            self.parent[r], r = root, self.parent[r]
        return root

    def union(self, a: str, b: str) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return
        if len(self.members[ra]) < len(self.members[rb]):
            ra, rb = rb, ra
        self.parent[rb] = ra
        self.members[ra].extend(self.members.pop(rb))
        self.sources[ra] |= self.sources.pop(rb)

    def sources_overlap(self, a: str, b: str) -> bool:
        return bool(self.sources[self.find(a)] & self.sources[self.find(b)])

    def separated_by_reject(self, a: str, b: str, rejected: dict[str, set[str]]) -> bool:
        ra, rb = self.find(a), self.find(b)
        if ra == rb or not rejected:
            return False
        small, other = (ra, rb) if len(self.members[ra]) <= len(self.members[rb]) else (rb, ra)
        return any(
            self.find(partner) == other
            for m in self.members[small]
            for partner in rejected.get(m, ())
        )
