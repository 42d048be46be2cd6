"""Small torch helpers the runtime checks share. Imports torch."""

from __future__ import annotations

from typing import Any, Optional

import torch


def first_tensor(value: Any, depth: int = 0) -> Optional[torch.Tensor]:
    """The first tensor in a module output (a tensor, tuple/list, dict or ModelOutput), else None."""
    if isinstance(value, torch.Tensor):
        return value
    if depth > 2:
        return None
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, (tuple, list)):
        for item in value:
            found = first_tensor(item, depth + 1)
            if found is not None:
                return found
    return None


def module_label(module: torch.nn.Module) -> str:
    """How a finding names a module: its class, e.g. ``Linear(in_features=4, ...)`` shortened to ``Linear``."""
    return type(module).__name__
