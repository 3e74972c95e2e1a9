"""Methods by name, as timm's `create_model`: `create_method("medtrim", cfg)`, `list_methods()`.

Each method module registers itself with `@METHODS.register("name")` on its class; the
built-in modules are imported here so the registry is complete on first use.
"""

from __future__ import annotations

import importlib
from typing import List, Optional

from workbench.config import ExperimentConfig
from workbench.registry import Registry

METHODS: Registry = Registry("method")

# Modules that register methods; a missing optional module (e.g. one still being written)
# only removes its methods from the list.
_BUILTIN_MODULES = ("clip", "medtrim", "baselines", "medfinder", "cgns", "asg")


def _load_builtin() -> None:
    """Import the built-in method modules (Python caches imports, so this is cheap)."""
    for module in _BUILTIN_MODULES:
        try:
            importlib.import_module(f"workbench.methods.{module}")
        except ModuleNotFoundError as exc:
            if exc.name != f"workbench.methods.{module}":
                raise


def list_methods(pattern: str = "*") -> List[str]:
    """Names of the registered methods (glob `pattern`)."""
    _load_builtin()
    return METHODS.names(pattern)


def create_method(name: Optional[str], cfg: ExperimentConfig):
    """Build the method `name` (default: `cfg.method.name`) for `cfg`; an unknown name fails
    with the list of known ones."""
    _load_builtin()
    name = name or cfg.method.name
    return METHODS.get(name).build(cfg)
