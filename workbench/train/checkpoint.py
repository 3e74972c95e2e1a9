"""Training state on disk that resumes bit for bit and never runs code when it is read.

A training checkpoint is one safetensors file. Every tensor of the state (weights, optimizer
moments, generator states) is stored under a numbered key; the JSON "skeleton" that puts them
back into dicts, lists and tuples, with the plain numbers and strings in place, is stored as
one more (uint8) tensor, so its size is not bounded by the safetensors header limit. Reading
parses JSON and copies bytes: unlike `torch.load`, nothing in the file can name a Python
callable to run. `torch.load(weights_only=True)` restricts the unpickler instead, and was
bypassable before torch 2.6 (CVE-2025-32434), which the project still allows.

`save_state` writes through a temporary file, flushes it to disk and renames it into place, so
a kill at any moment leaves either the previous file or the new one.
"""

from __future__ import annotations

import json
import os
from collections import OrderedDict
from pathlib import Path
from typing import Any, Dict, Mapping

import numpy as np
import torch
from torch import Tensor

from workbench.io import atomic_path

FORMAT = "workbench.train_state"
FORMAT_VERSION = 1
_SKELETON = "__skeleton__"
_TENSOR, _TUPLE, _ITEMS, _METADATA = "__tensor__", "__tuple__", "__items__", "__metadata__"


class CheckpointFormatError(ValueError):
    """A file that is not a training state this module wrote (or wrote in a newer format)."""


# ---------------------------------------------------------------------- nested state <-> tensors
def pack_state(state: Any) -> Dict[str, Tensor]:
    """Flatten `state` (dicts, lists, tuples, tensors, numbers, strings, None) into safetensors'
    `{name: tensor}`; the structure travels as JSON in the `__skeleton__` tensor."""
    tensors: Dict[str, Tensor] = {}
    skeleton = json.dumps(_encode(state, tensors, "state"), separators=(",", ":"))
    tensors[_SKELETON] = torch.frombuffer(bytearray(skeleton.encode("utf-8")), dtype=torch.uint8)
    return tensors


def unpack_state(tensors: Mapping[str, Tensor]) -> Any:
    """Inverse of `pack_state`."""
    if _SKELETON not in tensors:
        raise CheckpointFormatError("it holds tensors but no workbench state skeleton")
    text = bytes(tensors[_SKELETON].cpu().numpy()).decode("utf-8")
    return _decode(json.loads(text), tensors)


def _encode(obj: Any, tensors: Dict[str, Tensor], where: str) -> Any:
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    if isinstance(obj, np.generic):  # a NumPy scalar in a metric row
        return obj.item()
    if isinstance(obj, Tensor):
        key = str(len(tensors))
        # own storage per entry: safetensors refuses tensors that share memory (tied weights)
        tensors[key] = obj.detach().to("cpu", copy=True).contiguous()
        return {_TENSOR: key}
    if isinstance(obj, tuple):
        return {_TUPLE: [_encode(v, tensors, f"{where}[{i}]") for i, v in enumerate(obj)]}
    if isinstance(obj, list):
        return [_encode(v, tensors, f"{where}[{i}]") for i, v in enumerate(obj)]
    if isinstance(obj, Mapping):
        # nn.Module.state_dict() carries per-module versions on the dict; load_state_dict reads them
        metadata = getattr(obj, "_metadata", None)
        if metadata is None and all(isinstance(k, str) and not k.startswith("__") for k in obj):
            return {k: _encode(v, tensors, f"{where}[{k!r}]") for k, v in obj.items()}
        out: Dict[str, Any] = {_ITEMS: [[_encode(k, tensors, where), _encode(v, tensors, f"{where}[{k!r}]")]
                                        for k, v in obj.items()]}
        if metadata is not None:
            out[_METADATA] = _encode(dict(metadata), tensors, f"{where}._metadata")
        return out
    raise TypeError(f"{where} is a {type(obj).__name__}; a checkpoint keeps only tensors, numbers, strings, "
                    f"None, lists, tuples and dicts (so reading it never needs unpickling).")


def _decode(obj: Any, tensors: Mapping[str, Tensor]) -> Any:
    if isinstance(obj, list):
        return [_decode(v, tensors) for v in obj]
    if not isinstance(obj, dict):
        return obj
    if _TENSOR in obj:
        return tensors[obj[_TENSOR]]
    if _TUPLE in obj:
        return tuple(_decode(v, tensors) for v in obj[_TUPLE])
    if _ITEMS in obj:
        items = [(_decode(k, tensors), _decode(v, tensors)) for k, v in obj[_ITEMS]]
        if _METADATA not in obj:
            return dict(items)
        restored = OrderedDict(items)
        restored._metadata = _decode(obj[_METADATA], tensors)  # type: ignore[attr-defined]
        return restored
    return {k: _decode(v, tensors) for k, v in obj.items()}


# ---------------------------------------------------------------------- files and bytes
def save_state(path: str | os.PathLike, state: Any) -> Path:
    """Write `state` to `path` atomically and durably (fsync before and after the rename)."""
    from safetensors.torch import save_file

    path = Path(path)
    tensors = pack_state(state)
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={"format": FORMAT, "format_version": str(FORMAT_VERSION)})
        _fsync_file(tmp)
    _fsync_dir(path.parent)
    return path


def load_state(path: str | os.PathLike, device: str | torch.device = "cpu") -> Any:
    """Read what `save_state` wrote, tensors on `device`; `CheckpointFormatError` for any other
    file (a pickle, a truncated write, another program's safetensors)."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt", device=str(device)) as f:
            metadata = f.metadata() or {}
            if metadata.get("format") != FORMAT:
                raise CheckpointFormatError(f"its format is {metadata.get('format')!r}, not {FORMAT!r}")
            version = int(metadata.get("format_version", "0"))
            if version > FORMAT_VERSION:
                raise CheckpointFormatError(f"it is format version {version}, newer than this workbench's "
                                            f"{FORMAT_VERSION}")
            tensors = {key: f.get_tensor(key) for key in f.keys()}
    except SafetensorError as err:
        raise CheckpointFormatError(f"it is not a safetensors file ({err})") from None
    return unpack_state(tensors)


def state_to_bytes(state: Any) -> bytes:
    """`state` as safetensors bytes (to send between processes without pickling)."""
    from safetensors.torch import save

    return save(pack_state(state))


def state_from_bytes(data: bytes) -> Any:
    """Inverse of `state_to_bytes`."""
    from safetensors.torch import load

    return unpack_state(load(data))


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def _fsync_dir(folder: Path) -> None:
    """Persist a rename (POSIX); a no-op where directories cannot be opened (Windows)."""
    if not hasattr(os, "O_DIRECTORY"):
        return
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
