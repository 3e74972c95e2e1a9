"""Notebook 02 under papermill on a tiny run folder built here (manifest + images + ober.parquet)."""

from __future__ import annotations

import json

import nbformat
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from workbench.data.manifest import write_manifest
from workbench.mining.synthetic import synthetic_entity_table
from workbench.mining.table import read_triplets


def _report_and_entities(findings_json: str):
    """A small report naming each counted finding, with OBER-style entity spans."""
    text, entities = "FINDINGS: ", []
    for name, attrs in json.loads(findings_json).items():
        words = " ".join(attrs["severity"] + attrs["location"])
        prefix = f"{'no' if attrs['assertion'] == 'absent' else 'possible' if attrs['assertion'] == 'uncertain' else ''} {words} "
        text += prefix.strip() + " "
        start = len(text)
        text += name.replace("_", " ").lower() + ". "
        entities.append({"concept": name, "assertion": attrs["assertion"], "severity": attrs["severity"],
                         "location": attrs["location"], "start": start, "end": start + len(name)})
    if not entities:
        text += "No acute cardiopulmonary abnormality."
    return text, json.dumps(entities)


def build_run_folder(run_dir, n_studies: int = 60):
    table = synthetic_entity_table(n_studies, seed=4, studies_per_subject=2.0)
    rng = np.random.default_rng(0)
    rows = []
    for sid, subject, split, findings in table[["study_id", "subject_id", "split", "findings"]].itertuples(index=False):
        image = run_dir / "images" / f"{sid}.png"
        image.parent.mkdir(exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (32, 32), dtype=np.uint8)).save(image)
        report, _ = _report_and_entities(findings)
        rows.append({"subject_id": subject, "study_id": sid, "dataset": "demo", "modality": "cxr", "view": "PA",
                     "image_path": str(image), "image_paths": [str(image)], "findings": report, "impression": "",
                     "report": report, "split": split})
    write_manifest(pd.DataFrame(rows), run_dir / "manifest.parquet")
    ober = table.assign(entities=[_report_and_entities(f)[1] for f in table["findings"]], Effusion=np.nan)
    ober.to_parquet(run_dir / "ober.parquet")
    return table


@pytest.mark.slow
def test_notebook_02_mines_train_triplets_into_the_run_folder(run_dir, execute_notebook):
    table = build_run_folder(run_dir)
    executed = execute_notebook("02_triplet_mining", run_dir, total_iter=5, big_batch_size=40, mini_batch_size=8,
                                n_gallery=2, device="cpu")
    triplets = read_triplets(run_dir / "triplets.csv.xz")
    train = set(table.loc[table["split"] == "train", "study_id"])
    assert len(triplets) > 0
    assert set(triplets[["anchor", "positive", "negative"]].to_numpy().ravel()) <= train
    nb = nbformat.read(executed, as_version=4)
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    text = "".join(o.get("text", "") for o in outputs)
    assert "skipped anchors:" in text
    html = "".join(o.get("data", {}).get("text/html", "") for o in outputs)
    assert "data:image/png;base64" in html and "<span" in html  # gallery images and highlighted entities
    figures = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(figures) == 2  # pairwise score histogram, positive/negative score distributions
