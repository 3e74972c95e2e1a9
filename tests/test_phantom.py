"""The embedded demo generator: deterministic, in the documented layouts, and its ground truth
matches both the pixels and the report text."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from workbench.data.labels import DEMO_CT_LABELS, DEMO_LABELS
from workbench.data.phantom import (FindingSpec, generate_demo, render_ct, render_frontal, sample_ct_study,
                                    sample_cxr_study)

GT_COLUMNS = ["study_id", "subject_id", "modality", "gt", "finding_boxes", "regions", "mask_path"]
SMALL = dict(n_studies=24, n_ct_studies=3, image_size=64, volume_size=(32, 32, 32), progress=False)


def _tree_digest(root: Path) -> dict:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _report_texts(root: Path) -> dict:
    """study_id -> report text, for both layouts."""
    texts = {p.stem: p.read_text() for p in (root / "mimic" / "files").glob("p*/p*/s*.txt")}
    ct = pd.read_csv(root / "bimcv" / "meta" / "curated_ct_report_path_En.csv")
    for path, text in zip(ct["path"], ct["Report_en"]):
        texts[Path(path).name.removesuffix(".nii.gz")] = text
    return texts


@pytest.fixture(scope="module")
def demo(tiny_demo_root):
    gt = pd.read_parquet(tiny_demo_root / "ground_truth.parquet")
    return tiny_demo_root, gt, _report_texts(tiny_demo_root)


# ----------------------------------------------------------------------------- determinism
def test_same_seed_gives_identical_bytes_whatever_the_worker_count(tmp_path):
    a = generate_demo(tmp_path / "a", seed=3, workers=1, **SMALL)
    b = generate_demo(tmp_path / "b", seed=3, workers=2, **SMALL)
    da, db = _tree_digest(a), _tree_digest(b)
    assert da == db
    assert sum(k.endswith(".jpg") for k in da) >= 24 and sum(k.endswith(".nii.gz") for k in da) == 3


def test_different_seed_gives_different_data(tmp_path):
    a = generate_demo(tmp_path / "a", seed=3, **SMALL)
    b = generate_demo(tmp_path / "b", seed=4, **SMALL)
    ga, gb = pd.read_parquet(a / "ground_truth.parquet"), pd.read_parquet(b / "ground_truth.parquet")
    assert set(ga["study_id"]) != set(gb["study_id"])
    assert ga["gt"].tolist() != gb["gt"].tolist()
    ja = sorted(p.read_bytes() for p in a.rglob("*.jpg"))[0]
    assert ja not in {p.read_bytes() for p in b.rglob("*.jpg")}


def test_existing_demo_is_reused_and_a_foreign_folder_is_refused(tmp_path):
    root = generate_demo(tmp_path / "d", seed=5, **SMALL)
    stamp = (root / "phantom.json").stat().st_mtime_ns
    generate_demo(root, seed=5, **SMALL)
    assert (root / "phantom.json").stat().st_mtime_ns == stamp  # same arguments: nothing rewritten
    generate_demo(root, seed=5, **{**SMALL, "n_studies": 6})  # new arguments: old studies are removed
    assert len(pd.read_parquet(root / "ground_truth.parquet").query("modality == 'cxr'")) == 6
    assert len(list((root / "mimic" / "files").glob("p*/p*/s*.txt"))) == 6
    foreign = tmp_path / "foreign"
    (foreign / "mimic").mkdir(parents=True)
    with pytest.raises(FileExistsError, match="did not write"):
        generate_demo(foreign, **SMALL)


# ----------------------------------------------------------------------------- layout
def test_mimic_layout_and_metadata_csv(demo):
    root, gt, _ = demo
    mimic = root / "mimic"
    meta = pd.read_csv(mimic / "mimic-cxr-2.0.0-metadata.csv")
    assert list(meta.columns) == ["dicom_id", "subject_id", "study_id", "ViewPosition"]
    assert not (mimic / "mimic-cxr-2.0.0-split.csv").exists() and not list(root.rglob("*split*.csv"))
    assert meta["subject_id"].dtype.kind == "i" and meta["study_id"].dtype.kind == "i"
    assert set(meta["ViewPosition"]) <= {"PA", "AP", "LATERAL"} and "LATERAL" in set(meta["ViewPosition"])
    for row in meta.itertuples():
        subj, study = str(row.subject_id), str(row.study_id)
        assert len(subj) == 8 and len(study) == 8
        image = mimic / "files" / f"p{subj[:2]}" / f"p{subj}" / f"s{study}" / f"{row.dicom_id}.jpg"
        assert image.is_file(), image
        assert (mimic / "files" / f"p{subj[:2]}" / f"p{subj}" / f"s{study}.txt").is_file()
    from PIL import Image

    with Image.open(next(mimic.rglob("*.jpg"))) as im:
        assert im.format == "JPEG" and im.mode == "L" and im.size == (64, 64)
    studies_per_subject = meta.groupby("subject_id")["study_id"].nunique()
    assert studies_per_subject.max() > 1  # some subjects have several studies
    frontal = meta[meta["ViewPosition"] != "LATERAL"]
    assert frontal["study_id"].is_unique  # one frontal image per study
    cxr = gt[gt["modality"] == "cxr"]
    assert sorted(cxr["study_id"]) == sorted(f"s{s}" for s in frontal["study_id"])
    assert all(re.fullmatch(r"s\d{8}", s) for s in cxr["study_id"])
    assert all(re.fullmatch(r"p\d{8}", s) for s in cxr["subject_id"])


def test_bimcv_layout_and_reports_csv(demo):
    root, gt, _ = demo
    csv = pd.read_csv(root / "bimcv" / "meta" / "curated_ct_report_path_En.csv")
    assert list(csv.columns) == ["path", "Report_en"]
    ct = gt[gt["modality"] == "ct"]
    assert len(csv) == len(ct) == 6
    for path in csv["path"]:
        assert re.fullmatch(r"CT\d{4}/ct/[^/]+\.nii\.gz", path) and (root / "bimcv" / path).is_file()
    basenames = [Path(p).name.removesuffix(".nii.gz") for p in csv["path"]]
    assert sorted(basenames) == sorted(ct["study_id"])
    assert ct.groupby("subject_id")["study_id"].nunique().max() > 1  # a subject with several volumes
    assert all(csv["Report_en"].str.len() > 40)


def test_ground_truth_schema(demo):
    root, gt, _ = demo
    assert list(gt.columns) == GT_COLUMNS
    assert gt["study_id"].is_unique and set(gt["modality"]) == {"cxr", "ct"}
    for row in gt.itertuples():
        truth = json.loads(row.gt)
        allowed = DEMO_LABELS
        assert set(truth) <= set(allowed)
        for entry in truth.values():
            assert entry["assertion"] in ("present", "absent", "uncertain")
            assert entry["severity"] in (None, "mild", "moderate", "severe")
            assert set(entry["location"]) <= {"right", "left", "bilateral", "upper", "middle", "lower", "apical",
                                               "basilar"}
        if row.modality == "ct":
            assert set(json.loads(row.finding_boxes)) <= set(DEMO_CT_LABELS)
        assert (root / row.mask_path).is_file() and row.mask_path.startswith("masks/")
    # Some studies are normal, some show several findings.
    drawn = gt["finding_boxes"].map(lambda s: len(json.loads(s)))
    assert (drawn == 0).any() and (drawn >= 2).any()


# ----------------------------------------------------------------------------- ground truth vs pixels
def test_masks_lie_inside_their_boxes_and_match_the_image(demo):
    root, gt, _ = demo
    for row in gt.itertuples():
        boxes = json.loads(row.finding_boxes)
        with np.load(root / row.mask_path) as masks:
            assert set(masks.files) == set(boxes)
            for name, box in boxes.items():
                mask = masks[name]
                assert mask.dtype == bool and mask.any()
                assert mask.shape == ((64, 64) if row.modality == "cxr" else (32, 32, 32))
                idx = np.nonzero(mask)
                nd = mask.ndim
                lo, hi = box[:nd], box[nd:]
                for axis, coords in enumerate(idx):
                    # Boxes are x, y(, z) while arrays are (row=y, col=x) in 2D and (x, y, z) in 3D.
                    ax = (1, 0)[axis] if nd == 2 else axis
                    assert lo[ax] <= coords.min() and coords.max() < hi[ax], (row.study_id, name, box)


def test_every_reported_finding_is_drawn_and_every_drawn_finding_reported(demo):
    from workbench.data.phantom.reports import finding_keywords

    root, gt, texts = demo
    for row in gt.itertuples():
        truth, boxes = json.loads(row.gt), json.loads(row.finding_boxes)
        shown = {k for k, v in truth.items() if v["assertion"] in ("present", "uncertain")}
        assert shown == set(boxes), row.study_id
        report = texts[row.study_id].lower()
        for name in shown:
            assert any(w in report for w in finding_keywords(name)), (row.study_id, name)


def test_region_sentences_come_from_the_report(demo):
    root, gt, texts = demo
    nonempty = 0
    for row in gt.itertuples():
        regions = json.loads(row.regions)
        names = {r["name"] for r in regions}
        assert {"right lung", "left lung", "heart"} <= names
        if row.modality == "cxr":
            assert {"right costophrenic angle", "left costophrenic angle", "right upper zone", "left lower zone",
                    "mediastinum"} <= names
        for r in regions:
            if r["sentence"]:
                nonempty += 1
                assert r["sentence"] in texts[row.study_id], (row.study_id, r)
    assert nonempty > len(gt)


def _anatomy(index=6):
    return sample_cxr_study(0, index).anatomy


def _mean(image, box):
    x0, y0, x1, y1 = box
    return float(image[y0:y1, x0:x1].mean())


def test_effusion_brightens_its_costophrenic_angle_only():
    a = _anatomy()
    base = render_frontal(a, {}, 64)
    eff = render_frontal(a, {"Effusion": FindingSpec("Effusion", severity="moderate", side="right", seed=1)}, 64)
    right, left = base.regions["right costophrenic angle"], base.regions["left costophrenic angle"]
    assert _mean(eff.image, right) > _mean(base.image, right) + 15
    assert np.array_equal(eff.image[:, 40:], base.image[:, 40:])  # the other hemithorax is untouched


def test_larger_effusion_fills_more_of_the_hemithorax():
    a = _anatomy(8)
    areas = [render_frontal(a, {"Effusion": FindingSpec("Effusion", severity=s, side="left", seed=2)}, 96)
             .masks["Effusion"].sum() for s in ("mild", "moderate", "severe")]
    assert areas[0] < areas[1] < areas[2]


def test_pneumothorax_darkens_the_apex():
    a = _anatomy()
    base = render_frontal(a, {}, 64)
    ptx = render_frontal(a, {"Pneumothorax": FindingSpec("Pneumothorax", severity="moderate", side="left",
                                                         zone="apical", seed=3)}, 64)
    box = ptx.boxes["Pneumothorax"]
    assert _mean(ptx.image, box) < _mean(base.image, box) - 5
    assert box[0] >= 32  # patient's left is on the image's right


def test_cardiomegaly_enlarges_the_cardiothoracic_ratio():
    a = _anatomy()

    def measured_ctr(r):
        heart = r.regions["heart"]
        thorax = r.regions["left lung"][2] - r.regions["right lung"][0]
        return (heart[2] - heart[0]) / thorax

    normal = render_frontal(a, {}, 128)
    ratios = [measured_ctr(render_frontal(a, {"Cardiomegaly": FindingSpec("Cardiomegaly", severity=s, seed=4)}, 128))
              for s in ("mild", "moderate", "severe")]
    assert measured_ctr(normal) < 0.5 < ratios[0] < ratios[1] < ratios[2]


def test_uncertain_findings_are_drawn_fainter_than_present_ones():
    a = _anatomy()
    base = render_frontal(a, {}, 64)
    spec = FindingSpec("Consolidation", severity="mild", side="right", zone="lower", seed=5)
    sure = render_frontal(a, {"Consolidation": spec}, 64)
    faint = render_frontal(a, {"Consolidation": replace(spec, assertion="uncertain")}, 64)
    box = sure.boxes["Consolidation"]
    assert _mean(base.image, box) < _mean(faint.image, box) < _mean(sure.image, box)


def test_ct_nodule_raises_hounsfield_units_inside_its_mask():
    spec = sample_ct_study(0, 1, (32, 32, 32))
    base = render_ct(spec.anatomy, {}, (32, 32, 32))
    nod = render_ct(spec.anatomy, {"Nodule": FindingSpec("Nodule", side="right", zone="upper", size_mm=25.0,
                                                         seed=6)}, (32, 32, 32))
    mask = nod.masks["Nodule"]
    assert base.volume[mask].mean() < -500  # aerated lung before
    assert nod.volume[mask].mean() > base.volume[mask].mean() + 500
    assert np.median(nod.volume[mask]) > -100  # soft-tissue density, partial-volume rim aside


def test_ct_effusion_is_dependent_water_density():
    spec = sample_ct_study(0, 1, (32, 32, 32))
    r = render_ct(spec.anatomy, {"Effusion": FindingSpec("Effusion", severity="severe", side="left", seed=7)},
                  (32, 32, 32))
    mask = r.masks["Effusion"]
    assert -40 < np.median(r.volume[mask]) < 60
    ys = np.nonzero(mask)[1]
    assert ys.mean() < 16  # posterior half (y grows anteriorly)
    assert np.nonzero(mask)[0].mean() < 16  # patient's left is low x in RAS+


def test_nifti_loads_with_the_declared_affine(demo):
    import nibabel as nib

    from workbench.data.phantom.ct import ct_affine

    root, gt, _ = demo
    csv = pd.read_csv(root / "bimcv" / "meta" / "curated_ct_report_path_En.csv")
    for path in csv["path"]:
        img = nib.load(root / "bimcv" / path)
        data = np.asarray(img.dataobj)
        assert data.shape == (32, 32, 32) and data.dtype == np.int16
        zooms = img.header.get_zooms()
        assert not np.isclose(zooms[0], zooms[2])  # anisotropic voxels
        assert np.allclose(img.affine, ct_affine((32, 32, 32), zooms))
        assert np.allclose(img.get_qform(), img.get_sform()) and nib.aff2axcodes(img.affine) == ("R", "A", "S")
        assert data.min() <= -950 and data.max() >= 300  # air outside, bone inside


# ----------------------------------------------------------------------------- reports
def test_reports_vary_like_mimic(demo):
    root, gt, texts = demo
    cxr = [texts[s] for s in gt.loc[gt["modality"] == "cxr", "study_id"]]
    assert all(re.search(r"impression:", t, re.I) for t in cxr)
    assert sum("FINDINGS:" in t for t in cxr) > len(cxr) / 2
    assert any("___" in t for t in cxr)
    assert len(set(cxr)) == len(cxr)


def test_phrase_bank_has_five_phrasings_per_finding_and_assertion():
    from workbench.data.phantom import reports as bank

    for name in DEMO_LABELS:
        if name == "Support_Devices":
            assert all(len(v) >= 5 for v in bank._DEVICE_SENTENCES.values())
        else:
            assert len(bank._PRESENT[name]) >= 5 and len(bank._UNCERTAIN[name]) >= 5, name
        assert sum(name in n.negates for n in bank._NORMALS) >= 5, name


def test_no_module_outside_the_generator_imports_its_phrase_bank():
    package = Path(__file__).resolve().parent.parent / "workbench"
    offenders = [str(p) for p in package.rglob("*.py")
                 if "phantom" not in p.relative_to(package).parts
                 and re.search(r"phantom\.reports|phantom import .*reports", p.read_text(encoding="utf-8"))]
    assert not offenders, f"the phantom phrase bank is private to the generator: {offenders}"
