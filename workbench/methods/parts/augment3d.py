"""Random augmented views of one CT volume (MedFinder's view-consistency input).

MONAI random transforms (Cardoso et al. 2022): rotation of up to +-0.2 rad about each axis,
isotropic zoom in [0.9, 1.1] (output keeps its shape) and additive Gaussian noise with sigma
0.1 (on intensities already windowed to [0, 1]).
"""

from __future__ import annotations

from typing import Tuple

import torch
from torch import Tensor


class RandomView3D:
    """Callable volume [1, D, H, W] -> one random view of the same shape. Every call draws
    anew, so a dataset applying it to `image` and to `image2` yields two independent views.

    MONAI transforms carry their own NumPy random state, which DataLoader workers would copy
    identically; each call therefore re-seeds the pipeline from torch's generator, which
    PyTorch seeds per worker and `torch.manual_seed` makes reproducible. A class (not a
    closure) so DataLoader workers started by 'spawn' can pickle it.
    """

    def __init__(self, rotate_range: float = 0.2, zoom_range: Tuple[float, float] = (0.9, 1.1),
                 noise_std: float = 0.1, scale: float = 1.0) -> None:
        from monai.transforms import Compose, EnsureType, RandGaussianNoise, RandRotate, RandZoom

        self.scale = float(scale)  # e.g. 1/255 for the uint8 volume cache
        self.pipeline = Compose([
            RandRotate(range_x=rotate_range, range_y=rotate_range, range_z=rotate_range, prob=1.0, keep_size=True,
                       padding_mode="zeros"),
            RandZoom(prob=1.0, min_zoom=zoom_range[0], max_zoom=zoom_range[1], keep_size=True),
            RandGaussianNoise(prob=1.0, mean=0.0, std=noise_std, sample_std=False),
            EnsureType(data_type="tensor", track_meta=False, dtype=torch.float32),
        ])

    def __call__(self, volume: Tensor) -> Tensor:
        if volume.ndim != 4:
            raise ValueError(f"Expected a volume [1, D, H, W], got shape {tuple(volume.shape)}.")
        self.pipeline.set_random_state(seed=int(torch.randint(0, 2**31 - 1, (1,)).item()))
        return self.pipeline(volume.float() * self.scale)

