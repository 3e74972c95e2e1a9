"""The mining schedule: the seed's selection rule on hand-built tables with known answers,
skips instead of crashes, split and subject hygiene, determinism, and equality with the
per-pair reference."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from workbench.mining import MiningConfig, load_entity_table, mine_triplets
from workbench.mining.reference import reference_mine
from workbench.mining.schedule import sample_distinct, select_triplets
from workbench.mining.synthetic import synthetic_entity_table
from workbench.mining.table import EntityTableError


def finding(severity=(), location=(), assertion="present"):
    return {"assertion": assertion, "severity": list(severity), "location": list(location)}


# Scores with anchor A (union scoring), computed by hand:
#   P  identical                                  1.0   -> the positive
#   C  same finding, other side                   0.95  (0.85 + 0.10; location IoU 0) -> dropped by the cap
#   S1 A + Edema                                  0.5   (J 1/2, agreements 1/2)
#   S2 A + Edema + Atelectasis                    1/3   (J 1/3, agreements 1/3)
#   E1 Cardiomegaly only                          0
#   E2 no finding                                 0
A = {"Effusion": finding(["mild"], ["left"])}
STUDIES = {
    "A": A,
    "P": A,
    "C": {"Effusion": finding(["mild"], ["right"])},
    "S1": {**A, "Edema": finding()},
    "S2": {**A, "Edema": finding(), "Atelectasis": finding()},
    "E1": {"Cardiomegaly": finding(["moderate"])},
    "E2": {},
}


def hand_table(names=tuple(STUDIES), subjects=None) -> pd.DataFrame:
    subjects = subjects or {}
    return pd.DataFrame({
        "study_id": list(names),
        "subject_id": [subjects.get(n, f"subject-{n}") for n in names],
        "split": "train",
        "findings": [json.dumps(STUDIES[n]) for n in names],
    })


def mine_hand_table(table: pd.DataFrame, **overrides):
    """Every study is an anchor in every mini batch (the whole table, in a random order)."""
    n = len(table)
    config = MiningConfig(big_batch_size=n, mini_batch_size=n, total_iter=1, all_anchors=True, **overrides)
    return mine_triplets(table, config, device="cpu", progress=False)


def choices_for(result, anchor="A"):
    rows = result.triplets[result.triplets["anchor"] == anchor]
    return set(zip(rows["positive"], rows["negative"]))


def test_semi_hard_negative_is_the_least_similar_candidate_at_or_above_threshold():
    result = mine_hand_table(hand_table(), threshold=0.25, semi_hard_prob=1.0)
    assert choices_for(result) == {("P", "S2")}
    row = result.triplets[result.triplets["anchor"] == "A"].iloc[0]
    assert row["pos_score"] == pytest.approx(1.0) and row["neg_score"] == pytest.approx(1 / 3)


def test_easy_negative_is_the_least_similar_candidate_never_of_the_same_subject():
    assert choices_for(mine_hand_table(hand_table(), semi_hard_prob=0.0)) <= {("P", "E1"), ("P", "E2")}
    same_subject = hand_table(subjects={"A": "p1", "E2": "p1"})
    assert choices_for(mine_hand_table(same_subject, semi_hard_prob=0.0)) == {("P", "E1")}


@pytest.mark.parametrize("threshold,negative", [
    (1 / 3, "S2"),  # a score equal to the threshold is semi-hard
    (0.34, "S1"),  # just above S2: only S1 qualifies
    (0.5, "S1"),
    (0.55, "S1"),  # nobody reaches it: fall back to the most similar remaining candidate
])
def test_threshold_edges(threshold, negative):
    assert choices_for(mine_hand_table(hand_table(), threshold=threshold)) == {("P", negative)}


def test_positive_cap_drops_near_duplicates_from_the_negatives():
    # Threshold 0.9: C (0.95) would be the only semi-hard candidate, but the cap 0.6 drops it.
    assert choices_for(mine_hand_table(hand_table(), threshold=0.9)) == {("P", "S1")}
    assert choices_for(mine_hand_table(hand_table(), threshold=0.9, positive_cap=0.99)) == {("P", "C")}


def test_anchor_without_candidate_is_skipped_and_counted_not_crashed():
    # A, P and C all score >= 0.6 with each other: after the positive nothing is left.
    result = mine_hand_table(hand_table(["A", "P", "C"]))
    assert result.triplets.empty
    assert result.skipped_no_candidate == result.anchors == 9  # 3 mini batches x 3 anchors


def test_min_positive_score_skips_anchors_without_a_close_match():
    result = mine_hand_table(hand_table(), min_positive_score=0.9)
    assert "E1" not in set(result.triplets["anchor"])  # E1's best match scores 0
    assert choices_for(result) == {("P", "S2")}
    assert result.skipped_weak_positive >= 7  # E1 in each of the 7 mini batches


def test_tie_breaks_follow_the_seeds_stable_descending_sort():
    # One mini batch, anchor at position 0; member keys (scores on the 2**-32 grid).
    grid = 2**32
    keys = torch.tensor([[[grid, 9 * grid // 10, 9 * grid // 10, grid // 2, grid // 2, 0, 0]]])
    same_subject = torch.zeros_like(keys, dtype=torch.bool)
    config = MiningConfig(threshold=0.25)

    def pick(semi_hard: bool):
        sel = select_triplets(keys, torch.tensor([[0]]), same_subject, torch.tensor([[semi_hard]]), config)
        return int(sel.positive), int(sel.negative)

    assert pick(True) == (1, 3)  # positive: first of the tied maxima; semi-hard: first of the tied minima >= 0.25
    assert pick(False) == (1, 6)  # easy: the seed's scores[-1], the last of the tied minima
    no_semi = MiningConfig(threshold=0.6)
    sel = select_triplets(keys, torch.tensor([[0]]), same_subject, torch.tensor([[True]]), no_semi)
    assert int(sel.negative) == 3  # fallback: first of the tied most similar remaining candidates


def test_no_val_or_test_study_and_no_same_subject_negative_ever_appears():
    table = synthetic_entity_table(400, seed=5, studies_per_subject=4.0)
    result = mine_triplets(table, MiningConfig(big_batch_size=128, mini_batch_size=16, total_iter=20, seed=1),
                           device="cpu", progress=False)
    train = set(table.loc[table["split"] == "train", "study_id"])
    assert set(table["split"]) == {"train", "val", "test"}
    used = set(result.triplets[["anchor", "positive", "negative"]].to_numpy().ravel())
    assert used <= train
    subject = dict(zip(table["study_id"], table["subject_id"]))
    anchors, negatives = result.triplets["anchor"].map(subject), result.triplets["negative"].map(subject)
    assert (anchors != negatives).all()
    assert len(result.triplets) + result.skipped == 20 * 16


def test_mining_is_deterministic_by_seed():
    table = synthetic_entity_table(300, seed=2)
    config = MiningConfig(big_batch_size=64, mini_batch_size=8, total_iter=10, semi_hard_prob=0.5, seed=7)
    first = mine_triplets(table, config, device="cpu", progress=False).triplets
    again = mine_triplets(table, config, device="cpu", progress=False).triplets
    other = mine_triplets(table, MiningConfig(**{**config.__dict__, "seed": 8}), device="cpu", progress=False).triplets
    pd.testing.assert_frame_equal(first, again)
    assert not first.equals(other)


@pytest.mark.parametrize("overrides", [
    {},
    {"scoring": "seed", "semi_hard_prob": 0.5},
    {"all_anchors": True, "min_positive_score": 0.6, "threshold": 0.4},
    {"uncertain_weight": 1.0, "positive_cap": 0.8, "semi_hard_prob": 0.0},
])
def test_vectorised_miner_chooses_the_same_triplets_as_the_per_pair_reference(overrides):
    table = synthetic_entity_table(500, seed=11, studies_per_subject=5.0, split_fractions=(1, 0, 0))
    config = MiningConfig(big_batch_size=96, mini_batch_size=12, total_iter=8, seed=3, **overrides)
    ours = mine_triplets(table, config, device="cpu", progress=False)
    ref = reference_mine(table["findings"].tolist(), table["subject_id"].tolist(), config)
    ids = table["study_id"].to_numpy()
    expected = pd.DataFrame([(ids[a], ids[p], ids[n], ps, ns) for a, p, n, ps, ns in ref.triplets],
                            columns=["anchor", "positive", "negative", "pos_score", "neg_score"])
    assert len(expected) > 0
    pd.testing.assert_frame_equal(ours.triplets, expected, check_exact=False, rtol=0, atol=1e-12)
    assert (ours.skipped_no_candidate, ours.skipped_weak_positive, ours.anchors) == (
        ref.skipped_no_candidate, ref.skipped_weak_positive, ref.anchors)


def test_schedule_yields_total_iter_times_mini_batch_size_triplets():
    table = synthetic_entity_table(300, seed=4, split_fractions=(1, 0, 0))
    result = mine_triplets(table, MiningConfig(big_batch_size=100, mini_batch_size=10, total_iter=7),
                           device="cpu", progress=False)
    assert len(result.triplets) + result.skipped == result.anchors == 7 * 10


def test_sample_distinct_draws_uniform_ordered_subsets():
    rng = np.random.default_rng(0)
    draws = sample_distinct(rng, 6, 3, 60_000)  # the redraw path (k <= n / 2)
    assert (np.sort(draws, axis=1)[:, 1:] != np.sort(draws, axis=1)[:, :-1]).all()
    counts = np.unique(draws @ np.array([36, 6, 1]), return_counts=True)[1]
    assert len(counts) == 6 * 5 * 4 and counts.min() > 0.8 * 500 and counts.max() < 1.2 * 500
    dense = sample_distinct(rng, 5, 4, 100)  # the permutation path
    assert all(len(set(row)) == 4 for row in dense)


def test_small_table_shrinks_the_batches_with_a_warning():
    table = synthetic_entity_table(40, seed=1, split_fractions=(1, 0, 0))
    with pytest.warns(UserWarning, match="big batch shrunk from 512 to 40"):
        result = mine_triplets(table, MiningConfig(total_iter=2), device="cpu", progress=False)
    assert result.anchors == 2 * 32


def test_entity_table_without_subjects_is_joined_to_the_run_manifest(tmp_path):
    table = hand_table()
    table[["study_id", "findings"]].to_parquet(tmp_path / "ober.parquet")
    with pytest.raises(EntityTableError, match="manifest"):
        load_entity_table(tmp_path / "ober.parquet")
    table[["study_id", "subject_id", "split"]].to_parquet(tmp_path / "manifest.parquet")
    loaded = load_entity_table(tmp_path / "ober.parquet")
    assert list(loaded["subject_id"]) == list(table["subject_id"]) and set(loaded["split"]) == {"train"}


def test_mining_reads_obers_table_of_the_demo_data_and_keeps_to_one_modality(tiny_manifest, tmp_path):
    from workbench.data.labels import DEMO_LABELS
    from workbench.data.manifest import write_manifest
    from workbench.mining import NO_FINDING, encode_findings
    from workbench.ober.study import label_manifest

    ober = label_manifest(tiny_manifest, "demo", progress=False)
    write_manifest(tiny_manifest, tmp_path / "manifest.parquet")
    ober.to_parquet(tmp_path / "ober.parquet")
    table = load_entity_table(tmp_path / "ober.parquet")
    assert set(tiny_manifest["modality"]) == {"cxr", "ct"}
    result = mine_triplets(table, MiningConfig(big_batch_size=24, mini_batch_size=6, total_iter=3),
                           device="cpu", progress=False, modality="cxr")
    modality = dict(zip(tiny_manifest["study_id"].astype(str), tiny_manifest["modality"]))
    used = set(result.triplets[["anchor", "positive", "negative"]].to_numpy().ravel())
    assert used and {modality[s] for s in used} == {"cxr"}
    enc = encode_findings(ober["findings"])
    assert len(enc.findings) > 3 and set(enc.findings) - {NO_FINDING} <= set(DEMO_LABELS)
