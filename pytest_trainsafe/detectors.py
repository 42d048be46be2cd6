"""Which detectors exist, read off the files present without importing them.

A rule's static side is ``trainsafe_lint/rules/tsNNN_*.py`` and its runtime
side ``pytest_trainsafe/runtime/checks/tsNNN_*.py``. Looking at file names
(not importing) keeps this free of torch and libcst, so the catalog, the plugin
header and ``trainsafe rules`` can all tell the truth cheaply.
"""

from __future__ import annotations

import importlib.util
import pkgutil
import re
from functools import lru_cache
from typing import FrozenSet

_MODULE = re.compile(r"^ts(\d{3})_")


def _codes_in(package: str) -> FrozenSet[str]:
    try:
        spec = importlib.util.find_spec(package)
    except ModuleNotFoundError:
        return frozenset()
    if spec is None or not spec.submodule_search_locations:
        return frozenset()
    codes = set()
    for info in pkgutil.iter_modules(spec.submodule_search_locations):
        match = _MODULE.match(info.name)
        if match:
            codes.add(f"TS{match.group(1)}")
    return frozenset(codes)


@lru_cache(maxsize=None)
def static_codes() -> FrozenSet[str]:
    return _codes_in("trainsafe_lint.rules")


@lru_cache(maxsize=None)
def runtime_codes() -> FrozenSet[str]:
    return _codes_in("pytest_trainsafe.runtime.checks")


def sides(code: str) -> str:
    """``static+runtime``, ``static``, ``runtime`` or ``-`` for a code."""
    present = [name for name, codes in (("static", static_codes()), ("runtime", runtime_codes())) if code in codes]
    return "+".join(present) or "-"
