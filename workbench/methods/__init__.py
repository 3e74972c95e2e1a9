"""Training objectives behind one protocol (`Method`), selected by name.

    from workbench.methods import create_method, list_methods
    method = create_method("medtrim", cfg)
"""

from workbench.methods.base import Method, MethodConfigError, Stage, collate_items, move_to
from workbench.methods.registry import METHODS, create_method, list_methods

__all__ = ["Method", "MethodConfigError", "Stage", "collate_items", "move_to", "METHODS", "create_method",
           "list_methods"]
