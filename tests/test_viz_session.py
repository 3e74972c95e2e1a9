"""Inspection session on a tiny run folder: embeddings computed once, heat maps kept, widgets react."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from workbench.viz import AttentionInspector, RetrievalInspector, finding_peak_rate, open_session
from workbench.viz.heatmaps import axial_slice, overlay_figure
from workbench.viz.session import load_finding_masks, present_findings


@pytest.fixture(scope="module")
def session(tiny_inspect_run, tmp_path_factory):
    """A session over a private copy of the tiny run (so cache files start absent)."""
    run = tmp_path_factory.mktemp("copy") / "run"
    shutil.copytree(tiny_inspect_run, run)
    return open_session(run, split="val", device="cpu", progress=False)


def test_session_embeds_the_split_with_the_checkpoint_and_caches_it(session):
    assert session.computed and session.modality == "cxr"
    assert set(session.frame["split"]) == {"val"} and len(session) > 0
    cached = session.inspect_dir / f"embeddings-{session.key}.npz"
    mtime = cached.stat().st_mtime_ns
    with torch.no_grad():
        direct = session.model.encode_image(session.model_input(0)[None]).numpy()[0]
    assert np.allclose(session.image_emb[0], direct, atol=1e-5)
    again = open_session(session.run_dir, split="val", device="cpu", progress=False)
    assert not again.computed and again.key == session.key
    assert cached.stat().st_mtime_ns == mtime
    assert np.array_equal(again.image_emb, session.image_emb)


def test_a_different_split_gets_its_own_cache_key(session):
    other = open_session(session.run_dir, split="train", max_points=4, device="cpu", progress=False)
    assert other.key != session.key and len(other) == 4


def test_session_without_trained_model_names_the_notebook(tmp_path):
    from workbench.runs import RunNotFoundError

    with pytest.raises(RunNotFoundError, match="03_pretrain"):
        open_session(tmp_path, device="cpu")


def test_masks_share_the_displayed_resolution(session):
    for i in range(len(session)):
        masks = session.finding_masks(i)
        for name, mask in masks.items():
            assert mask.shape == session.display_image(i).shape and mask.dtype == bool, name


def test_missing_mask_file_is_one_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="mask_path"):
        load_finding_masks(str(tmp_path / "absent.npz"), 64)


def test_attention_inspector_computes_each_map_once(session, monkeypatch):
    import workbench.viz.heatmaps as hm

    inspector = AttentionInspector(session)
    assert inspector.methods == ["similarity", "rollout", "cls_attention"]  # tiny ViT
    phrases = inspector.phrases(0)
    assert phrases and all(isinstance(p, str) and p in session.report(0) for p in phrases)
    calls = []
    real = hm.heatmap
    monkeypatch.setattr(hm, "heatmap", lambda *a, **k: calls.append(a[2:]) or real(*a, **k))
    first = inspector.heatmap(0, phrases[0], "similarity")
    second = inspector.heatmap(0, phrases[0], "similarity")
    inspector.heatmap(0, "another phrase", "rollout")
    inspector.heatmap(0, "yet another", "rollout")  # rollout ignores the text: same map
    assert first is second and len(calls) == 2
    assert first.shape == session.display_image(0).shape


def test_peak_in_mask_rate_over_the_split_counts_present_findings_with_masks(session):
    expected_pairs, areas = 0, []
    for i in range(len(session)):
        masks = session.finding_masks(i)
        for finding in present_findings(session.frame.iloc[i]):
            if finding in masks and masks[finding].any():
                expected_pairs += 1
                areas.append(masks[finding].mean())
    result = finding_peak_rate(session, progress=False)
    assert result.n == expected_pairs > 0
    assert 0.0 <= result.rate <= 1.0 and result.chance == pytest.approx(float(np.mean(areas)))


def test_retrieval_and_report_widgets_redraw_on_change(session):
    from workbench.viz.widgets import report_widget, retrieval_widget

    box = retrieval_widget(RetrievalInspector(session), k=3)
    mode, (query, _search), study, top_k, result = box.children[0], box.children[1].children, *box.children[2:]
    before = result.value
    assert "Query text" in before and before.count("<tr") == 1 + 3
    query.value = "large right pneumothorax"
    assert result.value != before and "large right pneumothorax" in result.value
    mode.value = "image"
    assert "Query image of study" in result.value and "true match" in result.value
    top_k.value = 2
    assert result.value.count("<tr") == 1 + 2

    reports = report_widget(session)
    dropdown, view = reports.children
    first = view.value
    dropdown.value = 1
    assert view.value != first and session.study_ids()[1] in view.value
    assert "ober-" in view.value  # OBER's highlighted spans


def test_volume_overlay_slices_axially_with_anterior_up():
    volume = np.zeros((8, 10, 6), np.uint8)  # RAS: x (towards the patient's right), y (anterior), z
    volume[0, 9, 3] = 255  # the most anterior voxel, at the patient's far left (x = 0)
    view = axial_slice(volume, 3)
    assert view.shape == (10, 8)
    assert view[0, -1] == 255  # top row (anterior), right of the screen (patient's left)
    heat = np.zeros(volume.shape, np.float32)
    fig = overlay_figure(volume, heat, "t", slice_index=3)
    assert "axial slice 4/6" in fig.axes[1].get_title()
    import matplotlib.pyplot as plt

    plt.close(fig)
