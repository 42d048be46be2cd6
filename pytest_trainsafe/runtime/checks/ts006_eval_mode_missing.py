"""TS006 eval-mode-missing at runtime: an evaluation pass runs with dropout / batch-norm in train mode.

What is watched: *root* module calls (the outermost model call).

* A root call with autograd on and the module in train mode marks the module as
  *trained from* that point: once a backward has run after it, the model has been
  trained in this test.
* A root call that finishes with autograd off (``no_grad`` / ``inference_mode``) while
  the module is in train mode is a *candidate*. Two consecutive candidates of the same
  module, with no backward in between and a different input tensor, are an evaluation
  pass. The module is reported (at the user's line that called it) when, in addition:
  it has a submodule that computes differently in eval mode and is in train mode now
  (dropout with p > 0, batch-norm / instance-norm tracking running statistics,
  attention or RNN dropout); it was trained in this test (see above, or a parameter
  holds a gradient after a backward ran in this test); ``train()`` was not called on it since the last backward
  (batch-norm recalibration and Monte-Carlo dropout call it on purpose); no batch-norm
  of it has ``momentum=None`` (cumulative statistics: a recalibration); and the call
  came from user code, not from torch or a framework (``torch.optim.swa_utils.update_bn``,
  ``torch.utils.checkpoint``'s first no-grad pass).

Not flagged: the same input fed repeatedly (Monte-Carlo sampling), a teacher / EMA
model called under no_grad between training steps (a backward separates its calls),
a model never trained in the test (a shape test running ``model(x)`` twice under
no_grad), models without mode-dependent layers (eval() would change nothing).

Cost: per root call two flag reads and a grad-mode query; a weak-dictionary lookup
for train-mode root calls; the mode-dependent submodule list is computed once per
model. Judgement (module walk, stack walk) only on the second consecutive candidate.
"""

from __future__ import annotations

import sys
import weakref
from typing import Any, Callable, Optional

from ..events import Events
from ..hooks import HookSet
from ..identitymap import IdentityMap
from ..monitor import RuntimeCheck
from ..torchutil import ModeIndex, backwards, is_compiling, module_label, on_mode_change

#: Packages whose code may run a model under no_grad in train mode on purpose.
_FRAMEWORKS = frozenset({"torch", "torchvision", "torchaudio", "pytorch_lightning", "lightning",
                         "lightning_fabric", "transformers", "accelerate", "timm", "deepspeed", "fairscale"})
#: Frames between a hook subscriber and the code that called the model.
_PLUMBING = ("pytest_trainsafe.runtime", "torch.nn.modules.module", "torch._dynamo", "torch.nn.parallel")


class _Root:
    """What is known about one root module in this test."""

    __slots__ = ("trained_from", "last_backwards", "last_input", "reported", "untrained_at")

    def __init__(self) -> None:
        #: Backward count at its first train-mode call with autograd on (None: never).
        self.trained_from: Optional[int] = None
        #: Backward count and input of its last no-grad train-mode call.
        self.last_backwards = -1
        self.last_input: Optional[Callable[[], Any]] = None
        self.reported = False
        #: Backward count when it was last found untrained (no need to look again before the next backward).
        self.untrained_at = -1


def _called_by_framework() -> bool:
    """Whether the model call being finished was made by torch / a framework rather than user code."""
    frame = sys._getframe(1)
    while frame is not None:
        module = frame.f_globals.get("__name__", "") or ""
        if not module.startswith(_PLUMBING):
            return module.partition(".")[0] in _FRAMEWORKS
        frame = frame.f_back
    return False


class EvalModeMissing(RuntimeCheck):
    CODE = "TS006"

    def install(self, events: Events, hooks: HookSet) -> None:
        import torch

        self._torch = torch
        self._modes = ModeIndex()
        self._roots: Any = IdentityMap()
        #: Backward count at the last explicit ``module.train()`` (outermost call) per module.
        self._trained_explicitly: Any = IdentityMap()
        #: Completed backward() calls in the test (a counter shared by the checks: nothing per call here).
        self._backward_calls = backwards(hooks)
        events.root_forward_post.append(self._on_forward)
        events.module_registered.append(self._modes.invalidate)
        on_mode_change(hooks, self._on_mode)

    def _on_mode(self, module: Any, mode: bool) -> None:
        if mode is True:
            self._trained_explicitly[module] = self._backward_calls.count

    def _on_forward(self, module: Any, args: tuple, output: Any) -> None:
        if not module.training:
            return
        try:
            torch = self._torch
            if torch.is_grad_enabled():
                root = self._roots.get(module)
                if root is None:
                    root = self._roots[module] = _Root()
                if root.trained_from is None:
                    root.trained_from = self._backward_calls.count
                return
            if torch._C._is_tracing() or is_compiling():
                return
            self._candidate(module, args)
        except Exception:  # a bug here must never break the user's forward
            pass

    def _candidate(self, module: Any, args: tuple) -> None:
        root = self._roots.get(module)
        if root is None:
            root = self._roots[module] = _Root()
        if root.reported:
            return
        first = args[0] if args else None
        previous = root.last_input() if root.last_input is not None else None
        # the previous input gone (freed) or another tensor: a new batch; the same one: Monte-Carlo sampling
        backward_calls = self._backward_calls.count
        consecutive = root.last_backwards == backward_calls and (previous is None or previous is not first)
        root.last_backwards = backward_calls
        try:
            root.last_input = weakref.ref(first) if first is not None else None
        except TypeError:  # not weak-referenceable (a dict of inputs): compare nothing
            root.last_input = None
        if consecutive:
            self._judge(module, root)

    def _judge(self, module: Any, root: _Root) -> None:
        active = self._modes.training(module)
        if not active or not self._trained(module, root):
            return
        if self._trained_explicitly.get(module, -1) == self._backward_calls.count:
            return  # train() on purpose after the last backward: recalibration, Monte-Carlo dropout
        if any(getattr(m, "momentum", 0.1) is None for m in active):
            return  # cumulative batch-norm statistics: a recalibration pass
        if _called_by_framework():
            return
        root.reported = True
        kinds = sorted({type(m).__name__ for m in active})
        self.report(f"{module_label(module)} ran forward passes under no_grad in train mode, "
                    f"{', '.join(kinds[:3])} active")

    def _trained(self, module: Any, root: _Root) -> bool:
        if root.trained_from is not None and self._backward_calls.count > root.trained_from:
            return True
        if root.untrained_at == self._backward_calls.count or self._backward_calls.count == 0:
            return False  # no backward in this test (gradients left by a fixture's training do not count)
        if any(p.grad is not None for p in module.parameters()):
            return True
        root.untrained_at = self._backward_calls.count
        return False
