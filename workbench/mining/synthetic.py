"""Synthetic entity tables with a MIMIC-CXR-like finding distribution (benchmarks, tests).

Prevalences follow the published CheXpert-label frequencies of MIMIC-CXR (about a third of
studies with no finding; support devices, effusion, opacity, atelectasis and cardiomegaly at
20-30 %; pneumonia mostly uncertain), and findings co-occur through clinical pictures (heart
failure, ICU, infection) instead of independent coin flips. Each counted finding carries 0-2
severity words and 1-3 location words. Rows have the columns of `ober.parquet` that the miner
reads: study_id, subject_id, split, findings (JSON).
"""

from __future__ import annotations

import json
from typing import Dict, List, Sequence, Tuple

import numpy as np
import pandas as pd

# finding -> (background prevalence among abnormal studies, P(uncertain | mentioned), has location)
FINDINGS: Dict[str, Tuple[float, float, bool]] = {
    "Atelectasis": (0.14, 0.20, True),
    "Cardiomegaly": (0.12, 0.10, False),
    "Consolidation": (0.04, 0.25, True),
    "Edema": (0.07, 0.30, True),
    "Enlarged_Cardiomediastinum": (0.03, 0.40, False),
    "Fracture": (0.03, 0.15, True),
    "Lung_Lesion": (0.04, 0.25, True),
    "Lung_Opacity": (0.18, 0.10, True),
    "Pleural_Effusion": (0.14, 0.12, True),
    "Pleural_Other": (0.015, 0.30, True),
    "Pneumonia": (0.04, 0.60, True),
    "Pneumothorax": (0.05, 0.12, True),
    "Support_Devices": (0.20, 0.02, False),
}
# clinical picture -> (probability among abnormal studies, {finding: P(finding | picture)})
PICTURES: Dict[str, Tuple[float, Dict[str, float]]] = {
    "heart_failure": (0.22, {"Cardiomegaly": 0.7, "Edema": 0.55, "Pleural_Effusion": 0.6, "Atelectasis": 0.3}),
    "icu": (0.25, {"Support_Devices": 0.95, "Atelectasis": 0.45, "Pleural_Effusion": 0.35, "Lung_Opacity": 0.3}),
    "infection": (0.2, {"Lung_Opacity": 0.75, "Pneumonia": 0.6, "Consolidation": 0.35, "Pleural_Effusion": 0.2}),
}
SEVERITY_WORDS = ("mild", "moderate", "severe")
LATERALITY = ("right", "left", "bilateral")
ZONES = ("upper", "middle", "lower", "apical", "basilar", "perihilar", "retrocardiac")


def synthetic_findings(n_studies: int, seed: int = 0, normal_fraction: float = 0.3) -> List[str]:
    """`findings` JSON strings of `n_studies` synthetic studies (all draws vectorised)."""
    rng = np.random.default_rng(seed)
    names = list(FINDINGS)
    n_f = len(names)
    column = {name: i for i, name in enumerate(names)}
    background = np.array([FINDINGS[f][0] for f in names])
    p_uncertain = np.array([FINDINGS[f][1] for f in names])
    has_location = np.array([FINDINGS[f][2] for f in names])

    normal = rng.random(n_studies) < normal_fraction
    chosen = rng.random((n_studies, n_f)) < background * 0.5
    for prob, members in PICTURES.values():
        in_picture = rng.random(n_studies) < prob
        for name, p in members.items():
            chosen[:, column[name]] |= in_picture & (rng.random(n_studies) < p)
    chosen &= ~normal[:, None]
    lonely = ~normal & ~chosen.any(axis=1)
    chosen[np.flatnonzero(lonely), rng.choice(n_f, size=int(lonely.sum()), p=background / background.sum())] = True

    uncertain = rng.random((n_studies, n_f)) < p_uncertain
    n_sev = rng.choice(3, size=(n_studies, n_f), p=[0.35, 0.5, 0.15])  # 0, 1 or 2 severity words
    first_sev = rng.choice(3, size=(n_studies, n_f), p=[0.45, 0.35, 0.2])
    side = rng.choice(3, size=(n_studies, n_f), p=[0.4, 0.35, 0.25])
    n_zones = rng.choice(3, size=(n_studies, n_f), p=[0.35, 0.5, 0.15])
    zone_a = rng.integers(0, len(ZONES), size=(n_studies, n_f))
    zone_b = (zone_a + 1 + rng.integers(0, len(ZONES) - 1, size=(n_studies, n_f))) % len(ZONES)
    # Reports also negate findings; absent ones must not count.
    negated = np.where(rng.random(n_studies) < 0.3, rng.integers(0, n_f, size=n_studies), -1)

    out: List[str] = []
    for i in range(n_studies):
        study: Dict[str, dict] = {}
        for f in np.flatnonzero(chosen[i]):
            name = names[f]
            severity: List[str] = []
            if n_sev[i, f] and name != "Support_Devices":
                k = 2 if n_sev[i, f] == 2 and first_sev[i, f] < 2 else 1
                severity = list(SEVERITY_WORDS[first_sev[i, f]:first_sev[i, f] + k])
            location: List[str] = []
            if has_location[f]:
                location = [LATERALITY[side[i, f]]] + [ZONES[z] for z in (zone_a[i, f], zone_b[i, f])[:n_zones[i, f]]]
            study[name] = {"assertion": "uncertain" if uncertain[i, f] else "present", "severity": severity,
                           "location": location, "source": "synthetic"}
        if negated[i] >= 0 and names[negated[i]] not in study:
            study[names[negated[i]]] = {"assertion": "absent", "severity": [], "location": [], "source": "synthetic"}
        out.append(json.dumps(study))
    return out


def synthetic_entity_table(n_studies: int, seed: int = 0, split_fractions: Sequence[float] = (0.8, 0.1, 0.1),
                           studies_per_subject: float = 3.0, normal_fraction: float = 0.3) -> pd.DataFrame:
    """An `ober.parquet`-like table: study_id, subject_id, split (by subject), findings (JSON)."""
    rng = np.random.default_rng([seed, 1])
    n_subjects = max(1, int(round(n_studies / studies_per_subject)))
    subject = np.sort(rng.integers(0, n_subjects, size=n_studies))
    fractions = np.asarray(split_fractions, dtype=float)
    subject_split = rng.choice(3, size=n_subjects, p=fractions / fractions.sum())
    splits = np.array(["train", "val", "test"])[subject_split[subject]]
    return pd.DataFrame({
        "study_id": [f"s{50000000 + i}" for i in range(n_studies)],
        "subject_id": [f"p{10000000 + s}" for s in subject],
        "split": splits,
        "findings": synthetic_findings(n_studies, seed, normal_fraction),
    })
