"""TS016 non-finite-loss at runtime: the first NaN / Inf loss or gradient of a test.

What is watched:

* every ``backward()`` (the shared wrapper, ``torchutil.on_backward``): the root
  of a scalar backward is kept (detached: no graph is held) as the step's loss.
  Until the test's first optimizer step, it is also checked right away (one
  device sync per backward): a non-finite loss then is reported after the test
  if no optimizer step ever follows (a hand-written update, or a GradScaler
  skipping every step), at the ``backward()`` line; once a step happens, the
  step's check below judges instead (a guard that skipped the bad batch, or a
  scaler that recovered, handled it);
* every ``optimizer.step()`` (the global step pre-hook): one fused check of the
  step's loss and all the optimizer's gradients, ``torch._foreach_norm`` with
  the infinity norm (max |g|: it overflows only if a value already is infinite,
  unlike the 2-norm in float16) and one device sync per device. Only when
  something is non-finite is the culprit named: the loss, else the first
  parameter whose gradient is non-finite (named from the caller's models). A
  loss that went through ``GradScaler.scale`` (its outputs noted through ``torchutil.on_return``)
  is the loss times the scale: only its gradients are judged, never its value.

One finding per test, at the first occurrence, naming the step.

Not reported: steps that ``torch.amp.GradScaler`` manages. ``scaler.step(opt)``
calls ``opt.step()`` only after it found every unscaled gradient finite (a step
with inf / NaN gradients is skipped on purpose and never reaches the hook); for
optimizers that take the scaler's ``found_inf`` themselves (fused Adam / SGD),
the step is made with scaled gradients and ``optimizer.found_inf`` set, and it is
not checked. Custom optimizers whose ``step()`` accepts ``grad_scaler`` are not
checked either.
"""

from __future__ import annotations

import inspect
import math
import sys
import weakref
from typing import Any, Dict, List, Optional, Tuple

from ..events import Events
from ..hooks import HookSet
from ..location import Location, user_location
from ..monitor import RuntimeCheck


def _gradients(optimizer: Any) -> List[Tuple[Any, Any]]:
    """Dense gradients that hold values (meta tensors have none to check)."""
    return [(p, p.grad) for group in optimizer.param_groups for p in group["params"]
            if p.grad is not None and not p.grad.is_sparse and not p.grad.is_meta]


def _all_finite(tensors: List[Any]) -> bool:
    """One fused reduction (and one device sync) per device."""
    import torch

    by_device: Dict[Any, List[Any]] = {}
    for tensor in tensors:
        by_device.setdefault(tensor.device, []).append(tensor)
    for group in by_device.values():
        norms = torch._foreach_norm(group, math.inf)
        if not bool(torch.isfinite(torch.stack(norms)).all()):
            return False
    return True


def _describe(value: Any) -> str:
    number = float(value)
    return "NaN" if math.isnan(number) else ("+Inf" if number > 0 else "-Inf")


class NonFiniteLoss(RuntimeCheck):
    CODE = "TS016"

    def install(self, events: Events, hooks: HookSet) -> None:
        from ..torchutil import on_backward, on_return

        self._done = False
        self._stepped = False
        self._loss: Optional[Any] = None
        self._loss_scaled = False
        self._steps: "weakref.WeakKeyDictionary[Any, int]" = weakref.WeakKeyDictionary()
        self._takes_scaler: Dict[type, bool] = {}
        #: A non-finite loss seen before any optimizer step, and where: reported after the test
        #: only if no step ever followed (a guard or GradScaler that skips the step handles it).
        self._suspect: Optional[Tuple[str, Location]] = None
        from torch.amp.grad_scaler import GradScaler
        from torch.utils.weak import WeakIdKeyDictionary

        #: Outputs of ``GradScaler.scale``: their value is the loss times the scale, not the loss.
        self._scaled: Any = WeakIdKeyDictionary()
        on_return(hooks, GradScaler, "scale", self._on_scaled)
        events.step_pre.append(self._on_step)
        on_backward(hooks, self._on_backward)

    def _on_scaled(self, args: tuple, kwargs: dict, result: Any) -> None:
        import torch

        if isinstance(result, torch.Tensor) and result is not args[1]:
            self._scaled[result] = True

    def _on_backward(self, roots: Tuple[Any, ...], create_graph: bool) -> None:
        if self._done:
            return
        for root in roots:
            if root.numel() == 1 and root.is_floating_point() and not root.is_meta:
                self._loss = root.detach()
                self._loss_scaled = root in self._scaled
        if not self._stepped and self._suspect is None and self._loss is not None:
            import torch

            if not bool(torch.isfinite(self._loss).all()):
                self._suspect = (f"the loss is {_describe(self._loss)} and no optimizer step followed",
                                 user_location())

    def _on_step(self, optimizer: Any) -> None:
        self._stepped = True
        self._suspect = None  # a step came: the steps' own checks judge from here on
        if self._done:
            return
        step = self._steps[optimizer] = self._steps.get(optimizer, 0) + 1
        loss, self._loss = self._loss, None
        if self._scaler_managed(optimizer):
            return
        gradients = _gradients(optimizer)
        own_loss = [loss.reshape(1)] if loss is not None and not self._loss_scaled else []
        tensors = [grad for _, grad in gradients] + own_loss
        if not tensors or _all_finite(tensors):
            return
        import torch

        if loss is not None and not bool(torch.isfinite(loss).all()):
            self._finding(f"the loss is {_describe(loss)} at step {step}")
            return
        for parameter, grad in gradients:
            if not bool(torch.isfinite(grad).all()):
                name = _parameter_name(parameter, sys._getframe(1))
                self._finding(f"the gradient of {name} is not finite at step {step} (the loss is finite)")
                return

    def _scaler_managed(self, optimizer: Any) -> bool:
        if getattr(optimizer, "found_inf", None) is not None or getattr(optimizer, "grad_scale", None) is not None:
            return True
        kind = type(optimizer)
        takes = self._takes_scaler.get(kind)
        if takes is None:
            try:
                takes = "grad_scaler" in inspect.signature(optimizer.step).parameters
            except (TypeError, ValueError):
                takes = False
            self._takes_scaler[kind] = takes
        return takes

    def finish(self) -> None:
        if self._suspect is not None and not self._done:
            detail, where = self._suspect
            self.report(detail, where=where)

    def _finding(self, detail: str) -> None:
        self._done = True
        self.report(detail)


def _parameter_name(parameter: Any, start: Any) -> str:
    """```model.fc.weight``` if a calling frame holds the model, else the parameter's shape."""
    import torch

    from ..location import frame_values, user_frames

    for frame in user_frames(start):
        for name, value in frame_values(frame):
            if isinstance(value, torch.nn.Module):
                for path, candidate in value.named_parameters():
                    if candidate is parameter:
                        return f"`{name}.{path}`"
    return f"a parameter of shape {tuple(parameter.shape)}"
