"""Class-folder reader: `<root>/<split>/<CLASS>/*.jpeg` (or `<root>/<CLASS>/*.jpeg`).

For labelled image sets without reports (e.g. `../shared/data/pneumonia_cxr`), used by linear
probes and zero-shot classification. Each class becomes a `label_<CLASS>` column (1 for the
folder's class, 0 otherwise) and `class_name`; `report` stays ''. A split folder (train / val /
test) is the official split. `subject_regex` (one or more groups; the first that matches is the
subject) keeps a patient's images in one split; a file it does not match is its own subject
(counted as `subject_from_filename`). For the pneumonia set use `PNEUMONIA_SUBJECT_REGEX`:
PNEUMONIA files are `person<N>_...`, NORMAL files `IM-<N>-...` or `NORMAL2-IM-<N>-...`.
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from workbench.data.labels import label_column
from workbench.data.readers.common import check_image, rows_to_frame, study_row
from workbench.data.readers.registry import READERS
from workbench.data.skips import SkipCounter
from workbench.data.splits import _OFFICIAL_ALIASES

FOLDER_IMAGE_SUFFIXES = (".jpeg", ".jpg", ".png", ".bmp", ".tif", ".tiff", ".dcm")
PNEUMONIA_SUBJECT_REGEX = r"^(?:(person\d+)_|((?:NORMAL2-)?IM-\d+)-)"


def subject_from_name(name: str, pattern: "re.Pattern[str] | None") -> str | None:
    """The first matching group (or the whole match) of `pattern` in a file name, else None."""
    if pattern is None:
        return None
    match = pattern.search(name)
    if match is None:
        return None
    groups = [g for g in match.groups() if g]
    return groups[0] if groups else match.group(0)


@READERS.register("folders")
def read_folders(root: str | Path, *, skips: SkipCounter, subject_regex: str = "", dataset_name: str = "folders",
                 check_images: bool = True, **_: object) -> pd.DataFrame:
    """Images of a class-folder tree; see the module docstring."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"Class-folder root {root} does not exist.")
    pattern = re.compile(subject_regex) if subject_regex else None
    subdirs = sorted(p for p in root.iterdir() if p.is_dir())
    split_dirs = [p for p in subdirs if p.name.lower() in _OFFICIAL_ALIASES]
    groups = [(p.name, c) for p in split_dirs for c in sorted(q for q in p.iterdir() if q.is_dir())] if split_dirs \
        else [(None, c) for c in subdirs]
    classes = sorted({c.name for _, c in groups})
    if not classes:
        raise FileNotFoundError(f"No class folders under {root}; expected <root>/<split>/<CLASS>/*.jpeg.")
    rows = []
    for split, class_dir in groups:
        for path in sorted(class_dir.iterdir()):
            if path.suffix.lower() not in FOLDER_IMAGE_SUFFIXES:
                continue
            if check_images and not check_image(path, skips):
                continue
            subject = subject_from_name(path.name, pattern)
            if subject is None:
                if pattern is not None:
                    skips.keep("subject_from_filename", path)
                subject = path.stem
            labels = {label_column(c): float(c == class_dir.name) for c in classes}
            rows.append(study_row(subject_id=subject, study_id=str(path.relative_to(root).with_suffix("")),
                                  dataset=dataset_name, modality="cxr", image_paths=[str(path)], text="",
                                  official_split=split, class_name=class_dir.name, **labels))
    return rows_to_frame(rows, skips)
