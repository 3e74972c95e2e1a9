"""Reusable modules and loss functions of the MedFinder, CM-CGNS and ASG methods.

Each part is a plain `nn.Module` or pure function over tensors, testable without the method
protocol or any data: view fusion and 3D two-view augmentation (MedFinder), local token-patch
alignment, cluster-guided negatives and cross-modal masked reconstruction (CM-CGNS), region
features, region-sentence contrast, tag queries and soft-label alignment (ASG).
"""

from workbench.methods.parts.augment3d import RandomView3D
from workbench.methods.parts.clustering import ClusterNegatives, bounded_margin_loss
from workbench.methods.parts.fusion import ViewCrossAttention
from workbench.methods.parts.local_alignment import (LocalCrossAttention, local_image_loss, local_text_loss,
                                                     token_contrast)
from workbench.methods.parts.masked_recon import (ReconstructionHead, masked_patch_loss, mask_input_patches,
                                                  patchify, random_patch_mask)
from workbench.methods.parts.regions import region_features, region_sentence_loss
from workbench.methods.parts.tags import TagQueryDecoder, soft_label_alignment_loss, tag_bce_loss

__all__ = [
    "RandomView3D", "ClusterNegatives", "bounded_margin_loss", "ViewCrossAttention",
    "LocalCrossAttention", "local_image_loss", "local_text_loss", "token_contrast", "ReconstructionHead",
    "masked_patch_loss", "mask_input_patches", "patchify", "random_patch_mask", "region_features",
    "region_sentence_loss", "TagQueryDecoder", "soft_label_alignment_loss", "tag_bce_loss",
]
