"""Reference training loops: correct, canonical and small, shipped as documentation and test fixtures.

Each loop module (``mlp``, ``cnn``, ``accumulation``, ``evaluation``) exposes
``run(device="cpu", steps=...) -> dict`` and runs in well under two seconds on
a CPU. They are written the way a careful engineer writes a training loop, so
they double as examples; they are also what the test suite runs to prove that
trainsafe says nothing about correct code and reports every injected bug
(see :mod:`pytest_trainsafe.loops.inject`).

Importing this package does not import torch: only the loop modules do.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Tuple

#: The reference loops, by module name.
LOOPS: Tuple[str, ...] = ("mlp", "cnn", "accumulation", "evaluation")


def load(name: str) -> ModuleType:
    """The reference loop module ``name`` (one of :data:`LOOPS`)."""
    if name not in LOOPS:
        raise ValueError(f"unknown reference loop {name!r}; expected one of {', '.join(LOOPS)}")
    return importlib.import_module(f"{__name__}.{name}")


def other_device(device: str) -> str:
    """A device that is not ``device``, available on every machine, to inject a device mismatch.

    ``cpu`` maps to ``meta`` (tensors without data: any op mixing them with CPU
    tensors fails just as a CPU/CUDA mix does); any accelerator maps to ``cpu``.
    """
    kind = device.split(":", 1)[0]
    return "meta" if kind == "cpu" else "cpu"


__all__ = ["LOOPS", "load", "other_device"]
