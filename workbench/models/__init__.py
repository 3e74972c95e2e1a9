"""Encoders shared by every method: image 2D (timm) / 3D (MONAI), text (transformers), heads,
the DualEncoder, offline weight resolution and the one checkpoint format.

Contract (the training layer codes against it): `EncoderOutput`, `build_image_encoder`,
`build_text_encoder`, `ProjectionHead`, `DualEncoder`, `build_dual_encoder`, `save_encoders`,
`load_encoders`, `resolve_device`.
"""

from workbench.models.registry import (  # noqa: F401  (registries first: encoders register into them)
    IMAGE_ENCODERS,
    TEXT_ENCODERS,
    EncoderOutput,
    build_image_encoder,
    build_text_encoder,
    resolved_image_model,
    resolved_text_model,
)
from workbench.models import image2d, text, volume3d  # noqa: F401,E402  (fill the registries)
from workbench.models.checkpoint import (  # noqa: E402
    CheckpointNotFoundError,
    checkpoint_folders,
    find_checkpoint,
    load_encoders,
    load_extra_state,
    load_models_config,
    save_encoders,
)
from workbench.models.device import resolve_device  # noqa: E402
from workbench.models.dual import DualEncoder, build_dual_encoder  # noqa: E402
from workbench.models.heads import ProjectionHead  # noqa: E402
from workbench.models.weights import MissingWeightsError  # noqa: E402

__all__ = [
    "EncoderOutput", "IMAGE_ENCODERS", "TEXT_ENCODERS", "build_image_encoder", "build_text_encoder",
    "ProjectionHead", "DualEncoder", "build_dual_encoder", "save_encoders", "load_encoders",
    "load_extra_state", "load_models_config", "find_checkpoint", "checkpoint_folders",
    "CheckpointNotFoundError", "resolve_device", "MissingWeightsError", "resolved_image_model",
    "resolved_text_model",
]
