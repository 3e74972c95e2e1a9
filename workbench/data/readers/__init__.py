"""Dataset readers: one module per source layout, all registered in `READERS` by name.

`list_readers()` names them; `build_manifest(name, root)` (in `workbench.data`) runs one and
adds patient-level splits.
"""

from __future__ import annotations

from typing import List

from workbench.data.readers import (bimcv, csv_pairs, ctrate, demo, dicom, folders, iu, medtrim_csv,  # noqa: F401
                                    mimic, roco)
from workbench.data.readers.registry import READERS


def list_readers(pattern: str = "*") -> List[str]:
    """Names of the registered readers (demo, mimic, bimcv, ctrate, roco, iu, folders, csv, dicom,
    medtrim)."""
    return READERS.names(pattern)


__all__ = ["READERS", "list_readers"]
