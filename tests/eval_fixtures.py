"""A small synthetic run folder (manifest + image cache) for evaluation tests.

Built here with the data layer's public writers (write_manifest, build_image_cache) so the
evaluation tests do not depend on the phantom generator: 3 findings drawn as simple shapes,
reports that name them, subject-disjoint splits.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

FINDINGS = ["Effusion", "Nodule", "Cardiomegaly"]
PHRASES = {"Effusion": "small pleural effusion", "Nodule": "a nodule in the lung", "Cardiomegaly": "enlarged heart"}


def make_run(root: Path, n_studies: int = 36, size: int = 32, seed: int = 0) -> Path:
    from PIL import Image

    from workbench.data.cache import build_image_cache
    from workbench.data.manifest import write_manifest

    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    images = root / "images"
    images.mkdir(exist_ok=True)
    rows = []
    splits = ["train"] * (n_studies // 2) + ["val"] * (n_studies // 4)
    splits += ["test"] * (n_studies - len(splits))
    for i in range(n_studies):
        present = rng.random(len(FINDINGS)) < 0.4
        img = (rng.random((size, size)) * 60).astype(np.uint8)
        if present[0]:
            img[size * 3 // 4:, :] = 220
        if present[1]:
            img[4:10, 4:10] = 255
        if present[2]:
            img[size // 3: size * 2 // 3, size // 3: size * 2 // 3] = 180
        path = images / f"s{i}.png"
        Image.fromarray(img).save(path)
        found = [PHRASES[f] for f, p in zip(FINDINGS, present) if p]
        report = ("Findings: " + "; ".join(found) + ".") if found else "No acute cardiopulmonary process."
        row = {"subject_id": f"p{i}", "study_id": f"s{i}", "dataset": "synthetic", "modality": "cxr", "view": "PA",
               "image_path": str(path), "image_paths": [str(path)], "findings": report, "impression": "",
               "report": report, "split": splits[i]}
        row.update({f"label_{f}": float(p) for f, p in zip(FINDINGS, present)})
        rows.append(row)
    manifest = pd.DataFrame(rows)
    write_manifest(manifest, root / "manifest.parquet")
    build_image_cache(manifest, root / "cache", size, progress=False, num_workers=1)
    return root
