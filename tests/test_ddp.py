"""DDP: two gloo processes on CPU give the same gradients as one process on the combined
batch (contrastive negatives gathered across ranks with gradients), and the epoch sampler
shards an epoch across ranks without overlap."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from torch import nn

from workbench.config import load_config
from workbench.methods.clip import ClipMethod
from workbench.models import DualEncoder, EncoderOutput
from workbench.train.distributed import EpochSampler, all_gather_with_grad, init_distributed, wrap_ddp
from workbench.train.trainer import _LossModule

BATCH = 8  # combined; 4 per rank


class LayerNormImage(nn.Module):
    """Linear + LayerNorm, no dropout, no batch statistics: samples are independent."""

    out_dim = 8
    token_dim = 8

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, 8), nn.LayerNorm(8))

    def forward(self, images):
        return EncoderOutput(pooled=self.body(images))


class LayerNormText(nn.Module):
    out_dim = 8
    token_dim = 8
    max_length = 16
    tokenizer = None

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(32, 8)
        self.norm = nn.LayerNorm(8)

    def forward(self, input_ids, attention_mask):
        mask = attention_mask.unsqueeze(-1).float()
        pooled = (self.embed(input_ids) * mask).sum(1) / mask.sum(1)
        return EncoderOutput(pooled=self.norm(pooled), mask=attention_mask.bool())


def make_method() -> ClipMethod:
    torch.manual_seed(0)
    cfg = load_config("tiny", ["models.embed_dim=8"])
    return ClipMethod(cfg, DualEncoder(LayerNormImage(), LayerNormText(), embed_dim=8))


def make_batch():
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(1, 32, (BATCH, 6), generator=g)
    mask = torch.ones_like(ids)
    mask[::3, 4:] = 0
    return {"image": torch.randn(BATCH, 3, 4, 4, generator=g), "input_ids": ids, "attention_mask": mask}


def grads_of(method: ClipMethod):
    return {n: p.grad.detach().clone() for n, p in method.network.named_parameters() if p.grad is not None}


def _worker(rank: int, world: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    ctx = init_distributed(torch.device("cpu"), backend="gloo")
    method = make_method()
    method.gather = all_gather_with_grad  # what the trainer does under DDP
    module = wrap_ddp(_LossModule(method), ctx, find_unused_parameters=True)
    shard = {k: v[rank::world] for k, v in make_batch().items()}
    terms = module(shard)
    method.weighted_total(terms).backward()
    torch.save({"grads": grads_of(method), "loss": terms["contrastive"].item()}, Path(out) / f"rank{rank}.pt")
    torch.distributed.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_process_ddp_matches_single_process_gradients(tmp_path):
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)

    single = make_method()
    full = make_batch()
    # The ranks held rows 0,2,4,6 and 1,3,5,7; the gathered order is rank 0's then rank 1's.
    order = torch.cat([torch.arange(0, BATCH, 2), torch.arange(1, BATCH, 2)])
    terms = single.losses({k: v[order] for k, v in full.items()})
    single.weighted_total(terms).backward()
    expected = grads_of(single)

    for rank in range(2):
        got = torch.load(tmp_path / f"rank{rank}.pt")
        assert got["loss"] == pytest.approx(terms["contrastive"].item(), abs=1e-6)
        assert set(got["grads"]) == set(expected)
        for name, grad in expected.items():
            assert torch.allclose(got["grads"][name], grad, atol=1e-5, rtol=0), name
    # the temperature is learnable and receives the gradient of every rank's negatives
    assert expected["model.logit_scale"].abs() > 0


def test_epoch_sampler_shards_are_disjoint_deterministic_and_cover_the_epoch():
    shards = [list(EpochSampler(10, 10, seed=3, rank=r, world_size=2)) for r in range(2)]
    assert sorted(shards[0] + shards[1]) == list(range(10))
    assert shards[0] == list(EpochSampler(10, 10, seed=3, rank=0, world_size=2))
    sampler = EpochSampler(10, 10, seed=3)
    sampler.set_epoch(1)
    assert list(sampler) != list(EpochSampler(10, 10, seed=3))


def test_epoch_sampler_walks_a_large_pool_without_repeats():
    """MedTrim: an epoch of 4 out of 12 triplets; three epochs see all 12 exactly once."""
    sampler = EpochSampler(12, 4, seed=0)
    seen = []
    for epoch in range(3):
        sampler.set_epoch(epoch)
        seen += list(sampler)
    assert sorted(seen) == list(range(12))
