"""TS018 tensor-logged-as-scalar at runtime: a tensor handed to ``SummaryWriter.add_scalar(s)``.

What is watched: calls of ``add_scalar`` and ``add_scalars`` of TensorBoard's
``SummaryWriter`` (``torch.utils.tensorboard``) and of tensorboardX's, through
the shared ``torchutil.on_call`` (transparent: the original runs with the same
arguments and its result is returned). A ``torch.Tensor`` as the value (or as a value of
the ``add_scalars`` dict) is the finding, at the user's line that logs it.

The check never imports TensorBoard: it patches a writer class only if its
module is already imported when the test starts (a training module that does
``from torch.utils.tensorboard import SummaryWriter`` at the top is imported
when pytest collects the tests). A writer module imported for the first time
inside the test body is not watched.
"""

from __future__ import annotations

import sys
from types import FrameType
from typing import Any

from ..events import Events
from ..hooks import HookSet
from ..monitor import RuntimeCheck

#: Modules defining a ``SummaryWriter`` with TensorBoard's ``add_scalar`` / ``add_scalars`` API.
WRITER_MODULES = ("torch.utils.tensorboard.writer", "tensorboardX.writer")


def _caller() -> FrameType:
    """The frame that called the writer method.

    Frames: this function, the check's subscriber, ``on_call``'s wrapper, the caller.
    The wrapper runs with the original function's globals, so for a writer defined
    outside torch (tensorboardX) it would pass for user code: start past it.
    """
    return sys._getframe(3)


def _describe(value: Any) -> str:
    parts = [f"a {value.dtype} tensor"]
    if value.requires_grad:
        parts.append("with its autograd graph")
    if value.device.type != "cpu":
        parts.append(f"on {value.device}")
    return " ".join(parts)


class TensorLoggedAsScalar(RuntimeCheck):
    CODE = "TS018"

    def install(self, events: Events, hooks: HookSet) -> None:
        from ..torchutil import on_call

        for name in WRITER_MODULES:
            writer = getattr(sys.modules.get(name), "SummaryWriter", None)
            if isinstance(writer, type):
                on_call(hooks, writer, "add_scalar", self._scalar)
                on_call(hooks, writer, "add_scalars", self._scalars)

    def _scalar(self, args: tuple, kwargs: dict) -> None:
        import torch

        from ..torchutil import call_argument

        value = call_argument(args, kwargs, 2, "scalar_value")  # args[0] is the writer
        if isinstance(value, torch.Tensor):
            self.report(f"add_scalar({call_argument(args, kwargs, 1, 'tag')!r}) got {_describe(value)}",
                        frame=_caller())

    def _scalars(self, args: tuple, kwargs: dict) -> None:
        import torch

        from ..torchutil import call_argument

        values = call_argument(args, kwargs, 2, "tag_scalar_dict")
        if not isinstance(values, dict):
            return
        for key, value in values.items():
            if isinstance(value, torch.Tensor):
                tag = call_argument(args, kwargs, 1, "main_tag")
                self.report(f"add_scalars({tag!r}) got {_describe(value)} for {key!r}", frame=_caller())
                return
