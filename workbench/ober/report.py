"""What notebook 01 shows: label frequencies, gold labels, the score table, reports with
their entities highlighted, and the reports OBER gets most wrong."""

from __future__ import annotations

import html as _html
import json
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence

import numpy as np
import pandas as pd

from workbench.data.labels import LABEL_PREFIX, label_column
from workbench.io import atomic_path
from workbench.ober.html import highlight_html


def write_ober(ober: pd.DataFrame, run_dir: str | Path) -> Path:
    """Write `ober.parquet` into the run folder atomically."""
    path = Path(run_dir) / "ober.parquet"
    with atomic_path(path) as tmp:
        ober.to_parquet(tmp, index=False)
    return path


def label_frequencies(ober: pd.DataFrame, labels: Sequence[str]) -> pd.DataFrame:
    """Per label: how many studies are present (1), uncertain (-1), absent (0), unmentioned."""
    rows = []
    for label in labels:
        v = pd.to_numeric(ober[label], errors="coerce")
        rows.append({"label": label, "present": int((v == 1).sum()), "uncertain": int((v == -1).sum()),
                     "absent": int((v == 0).sum()), "unmentioned": int(v.isna().sum())})
    return pd.DataFrame(rows).set_index("label")


def plot_label_frequencies(freq: pd.DataFrame, title: str = "OBER labels per study"):
    """Stacked horizontal bars: present / uncertain / absent per label."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 0.35 * len(freq) + 1.2))
    left = np.zeros(len(freq))
    for col, colour in (("present", "#c0392b"), ("uncertain", "#d68910"), ("absent", "#27ae60")):
        ax.barh(freq.index, freq[col], left=left, color=colour, label=col)
        left += freq[col].to_numpy()
    ax.invert_yaxis()
    ax.set_xlabel("studies")
    ax.set_title(title)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    return fig


def gold_labels(manifest: pd.DataFrame, labels: Sequence[str], gold: str = "") -> Optional[pd.DataFrame]:
    """Gold labels indexed by study_id: a CSV (`gold`: id column `study_id` or the first column;
    label columns named as the label set, with or without the `label_` prefix), else the
    manifest's `label_<Name>` columns; None when neither exists."""
    if gold:
        path = Path(gold)
        if not path.is_file():
            raise FileNotFoundError(f"gold labels {path} not found; pass gold=\"\" to use the manifest's labels.")
        df = pd.read_csv(path)
        id_col = "study_id" if "study_id" in df.columns else df.columns[0]
        df = df.rename(columns=lambda c: c[len(LABEL_PREFIX):] if str(c).startswith(LABEL_PREFIX) else c)
        df[id_col] = df[id_col].astype(str)
        df = df.set_index(id_col)
    else:
        cols = {label_column(name): name for name in labels if label_column(name) in manifest.columns}
        if not cols:
            return None
        df = manifest.assign(study_id=manifest["study_id"].astype(str)).set_index("study_id")[list(cols)]
        df = df.rename(columns=cols)
    keep = [c for c in labels if c in df.columns]
    if not keep:
        raise ValueError(f"gold labels have none of the label set's columns {list(labels)}; "
                         f"choose the label set the gold is written in.")
    return df[keep].apply(pd.to_numeric, errors="coerce")


def disagreements(pred: pd.DataFrame, gold: pd.DataFrame) -> pd.DataFrame:
    """Per study: labels predicted positive but not gold (fp) and gold positive but missed (fn)."""
    common = gold.index.intersection(pred.index)
    labels = [c for c in gold.columns if c in pred.columns]
    p = pred.loc[common, labels].to_numpy(dtype=float) == 1
    g = gold.loc[common, labels].to_numpy(dtype=float) == 1
    rows = []
    for i, sid in enumerate(common):
        fp = [labels[j] for j in np.flatnonzero(p[i] & ~g[i])]
        fn = [labels[j] for j in np.flatnonzero(~p[i] & g[i])]
        rows.append({"study_id": sid, "fp": fp, "fn": fn, "n_errors": len(fp) + len(fn)})
    out = pd.DataFrame(rows, columns=["study_id", "fp", "fn", "n_errors"]).set_index("study_id")
    return out.sort_values("n_errors", ascending=False, kind="stable")


def reports_html(ober: pd.DataFrame, texts: Dict[str, str], study_ids: Iterable[str],
                 errors: Optional[pd.DataFrame] = None) -> str:
    """The given studies' reports with entities highlighted, each under a heading (and its
    false positives / negatives when `errors` is given)."""
    table = ober.assign(study_id=ober["study_id"].astype(str)).set_index("study_id")
    parts: List[str] = []
    for sid in study_ids:
        sid = str(sid)
        if sid not in table.index:
            continue
        ents = json.loads(table.loc[sid, "entities"]) if isinstance(table.loc[sid, "entities"], str) else []
        head = f"<b>{_html.escape(sid)}</b>"
        if errors is not None and sid in errors.index:
            fp, fn = errors.loc[sid, "fp"], errors.loc[sid, "fn"]
            head += (f" &nbsp; false positive: {_html.escape(', '.join(fp) or '-')}"
                     f" &nbsp; missed: {_html.escape(', '.join(fn) or '-')}")
        parts.append(f'<div style="margin:6px 0 12px 0">{head}{highlight_html(texts.get(sid, ""), ents)}</div>')
    return "".join(parts) or "<i>no reports to show</i>"
