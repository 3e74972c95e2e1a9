"""ASG (issue 8): RoI region features, region-sentence contrast within an image, tag
queries with BCE, soft-label alignment, boxes from the data, switches and one step."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from workbench.config import load_config
from workbench.methods import MethodConfigError, create_method
from workbench.methods.asg import RegionField, letterbox_boxes, read_boxes_file
from workbench.methods.parts import TagQueryDecoder, region_features, region_sentence_loss, soft_label_alignment_loss, tag_bce_loss
from workbench.methods.parts.tags import label_similarity

TINY_2D = ["models.tiny=true", "models.img_model=tiny_vit", "models.embed_dim=16", "data.image_size=32",
           "training.device=cpu", "method.params.num_tags=3", "method.params.tag_dim=16"]
TEXTS = ["right pleural effusion", "no acute finding", "left lower lobe nodule", "cardiomegaly with edema"]
SENTENCES = [["the right lung is clear", "the left lung shows a nodule"], ["heart size is normal", "no effusion"],
             ["right base opacity", "left base clear", "heart normal"], ["enlarged heart"]]


def _method(*overrides: str):
    torch.manual_seed(0)
    return create_method("asg", load_config("asg", overrides=TINY_2D + list(overrides)))


def _batch(method, n: int = 4):
    g = torch.Generator().manual_seed(1)
    images = torch.randn(n, 3, 32, 32, generator=g)
    labels = torch.tensor([[1, 0, float("nan")], [0, 0, 0], [1, -1, 0], [0, 1, 1]], dtype=torch.float32)
    items = []
    for i in range(n):
        boxes = torch.tensor([[2.0 + 4 * r, 2.0, 14.0 + 4 * r, 30.0] for r in range(len(SENTENCES[i]))])
        items.append({"image": images[i], "text": TEXTS[i], "labels": labels[i],
                      "regions": {"boxes": boxes, "sentences": SENTENCES[i]}})
    return method.collate(items)


# ------------------------------------------------------------------ parts
def test_roi_features_equal_the_box_mean_on_constant_and_linear_maps():
    constant = torch.stack([torch.full((8, 8), 3.0), torch.full((8, 8), -1.0)]).unsqueeze(0)  # [1, 2, 8, 8]
    boxes = [torch.tensor([[8.0, 8.0, 40.0, 24.0], [0.0, 0.0, 64.0, 64.0]])]  # pixels of a 64x64 image
    feats = region_features(constant, boxes, (64, 64))
    assert torch.allclose(feats, torch.tensor([[3.0, -1.0], [3.0, -1.0]]), atol=1e-6)
    # value = x coordinate of the cell centre (in cells): bilinear sampling is exact, so the
    # mean over the box is the box's centre x
    ramp = (torch.arange(8, dtype=torch.float32) + 0.5).view(1, 1, 1, 8).expand(1, 1, 8, 8).contiguous()
    box = [torch.tensor([[16.0, 8.0, 48.0, 40.0]])]  # cells 2..6 horizontally
    centre_x = float(region_features(ramp, box, (64, 64)))
    assert centre_x == pytest.approx((16 + 48) / 2 / 8, abs=1e-5)


def test_region_features_handle_non_square_images():
    fmap = (torch.arange(4, dtype=torch.float32) + 0.5).view(1, 1, 4, 1).expand(1, 1, 4, 8).contiguous()  # y ramp
    box = [torch.tensor([[8.0, 8.0, 56.0, 24.0]])]  # rows 8..24 of a 32 x 64 (H x W) image: cells 1..3
    assert float(region_features(fmap, box, (32, 64))) == pytest.approx(2.0, abs=1e-5)


def test_region_sentence_contrast_stays_within_each_image():
    basis = torch.eye(4)
    image_of = torch.tensor([0, 0, 1, 1])
    aligned = region_sentence_loss(basis, basis, image_of, temperature=0.05)
    assert float(aligned) < 1e-6
    swapped = region_sentence_loss(basis, basis[[1, 0, 3, 2]], image_of, temperature=0.05)
    assert float(swapped) > 10
    # a sentence identical to a region of ANOTHER image is no competitor
    cross = basis.clone()
    cross[2] = basis[0]
    assert float(region_sentence_loss(basis, cross, image_of, 0.05)) < float(region_sentence_loss(basis, cross,
                                                                                           torch.zeros(4).long(), 0.05))
    single = region_sentence_loss(basis[:2], basis[:2], torch.tensor([0, 1]), 0.05)
    assert float(single) == 0.0 and single.requires_grad is False  # no negatives: no loss


def test_tag_bce_ignores_uncertain_and_treats_unmentioned_as_absent():
    logits = torch.tensor([[3.0, -2.0, 0.0], [0.0, 0.0, 1.0]])
    labels = torch.tensor([[1.0, float("nan"), -1.0], [-1.0, -1.0, 0.0]])
    expected = F.softplus(torch.tensor([-3.0, -2.0, 1.0])).mean()  # the three kept entries
    assert float(tag_bce_loss(logits, labels)) == pytest.approx(float(expected), rel=1e-5)


def test_tag_decoder_gives_one_logit_per_tag_per_image():
    torch.manual_seed(0)
    decoder = TagQueryDecoder(5, token_dim=12, dim=16)
    tokens = torch.randn(3, 7, 12)
    logits = decoder(tokens)
    assert logits.shape == (3, 5)
    tokens2 = tokens.clone()
    tokens2[1] = torch.randn(7, 12)
    assert torch.allclose(decoder(tokens2)[[0, 2]], logits[[0, 2]], atol=1e-6)


def test_soft_label_alignment_is_zero_when_similarities_reproduce_label_similarity():
    labels = torch.tensor([[1.0, 0, 0], [1, 1, 0], [0, 0, 0], [0, 0, 1]])
    sim = label_similarity(labels)
    assert float(sim[2, 2]) == pytest.approx(1.0)  # a normal study has a 'no finding' vector
    vectors = torch.cat([(labels == 1).float(), (labels.sum(-1, keepdim=True) == 0).float()], -1)
    temperature = 0.1
    zero = soft_label_alignment_loss(vectors, vectors, labels, torch.tensor(np.log(1 / temperature)), temperature)
    assert float(zero) == pytest.approx(0.0, abs=1e-6)
    off = soft_label_alignment_loss(vectors, vectors.flip(0), labels, torch.tensor(np.log(1 / temperature)), temperature)
    assert float(off) > 0.1


# ------------------------------------------------------------------ boxes from the data
def test_letterbox_maps_stored_pixels_onto_the_cache():
    boxes = np.array([[0.0, 0.0, 200.0, 100.0]])
    # a 100 (H) x 200 (W) image into a 64 cache: scale 0.32, 64 x 32 content, 16 px top offset
    assert letterbox_boxes(boxes, (100, 200), 64).tolist() == [[0.0, 16.0, 64.0, 48.0]]


def test_boxes_file_reads_chest_imagenome_style_columns(tmp_path):
    path = tmp_path / "boxes.csv"
    pd.DataFrame({"study_id": ["s1", "s1", "s2"], "bbox_name": ["right lung", "left lung", "cardiac silhouette"],
                  "original_x1": [1, 50, 30], "original_y1": [2, 2, 40], "original_x2": [45, 95, 70],
                  "original_y2": [90, 90, 80], "phrase": ["right lung clear", "left effusion", ""]}).to_csv(path, index=False)
    regions = read_boxes_file(path)
    assert [r["name"] for r in regions["s1"]] == ["right lung", "left lung"]
    assert regions["s1"][1]["box"] == [50.0, 2.0, 95.0, 90.0]
    assert "s2" not in regions  # a region no sentence describes cannot be matched
    bad = tmp_path / "bad.csv"
    pd.DataFrame({"study_id": ["s1"], "x1": [1]}).to_csv(bad, index=False)
    with pytest.raises(MethodConfigError, match="bad.csv"):
        read_boxes_file(bad)


def test_region_field_reads_the_manifest_regions_column(tmp_path):
    from PIL import Image

    image_path = tmp_path / "a.png"
    Image.fromarray(np.zeros((128, 128), dtype=np.uint8)).save(image_path)

    class FakeCache:
        array = np.zeros((1, 64, 64), dtype=np.uint8)

    class FakeDataset:
        frame = pd.DataFrame({"study_id": ["s1"], "image_path": [str(image_path)], "regions": [json.dumps(
            [{"name": "right lung", "box": [10, 20, 60, 100], "sentence": "right lung clear"},
             {"name": "heart", "box": [50, 60, 90, 110], "sentence": ""}])]})
        cache = FakeCache()

    item = RegionField()(FakeDataset(), 0)
    assert item["sentences"] == ["right lung clear"]
    assert item["boxes"].tolist() == [[5.0, 10.0, 30.0, 50.0]]  # 128 -> 64: halved


# ------------------------------------------------------------------ the method
def test_asg_terms_gradients_and_one_step():
    method = _method()
    method.train()
    batch = _batch(method)
    assert batch["region_image"].tolist() == [0, 0, 1, 1, 2, 2, 2, 3]
    torch.manual_seed(3)
    terms = method.losses(batch)
    assert set(terms) == {"ira", "arsa", "irl", "erl"}
    total = method.weighted_total(terms)
    total.backward()
    no_grad = [n for n, p in method.network.named_parameters()
               if p.requires_grad and (p.grad is None or float(p.grad.abs().sum()) == 0)]
    assert no_grad == []
    optimizer = torch.optim.SGD(method.trainable_parameters(), lr=1e-4)
    optimizer.step()
    optimizer.zero_grad()
    torch.manual_seed(3)
    assert float(method.weighted_total(method.losses(batch)).detach()) < float(total.detach())


@pytest.mark.parametrize("off,head", [("arsa", "region_proj"), ("irl", "tags"), ("ira", None), ("erl", None)])
def test_each_asg_term_switch_removes_the_term_and_its_gradient(off, head):
    method = _method(f"method.loss_weights.{off}=0")
    method.train()
    terms = method.losses(_batch(method))
    assert off not in terms and len(terms) == 3
    method.weighted_total(terms).backward()
    if head is not None:
        assert all(p.grad is None for p in method.heads[head].parameters())


def test_arsa_switches_off_with_one_message_when_no_boxes():
    method = _method()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        method.switch_off_arsa("the run folder has no region boxes")
        method.switch_off_arsa("again")  # already off: no second message
    assert len(caught) == 1 and "ARSA" in str(caught[0].message) and "boxes_file" in str(caught[0].message)
    batch = _batch(method)
    assert "arsa" not in method.losses(batch)


def test_tag_count_mismatch_names_the_fix():
    method = _method()
    batch = _batch(method)
    batch["labels"] = torch.zeros(4, 5)
    with pytest.raises(MethodConfigError, match="num_tags=5"):
        method.losses(batch)
