"""Retrieval, class-aware, zero-shot and probe metrics against hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest

from workbench.eval.classaware import class_aware_precision, keyword_precision
from workbench.eval.probe import linear_probe, subsample_indices
from workbench.eval.retrieval import chance_retrieval_metrics, naive_retrieval_metrics, retrieval_metrics
from workbench.eval.stats import best_f1_threshold, bootstrap_ci, f1_accuracy, roc_auc
from workbench.eval.zeroshot import evaluate_binary_scores, prompt_embeddings, prompts_for, zero_shot_scores

# Score matrix S[i, j] = similarity of image i and text j. With identity image embeddings and
# text embeddings S.T, the dot products reproduce S exactly (hence normalize=False below: the
# rows are a hand-built score matrix, not embeddings).
S = np.array([[0.9, 0.5, 0.9],
              [0.8, 0.2, 0.1],
              [0.3, 0.7, 0.1]], dtype=np.float32)
IMG = np.eye(3, dtype=np.float32)
TXT = S.T.copy()


@pytest.mark.parametrize("chunk_size", [1, 2, 1024])
def test_ranks_count_strictly_higher_scores_and_ties_favour_the_query(chunk_size):
    m = retrieval_metrics(IMG, TXT, chunk_size=chunk_size, normalize=False)
    # i2t: row 0 ties its true 0.9 with text 2 -> rank 1; row 1: 0.8 > 0.2 -> 2; row 2: 0.3, 0.7 > 0.1 -> 3
    assert m["i2t_R@1"] == pytest.approx(100 / 3) and m["i2t_R@5"] == 100.0
    assert m["i2t_MdR"] == 2.0 and m["i2t_MnR"] == 2.0
    # t2i (columns): text 0 -> 1; text 1: 0.5, 0.7 > 0.2 -> 3; text 2: 0.9 > 0.1, the tied 0.1 does not count -> 2
    assert m["t2i_R@1"] == pytest.approx(100 / 3) and m["t2i_MdR"] == 2.0 and m["t2i_MnR"] == 2.0
    assert set(m) == {f"{d}_{k}" for d in ("i2t", "t2i") for k in ("R@1", "R@5", "R@10", "MdR", "MnR")}


def test_images_of_one_study_form_one_target():
    # rows 0 and 1 are two images of study s1 (same report): their texts are both true matches
    m = retrieval_metrics(IMG, TXT, image_groups=["s1", "s1", "s2"], chunk_size=2, normalize=False)
    # i2t: row 1's best true is max(0.8, 0.2) = 0.8 -> rank 1; row 2 stays 3 -> ranks [1, 1, 3]
    assert m["i2t_R@1"] == pytest.approx(200 / 3) and m["i2t_MnR"] == pytest.approx(5 / 3)
    # t2i: text 1 now matches images 0 and 1: best 0.5, only 0.7 higher -> 2; ranks [1, 2, 2]
    assert m["t2i_MdR"] == 2.0 and m["t2i_MnR"] == pytest.approx(5 / 3)


def test_duplicate_texts_are_not_punished():
    # texts 0 and 2 are the same report text: image 2's best true is max(0.3, 0.1) -> rank 2
    m = retrieval_metrics(IMG, TXT, text_groups=["a", "b", "a"], normalize=False)
    assert m["i2t_MnR"] == pytest.approx((1 + 2 + 2) / 3)
    # t2i: text 2's best true image is max(0.9, 0.1) = 0.9 -> rank 1; text 1 stays 3
    assert m["t2i_MnR"] == pytest.approx((1 + 3 + 1) / 3)


def test_chunked_equals_naive_full_sort_on_random_embeddings():
    rng = np.random.default_rng(0)
    img = rng.normal(size=(300, 16)).astype(np.float32)
    txt = img + rng.normal(scale=2.0, size=img.shape).astype(np.float32)
    assert retrieval_metrics(img, txt, chunk_size=64) == naive_retrieval_metrics(img, txt)


def test_retrieval_ranks_by_cosine_so_any_positive_row_rescaling_gives_the_same_numbers():
    rng = np.random.default_rng(1)
    img = rng.normal(size=(3000, 32))
    txt = img + rng.normal(scale=3.0, size=img.shape)
    base = retrieval_metrics(img, txt, chunk_size=512)
    scaled_img = img * rng.uniform(1e-3, 1e3, size=(3000, 1))
    scaled_txt = txt * rng.uniform(1e-3, 1e3, size=(3000, 1))
    assert retrieval_metrics(scaled_img, scaled_txt, chunk_size=512) == base
    # float32 rows (what encoders give) rescaled exactly (by powers of two) give the same too
    img32, txt32 = img.astype(np.float32), txt.astype(np.float32)
    pow2 = 2.0 ** rng.integers(-8, 9, size=(3000, 1))
    assert retrieval_metrics(img32 * pow2.astype(np.float32), txt32, chunk_size=512) == retrieval_metrics(img32, txt32)
    # the raw dot product ranks the rescaled rows differently: what the issue measured
    assert retrieval_metrics(scaled_img, scaled_txt, normalize=False)["i2t_R@1"] != base["i2t_R@1"]
    assert naive_retrieval_metrics(scaled_img, scaled_txt) == base


def test_cosine_not_dot_product_decides_a_hand_built_case():
    # text 0 (image 0's report) points along image 0 but is short; text 1 is long and off-axis
    img = np.array([[1.0, 0.0], [0.0, 1.0]], dtype=np.float32)
    txt = np.array([[0.1, 0.0], [10.0, 9.0]], dtype=np.float32)
    # dot: image 0 scores text 1 (10) above its own text 0 (0.1) -> rank 2; cosine: 1.0 > 0.74 -> rank 1
    assert retrieval_metrics(img, txt, normalize=False)["i2t_R@1"] == 50.0
    assert retrieval_metrics(img, txt)["i2t_R@1"] == 100.0


def test_chance_level_of_random_ranking():
    c = chance_retrieval_metrics(200)
    assert c["i2t_R@1"] == 0.5 and c["t2i_R@10"] == 5.0 and c["i2t_MdR"] == 100.5


def test_mismatched_shapes_name_the_problem():
    with pytest.raises(ValueError, match="paired"):
        retrieval_metrics(IMG, TXT[:2])
    with pytest.raises(ValueError, match="image_groups"):
        retrieval_metrics(IMG, TXT, image_groups=["a", "b"])


def test_class_aware_precision_against_hand_counts():
    # 4 studies; findings: {A}, {A}, {A, B}, {} ; scores make every query's top-1 the next row
    labels = np.array([[1, 0], [1, 0], [1, 1], [0, 0]], dtype=float)
    s = np.array([[0.5, 0.9, 0.1, 0.0],   # 0 -> 1 ({A}: exact), then 0, 2, 3
                  [0.1, 0.5, 0.9, 0.0],   # 1 -> 2 ({A,B}: not exact, shares A), then 1, 0, 3
                  [0.0, 0.1, 0.5, 0.9],   # 2 -> 3 ({}: no), then 2, 1, 0
                  [0.9, 0.0, 0.1, 0.5]], dtype=np.float32)  # 3 -> 0 ({A}: no), then 3, 2, 1
    m = class_aware_precision(np.eye(4, dtype=np.float32), s.T.copy(), labels, ks=(1, 2))
    assert m["i2t_P@1"] == 25.0  # only query 0's top-1 has the same finding set
    assert m["i2t_P@1_any"] == 50.0  # queries 0 and 1 share a finding with their top-1
    # top-2 exact: q0 {1,0}: 2 ; q1 {2,1}: 1 ; q2 {3,2}: 1 ; q3 {0,3}: 1 -> 5/8
    assert m["i2t_P@2"] == pytest.approx(62.5)
    # the empty set is its own class: q3's top-2 holds itself (empty) -> relevant in both variants
    assert m["i2t_P@2_any"] == pytest.approx(100 * (2 + 2 + 1 + 1) / 8)


def test_keyword_precision_counts_images_with_the_finding():
    images = np.array([[1, 0], [0.9, 0.1], [0, 1], [0.2, 0.8]], dtype=np.float32)
    queries = np.array([[1, 0], [0, 1]], dtype=np.float32)
    labels = np.array([[1, 0], [0, 0], [0, 1], [0, 1]])
    m = keyword_precision(queries, images, labels, ["A", "B"], ks=(1, 2))
    assert m["kw_P@1/A"] == 100.0 and m["kw_P@2/A"] == 50.0
    assert m["kw_P@2/B"] == 100.0 and m["kw_P@2"] == 75.0


def test_auc_matches_scikit_learn_including_ties():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, size=200)
    s = np.round(rng.normal(size=200) + y, 1)  # rounding creates many ties
    assert roc_auc(y, s) == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    assert roc_auc([0, 1, 0, 1], [0.1, 0.4, 0.5, 0.8]) == pytest.approx(0.75)
    assert roc_auc([0, 1, 0, 1], [0.1, 0.4, 0.4, 0.8]) == pytest.approx(0.875)  # a tie counts one half


def test_single_class_label_gives_nan_auc_and_ci_without_raising():
    y = np.zeros((30, 2))
    y[::3, 1] = 1  # column 0 never present, column 1 has both classes
    scores = np.random.default_rng(0).random((30, 2))
    rows = {r["metric"]: r for r in evaluate_binary_scores(y, scores, y, scores, ["Mass", "Nodule"], n_boot=50)}
    assert np.isnan(rows["AUC/Mass"]["value"]) and np.isnan(rows["AUC/Mass"]["ci_low"])
    assert np.isfinite(rows["AUC/Nodule"]["ci_low"]) and rows["AUC/Nodule"]["ci_low"] <= rows["AUC/Nodule"]["value"]
    assert rows["AUC"]["value"] == pytest.approx(rows["AUC/Nodule"]["value"])  # macro over defined columns
    assert 0 <= rows["Acc/Mass"]["value"] <= 1


def test_bootstrap_drops_resamples_where_the_statistic_is_undefined():
    y = np.array([1] + [0] * 19)
    s = np.linspace(0, 1, 20)
    low, high, n_valid = bootstrap_ci(lambda idx: roc_auc(y[idx], s[idx]), 20, n_boot=100, seed=0)
    assert 0 < n_valid < 100 and low <= high


def test_validation_threshold_maximises_f1():
    y = np.array([0, 0, 1, 1, 1, 0])
    s = np.array([0.1, 0.2, 0.6, 0.7, 0.9, 0.65])
    t = best_f1_threshold(y, s)
    assert t == 0.6
    assert f1_accuracy(y, s >= t) == (pytest.approx(6 / 7), pytest.approx(5 / 6))


def test_zero_shot_scores_prefer_the_closer_prompt():
    pos = np.array([[1.0, 0.0]])
    neg = np.array([[0.0, 1.0]])
    scores = zero_shot_scores(np.array([[0.9, 0.1], [0.1, 0.9]]), pos, neg)
    assert scores[0, 0] > 0.99 and scores[1, 0] < 0.01
    assert prompts_for("Lung_Opacity", ["No {finding}.", "{finding}."]) == ["No lung opacity.", "Lung opacity."]


def test_prompt_ensembles_average_the_templates():
    calls = []

    def encode(texts):
        calls.append(list(texts))
        return np.array([[1.0, 0.0] if t.startswith("No") or "no " in t or "absent" in t else [0.0, 1.0]
                         for t in texts])

    pos, neg = prompt_embeddings(encode, ["Edema"])
    assert np.allclose(pos, [[0, 1]]) and np.allclose(neg, [[1, 0]])
    assert len(calls) == 2 and len(calls[0]) == 4


def _probe_data(seed=0, n=400):
    rng = np.random.default_rng(seed)
    y = (rng.random((n, 3)) < 0.3).astype(float)
    x = np.hstack([y * 2.0 + rng.normal(size=y.shape), rng.normal(size=(n, 5))])
    return x, y


def test_probe_is_deterministic_and_learns_separable_labels():
    x, y = _probe_data()
    a = linear_probe(x[:300], y[:300], x[300:], y[300:], n_boot=30, seed=0)
    b = linear_probe(x[:300], y[:300], x[300:], y[300:], n_boot=30, seed=0)
    assert a == b
    by_name = {r["metric"]: r["value"] for r in a}
    assert set(by_name) == {"probe_AUC@1%", "probe_AUC@10%", "probe_AUC@100%"}
    assert by_name["probe_AUC@100%"] > 0.85


def test_probe_multiclass_accuracy_and_small_fractions_keep_every_class():
    rng = np.random.default_rng(0)
    classes = np.repeat([0, 1, 2], 100)
    x = np.eye(3)[classes] * 3 + rng.normal(size=(300, 3))
    idx = subsample_indices(300, 0.01, seed=0, classes=classes)
    assert set(classes[idx]) == {0, 1, 2}
    rows = linear_probe(x[::2], classes[::2], x[1::2], classes[1::2], task="multiclass", n_boot=20)
    assert rows[-1]["metric"] == "probe_Acc@100%" and rows[-1]["value"] > 0.8
