"""link_records on SYNTHETIC deaths with known truth: quality, decisions, hashed names."""

from __future__ import annotations

import hashlib
import json

import pandas as pd
import pytest

from linkage.link import link_records, normalise_name, soundex
from linkage.model import LinkageInputError, Thresholds
from linkage.synthetic import synthetic_deaths
from tests.unit.linkage.truth import cluster_pairs, precision_recall, true_pairs


@pytest.fixture(scope="module")
def deaths() -> pd.DataFrame:
    return synthetic_deaths(1500, seed=7)


@pytest.fixture(scope="module")
def base(deaths: pd.DataFrame):
    return link_records(deaths.drop(columns="death_id"), seed=1)


def _cluster_of(result, record_id: str) -> str:
    clusters = result.clusters.set_index("record_id")["cluster_id"]
    return clusters[record_id]


def test_soundex_and_name_normalisation_follow_the_census_rules() -> None:
    # reference codes from the US National Archives' Soundex rules
    assert soundex("Robert") == "R163"
    assert soundex("Rupert") == "R163"
    assert soundex("Ashcraft") == "A261"  # h does not separate s and c
    assert soundex("Tymczak") == "T522"
    assert soundex("Pfister") == "P236"
    assert soundex(None) is None
    assert normalise_name("  José-María O'Neil ") == "jose maria oneil"


def test_synthetic_deaths_precision_and_recall_at_least_095(deaths, base) -> None:
    truth = true_pairs(deaths)
    p, r, f1 = precision_recall(cluster_pairs(base.clusters), truth)
    print(
        f"\nsynthetic deaths ({len(deaths)} records): precision {p:.4f} recall {r:.4f} "
        f"F1 {f1:.4f}; pairs compared {base.counts['pairs_compared']}"
    )
    assert p >= 0.95
    assert r >= 0.95
    # the contract: every record in exactly one cluster, pairs ordered and banded
    assert sorted(base.clusters["record_id"]) == sorted(deaths["record_id"])
    assert (base.pairs["record_id_l"] < base.pairs["record_id_r"]).all()
    assert set(base.pairs["band"]) <= {"match", "uncertain", "non_match"}
    assert (base.pairs["match_probability"] >= Thresholds().keep).all()
    # one record per source in a cluster (link_only and the one-to-one rule)
    per_source = base.clusters.merge(deaths[["record_id", "source"]]).groupby(
        ["cluster_id", "source"]
    )
    assert per_source.size().max() == 1


def test_parameters_and_counts_are_reported(base) -> None:
    params = base.parameters
    assert 0 < params["lambda"] < 0.01
    names = {c["name"] for c in params["comparisons"]}
    assert names == {"given_name", "family_name", "death_date", "age", "sex", "place"}
    death_date = next(c for c in params["comparisons"] if c["name"] == "death_date")
    exact = death_date["levels"][0]
    # a same-day date is far likelier among matches than among non-matches
    assert exact["m_probability"] > 0.5
    assert exact["u_probability"] < 0.01
    counts = base.counts
    assert counts["pairs_compared"] == sum(counts["pairs_by_blocking_rule"].values())
    assert counts["pairs_compared"] > len(base.pairs)
    assert set(counts["seconds"]) == {"prepare", "count", "train", "predict", "cluster"}
    assert counts["records"] == len(base.clusters)
    # the service stores both as JSON
    assert json.loads(json.dumps(params))["thresholds"] == {
        "match": 0.95,
        "review": 0.5,
        "keep": 0.1,
    }
    assert json.loads(json.dumps(counts))["pairs_compared"] == counts["pairs_compared"]


def test_a_reject_splits_a_cluster_even_through_a_third_record(deaths, base) -> None:
    triples = base.clusters.groupby("cluster_id").filter(lambda g: len(g) == 3)
    cluster = triples["cluster_id"].iloc[0]
    members = sorted(triples.loc[triples["cluster_id"] == cluster, "record_id"])
    police = next(m for m in members if m.startswith("police"))
    forensic = next(m for m in members if m.startswith("forensic"))
    health = next(m for m in members if m.startswith("health"))
    decisions = pd.DataFrame(
        {"record_id_l": [police], "record_id_r": [forensic], "decision": ["reject"]}
    )

    rerun = link_records(deaths.drop(columns="death_id"), decisions, seed=1)

    assert _cluster_of(rerun, police) != _cluster_of(rerun, forensic)
    # the health record joins one of them, never both: the weaker link was refused
    assert _cluster_of(rerun, health) in {_cluster_of(rerun, police), _cluster_of(rerun, forensic)}
    assert rerun.counts["links_refused_reject"] == 1
    decided = rerun.pairs[rerun.pairs["decided"].notna()]
    assert decided[["record_id_l", "record_id_r", "decided"]].values.tolist() == [
        [min(police, forensic), max(police, forensic), "reject"]
    ]


def test_an_accept_joins_two_clusters(deaths, base) -> None:
    singletons = base.clusters.groupby("cluster_id").filter(lambda g: len(g) == 1)
    ids = singletons["record_id"]
    police = ids[ids.str.startswith("police")].iloc[0]
    health = ids[ids.str.startswith("health")].iloc[0]
    decisions = pd.DataFrame(
        {"record_id_l": [health], "record_id_r": [police], "decision": ["accept"]}
    )

    rerun = link_records(deaths.drop(columns="death_id"), decisions, seed=1)

    assert _cluster_of(rerun, police) == _cluster_of(rerun, health) == min(police, health)
    pair = rerun.pairs[
        (rerun.pairs["record_id_l"] == min(police, health))
        & (rerun.pairs["record_id_r"] == max(police, health))
    ]
    assert pair["decided"].tolist() == ["accept"]
    assert pair["band"].tolist() == ["match"]
    # everything else is as before
    assert rerun.counts["clusters"] == base.counts["clusters"] - 1


def test_hashed_names_link_on_exact_tokens() -> None:
    deaths = synthetic_deaths(800, seed=11)
    secret = b"installation-secret"

    def token(name: object) -> object:
        if not isinstance(name, str):
            return None
        return hashlib.sha256(secret + normalise_name(name).encode()).hexdigest()[:16]

    hashed = deaths.drop(columns="death_id").assign(
        given_name=deaths["given_name"].map(token), family_name=deaths["family_name"].map(token)
    )
    result = link_records(hashed, hashed=True, seed=1)

    name_levels = {
        c["name"]: [level["label"] for level in c["levels"]]
        for c in result.parameters["comparisons"]
        if c["name"] in ("given_name", "family_name")
    }
    assert name_levels["given_name"] == [
        "same given_name",
        "given_name swapped with family_name",
        "all other",
    ]
    p, r, _ = precision_recall(cluster_pairs(result.clusters), true_pairs(deaths))
    print(f"\nhashed names: precision {p:.4f} recall {r:.4f}")
    assert p >= 0.95
    assert r >= 0.90  # a misspelt name is a different token: dates and places carry it


def test_same_seed_same_result() -> None:
    records = synthetic_deaths(300, seed=5).drop(columns="death_id")
    one = link_records(records, seed=3)
    two = link_records(records, seed=3)
    pd.testing.assert_frame_equal(one.pairs, two.pairs)
    pd.testing.assert_frame_equal(one.clusters, two.clusters)


def test_bad_input_is_refused_with_a_clear_message() -> None:
    records = synthetic_deaths(20, seed=1).drop(columns="death_id")
    with pytest.raises(LinkageInputError, match="lack the column"):
        link_records(records.drop(columns="manner"))
    with pytest.raises(LinkageInputError, match="duplicate record_id"):
        link_records(pd.concat([records, records.head(1)]))
    with pytest.raises(LinkageInputError, match="manner must be"):
        link_records(records.assign(manner="murder"))
    with pytest.raises(LinkageInputError, match="accept or reject"):
        link_records(
            records,
            pd.DataFrame({"record_id_l": ["a"], "record_id_r": ["b"], "decision": ["maybe"]}),
        )
    with pytest.raises(LinkageInputError, match="thresholds"):
        Thresholds(match=0.4, review=0.5)


def test_one_source_alone_links_nothing() -> None:
    records = synthetic_deaths(50, seed=2).drop(columns="death_id")
    police = records[records["source"] == "police"]
    result = link_records(police)
    assert result.counts["pairs_compared"] == 0
    assert result.clusters["record_id"].tolist() == result.clusters["cluster_id"].tolist()


def test_a_handful_of_records_still_runs() -> None:
    # too few pairs to train on: the run completes, says so, and clusters every record
    records = synthetic_deaths(1, seed=1).drop(columns="death_id")
    result = link_records(records)
    assert sorted(result.clusters["record_id"]) == sorted(records["record_id"])
    assert 0 < result.parameters["lambda"] < 1
    assert isinstance(result.parameters["training_notes"], list)


def test_within_source_finds_an_agencys_duplicates_only_when_asked() -> None:
    deaths = synthetic_deaths(300, seed=4)
    copies = deaths[deaths["source"] == "police"].head(30).copy()
    copies["record_id"] = copies["record_id"] + "-dup"  # the police registered them twice
    records = pd.concat([deaths, copies], ignore_index=True).drop(columns="death_id")
    originals = copies["record_id"].str.removesuffix("-dup")

    deduped = link_records(records, within_source=True)
    clusters = deduped.clusters.set_index("record_id")["cluster_id"]
    assert deduped.parameters["link_type"] == "link_and_dedupe"
    assert all(clusters[o] == clusters[o + "-dup"] for o in originals)

    linked = link_records(records)
    clusters = linked.clusters.set_index("record_id")["cluster_id"]
    assert not any(clusters[o] == clusters[o + "-dup"] for o in originals)
    # the forensic and health records match both copies: one link per copy is refused
    assert linked.counts["links_refused_same_source"] >= 30
