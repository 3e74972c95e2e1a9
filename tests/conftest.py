"""Shared fixtures: a tiny generated demo dataset, its manifest, and a notebook runner.

Tests use tiny configs (64 px images, a few dozen studies) so the suite fits CI's budget;
real-data tests read `../shared/data/` and skip with a reason when it is absent.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

PROJECT_ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = PROJECT_ROOT.parent / "shared" / "data"


def shared_data(sub: str) -> Path:
    """Path under ../shared/data, or skip the test with a clear reason."""
    path = SHARED_DATA / sub
    if not path.exists():
        pytest.skip(f"real sample data {path} is absent (see ../shared/data/README.md)")
    return path


@pytest.fixture(scope="session")
def tiny_demo_root(tmp_path_factory) -> Path:
    """A tiny phantom dataset written to disk in the MIMIC and BIMCV-R layouts."""
    from workbench.data.phantom import generate_demo

    root = tmp_path_factory.mktemp("demo")
    generate_demo(root, n_studies=48, n_ct_studies=6, image_size=64, volume_size=(32, 32, 32), seed=0,
                  progress=False)
    return root


@pytest.fixture(scope="session")
def tiny_manifest(tiny_demo_root):
    """The manifest of the tiny demo dataset, read through the real readers."""
    from workbench.data import build_manifest

    return build_manifest("demo", tiny_demo_root, seed=0)


@pytest.fixture
def run_dir(tmp_path) -> Path:
    """An empty run folder (what `workbench.runs.new_run_dir` would create)."""
    path = tmp_path / "run"
    path.mkdir()
    return path


@pytest.fixture
def execute_notebook():
    """Run a notebook headless through papermill, as `make demo` does."""
    from workbench.cli import run_notebook

    def _run(name: str, run_dir: Path, **parameters):
        return run_notebook(name, run_dir, parameters, progress=False)

    return _run


@pytest.fixture(scope="session")
def tiny_inspect_run(tmp_path_factory, tiny_manifest) -> Path:
    """A tiny run folder to inspect (notebook 05): manifest, 64-px image cache, and an untrained
    tiny DualEncoder (tiny ViT + tiny BERT) saved as the checkpoint `train/tiny-0/`."""
    import torch

    from workbench.config import ModelsConfig
    from workbench.data import write_manifest
    from workbench.data.cache import build_image_cache
    from workbench.models import build_dual_encoder, save_encoders

    run = tmp_path_factory.mktemp("inspect_run")
    write_manifest(tiny_manifest, run / "manifest.parquet")
    build_image_cache(tiny_manifest, run / "cache", 64, progress=False, num_workers=1)
    cfg = ModelsConfig(img_model="tiny_vit", text_model="tiny_bert", img_pretrained=False, text_pretrained=False,
                       embed_dim=16)
    torch.manual_seed(0)
    save_encoders(build_dual_encoder(cfg), run / "train" / "tiny-0", cfg)
    return run
