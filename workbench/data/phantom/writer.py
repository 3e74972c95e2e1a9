"""Write the phantom dataset to disk in the MIMIC-CXR-JPG and BIMCV-R layouts, with ground truth.

Layout under `root` (the contract the readers in `workbench.data.readers` consume):

    mimic/files/pXX/pNNNNNNNN/sNNNNNNNN/<dicom_id>.jpg   grayscale JPEG, frontal (+ lateral)
    mimic/files/pXX/pNNNNNNNN/sNNNNNNNN.txt              free-text report
    mimic/mimic-cxr-2.0.0-metadata.csv                   dicom_id, subject_id, study_id, ViewPosition
    bimcv/CT<nnnn>/ct/<name>.nii.gz                      int16 HU NIfTI, RAS+ affine (CT<nnnn> = one subject)
    bimcv/meta/curated_ct_report_path_En.csv             path, Report_en
    masks/<study_id>.npz                                  one boolean mask per drawn finding
    ground_truth.parquet                                  one row per study (see `generate_demo`)
    phantom.json                                          the arguments that produced this folder

No official split file is written, so readers exercise their generated patient-level split.
Everything is first written to `root/.phantom-staging/` and moved into place when complete
(`phantom.json` last), so an interrupted run leaves no half-written dataset; bytes depend only
on the arguments (fixed JPEG quality, zip and gzip headers without timestamps).
"""

from __future__ import annotations

import gzip
import io
import json
import os
import shutil
import zipfile
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from workbench.io import write_json_atomic

JPEG_QUALITY = 92
FORMAT_VERSION = 1
_OWNED = ("mimic", "bimcv", "masks", "ground_truth.parquet")
STAGING = ".phantom-staging"
METADATA_CSV = "mimic-cxr-2.0.0-metadata.csv"
BIMCV_REPORTS_CSV = "curated_ct_report_path_En.csv"
_THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def _write_bytes(path: Path, data: bytes) -> None:
    """Plain write: per-study files go to a staging folder that is moved into place at the end."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def npz_bytes(arrays: Dict[str, np.ndarray]) -> bytes:
    """An .npz (readable by `np.load`) whose bytes depend only on the arrays: no timestamps."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name in sorted(arrays):
            arr = io.BytesIO()
            np.lib.format.write_array(arr, np.ascontiguousarray(arrays[name]), allow_pickle=False)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, arr.getvalue())
    return buf.getvalue()


def jpeg_bytes(image: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image, mode="L").save(buf, format="JPEG", quality=JPEG_QUALITY, optimize=False)
    return buf.getvalue()


def nifti_gz_bytes(volume: np.ndarray, affine: np.ndarray) -> bytes:
    """A gzipped NIfTI-1 file (int16, mm units, qform = sform = affine) with a timestamp-free header."""
    import nibabel as nib

    img = nib.Nifti1Image(volume, affine)
    img.header.set_xyzt_units("mm", "sec")
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    return gzip.compress(img.to_bytes(), compresslevel=1, mtime=0)


def _dicom_id(rng: np.random.Generator) -> str:
    return "-".join(f"{int(v):08x}" for v in rng.integers(0, 2**32, size=5))


# ----------------------------------------------------------------------------- workers
def _cxr_chunk(args: Tuple[str, int, int, Sequence[Tuple[int, int, int]]]) -> List[dict]:
    """Render, describe and write a chunk of 2D studies; return their ground-truth rows."""
    from workbench.data.phantom.cxr import REGIONS_2D, render_frontal, render_lateral
    from workbench.data.phantom.reports import write_cxr_report
    from workbench.data.phantom.sampling import STREAM_REPORT, sample_cxr_study, study_rng

    root_s, seed, size, items = args
    root = Path(root_s)
    rows = []
    for index, subject, study in items:
        spec = sample_cxr_study(seed, index)
        rng = study_rng(seed, STREAM_REPORT, index)
        frontal = render_frontal(spec.anatomy, spec.findings, size, spec.view)
        report = write_cxr_report(spec.findings, spec.view, spec.has_lateral, rng, REGIONS_2D)
        study_dir = root / "mimic" / "files" / f"p{str(subject)[:2]}" / f"p{subject}" / f"s{study}"
        images = [(_dicom_id(rng), spec.view, frontal.image)]
        if spec.has_lateral:
            images.append((_dicom_id(rng), "LATERAL", render_lateral(spec.anatomy, spec.findings, size)))
        for dicom_id, _, image in images:
            _write_bytes(study_dir / f"{dicom_id}.jpg", jpeg_bytes(image))
        _write_bytes(study_dir.with_suffix(".txt"), report.text.encode("utf-8"))
        study_id = f"s{study}"
        mask_rel = f"masks/{study_id}.npz"
        _write_bytes(root / mask_rel, npz_bytes(frontal.masks))
        regions = [{"name": n, "box": frontal.regions[n], "sentence": report.region_sentences.get(n, "")}
                   for n in REGIONS_2D if n in frontal.regions]
        rows.append({
            "study_id": study_id, "subject_id": f"p{subject}", "modality": "cxr",
            "gt": json.dumps(report.gt, sort_keys=True),
            "finding_boxes": json.dumps(frontal.boxes, sort_keys=True),
            "regions": json.dumps(regions),
            "mask_path": mask_rel,
            "_meta": [(d, subject, study, view) for d, view, _ in images],
            "_index": index,
        })
    return rows


def _ct_chunk(args: Tuple[str, int, Tuple[int, int, int], Sequence[Tuple[int, str, str, str]]]) -> List[dict]:
    """Render, describe and write a chunk of CT volumes; return their ground-truth rows."""
    from workbench.data.phantom.ct import REGIONS_3D, render_ct
    from workbench.data.phantom.reports import write_ct_report
    from workbench.data.phantom.sampling import STREAM_CT_REPORT, sample_ct_study, study_rng

    root_s, seed, volume_size, items = args
    root = Path(root_s)
    rows = []
    for index, subject, folder, name in items:
        spec = sample_ct_study(seed, index, volume_size)
        rendering = render_ct(spec.anatomy, spec.findings, volume_size)
        report = write_ct_report(spec.findings, study_rng(seed, STREAM_CT_REPORT, index), REGIONS_3D)
        rel = f"{folder}/ct/{name}.nii.gz"
        _write_bytes(root / "bimcv" / rel, nifti_gz_bytes(rendering.volume, rendering.affine))
        mask_rel = f"masks/{name}.npz"
        _write_bytes(root / mask_rel, npz_bytes(rendering.masks))
        regions = [{"name": n, "box": rendering.regions[n], "sentence": report.region_sentences.get(n, "")}
                   for n in REGIONS_3D if n in rendering.regions]
        rows.append({
            "study_id": name, "subject_id": subject, "modality": "ct",
            "gt": json.dumps(report.gt, sort_keys=True),
            "finding_boxes": json.dumps(rendering.boxes, sort_keys=True),
            "regions": json.dumps(regions),
            "mask_path": mask_rel,
            "_path": rel, "_report": report.text, "_index": index,
        })
    return rows


def _run_chunk(task):
    kind, args = task
    return kind, (_cxr_chunk(args) if kind == "cxr" else _ct_chunk(args))


# ----------------------------------------------------------------------------- planning
def _plan_ct(seed: int, n: int) -> List[Tuple[int, str, str, str]]:
    """(index, subject_id, folder, volume name) per CT study; about 1.5 volumes per subject."""
    from workbench.data.phantom.sampling import STREAM_SUBJECTS, study_rng

    rng = study_rng(seed, STREAM_SUBJECTS, 2)
    out: List[Tuple[int, str, str, str]] = []
    subj_numbers = rng.choice(99_999, size=max(n, 1), replace=False) + 1
    sessions = rng.choice(99_999, size=max(n, 1), replace=False) + 1
    s = 0
    while len(out) < n:
        count = int(rng.choice([1, 2, 3], p=[0.62, 0.28, 0.10]))
        subject = f"sub-S{int(subj_numbers[s]):05d}"
        folder = f"CT{s + 1:04d}"
        for run in range(count):
            if len(out) >= n:
                break
            i = len(out)
            out.append((i, subject, folder, f"{subject}_ses-E{int(sessions[i]):05d}_run-1_bp-chest_ct"))
        s += 1
    return out


def _plan_cxr(seed: int, n: int) -> List[Tuple[int, int, int]]:
    """(index, subject number, study number) per 2D study; about 1.3 studies per subject."""
    from workbench.data.phantom.sampling import mimic_subject_ids, plan_subjects

    subject_of_study, study_ids = plan_subjects(seed, n)
    subjects = mimic_subject_ids(seed, (max(subject_of_study) + 1) if n else 0)
    return [(i, subjects[subject_of_study[i]], study_ids[i]) for i in range(n)]


def _prepare_root(root: Path, stamp: dict) -> bool:
    """True when `root` already holds exactly this demo; otherwise clears what a previous
    (possibly interrupted) generation left, and refuses to touch folders it did not write."""
    stamp_path = root / "phantom.json"
    if stamp_path.is_file():
        try:
            old = json.loads(stamp_path.read_text())
        except (OSError, json.JSONDecodeError):
            old = None
        if old == {**stamp, "complete": True} and (root / "ground_truth.parquet").is_file():
            return True
        for name in _OWNED + (STAGING,):
            p = root / name
            if p.is_dir():
                shutil.rmtree(p)
            elif p.exists():
                p.unlink()
        stamp_path.unlink()
    else:
        clash = [n for n in _OWNED if (root / n).exists()]
        if clash:
            raise FileExistsError(
                f"{root} already holds {clash} that this generator did not write (no phantom.json); "
                f"pass an empty folder to generate_demo or remove those paths.")
        if (root / STAGING).exists():
            shutil.rmtree(root / STAGING)
    return False


def generate_demo(root: str | os.PathLike, n_studies: int = 2000, n_ct_studies: int = 400, image_size: int = 256,
                  volume_size: Tuple[int, int, int] = (64, 64, 64), seed: int = 0, progress: bool = True,
                  workers: Optional[int] = None) -> Path:
    """Generate the embedded demo dataset under `root` and return `root`.

    Deterministic: the same arguments give the same bytes, whatever `workers` is (each study is
    seeded from (seed, index)). A folder that already holds this exact demo is reused as is.
    `ground_truth.parquet` has one row per study: study_id and subject_id (the strings the
    readers produce: "s"/"p" + 8 digits for MIMIC; the volume basename and "sub-S<nnnnn>" for
    BIMCV), modality ('cxr' | 'ct'), and JSON strings `gt` (finding -> {assertion, severity,
    location}), `finding_boxes` (finding -> box in the stored frontal image / volume), `regions`
    (list of {name, box, sentence}) and `mask_path` (relative to root).

    With `workers` > 1 (the default for a large demo) studies render in a spawn process pool; a
    script that calls this at import time must guard the call with `if __name__ == "__main__":`.
    """
    import pandas as pd

    if n_studies < 0 or n_ct_studies < 0:
        raise ValueError(f"n_studies and n_ct_studies must be >= 0 (got {n_studies}, {n_ct_studies}).")
    if image_size < 32:
        raise ValueError(f"image_size={image_size} is too small to draw anatomy; use at least 32 pixels.")
    volume_size = tuple(int(v) for v in volume_size)
    if len(volume_size) != 3 or min(volume_size) < 16:
        raise ValueError(f"volume_size={volume_size} must be three sizes of at least 16 voxels, e.g. (64, 64, 64).")
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    stamp = {"format": FORMAT_VERSION, "n_studies": int(n_studies), "n_ct_studies": int(n_ct_studies),
             "image_size": int(image_size), "volume_size": list(volume_size), "seed": int(seed)}
    if _prepare_root(root, stamp):
        return root

    write_json_atomic(root / "phantom.json", {**stamp, "complete": False})
    stage = root / STAGING
    stage.mkdir()
    cxr_plan = _plan_cxr(seed, n_studies)
    ct_plan = _plan_ct(seed, n_ct_studies)
    tasks = [("cxr", (str(stage), seed, image_size, cxr_plan[i:i + 40])) for i in range(0, len(cxr_plan), 40)]
    tasks += [("ct", (str(stage), seed, volume_size, ct_plan[i:i + 5])) for i in range(0, len(ct_plan), 5)]
    # Interleave the slower CT chunks so every worker stays busy to the end.
    tasks.sort(key=lambda t: (t[1][3][0][0] / max(len(cxr_plan if t[0] == "cxr" else ct_plan), 1)))
    if workers is None:
        workers = min(4, os.cpu_count() or 1) if (n_studies + 5 * n_ct_studies) >= 200 else 1
    import multiprocessing as mp

    if mp.current_process().daemon:  # a daemonic worker may not start processes of its own
        workers = 1

    from tqdm.auto import tqdm

    results: Dict[str, List[dict]] = {"cxr": [], "ct": []}
    bar = tqdm(total=n_studies + n_ct_studies, desc="phantom studies", unit="study", disable=not progress)
    try:
        if workers <= 1:
            outputs = map(_run_chunk, tasks)
            for kind, rows in outputs:
                results[kind].extend(rows)
                bar.update(len(rows))
        else:
            # One BLAS/OpenMP thread per worker process: the workers already fill the cores.
            saved = {k: os.environ.get(k) for k in _THREAD_VARS}
            os.environ.update({k: "1" for k in _THREAD_VARS})
            try:
                with mp.get_context("spawn").Pool(workers) as pool:
                    for kind, rows in pool.imap_unordered(_run_chunk, tasks):
                        results[kind].extend(rows)
                        bar.update(len(rows))
            finally:
                for k, v in saved.items():
                    if v is None:
                        os.environ.pop(k, None)
                    else:
                        os.environ[k] = v
    finally:
        bar.close()

    cxr_rows = sorted(results["cxr"], key=lambda r: r["_index"])
    ct_rows = sorted(results["ct"], key=lambda r: r["_index"])
    meta = pd.DataFrame([m for r in cxr_rows for m in r["_meta"]],
                        columns=["dicom_id", "subject_id", "study_id", "ViewPosition"])
    meta = meta.sort_values(["subject_id", "study_id", "dicom_id"], kind="stable").reset_index(drop=True)
    (stage / "mimic").mkdir(exist_ok=True)
    meta.to_csv(stage / "mimic" / METADATA_CSV, index=False)
    ct_csv = pd.DataFrame({"path": [r["_path"] for r in ct_rows], "Report_en": [r["_report"] for r in ct_rows]},
                          columns=["path", "Report_en"])
    (stage / "bimcv" / "meta").mkdir(parents=True, exist_ok=True)
    ct_csv.to_csv(stage / "bimcv" / "meta" / BIMCV_REPORTS_CSV, index=False)
    columns = ["study_id", "subject_id", "modality", "gt", "finding_boxes", "regions", "mask_path"]
    gt = pd.DataFrame([{c: r[c] for c in columns} for r in cxr_rows + ct_rows], columns=columns)
    gt.to_parquet(stage / "ground_truth.parquet", index=False)
    (stage / "masks").mkdir(exist_ok=True)
    for name in _OWNED:
        os.replace(stage / name, root / name)
    stage.rmdir()
    write_json_atomic(root / "phantom.json", {**stamp, "complete": True})
    return root
