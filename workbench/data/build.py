"""From a data root to a run folder's `manifest.parquet` and `cache/`.

`build_manifest` runs one registered reader, draws patient-level splits (an official split
wins) and validates the schema; `prepare_run_data` is what notebook 00 calls: generate the
demo when no data root is given, build the manifest, decode every image once into the
cache, drop studies whose image failed to decode, and write the manifest atomically.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Optional, Sequence

import pandas as pd

from workbench.data.manifest import validate_manifest, write_manifest
from workbench.data.readers import READERS
from workbench.data.skips import SkipCounter, format_skips
from workbench.data.splits import assign_splits


def build_manifest(dataset: str, data_root: str | Path, *, seed: int = 0,
                   split_fractions: Sequence[float] = (0.8, 0.1, 0.1), strict: bool = False,
                   skips: Optional[SkipCounter] = None, **options: Any) -> pd.DataFrame:
    """The manifest (see `workbench.data.manifest`) of one source read by reader `dataset`.

    Skipped and repaired studies are counted per reason in `df.attrs["skips"]`
    (`workbench.data.skip_summary(df)` tabulates them); `strict=True` raises `BadInputError`
    at the first bad file instead. `options` go to the reader (e.g. `report_root` for MIMIC,
    `subject_regex` for class folders, the column mapping for `csv`).
    """
    reader = READERS.get(dataset)
    root = Path(data_root)
    if not str(data_root) or not root.exists():
        raise FileNotFoundError(f"data_root {str(data_root)!r} does not exist; pass the folder of the {dataset!r} "
                                "source (or dataset='demo' with an empty data_root in prepare_run_data).")
    counter = skips if skips is not None else SkipCounter(strict=strict)
    df = reader(root, skips=counter, **options)
    if df.empty:
        raise ValueError(f"No usable studies in {root} for reader {dataset!r} "
                         f"(skipped: {format_skips(counter.as_dict())}); check the layout in the reader's docstring.")
    df["split"] = assign_splits(df, seed=seed, fractions=split_fractions, skips=counter)
    df = df.drop(columns=["official_split"], errors="ignore")
    validate_manifest(df, f"{dataset} manifest of {root}")
    df.attrs["skips"] = counter.as_dict()
    df.attrs["dataset"] = dataset
    df.attrs["data_root"] = str(root)
    return df


def reader_options(data_cfg: Any) -> Dict[str, Any]:
    """Reader options taken from a `DataConfig` (readers ignore the ones they do not use)."""
    options: Dict[str, Any] = {
        "image_column": data_cfg.csv_image_column,
        "text_column": data_cfg.csv_text_column,
        "subject_column": data_cfg.csv_subject_column,
    }
    if data_cfg.report_root:
        options["report_root"] = data_cfg.report_root
    if data_cfg.subject_regex:
        options["subject_regex"] = data_cfg.subject_regex
    if data_cfg.img_df or data_cfg.text_df:  # the MedTrim seed's tables (reader `medtrim`)
        options.update(img_df=data_cfg.img_df, text_df=data_cfg.text_df)
    return options


def ct_transform_options(data_cfg: Any) -> Dict[str, Any]:
    """`ct_preprocessing` options from a `DataConfig` (pixdim, window, fit)."""
    pixdim = [float(p) for p in data_cfg.ct_pixdim] if data_cfg.ct_pixdim else None
    window = [float(w) for w in data_cfg.ct_window]
    if len(window) != 2 or window[0] >= window[1]:
        raise ValueError(f"data.ct_window must be [low, high] in HU with low < high; got {window}.")
    return {"pixdim": tuple(pixdim) if pixdim else None, "window": tuple(window), "fit": data_cfg.ct_fit}


def prepare_run_data(cfg: Any, run_dir: str | Path, progress: bool = True) -> pd.DataFrame:
    """Notebook 00's work: data (generated for the demo) -> `run_dir/manifest.parquet` + `run_dir/cache/`.

    With `dataset='demo'` and an empty `data_root` the phantom dataset is generated into
    `run_dir/data/` (seeded by `data.split_seed`; reused when the same demo is already there);
    `dataset='medtrim'` reads `data.img_df` + `data.text_df` and needs no `data_root`. The 2D cache is
    built at `data.image_size`, the 3D cache at `data.volume_size`. Studies whose image fails to
    decode are dropped from the manifest and counted in `attrs["skips"]`; how images and
    volumes were preprocessed is in `attrs["preprocessing"]` (notebook 00 writes it to
    `manifest.json`). A second writer into the same run folder fails at once naming the first
    (`workbench.io.run_folder_lock`).
    """
    from workbench.io import run_folder_lock

    with run_folder_lock(run_dir, "preparing the manifest and cache"):
        return _prepare_run_data(cfg, Path(run_dir), progress)


def _prepare_run_data(cfg: Any, run_dir: Path, progress: bool) -> pd.DataFrame:
    """`prepare_run_data` under the run folder's writer lock."""
    from workbench.data.cache import build_image_cache, build_volume_cache, failed_studies
    from workbench.data.transforms import ct_preprocessing_record

    data = cfg.data
    root: str | Path = data.data_root
    if data.dataset == "demo" and not root:
        from workbench.data.phantom import generate_demo

        root = run_dir / "data"  # generate_demo reuses a folder that already holds this exact demo
        generate_demo(root, n_studies=data.n_studies, n_ct_studies=data.n_ct_studies, image_size=data.image_size,
                      volume_size=tuple(data.volume_size), seed=data.split_seed, progress=progress)
    elif data.dataset == "medtrim" and not root:  # the seed's tables need no data_root
        from workbench.data.readers.medtrim_csv import medtrim_tables

        root = medtrim_tables(data.img_df, data.text_df)[0].parent
    counter = SkipCounter(strict=data.strict)
    df = build_manifest(data.dataset, root, seed=data.split_seed, split_fractions=tuple(data.split_fractions),
                        strict=data.strict, skips=counter, **reader_options(data))
    failed = []
    preprocessing: Dict[str, Any] = {}
    if (df["modality"] == "cxr").any():
        failed += failed_studies(build_image_cache(df, run_dir / "cache", data.image_size, skips=counter,
                                                   progress=progress))
        preprocessing["cxr"] = {"steps": ["decode (DICOM: modality + VOI LUT, MONOCHROME1 inverted; 16-bit min-max)",
                                          "grayscale uint8", f"letterbox to {data.image_size} px (aspect kept)"],
                                "image_size": int(data.image_size)}
    if (df["modality"] == "ct").any():
        ct_options = ct_transform_options(data)
        failed += failed_studies(build_volume_cache(df, run_dir / "cache", data.volume_size, skips=counter,
                                                    progress=progress, **ct_options))
        preprocessing["ct"] = ct_preprocessing_record(data.volume_size, **ct_options)
    attrs = dict(df.attrs)
    df = df[~df["study_id"].isin(failed)].reset_index(drop=True)
    if "ct" in preprocessing:
        preprocessing["ct"]["studies_with_dataset_metadata"] = int(
            df["rescale_slope"].notna().sum()) if "rescale_slope" in df.columns else 0
    df.attrs.update(attrs)
    df.attrs["skips"] = counter.as_dict()
    df.attrs["preprocessing"] = preprocessing
    write_manifest(df, run_dir / "manifest.parquet")
    return df
