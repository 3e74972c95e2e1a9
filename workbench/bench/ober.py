"""OBER speed: reports/s on one core (in-process) and with all cores through the CLI.

The corpus is made from the Open-i reports (../shared/data/iu_xray/reports.csv): each
synthetic report is a real report with its sentences shuffled, whitespace varied and a
fresh id, so no two are byte-identical and nothing can be served from a cache. Without the
shared data a small built-in sentence bank is used (and said so).

Two pathological inputs follow (issue 14): one word repeated 20,000 times, and 100,000 words
of findings without a sentence end or clause terminator, each one clause. Their seconds show
that labelling time grows linearly with a clause's length (it was quadratic: 34.6 s and 88.1 s
before, 0.15 s and 0.32 s after, on a shared 2-core machine).

    python -m workbench.bench ober [--n 20000] [--seed 0] [--workers N] [--no-cli]
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import pandas as pd

from workbench.ober.labels import label_reports
from workbench.ober.matcher import scan
from workbench.ober.ontology import TERM, load_ontology
from workbench.ober.text import join_sections, split_sentences

_FALLBACK_SENTENCES = [
    "The heart size is normal.", "No pleural effusion or pneumothorax.", "Mild cardiomegaly.",
    "There is left basilar atelectasis.", "No focal consolidation.", "Small right pleural effusion.",
    "Possible right lower lobe pneumonia.", "Lungs are clear.", "Stable 6 mm nodule in the left upper lobe.",
    "Degenerative changes of the thoracic spine.", "No acute cardiopulmonary abnormality.",
    "Hyperexpanded lungs consistent with emphysema.", "Calcified granuloma in the right upper lobe.",
]


def open_i_path() -> Path:
    return Path(__file__).resolve().parents[2].parent / "shared" / "data" / "iu_xray" / "reports.csv"


def source_reports() -> tuple[List[List[str]], str]:
    """Sentence lists of the source reports, and a note saying where they came from."""
    path = open_i_path()
    if path.is_file():
        df = pd.read_csv(path)
        reports = []
        for f, i in zip(df["findings"], df["impression"]):
            text = join_sections(f if isinstance(f, str) else "", i if isinstance(i, str) else "")
            sents = [text[s:e] for s, e in split_sentences(text)]
            if sents:
                reports.append(sents)
        return reports, f"Open-i ({len(reports)} reports from {path})"
    rng = random.Random(0)
    reports = [rng.sample(_FALLBACK_SENTENCES, 5) for _ in range(200)]
    return reports, "built-in sentence bank (../shared/data absent)"


def make_corpus(n: int, seed: int = 0) -> tuple[List[str], List[str], str]:
    """`n` distinct reports (ids, texts) with shuffled sentences and varied whitespace."""
    rng = random.Random(seed)
    reports, note = source_reports()
    seps = [" ", "  ", "\n", " \n", "   ", "\t"]
    texts: List[str] = []
    seen = set()
    i = 0
    while len(texts) < n:
        sents = list(reports[i % len(reports)])
        i += 1
        rng.shuffle(sents)
        text = sents[0]
        for s in sents[1:]:
            text += rng.choice(seps) + s
        text = rng.choice(["", " ", "\n"]) + text + rng.choice(["", " ", "\n"])
        while text in seen:  # identical after shuffling (one-sentence reports): vary whitespace again
            text = text + rng.choice(seps[:3])
        seen.add(text)
        texts.append(text)
    ids = [f"bench-{seed}-{k:07d}" for k in range(n)]
    return ids, texts, note


def one_core(texts: Sequence[str], label_set: str, repeats: int = 3) -> Dict[str, float]:
    """Best of `repeats` in-process runs (single thread): CPU-time and wall-clock rates."""
    load_ontology().label_set(label_set)  # compile outside the timing
    best_cpu = best_wall = float("inf")
    for _ in range(repeats):
        c0, w0 = time.process_time(), time.perf_counter()
        label_reports(texts, label_set)
        best_cpu = min(best_cpu, time.process_time() - c0)
        best_wall = min(best_wall, time.perf_counter() - w0)
    return {"cpu_s": best_cpu, "wall_s": best_wall}


def pathological_texts(words: int = 100_000) -> Dict[str, str]:
    """One-clause reports: "pneumonia " x 20,000, and `words` words of findings with no sentence end.

    The second cycles the built-in sentences that hold no clause terminator ("there is"),
    stripped of their full stops, so triggers, anatomy, qualifiers and modifiers all share
    one clause.
    """
    onto = load_ontology()
    sentences = []
    for sentence in _FALLBACK_SENTENCES:
        text = sentence.rstrip(".").lower()
        if not any(t[2].trig & TERM for sent in scan(onto, text) for t in sent):
            sentences.append(text)
    out: List[str] = []
    k = 0
    while len(out) < words:
        out.extend(sentences[k % len(sentences)].split())
        k += 1
    return {"repeated_word": "pneumonia " * 20000, "no_period_100k": " ".join(out[:words])}


def pathological_seconds(label_set: str) -> Dict[str, float]:
    """Wall-clock seconds to label each pathological report on its own (one run each)."""
    load_ontology().label_set(label_set)
    seconds = {}
    for name, text in pathological_texts().items():
        t0 = time.perf_counter()
        label_reports([text], label_set)
        seconds[name] = time.perf_counter() - t0
    return seconds


def through_cli(ids: Sequence[str], texts: Sequence[str], label_set: str, workers: int) -> float:
    """Wall-clock seconds of `python -m workbench.ober` (parquet in and out, all workers)."""
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "reports.parquet", Path(tmp) / "labels.parquet"
        pd.DataFrame({"uid": list(ids), "report": list(texts)}).to_parquet(src, index=False)
        cmd = [sys.executable, "-m", "workbench.ober", "--input", str(src), "--output", str(dst),
               "--label-set", label_set, "--id-column", "uid", "--text-columns", "report",
               "--workers", str(workers), "--no-progress"]
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, env=env, cwd=str(Path(__file__).resolve().parents[2]))
        wall = time.perf_counter() - t0
        out = pd.read_parquet(dst)
        if len(out) != len(texts):
            raise RuntimeError(f"CLI wrote {len(out)} rows for {len(texts)} reports")
    return wall


def main(argv: Optional[List[str]] = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m workbench.bench ober", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=20000, help="reports (at least 20,000 for the issue's figure)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--label-set", default="chestxray14")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-cli", action="store_true", help="skip the all-cores CLI run")
    args = parser.parse_args(argv)

    ids, texts, note = make_corpus(args.n, args.seed)
    chars = sum(len(t) for t in texts) / len(texts)
    print(f"corpus: {len(texts)} distinct reports from {note}; mean {chars:.0f} characters")
    t = one_core(texts, args.label_set, args.repeats)
    rate_cpu = len(texts) / t["cpu_s"]
    rate_wall = len(texts) / t["wall_s"]
    print(f"one core, in-process: {rate_cpu:,.0f} reports/s by CPU time ({rate_wall:,.0f} by wall clock; "
          f"best of {args.repeats})")
    figures = {"reports_per_s": round(rate_cpu), "reports_per_s_wall": round(rate_wall), "n_reports": len(texts)}
    if not args.no_cli:
        wall = through_cli(ids, texts, args.label_set, args.workers)
        cli_rate = len(texts) / wall
        print(f"CLI, {args.workers} workers (process start, parquet I/O, entities JSON included): "
              f"{cli_rate:,.0f} reports/s ({wall:.1f} s)")
        figures.update({"cli_reports_per_s": round(cli_rate), "cli_workers": args.workers})
    slow = pathological_seconds(args.label_set)
    print(f"pathological one-clause reports: \"pneumonia \" x 20,000 in {slow['repeated_word']:.3f} s, "
          f"100,000 words without a period in {slow['no_period_100k']:.3f} s")
    figures.update({"repeated_word_s": round(slow["repeated_word"], 4),
                    "no_period_100k_s": round(slow["no_period_100k"], 4)})
    return figures


if __name__ == "__main__":  # pragma: no cover
    from workbench.bench import format_summary

    print(format_summary(main(sys.argv[1:])))
