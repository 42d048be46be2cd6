"""TS016 non-finite-loss at runtime: the first NaN / Inf loss, or the step that made the parameters NaN.

What is watched, at O(1) cost per event:

* every ``backward()`` (the shared wrapper, ``torchutil.on_backward``): the value
  of a scalar root (one ``.item()``: a device sync on an accelerator) is kept as
  the step's loss. Until the test's first optimizer step, a non-finite one is
  noted at the ``backward()`` line and reported after the test if no optimizer
  step ever follows (a hand-written update, or a GradScaler skipping every step);
  once a step happens, the steps' judgement below takes over (a guard that
  skipped the bad batch, or a scaler that recovered, handled it);
* every ``optimizer.step()`` (the global step pre-hook): the step's loss. A
  non-finite one is the finding, at the ``step()`` line, naming the step. If
  the optimizer's previous step had a finite loss, its parameters are looked at
  then (the rare path): a parameter that is non-finite now turned so in that
  previous step, through its gradient or its update (a finite loss can have
  NaN gradients: ``sqrt`` or ``norm`` of an exact zero), and is named instead:
  that step is where the run went wrong. A loss that went through
  ``GradScaler.scale`` (its outputs noted through ``torchutil.on_return``) is the
  loss times the scale: its value is never judged;
* on each optimizer's first two steps and every ``_SCAN_EVERY``-th, and after
  the test for the optimizers still alive (a fixture's): its parameters. NaN and
  Inf are absorbing under every torch optimizer's update, so a non-finite
  gradient that some step applied leaves a non-finite parameter behind even
  where the losses stayed finite (a ``torch.where`` that hides the NaN from the
  forward). It is named with the steps since its parameters were last seen
  finite, at that optimizer's ``step()`` line.

The gradients themselves are not read at every step: that costs one reduction
per parameter tensor per step, several times the tiny test models' own step.

One finding per test, at the first occurrence, naming the step.

Not judged: the losses of steps that ``torch.amp.GradScaler`` manages.
``scaler.step(opt)`` calls ``opt.step()`` only after it found every unscaled
gradient finite (a step with inf / NaN gradients is skipped on purpose and never
reaches the hook); optimizers that take the scaler's ``found_inf`` themselves
(fused Adam / SGD) skip such an update themselves, with ``optimizer.found_inf``
set. Custom optimizers whose ``step()`` accepts ``grad_scaler`` are not judged
either.
"""

from __future__ import annotations

import inspect
import math
import sys
from typing import Any, Dict, List, Optional, Tuple

from ..events import Events
from ..hooks import HookSet
from ..identitymap import IdentityMap
from ..location import Location, user_location
from ..monitor import RuntimeCheck
from ..sampling import sampled

#: Optimizer class -> whether its step() takes a ``grad_scaler`` (it then skips non-finite steps itself).
#: Read from its signature (~0.1 ms) once per class and process, not once per test.
_TAKES_SCALER: "IdentityMap[bool]" = IdentityMap()

#: After the first two steps, an optimizer's parameters are looked at every this many steps.
_SCAN_EVERY = 16


def _parameters(optimizer: Any) -> List[Any]:
    """Dense parameters that hold values (meta tensors have none to check)."""
    return [p for group in optimizer.param_groups for p in group["params"] if not p.is_meta and not p.is_sparse]


def _all_finite(tensors: List[Any]) -> bool:
    """One fused reduction per device (the infinity norm overflows only at Inf / NaN), read without a
    device sync per tensor: on the CPU each norm is read directly, elsewhere all at once."""
    import torch

    by_device: Dict[Any, List[Any]] = {}
    for tensor in tensors:
        by_device.setdefault(tensor.device, []).append(tensor)
    with torch.no_grad():
        for device, group in by_device.items():
            norms = torch._foreach_norm(group, math.inf)
            if device.type == "cpu":
                if not all(math.isfinite(norm.item()) for norm in norms):
                    return False
            elif not bool(torch.isfinite(torch.stack(norms)).all()):
                return False
    return True


def _non_finite(optimizer: Any) -> Optional[Any]:
    """The first parameter of ``optimizer`` holding a NaN or Inf, if any (the rare path: O(parameters))."""
    import torch

    parameters = _parameters(optimizer)
    if not parameters or _all_finite(parameters):
        return None
    with torch.no_grad():
        return next((p for p in parameters if not bool(torch.isfinite(p).all())), None)


def _since(clean: Optional[int], step: int) -> str:
    """When a parameter found non-finite before ``step`` turned so: after the last step it was seen finite."""
    if clean is None:  # never seen finite: from the start, or since scans the scaler's steps skipped
        return "is not finite before step 1" if step == 1 else f"is not finite after step {step - 1}"
    if clean == step - 1:
        return f"turned non-finite in step {clean}"
    return f"turned non-finite in one of steps {clean}-{step - 1}"


def _describe(number: float) -> str:
    return "NaN" if math.isnan(number) else ("+Inf" if number > 0 else "-Inf")


class _Stepping:
    """What TS016 knows of one optimizer in this test."""

    __slots__ = ("steps", "where", "finite", "clean", "amp")

    def __init__(self, where: Location, amp: bool) -> None:
        self.steps = 0
        #: Whether a GradScaler may manage its steps (it then skips non-finite ones itself).
        self.amp = amp
        #: Its ``step()`` line (located once, at its first step): where an after-the-test finding points.
        self.where = where
        #: Whether its last step had a loss, and a finite one.
        self.finite = False
        #: The last step at which its parameters were all seen finite (None: never looked).
        self.clean: Optional[int] = None


def _takes_scaler(kind: type) -> bool:
    """Whether ``kind.step`` takes a ``grad_scaler`` argument (read from its signature once per process)."""
    takes = _TAKES_SCALER.get(kind)
    if takes is None:
        try:
            takes = "grad_scaler" in inspect.signature(kind.step).parameters
        except (TypeError, ValueError):
            takes = False
        _TAKES_SCALER[kind] = takes
    return takes


class NonFiniteLoss(RuntimeCheck):
    CODE = "TS016"

    def install(self, events: Events, hooks: HookSet) -> None:
        from torch.amp.grad_scaler import GradScaler

        from ..torchutil import on_backward, on_return

        self._done = False
        self._stepped = False
        #: The value of the last scalar root backpropagated since the last step (None: none, or scaled).
        self._loss: Optional[float] = None
        self._optimizers: Any = IdentityMap()
        #: A non-finite loss seen before any optimizer step, and where: reported after the test
        #: only if no step ever followed (a guard or GradScaler that skips the step handles it).
        self._suspect: Optional[Tuple[str, Location]] = None
        #: Outputs of ``GradScaler.scale``: their value is the loss times the scale, not the loss.
        self._scaled: Any = IdentityMap()
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
                self._loss = None if self._scaled and root in self._scaled else root.item()
        loss = self._loss
        if not self._stepped and self._suspect is None and loss is not None and not math.isfinite(loss):
            self._suspect = (f"the loss is {_describe(loss)} and no optimizer step followed", user_location())

    def _on_step(self, optimizer: Any) -> None:
        self._stepped = True
        self._suspect = None  # a step came: the steps' own judgement takes over
        if self._done:
            return
        record = self._optimizers.get(optimizer)
        if record is None:
            amp = getattr(optimizer, "_step_supports_amp_scaling", False) or _takes_scaler(type(optimizer))
            record = self._optimizers[optimizer] = _Stepping(user_location(), amp)
        step = record.steps = record.steps + 1
        loss, self._loss = self._loss, None
        finite_before, record.finite = record.finite, loss is not None and math.isfinite(loss)
        if record.amp and self._scaler_managed(optimizer):
            return
        if loss is not None and not record.finite:
            culprit = _non_finite(optimizer) if finite_before else None
            if culprit is None:
                self._finding(f"the loss is {_describe(loss)} at step {step}")
            else:  # the previous step's loss was finite: its update is where the run went wrong
                self._finding(f"{_parameter_name(culprit, sys._getframe(1))} turned non-finite in step {step - 1}, "
                              "whose loss was finite: its gradient or update was not finite")
        elif sampled(step, 2, _SCAN_EVERY):  # the first two steps, then every _SCAN_EVERY-th
            culprit = _non_finite(optimizer)
            if culprit is None:
                record.clean = step
            else:
                self._finding(f"{_parameter_name(culprit, sys._getframe(1))} {_since(record.clean, step)}, "
                              "while the losses stayed finite: a gradient or update was not finite")

    @staticmethod
    def _scaler_managed(optimizer: Any) -> bool:
        attributes = optimizer.__dict__  # set on the instance by GradScaler.step for fused optimizers
        if attributes.get("found_inf") is not None or attributes.get("grad_scale") is not None:
            return True
        return _takes_scaler(type(optimizer))

    def finish(self) -> None:
        if self._done:
            return
        if self._suspect is not None:
            detail, where = self._suspect
            self.report(detail, where=where)
            return
        for optimizer, record in self._optimizers.items():  # those still alive (a fixture's model)
            culprit = _non_finite(optimizer)
            if culprit is not None:
                self._done = True
                self.report(f"{_parameter_name(culprit, None)} {_since(record.clean, record.steps + 1)}, "
                            "while the losses stayed finite: a gradient or update was not finite",
                            where=record.where)
                return

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
