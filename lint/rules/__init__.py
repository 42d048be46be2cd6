"""One module per rule: ``tsNNN_<rule_name>.py`` defines that rule's LintRule."""

from __future__ import annotations

import importlib
import pkgutil
from typing import Dict, Type

from ..rule import LintRule


def all_rules() -> Dict[str, Type[LintRule]]:
    """Every static rule, by code, discovered from this package."""
    found: Dict[str, Type[LintRule]] = {}
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda i: i.name):
        module = importlib.import_module(f"{__name__}.{info.name}")
        for value in vars(module).values():
            if isinstance(value, type) and issubclass(value, LintRule) and value is not LintRule \
                    and value.__module__ == module.__name__:
                found[value.CODE] = value
    return found
