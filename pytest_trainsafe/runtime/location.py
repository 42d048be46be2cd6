"""Find the user's line: the first stack frame that is not torch, a framework or trainsafe.

Walking the stack costs a few microseconds per frame, so it happens only when a
finding (or a candidate that will very likely become one) is made, never per event.
"""

from __future__ import annotations

import sys
from types import FrameType
from typing import Optional, Tuple

# Top-level packages whose frames are never "the user's line". The reference
# loops in pytest_trainsafe.loops are user code on purpose: they stand in for it.
_FRAMEWORK_PACKAGES = frozenset({
    "torch", "torchvision", "torchaudio", "torchtext", "functorch",
    "pytorch_lightning", "lightning", "lightning_fabric", "transformers", "accelerate",
    "_pytest", "pytest", "pluggy", "contextlib", "functools", "typing", "threading",
    "importlib", "runpy", "unittest",
})
_OWN_PREFIXES = ("pytest_trainsafe.runtime", "pytest_trainsafe.plugin")

Location = Tuple[str, int]


def _is_user_frame(frame: FrameType) -> bool:
    module = frame.f_globals.get("__name__", "") or ""
    if module.startswith(_OWN_PREFIXES):
        return False
    return module.partition(".")[0] not in _FRAMEWORK_PACKAGES


def user_location(frame: Optional[FrameType] = None) -> Location:
    """(filename, line) of the innermost user frame, starting at ``frame`` (default: the caller)."""
    current = frame if frame is not None else sys._getframe(1)
    fallback: Optional[FrameType] = None
    while current is not None:
        if fallback is None:
            fallback = current
        if _is_user_frame(current):
            return current.f_code.co_filename, current.f_lineno
        current = current.f_back
    if fallback is None:
        return "<unknown>", 0
    return fallback.f_code.co_filename, fallback.f_lineno
