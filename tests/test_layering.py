"""The layering the README draws holds: every import in `workbench/` (including those inside
functions) points down or sideways, never up (issue 17). A newcomer can then read the package
top-down, and a low layer never drags in a high one (`runs` used to import the sweep)."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Dict, List, Tuple

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "workbench"

# bottom to top; a module may import its own layer and those below it
LAYERS: List[Tuple[str, ...]] = [
    ("config", "io", "registry", "runs", "tracking"),
    ("data",),
    ("ober",),
    ("mining",),
    ("models",),
    ("eval",),
    ("methods",),
    ("train",),
    ("viz",),
    ("pipeline", "sweep", "cli", "bench", "__init__", "__main__"),
]
RANK: Dict[str, int] = {name: i for i, names in enumerate(LAYERS) for name in names}


def top_level(module: str) -> str:
    """'workbench.data.readers.mimic' -> 'data'."""
    return module.split(".")[1] if module.count(".") >= 1 else "__init__"


def module_name(path: Path, root: Path = PACKAGE) -> str:
    parts = path.relative_to(root.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" and len(parts) > 2 else parts)


def imports_of(path: Path, root: Path = PACKAGE) -> List[Tuple[int, str]]:
    """(line, imported workbench module) for every import statement, at any depth."""
    found = []
    package = module_name(path, root).rsplit(".", 0 if path.name == "__init__.py" else 1)[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.startswith("workbench")]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this module's package
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            if name.startswith("workbench"):
                found.append((node.lineno, name))
    return found


def upward_imports(root: Path = PACKAGE) -> List[str]:
    bad = []
    for path in sorted(root.rglob("*.py")):
        here = top_level(module_name(path, root)) if path.parent != root else path.stem
        for line, target in imports_of(path, root):
            there = top_level(target) if target != "workbench" else "__init__"
            if there not in RANK or here not in RANK:
                bad.append(f"{path.relative_to(root.parent)}:{line} imports {target}: a layer the test does not know")
            elif RANK[there] > RANK[here]:
                bad.append(f"{path.relative_to(root.parent)}:{line}: {here} imports {target} (a higher layer)")
    return bad


def test_no_import_points_up_the_layering():
    assert upward_imports() == []


def test_the_check_catches_an_upward_import_inside_a_function(tmp_path):
    fake = tmp_path / "workbench"
    (fake / "data").mkdir(parents=True)
    (fake / "runs.py").write_text("def main():\n    from workbench.sweep import run_sweep\n")
    (fake / "data" / "cache.py").write_text("import workbench.io\nfrom workbench.config import load_config\n")
    assert upward_imports(fake) == ["workbench/runs.py:2: runs imports workbench.sweep (a higher layer)"]


@pytest.mark.parametrize("layer", sorted(RANK))
def test_every_layer_named_exists(layer):
    assert (PACKAGE / layer).is_dir() or (PACKAGE / f"{layer}.py").is_file()
