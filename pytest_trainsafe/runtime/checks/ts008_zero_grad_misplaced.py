"""TS008 zero-grad-misplaced at runtime: an optimizer steps right after its gradients were cleared.

What is watched:

* every completed ``backward()`` is counted (``torchutil.backwards``, shared by the checks);
* ``Optimizer.zero_grad`` and ``Module.zero_grad`` are wrapped (transparently, the
  original runs unchanged). A ``zero_grad()`` is *suspicious* when a backward ran since
  that optimizer's last step (for a module: since the last step of any optimizer):
  then it may be wiping gradients nobody has used yet. Only a suspicious call is
  located (a stack walk, capped per test); the normal orders cost two integer compares;
* at ``step()`` (pre-hook), the optimizer is reported when a backward ran since its
  previous step, the last thing that happened to it since that backward is a suspicious
  ``zero_grad()`` (its own, or a module's holding its parameters), and its gradients
  really are gone: every parameter's ``.grad`` is None or all zero (looked at on the
  first parameter of each group first, on all of them only when those say so).

The finding points at the ``zero_grad()`` line (the linter's line too), or at the step
when that line could not be located. Not reported: ``zero_grad()`` before the backward
or after the step, gradient accumulation, another optimizer's ``zero_grad()`` (a GAN),
a closure that clears before its backward (LBFGS: the closure runs inside ``step()``, so
a step during which backwards ran is judged again when it returns), gradients put
back by hand after the ``zero_grad()`` (they are not None / zero at the step).
Known miss: ``p.grad = None`` written by hand (no call to observe).
"""

from __future__ import annotations

from typing import Any, Optional, Tuple

from ..events import Events
from ..hooks import HookSet
from ..identitymap import IdentityMap
from ..location import Location, user_location
from ..monitor import RuntimeCheck
from ..torchutil import backwards, on_call

#: Suspicious zero_grad() calls located per test (a stack walk each); later ones report at the step.
_LOCATED = 16


def _all_params(optimizer: Any) -> Any:
    for group in optimizer.param_groups:
        yield from group["params"]


def _cleared(grad: Any) -> bool:
    return grad is None or not bool(grad.detach().any())


class _Stepper:
    """What TS008 knows of one optimizer: one lookup per event."""

    __slots__ = ("stepped", "zeroed", "reported")

    def __init__(self) -> None:
        #: The backward count at its last step.
        self.stepped = 0
        #: (backward count, location or None) of its own suspicious zero_grad(), if any since its last step.
        self.zeroed: Optional[Tuple[int, Optional[Location]]] = None
        self.reported = False


class ZeroGradMisplaced(RuntimeCheck):
    CODE = "TS008"

    def install(self, events: Events, hooks: HookSet) -> None:
        import torch

        #: Completed backward() calls in the test (a counter shared by the checks: nothing per call here).
        self._backward_calls = backwards(hooks)
        self._located = 0
        self._optimizers: Any = IdentityMap()
        #: module -> (backward count when suspiciously zeroed, location or None)
        self._zeroed_modules: Any = IdentityMap()
        #: Backward count when the running step() began (a closure's backwards come after it).
        self._backwards_at_step = 0
        events.step_pre.append(self._on_step_pre)
        events.step_post.append(self._on_step_post)
        on_call(hooks, torch.optim.Optimizer, "zero_grad", self._on_optimizer_zero_grad)
        on_call(hooks, torch.nn.Module, "zero_grad", self._on_module_zero_grad)

    def _stepper(self, optimizer: Any) -> _Stepper:
        stepper = self._optimizers.get(optimizer)
        if stepper is None:
            stepper = self._optimizers[optimizer] = _Stepper()
        return stepper

    def _on_optimizer_zero_grad(self, args: tuple, kwargs: dict) -> None:
        if self._backward_calls.count == 0 or not args:
            return
        stepper = self._stepper(args[0])
        stepper.zeroed = self._suspicion(stepper.stepped)

    def _on_module_zero_grad(self, args: tuple, kwargs: dict) -> None:
        if self._backward_calls.count == 0 or not args:
            return
        since = max((stepper.stepped for stepper in self._optimizers.values()), default=0)
        suspicion = self._suspicion(since)
        if suspicion is None:
            self._zeroed_modules.pop(args[0], None)
        else:
            self._zeroed_modules[args[0]] = suspicion

    def _suspicion(self, since: int) -> Optional[Tuple[int, Optional[Location]]]:
        """(backward count, location) for a zero_grad() after a backward since ``since``; None if none ran."""
        if self._backward_calls.count <= since:
            return None  # no backward since the step: the usual place
        where: Optional[Location] = None
        if self._located < _LOCATED:
            self._located += 1
            where = user_location()
        return self._backward_calls.count, where

    def _on_step_post(self, optimizer: Any) -> None:
        try:
            stepper = self._stepper(optimizer)
            # ``optimizer.step(closure)`` runs the closure's backward inside step(), after the
            # pre-hook: a closure that clears after its backward is judged here (the step has
            # just used the cleared gradients, which are still None / zero).
            if self._backward_calls.count > self._backwards_at_step:
                self._judge(optimizer, stepper)
            stepper.stepped = self._backward_calls.count
            stepper.zeroed = None
        except Exception:
            pass

    def _on_step_pre(self, optimizer: Any) -> None:
        try:
            self._backwards_at_step = self._backward_calls.count
            stepper = self._stepper(optimizer)
            if stepper.zeroed is not None or self._zeroed_modules:  # else nothing suspicious to judge
                self._judge(optimizer, stepper)
        except Exception:
            pass

    def _judge(self, optimizer: Any, stepper: _Stepper) -> None:
        if self._backward_calls.count <= stepper.stepped or stepper.reported:
            return
        culprit = self._culprit(optimizer, stepper)
        if culprit is None or not self._gradients_gone(optimizer):
            return
        stepper.reported = True
        self.report(f"{type(optimizer).__name__}.step() after zero_grad(): "
                    "the backward's gradients were cleared before the step used them", where=culprit[1])

    def _culprit(self, optimizer: Any, stepper: _Stepper) -> Optional[Tuple[int, Optional[Location]]]:
        """The suspicious zero_grad() since the last backward that cleared this optimizer's parameters."""
        own = stepper.zeroed
        if own is not None and own[0] == self._backward_calls.count:
            return own
        if not self._zeroed_modules:
            return None
        ids = {id(p) for p in _all_params(optimizer)}
        for module, record in list(self._zeroed_modules.items()):
            if record[0] == self._backward_calls.count and any(id(p) in ids for p in module.parameters()):
                return record
        return None

    @staticmethod
    def _gradients_gone(optimizer: Any) -> bool:
        firsts = [group["params"][0] for group in optimizer.param_groups if group["params"]]
        if not firsts or not all(_cleared(p.grad) for p in firsts):
            return False
        return all(_cleared(p.grad) for p in _all_params(optimizer))
