"""The embedded demo dataset: chest-radiograph and chest-CT phantoms with reports and ground truth.

No real data can be downloaded where the workbench runs, so it generates its own:
`generate_demo(root)` writes 2D studies in the MIMIC-CXR-JPG layout and 3D volumes in the
BIMCV-R layout (read back by the real readers), plus `ground_truth.parquet` with each study's
findings (assertion, severity, location), finding boxes and masks, and region-sentence pairs.

The report phrase bank lives in `workbench.data.phantom.reports` and is private to the
generator: the report labeler must not import it (its demo score would be circular).
"""

from workbench.data.labels import DEMO_CT_LABELS, DEMO_LABELS
from workbench.data.phantom.ct import REGIONS_3D, CtRendering, render_ct
from workbench.data.phantom.cxr import REGIONS_2D, CxrRendering, render_frontal, render_lateral
from workbench.data.phantom.sampling import (CtAnatomy, CxrAnatomy, FindingSpec, sample_ct_study,
                                             sample_cxr_study)
from workbench.data.phantom.writer import generate_demo

__all__ = [
    "DEMO_LABELS", "DEMO_CT_LABELS", "generate_demo",
    "FindingSpec", "CxrAnatomy", "CtAnatomy", "sample_cxr_study", "sample_ct_study",
    "render_frontal", "render_lateral", "render_ct", "CxrRendering", "CtRendering",
    "REGIONS_2D", "REGIONS_3D",
]
