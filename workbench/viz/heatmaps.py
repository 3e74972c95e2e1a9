"""Where does the model look? Heat maps over an image (2D) or a volume (3D) for one phrase.

Every map is returned as a float32 numpy array at the image's resolution ([H, W] or
[D, H, W]) and min-max normalised to [0, 1], so maps of different methods share one colour
scale and `peak_in_mask_rate` can compare them with ground-truth masks.

Methods:
- word-to-patch similarity: the cosine between the phrase's embedding and each patch token
  projected into the joint space (the "phrase grounding" read-out of BioViL, Boecking et al.
  2022, §3.3): needs an encoder that returns tokens, works for ViTs and CNNs, 2D and 3D;
- attention rollout (Abnar & Zuidema 2020, §3, eq. 1: A_hat = 0.5 A + 0.5 I, multiplied over
  layers) and last-layer CLS attention, for ViTs (timm 2D, MONAI 3D). Attention weights are
  recomputed from each block's qkv projection, because fused attention never materialises them;
- Grad-CAM (Selvaraju et al. 2017, eqs. 1-2) for CNNs through `monai.visualize.GradCAM`, the
  target "class" being the image-phrase similarity.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

METHODS = ("similarity", "rollout", "cls_attention", "gradcam")
METHOD_LABELS = {
    "similarity": "word-to-patch similarity",
    "rollout": "attention rollout",
    "cls_attention": "last-layer CLS attention",
    "gradcam": "Grad-CAM",
}


# ----------------------------------------------------------------------------- pure helpers

def normalize_map(values: torch.Tensor | np.ndarray) -> np.ndarray:
    """Min-max to [0, 1] (float32). A constant map becomes all zeros: it points nowhere."""
    arr = values.detach().float().cpu().numpy() if isinstance(values, torch.Tensor) else np.asarray(values, np.float32)
    arr = np.nan_to_num(arr.astype(np.float32), nan=0.0)
    low, high = float(arr.min()), float(arr.max())
    if high - low <= 1e-12:
        return np.zeros_like(arr, dtype=np.float32)
    return ((arr - low) / (high - low)).astype(np.float32)


def resize_map(grid_map: torch.Tensor | np.ndarray, size: Sequence[int]) -> np.ndarray:
    """A token-grid map ([h, w] or [d, h, w]) -> image resolution (bilinear / trilinear), in [0, 1]."""
    grid = torch.as_tensor(np.asarray(grid_map, dtype=np.float32) if not isinstance(grid_map, torch.Tensor)
                           else grid_map.detach().float().cpu())
    size = tuple(int(s) for s in size)
    if grid.ndim != len(size) or grid.ndim not in (2, 3):
        raise ValueError(f"resize_map needs a [h, w] or [d, h, w] map matching the target size {size}; "
                         f"got shape {tuple(grid.shape)}.")
    mode = "bilinear" if grid.ndim == 2 else "trilinear"
    if tuple(grid.shape) != size:
        grid = F.interpolate(grid[None, None], size=size, mode=mode, align_corners=False)[0, 0]
    return normalize_map(grid)


def token_similarity_map(patch_embeddings: torch.Tensor, phrase_embedding: torch.Tensor,
                         grid: Sequence[int], size: Sequence[int]) -> np.ndarray:
    """Cosine similarity of each patch embedding ([N, E], row-major over `grid`) with a phrase
    embedding ([E]), reshaped to the grid and resized to `size`."""
    patches = torch.as_tensor(patch_embeddings).float()
    phrase = torch.as_tensor(phrase_embedding).float().reshape(-1)
    if patches.ndim != 2 or patches.shape[1] != phrase.shape[0]:
        raise ValueError(f"patch embeddings must be [N, E] with E = {phrase.shape[0]} (the phrase's width); "
                         f"got {tuple(patches.shape)}.")
    if int(np.prod(grid)) != patches.shape[0]:
        raise ValueError(f"grid {tuple(grid)} holds {int(np.prod(grid))} tokens but {patches.shape[0]} were given.")
    sims = F.cosine_similarity(patches, phrase[None, :], dim=-1)
    return resize_map(sims.reshape(*grid), size)


def _stack_layers(attentions: Sequence[torch.Tensor]) -> torch.Tensor:
    """Per-layer attention [H, T, T] or [1, H, T, T] -> [L, H, T, T]."""
    if len(attentions) == 0:
        raise ValueError("attention rollout needs at least one layer's attention weights.")
    layers = []
    for att in attentions:
        att = torch.as_tensor(att).float()
        if att.ndim == 4:
            if att.shape[0] != 1:
                raise ValueError(f"pass one image's attention ([H, T, T] or [1, H, T, T]); got {tuple(att.shape)}.")
            att = att[0]
        if att.ndim != 3 or att.shape[-1] != att.shape[-2]:
            raise ValueError(f"attention weights must be [H, T, T]; got {tuple(att.shape)}.")
        layers.append(att)
    return torch.stack(layers)


def _token_scores_to_map(scores: torch.Tensor, num_prefix_tokens: int, grid: Sequence[int],
                         size: Sequence[int]) -> np.ndarray:
    patch_scores = scores[num_prefix_tokens:]
    if int(np.prod(grid)) != patch_scores.shape[0]:
        raise ValueError(f"grid {tuple(grid)} holds {int(np.prod(grid))} patches but the attention covers "
                         f"{patch_scores.shape[0]} (after {num_prefix_tokens} prefix tokens).")
    return resize_map(patch_scores.reshape(*grid), size)


def attention_rollout(attentions: Sequence[torch.Tensor], grid: Sequence[int], size: Sequence[int],
                      num_prefix_tokens: int = 1, head_fusion: str = "mean") -> np.ndarray:
    """Attention rollout (Abnar & Zuidema 2020, eq. 1) of one image: heads fused (mean / max),
    the residual added as 0.5 A + 0.5 I with rows renormalised, layers multiplied first to last.

    With a CLS token (`num_prefix_tokens` >= 1) the map is the CLS row over the patches; without
    one (MONAI's ViT) it is the mean over all query rows: how much each patch feeds the output.
    """
    stack = _stack_layers(attentions)
    if head_fusion == "mean":
        fused = stack.mean(1)
    elif head_fusion == "max":
        fused = stack.amax(1)
    else:
        raise ValueError(f"head_fusion must be 'mean' or 'max', got {head_fusion!r}.")
    tokens = fused.shape[-1]
    eye = torch.eye(tokens)
    rollout = eye.clone()
    for layer in fused:
        a_hat = 0.5 * layer + 0.5 * eye
        a_hat = a_hat / a_hat.sum(-1, keepdim=True)
        rollout = a_hat @ rollout
    scores = rollout[0] if num_prefix_tokens > 0 else rollout.mean(0)
    return _token_scores_to_map(scores, num_prefix_tokens, grid, size)


def cls_attention(attentions: Sequence[torch.Tensor], grid: Sequence[int], size: Sequence[int],
                  num_prefix_tokens: int = 1) -> np.ndarray:
    """The last layer's attention from CLS to each patch, averaged over heads (without a CLS
    token: the attention each patch receives, averaged over queries and heads)."""
    last = _stack_layers(attentions)[-1].mean(0)
    scores = last[0] if num_prefix_tokens > 0 else last.mean(0)
    return _token_scores_to_map(scores, num_prefix_tokens, grid, size)


@dataclass
class PeakInMask:
    """How often a map's maximum falls inside its mask, and what chance would give."""

    rate: float  # fraction of maps whose peak lies inside the mask
    chance: float  # mean mask area / image area: the rate of a peak placed uniformly at random
    n: int
    hits: List[bool] = field(default_factory=list)

    def __str__(self) -> str:
        return f"peak inside mask: {self.rate:.1%} of {self.n} (chance {self.chance:.1%})"


def peak_in_mask_rate(maps: Sequence[np.ndarray], masks: Sequence[np.ndarray]) -> PeakInMask:
    """For each (map, mask) pair of equal shape: is the map's arg-max inside the mask?

    Chance is the mean of mask area / image area (the hit rate of a uniformly random peak);
    empty masks are skipped, as there is nothing to find.
    """
    if len(maps) != len(masks):
        raise ValueError(f"got {len(maps)} maps but {len(masks)} masks; pass one mask per map.")
    hits: List[bool] = []
    areas: List[float] = []
    for i, (heat, mask) in enumerate(zip(maps, masks)):
        heat = np.asarray(heat)
        mask = np.asarray(mask).astype(bool)
        if heat.shape != mask.shape:
            raise ValueError(f"map {i} has shape {heat.shape} but its mask {mask.shape}; resize the map to the "
                             "mask's resolution (heat maps here are at image resolution).")
        if not mask.any():
            continue
        peak = np.unravel_index(int(np.argmax(heat)), heat.shape)
        hits.append(bool(mask[peak]))
        areas.append(float(mask.mean()))
    n = len(hits)
    return PeakInMask(rate=float(np.mean(hits)) if n else float("nan"),
                      chance=float(np.mean(areas)) if n else float("nan"), n=n, hits=hits)


# ----------------------------------------------------------------------------- model read-outs

def _image_batch(image: torch.Tensor) -> torch.Tensor:
    """One image [C, H, W] or volume [C, D, H, W] (no batch axis: [1, D, H, W] is a volume) -> a batch of one."""
    if image.ndim not in (3, 4):
        raise ValueError(f"pass one image [C, H, W] or volume [C, D, H, W] without a batch axis; got {tuple(image.shape)}.")
    return image.unsqueeze(0)


def _spatial_size(batch: torch.Tensor) -> Tuple[int, ...]:
    return tuple(int(s) for s in batch.shape[2:])


def _phrase_embedding(model: nn.Module, phrase: str) -> torch.Tensor:
    with torch.no_grad():
        batch = model.tokenize([phrase])
        return model.encode_text(batch["input_ids"], batch["attention_mask"])[0]


def _device_of(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def similarity_map(model: nn.Module, image: torch.Tensor, phrase: str | torch.Tensor) -> np.ndarray:
    """Word-to-patch similarity: patch tokens through the image projection head, cosine with the
    phrase's text embedding (BioViL, Boecking et al. 2022, §3.3)."""
    batch = _image_batch(image).to(_device_of(model))
    text = _phrase_embedding(model, phrase) if isinstance(phrase, str) else phrase.to(batch.device)
    with torch.no_grad():
        _, out = model.forward_image(batch)
        if out.tokens is None or out.grid is None:
            raise ValueError(f"{type(model.image_encoder).__name__} returns no patch tokens; "
                             "use Grad-CAM or attention maps for it.")
        patches = model.image_proj(out.tokens[0])
    return token_similarity_map(patches, text, out.grid, _spatial_size(batch))


def _attention_modules(encoder: nn.Module) -> List[nn.Module]:
    """Self-attention modules of a timm ViT (`Attention`) or a MONAI ViT (`SABlock`), in order."""
    from monai.networks.blocks.selfattention import SABlock

    found = []
    for module in encoder.modules():
        if isinstance(module, SABlock) and getattr(module, "use_combined_linear", True):
            found.append(module)
        elif type(module).__name__ == "Attention" and hasattr(module, "qkv") and hasattr(module, "num_heads"):
            found.append(module)
    return found


def _recompute_attention(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Softmax attention weights [B, H, T, T] from a block's input, as its forward computes them."""
    from monai.networks.blocks.selfattention import SABlock

    if isinstance(module, SABlock):
        q, k = module.input_rearrange(module.qkv(x))[:2]
        return (torch.einsum("blxd,blyd->blxy", q, k) * module.scale).softmax(-1)
    b, n, _ = x.shape
    qkv = module.qkv(x).reshape(b, n, 3, module.num_heads, module.head_dim).permute(2, 0, 3, 1, 4)
    q, k = module.q_norm(qkv[0]), module.k_norm(qkv[1])
    return ((q * module.scale) @ k.transpose(-2, -1)).softmax(-1)


def has_attention(model: nn.Module) -> bool:
    """Whether the image encoder is a ViT whose attention weights can be read out."""
    return bool(_attention_modules(model.image_encoder))


def vit_attentions(model: nn.Module, image: torch.Tensor) -> Tuple[List[torch.Tensor], Tuple[int, ...], int]:
    """Each block's attention weights for one image ([1, H, T, T] per layer), the patch grid, and
    the number of prefix (CLS) tokens."""
    modules = _attention_modules(model.image_encoder)
    if not modules:
        raise ValueError(f"{type(model.image_encoder).__name__} has no self-attention blocks; "
                         "attention maps need a ViT (use Grad-CAM or similarity for CNNs).")
    inputs: List[torch.Tensor] = []
    handles = [m.register_forward_pre_hook(lambda _m, args: inputs.append(args[0].detach())) for m in modules]
    batch = _image_batch(image).to(_device_of(model))
    try:
        with torch.no_grad():
            _, out = model.forward_image(batch)
            attentions = [_recompute_attention(m, x) for m, x in zip(modules, inputs)]
    finally:
        for h in handles:
            h.remove()
    tokens = attentions[-1].shape[-1]
    prefix = tokens - int(np.prod(out.grid))
    return attentions, tuple(out.grid), prefix


class _PhraseScore(nn.Module):
    """Image -> [B, 1] similarity with a fixed phrase embedding: Grad-CAM's 'class logit'."""

    def __init__(self, model: nn.Module, text_embedding: torch.Tensor) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("text_embedding", text_embedding.detach().reshape(-1))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return (self.model.encode_image(images) @ self.text_embedding)[:, None]


def last_spatial_layer(module: nn.Module, example: torch.Tensor) -> str:
    """Name of the last module (in completion order) that outputs a spatial feature map of
    the input's rank with more than one cell and runs once per forward: Grad-CAM's usual target."""
    calls: dict = {}
    order: List[str] = []
    handles = []
    for name, sub in module.named_modules():
        if not name:
            continue

        def hook(_m, _inp, out, name=name):
            calls[name] = calls.get(name, 0) + 1
            if isinstance(out, torch.Tensor) and out.ndim == example.ndim and int(np.prod(out.shape[2:])) > 1:
                order.append(name)

        handles.append(sub.register_forward_hook(hook))
    try:
        with torch.no_grad():
            module(example)
    finally:
        for h in handles:
            h.remove()
    once = [n for n in order if calls[n] == 1]
    if not once:
        raise ValueError(f"{type(module).__name__} has no spatial feature map for Grad-CAM; pass target_layer.")
    return once[-1]


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x


def grad_cam_map(score_module: nn.Module, image: torch.Tensor, class_idx: int = 0,
                 target_layer: Optional[str] = None) -> np.ndarray:
    """Grad-CAM (Selvaraju et al. 2017, eqs. 1-2) of `score_module` (images -> [B, C] scores)
    for one image, through `monai.visualize.GradCAM`; `target_layer` defaults to the last
    spatial feature map."""
    from monai.visualize import GradCAM

    batch = _image_batch(image).to(_device_of(score_module))
    layer = target_layer or last_spatial_layer(score_module, batch)
    was_training = score_module.training
    score_module.eval()
    try:
        # MONAI's default post-processing maps (min, max) to (1, 0), flipping the map; take the
        # raw upsampled map and normalise it here, the same way as every other method.
        cam = GradCAM(nn_module=score_module, target_layers=layer, postprocessing=_identity)
        with torch.enable_grad():
            heat = cam(batch.clone().requires_grad_(True), class_idx=class_idx)
    finally:
        score_module.train(was_training)
    return normalize_map(heat[0, 0])


def phrase_grad_cam(model: nn.Module, image: torch.Tensor, phrase: str | torch.Tensor,
                    target_layer: Optional[str] = None) -> np.ndarray:
    """Grad-CAM of the image-phrase similarity with respect to the image encoder's last feature map."""
    text = _phrase_embedding(model, phrase) if isinstance(phrase, str) else phrase
    scorer = _PhraseScore(model, text.to(_device_of(model)))
    layer = f"model.{target_layer}" if target_layer else None
    return grad_cam_map(scorer, image, class_idx=0, target_layer=layer)


def available_methods(model: nn.Module) -> List[str]:
    """Heat-map methods that apply to this model's image encoder: attention read-outs for ViTs,
    Grad-CAM for CNNs, similarity for every encoder that returns tokens."""
    methods = ["similarity"]
    if has_attention(model):
        methods += ["rollout", "cls_attention"]
    else:
        methods.append("gradcam")
    return methods


def heatmap(model: nn.Module, image: torch.Tensor, phrase: str = "", method: str = "similarity") -> np.ndarray:
    """One heat map at image resolution in [0, 1] for `image` ([C, H, W] or [C, D, H, W]).

    `phrase` is needed by `similarity` and `gradcam`; the attention read-outs show where the
    image encoder looks regardless of the text.
    """
    functions: dict[str, Callable[[], np.ndarray]] = {
        "similarity": lambda: similarity_map(model, image, phrase),
        "gradcam": lambda: phrase_grad_cam(model, image, phrase),
    }
    if method in ("rollout", "cls_attention"):
        attentions, grid, prefix = vit_attentions(model, image)
        size = _spatial_size(_image_batch(image))
        reader = attention_rollout if method == "rollout" else cls_attention
        return reader(attentions, grid, size, num_prefix_tokens=prefix)
    if method not in functions:
        raise ValueError(f"Unknown heat-map method {method!r}; known: {list(METHODS)}.")
    if not phrase:
        raise ValueError(f"method {method!r} needs a phrase (an entity of the report or free text).")
    return functions[method]()


# ----------------------------------------------------------------------------- session level

def axial_slice(volume: np.ndarray, index: int) -> np.ndarray:
    """Axial slice `index` of a RAS-ordered volume [x, y, z] (the cache's orientation), shown
    radiologically: anterior up, the patient's right on the viewer's left."""
    return np.asarray(volume)[:, :, index].T[::-1, ::-1]


def overlay_figure(image: np.ndarray, heat: np.ndarray, title: str = "", slice_index: Optional[int] = None,
                   mask: Optional[np.ndarray] = None, alpha: float = 0.45):
    """The image beside the image with the heat map on top (a volume: one axial slice, see
    `axial_slice`); a ground-truth mask, when given, is outlined."""
    import matplotlib.pyplot as plt

    image = np.asarray(image)
    if image.ndim == 3:
        depth = image.shape[-1]
        slice_index = depth // 2 if slice_index is None else int(np.clip(slice_index, 0, depth - 1))
        image, heat = axial_slice(image, slice_index), axial_slice(heat, slice_index)
        mask = axial_slice(mask, slice_index) if mask is not None and mask.ndim == 3 else mask
        title = f"{title} (axial slice {slice_index + 1}/{depth})"
    fig, axes = plt.subplots(1, 2, figsize=(8, 4.2))
    axes[0].imshow(image, cmap="gray")
    axes[0].set_title("image")
    axes[1].imshow(image, cmap="gray")
    shown = axes[1].imshow(heat, cmap="jet", alpha=alpha, vmin=0.0, vmax=1.0)
    if mask is not None and mask.any():
        axes[1].contour(mask.astype(float), levels=[0.5], colors="white", linewidths=1.0)
    axes[1].set_title(title, fontsize=9)
    for ax in axes:
        ax.axis("off")
    fig.colorbar(shown, ax=axes[1], fraction=0.046, pad=0.04)
    fig.tight_layout()
    return fig


class AttentionInspector:
    """Heat maps of a session's studies, each computed once and kept, so that moving a slice
    slider or re-drawing never runs the model again."""

    def __init__(self, session) -> None:
        self.session = session
        self.methods = available_methods(session.model)
        self._maps: dict = {}

    def phrases(self, i: int) -> List[str]:
        """Phrases offered for study i: OBER's mentions of its report."""
        from workbench.viz.report_view import entity_choices

        return entity_choices(self.session.report(i))

    def example(self) -> Tuple[int, str]:
        """A study worth showing first: one with a present finding that has a ground-truth mask
        (phrase = the finding's words), else the first study OBER finds a mention in."""
        from workbench.viz.session import phrase_of, present_findings

        for i in range(len(self.session)):
            masks = self.session.finding_masks(i)
            for finding in present_findings(self.session.frame.iloc[i]):
                if finding in masks and masks[finding].any():
                    return i, phrase_of(finding)
        for i in range(len(self.session)):
            phrases = self.phrases(i)
            if phrases:
                return i, phrases[0]
        return 0, "opacity"

    def heatmap(self, i: int, phrase: str, method: str = "similarity") -> np.ndarray:
        key = (int(i), phrase if method in ("similarity", "gradcam") else "", method)
        if key not in self._maps:
            self._maps[key] = heatmap(self.session.model, self.session.model_input(i), phrase, method)
        return self._maps[key]

    def figure(self, i: int, phrase: str, method: str = "similarity", slice_index: Optional[int] = None,
               show_mask: bool = True):
        heat = self.heatmap(i, phrase, method)
        mask = None
        if show_mask:
            masks = self.session.finding_masks(i)
            finding = _finding_for_phrase(phrase, masks)
            mask = masks.get(finding) if finding else None
        title = f"{METHOD_LABELS[method]}: '{phrase}'" if method in ("similarity", "gradcam") else METHOD_LABELS[method]
        return overlay_figure(self.session.display_image(i), heat, title, slice_index, mask)

    def save_png(self, i: int, phrase: str, method: str = "similarity", slice_index: Optional[int] = None):
        """The figure of study i written atomically to `inspect/attention-<study>-<method>.png`."""
        from workbench.io import save_figure_atomic

        path = self.session.inspect_dir / f"attention-{self.session.study_ids()[i]}-{method}.png"
        return save_figure_atomic(self.figure(i, phrase, method, slice_index), path, dpi=110)


def _finding_for_phrase(phrase: str, masks: dict) -> Optional[str]:
    """The mask whose finding name the phrase mentions ('small left effusion' -> 'Effusion')."""
    words = phrase.lower()
    for name in masks:
        if name.replace("_", " ").lower() in words:
            return name
    return None


def finding_peak_rate(session, method: str = "similarity", progress: bool = True, save: bool = True) -> PeakInMask:
    """Over the session's studies: for each present finding with a ground-truth mask, does the
    heat map of the finding's phrase peak inside the finding's mask? Against chance (mask area).
    With `save`, the figures go to `inspect/peak_in_mask-<method>.json`."""
    from tqdm.auto import tqdm

    from workbench.viz.session import phrase_of, present_findings

    maps, masks = [], []
    for i in tqdm(range(len(session)), desc="peak-in-mask", disable=not progress, leave=False):
        found = present_findings(session.frame.iloc[i])
        if not found:
            continue
        study_masks = session.finding_masks(i)
        if not study_masks:
            continue
        image = session.model_input(i)
        for finding in found:
            mask = study_masks.get(finding)
            if mask is None or not mask.any():
                continue
            heat = heatmap(session.model, image, phrase_of(finding), method)
            if heat.shape != mask.shape:
                raise ValueError(f"heat map {heat.shape} and mask {mask.shape} of study {session.study_ids()[i]} "
                                 "differ; the cache and the masks must share a resolution.")
            maps.append(heat)
            masks.append(mask)
    result = peak_in_mask_rate(maps, masks)
    if save:
        from workbench.io import write_json_atomic

        write_json_atomic(session.inspect_dir / f"peak_in_mask-{method}.json",
                          {"method": method, "split": session.split, "checkpoint": session.checkpoint.name,
                           "rate": result.rate if result.n else None,
                           "chance": result.chance if result.n else None, "n": result.n})
    return result
