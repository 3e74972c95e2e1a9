"""Device selection: one place decides where tensors go, so no module calls `.cuda()`."""

from __future__ import annotations

import torch


def resolve_device(name: str = "auto") -> torch.device:
    """`auto` picks cuda > mps > cpu; any other name (`cpu`, `cuda:1`, `mps`) is taken as given.

    An explicit accelerator that is not available fails here, once, instead of deep inside a
    forward pass.
    """
    name = (name or "auto").strip().lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"Device {name!r} was asked for but CUDA is not available here; use device='auto' or 'cpu'.")
    if device.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise RuntimeError(f"Device {name!r} was asked for but MPS is not available here; use device='auto' or 'cpu'.")
    return device
