"""Benchmarks: `python -m workbench.bench NAME` (or `all`).

Each benchmark is a module `workbench/bench/<name>.py` with a `main(argv) -> dict` that
prints its figures and returns the headline numbers; the dispatcher prints them as the LAST
line, `key=value` pairs, so runs can be compared by a script.
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import List


def list_benchmarks() -> List[str]:
    import workbench.bench as pkg

    return sorted(m.name for m in pkgutil.iter_modules(pkg.__path__) if not m.name.startswith("_"))


def format_summary(figures: dict) -> str:
    """The last line of every benchmark: space-separated key=value pairs."""
    parts = []
    for key, value in figures.items():
        if isinstance(value, float):
            value = f"{value:.4g}"
        parts.append(f"{key}={value}")
    return " ".join(parts)


def run_benchmark(name: str, argv: List[str] | None = None) -> dict:
    known = list_benchmarks()
    if name not in known:
        raise SystemExit(f"Unknown benchmark {name!r}; known: {known}")
    module = importlib.import_module(f"workbench.bench.{name}")
    return module.main(argv or [])
