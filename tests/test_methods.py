"""The method protocol: registry, loss-term switches, stages, parameter groups, and one
optimisation step of each method lowering its loss on a fixed batch."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from workbench.config import load_config
from workbench.methods import Method, MethodConfigError, Stage, create_method, list_methods
from workbench.methods.medtrim import TripletDataset, read_triplets
from workbench.registry import UnknownNameError

FINDINGS = ["no acute findings", "left pleural effusion", "right upper lobe pneumonia", "cardiomegaly"]


def cfg_for(method: str, *overrides: str):
    cfg = load_config("tiny", ["models.embed_dim=16", *overrides])
    cfg.method.name = method
    return cfg


def study(i: int, size: int = 32):
    """One synthetic study whose finding (i % 4) shows as a bright quadrant."""
    g = torch.Generator().manual_seed(i)
    k = i % len(FINDINGS)
    image = 0.2 * torch.randn(3, size, size, generator=g)
    r, c = divmod(k, 2)
    image[:, r * 16:(r + 1) * 16, c * 16:(c + 1) * 16] += 1.5
    return {"image": image, "text": f"{FINDINGS[k]}. study {i}.", "study_id": f"s{i}"}


def pair_batch(method: Method, n: int = 8):
    return method.collate([study(i) for i in range(n)])


def triplet_batch(method: Method, n: int = 6):
    # positive shares the anchor's finding (i + 4), the negative does not (i + 1)
    return method.collate([{"anchor": study(i), "positive": study(i + 4), "negative": study(i + 1)} for i in range(n)])


def test_registry_lists_methods_and_rejects_unknown_names():
    assert {"clip", "medtrim"} <= set(list_methods())
    with pytest.raises(UnknownNameError, match="known methods: .*clip.*medtrim"):
        create_method("medtrimm", cfg_for("clip"))


def test_unknown_loss_term_lists_the_methods_terms():
    with pytest.raises(MethodConfigError, match=r"\['ii', 'it', 'tt', 'ti', 'pair'\]"):
        create_method("medtrim", cfg_for("medtrim", "method.loss_weights.iii=1"))


def one_step_lowers(method: Method, batch) -> tuple[float, float]:
    """Loss before and after one small AdamW step (same dropout masks both times)."""
    method.train()
    opt = torch.optim.AdamW(method.parameter_groups(1e-4), lr=1e-4)
    torch.manual_seed(0)
    before = method.weighted_total(method.losses(batch))
    before.backward()
    opt.step()
    torch.manual_seed(0)
    with torch.no_grad():
        after = method.weighted_total(method.losses(batch))
    return before.item(), after.item()


def test_one_clip_step_lowers_the_loss_on_a_fixed_batch():
    torch.manual_seed(0)
    method = create_method("clip", cfg_for("clip"))
    before, after = one_step_lowers(method, pair_batch(method))
    assert after < before


def test_one_medtrim_step_lowers_the_loss_on_a_fixed_batch():
    torch.manual_seed(0)
    method = create_method("medtrim", cfg_for("medtrim", "method.loss_weights.pair=1"))
    before, after = one_step_lowers(method, triplet_batch(method))
    assert after < before


def test_medtrim_defaults_match_the_seed_sides_and_leave_the_pair_term_off():
    method = create_method("medtrim", cfg_for("medtrim"))
    assert method.loss_weights == {"ii": 0.5, "it": 0.5, "tt": 0.5, "ti": 0.5, "pair": 0.0}
    with torch.no_grad():
        terms = method.losses(triplet_batch(method))
    assert set(terms) == {"ii", "it", "tt", "ti"}
    image_side = (terms["ii"] + terms["it"]) / 2
    text_side = (terms["tt"] + terms["ti"]) / 2
    assert method.weighted_total(terms).item() == pytest.approx((image_side + text_side).item(), rel=1e-6)


@pytest.mark.parametrize("term", ["ii", "it", "tt", "ti", "pair"])
def test_every_medtrim_term_can_be_switched_off(term):
    weights = [f"method.loss_weights.{t}={0 if t == term else 1}" for t in ("ii", "it", "tt", "ti", "pair")]
    torch.manual_seed(0)
    method = create_method("medtrim", cfg_for("medtrim", *weights))
    method.eval()
    batch = triplet_batch(method)
    with torch.no_grad():
        terms = method.losses(batch)
        total = method.weighted_total(terms)
    assert term not in terms
    assert set(terms) == {"ii", "it", "tt", "ti", "pair"} - {term}
    assert total.item() == pytest.approx(sum(v.item() for v in terms.values()), rel=1e-6)


def test_clip_term_switched_off_leaves_nothing_to_train():
    method = create_method("clip", cfg_for("clip", "method.loss_weights.contrastive=0"))
    terms = method.losses(pair_batch(method))
    assert terms == {}
    with pytest.raises(MethodConfigError, match="no active loss term"):
        method.weighted_total(terms)


class TwoStage(Method):
    """A test-only method: term `a` alone for 2 steps, then `a` and `b`."""

    name = "two_stage"
    loss_terms = ("a", "b")

    @property
    def stages(self):
        return [Stage("warm", ("a",), until_step=2), Stage("joint")]

    def losses(self, batch):
        x = self.model.logit_scale
        return {t: x * (i + 1) for i, t in enumerate(self.loss_terms) if self.term_on(t)}


def test_stages_switch_terms_at_their_step_boundary():
    from workbench.models import build_dual_encoder

    cfg = cfg_for("clip")
    method = TwoStage(cfg, build_dual_encoder(cfg.models))
    seen = []
    for step in range(4):
        stage = method.stage_at(step, epoch=0)
        method.set_stage(stage)
        seen.append((stage.name, sorted(method.losses({}))))
    assert seen == [("warm", ["a"]), ("warm", ["a"]), ("joint", ["a", "b"]), ("joint", ["a", "b"])]


def test_parameter_groups_scale_encoder_lr_and_skip_frozen_encoders():
    method = create_method("clip", cfg_for("clip"))
    groups = method.parameter_groups(1e-3, encoder_lr_scale=0.1, weight_decay=0.05)
    lrs = {g["name"]: g["lr"] for g in groups}
    assert lrs["encoder"] == pytest.approx(1e-4) and lrs["head"] == pytest.approx(1e-3)
    no_decay = {id(p) for g in groups if g["weight_decay"] == 0 for p in g["params"]}
    assert id(method.model.logit_scale) in no_decay

    frozen = create_method("clip", cfg_for("clip", "method.params.FREEZE_VISION_ENCODER=true"))
    ids = {id(p) for g in frozen.parameter_groups(1e-3) for p in g["params"]}
    assert not any(id(p) in ids for p in frozen.model.image_encoder.parameters())
    assert any(id(p) in ids for p in frozen.model.text_encoder.parameters())


def test_pubmedclip_option_without_a_path_says_what_to_set():
    with pytest.raises(MethodConfigError, match="PRETRAINED_MODEL_PATH"):
        create_method("clip", cfg_for("clip", "method.params.LOAD_PRETRAINED=true"))


class FakeStudies(torch.utils.data.Dataset):
    def __init__(self, ids):
        self.frame = pd.DataFrame({"study_id": ids})

    def __len__(self):
        return len(self.frame)

    def __getitem__(self, i):
        return {"study_id": self.frame["study_id"].iat[i]}


def test_triplet_dataset_maps_ids_and_drops_members_outside_the_split():
    triplets = pd.DataFrame({"anchor": ["a", "b", "a"], "positive": ["b", "c", "x"], "negative": ["c", "a", "b"]})
    ds = TripletDataset(triplets, FakeStudies(["a", "b", "c"]))
    assert len(ds) == 2 and ds.dropped == 1
    assert [ds[1][m]["study_id"] for m in ("anchor", "positive", "negative")] == ["b", "c", "a"]


def test_missing_triplet_file_names_the_notebook_that_writes_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="02_triplet_mining"):
        read_triplets(tmp_path / "triplets.csv.xz")
