import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))


def _prepare_torch() -> None:
    """Import what torch imports lazily, once, before any pytester run.

    ``runpytest_inprocess`` removes modules first imported during the inner run;
    re-importing torch's operator libraries afterwards fails ("Only a single
    TORCH_LIBRARY..."). Tiny test models also run faster on one thread.
    """
    try:
        import torch
    except ImportError:
        return
    import torch._dynamo  # noqa: F401  (imported by the optimizers on first use)

    torch.set_num_threads(1)


_prepare_torch()


def _cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


CUDA = _cuda_available()


def devices():
    """``cpu``, and ``cuda`` (skipped, never failed, where there is no GPU)."""
    return ["cpu", pytest.param("cuda", marks=[pytest.mark.cuda, pytest.mark.skipif(not CUDA, reason="no CUDA device")])]
