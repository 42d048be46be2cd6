"""TS015 params-not-in-optimizer at runtime: a module or parameter added after its optimizer was built.

What is watched:

* every optimizer constructed during the test (``torch.optim.Optimizer.__init__``
  observed when it returns, through the shared ``torchutil.on_return``): the ids
  of its parameters, and that it exists;
* every submodule / parameter registration (torch's global registration hooks),
  but only while some optimizer built in this test exists. A registration is
  *late* when the parent module it is attached to already has parameters in one
  of those optimizers: ``model.fc = nn.Linear(...)`` after
  ``optimizer = SGD(model.parameters())``. Building another model after the
  optimizer (a discriminator, a loss network, an EMA copy) is not late: its
  parent holds no optimized parameter. Only a late registration walks the stack
  (for the user's line) and is remembered;
* at the next two optimizer steps after a late registration (any optimizer; as the
  step begins and as it returns, since ``step(closure)`` runs its backward inside):
  whether the new parameters have a gradient (they took part in a backward
  pass) and belong to no optimizer known to the test (built or stepped in it;
  their ``param_groups`` are read then, so an optimizer rebuilt after the
  change, or ``add_param_group``, counts). If so, the finding is reported at the
  registration line; either way the registration is then forgotten.

Frozen parameters never get a gradient and are never reported; neither is a
parameter of a model the test does not train. Nothing the user created is kept
alive: modules, parameters and optimizers are held through weak references.
"""

from __future__ import annotations

import weakref
from typing import Any, Iterable, List, Optional, Set

from ..events import Events
from ..hooks import HookSet
from ..identitymap import IdentityMap
from ..location import Location, user_location
from ..monitor import RuntimeCheck

#: Optimizer steps after a late registration at which its parameters' gradients are looked at.
_CHECKS = 2


class _Late:
    """A module or parameter attached, after an optimizer was built, to a module that optimizer trains."""

    __slots__ = ("parent", "child", "name", "where", "checks")

    def __init__(self, parent: Any, child: Any, name: str, where: Location) -> None:
        self.parent = weakref.ref(parent)
        self.child = weakref.ref(child)
        self.name = name
        self.where = where
        self.checks = _CHECKS

    def parameters(self) -> List[Any]:
        import torch

        child = self.child()
        if child is None:
            return []
        return [child] if isinstance(child, torch.Tensor) else list(child.parameters())


def _parameters(optimizer: Any) -> Iterable[Any]:
    for group in optimizer.param_groups:
        yield from group["params"]


class ParamsNotInOptimizer(RuntimeCheck):
    CODE = "TS015"

    def install(self, events: Events, hooks: HookSet) -> None:
        import torch

        from ..torchutil import on_return

        #: Every optimizer this test built or stepped (weakly).
        self._optimizers: Any = IdentityMap()
        #: Ids of the parameters of the optimizers built in this test, at construction.
        self._optimized: Set[int] = set()
        #: Late registrations whose parameters are still to be looked at, at the next steps.
        self._pending: List[_Late] = []
        events.module_registered.append(self._on_registered)
        events.parameter_registered.append(self._on_registered)
        events.step_pre.append(self._on_step)
        events.step_post.append(self._on_step_post)

        on_return(hooks, torch.optim.Optimizer, "__init__", self._on_optimizer)

    def _on_optimizer(self, args: tuple, kwargs: dict, result: Any) -> None:
        optimizer = args[0]
        self._optimizers[optimizer] = True
        self._optimized.update(id(p) for p in _parameters(optimizer))

    def _on_registered(self, parent: Any, name: str, child: Any) -> None:
        if not self._optimized or child is None:
            return
        if not any(id(p) in self._optimized for p in parent.parameters()):
            return  # a module being built, not one an optimizer already trains
        self._pending.append(_Late(parent, child, name, user_location()))

    def _on_step(self, optimizer: Any) -> None:
        if optimizer not in self._optimizers:  # a WeakSet would build a weak reference per step to ask
            self._optimizers[optimizer] = True
        if self._pending:
            self._judge(count=True)

    def _on_step_post(self, optimizer: Any) -> None:
        # ``optimizer.step(closure)`` (LBFGS) runs its backward inside step(): the gradients exist
        # only now, and a closure that clears first may wipe them before the next step's pre-hook.
        if self._pending:
            self._judge(count=False)

    def _judge(self, count: bool) -> None:
        optimized = {id(p) for known in self._optimizers.keys() for p in _parameters(known)}
        for late in self._pending:
            if count:
                late.checks -= 1
            missing = [p for p in late.parameters() if p.grad is not None and id(p) not in optimized]
            if missing:
                late.checks = 0
                self.report(self._detail(late, len(missing)), where=late.where)
        self._pending = [late for late in self._pending if late.checks > 0]

    @staticmethod
    def _detail(late: _Late, count: int) -> str:
        parent: Optional[Any] = late.parent()
        child = late.child()
        import torch

        what = "parameter" if isinstance(child, torch.Tensor) else f"{type(child).__name__}"
        owner = type(parent).__name__ if parent is not None else "its model"
        plural = "parameter" if count == 1 else "parameters"
        return (f"{what} `{late.name}` was added to {owner} after the optimizer was built: "
                f"{count} {plural} with gradients are not in any optimizer")
