"""TS007 train-mode-not-restored at runtime: an optimizer steps a model that trained in eval mode.

What is watched:

* ``nn.Module.train`` is wrapped (``torchutil.on_mode_change``): the outermost ``eval()`` /
  ``train(False)`` call records,
  for the module it was called on, the user's line that made it (a stack walk per
  ``eval()`` call: once per evaluation, not per batch);
* root module calls (the outermost model call) that finish with autograd on while the module
  is in eval mode mark the module as *pending* (a flag read and a weak-dictionary write);
* at each optimizer step (pre and post, for closure optimizers), every pending module is
  judged and the pending set is cleared. It is reported when it is still entirely in
  eval mode (no submodule in train mode: ``model.eval(); model.head.train()`` is partial
  training on purpose), it has a submodule whose behaviour depends on the mode (dropout
  with p > 0, batch-norm / instance-norm tracking running statistics, attention or RNN
  dropout: otherwise eval mode changes nothing) in the part being trained (a batch-norm
  whose own parameters, or a dropout whose parent module's parameters, belong to this
  optimizer and hold a gradient: a frozen teacher, or the frozen backbone of a linear
  probe kept in eval mode on purpose, is not trained by it). The finding points at the
  ``eval()`` call that put it in eval mode (the line the linter reports too), or at the
  step when no ``eval()`` was seen (a model unpickled in eval mode).
  One finding per model.

Also silent: frozen batch-norm via ``submodule.eval()`` (the root stays in train mode),
evaluation forwards with autograd on followed by ``model.train()`` before the next step,
and an ``eval()`` written in a pytest ``test*`` function of a test file (training in eval
mode there is a determinism choice).
"""

from __future__ import annotations

import os
import sys
from typing import Any, List, Optional, Set

from ..events import Events
from ..hooks import HookSet
from ..identitymap import IdentityMap
from ..location import Location, user_location
from ..monitor import RuntimeCheck
from ..torchutil import ModeIndex, module_label, on_mode_change


def _parameter_ids(optimizer: Any) -> frozenset:
    return frozenset(id(p) for group in optimizer.param_groups for p in group["params"])


def _in_trained_part(root: Any, dependent: Set[int], trained: frozenset) -> List[Any]:
    """The mode-dependent submodules that take part in what the optimizer trains: a batch-norm
    whose own parameters are trained, or a dropout / parameterless norm whose parent holds
    trained parameters. Those in a frozen backbone (a linear probe) do not count."""
    modules = dict(root.named_modules())
    found = []
    for name, module in modules.items():
        if id(module) not in dependent:
            continue
        own = list(module.parameters(recurse=False))
        scope = [module] if own else [modules.get(name.rpartition(".")[0], root)]
        if any(id(p) in trained and p.grad is not None for owner in scope for p in owner.parameters()):
            found.append(module)
    return found


def _in_test_function(where: Location) -> bool:
    """Whether the user's line ``where`` (on the live stack) is in a pytest ``test*`` function of a test file."""
    name = os.path.basename(where[0])
    if not (name.startswith("test_") or name.endswith("_test.py")):
        return False
    frame = sys._getframe(1)
    while frame is not None:
        if frame.f_code.co_filename == where[0] and frame.f_lineno == where[1]:
            return frame.f_code.co_name.startswith("test")
        frame = frame.f_back
    return False


class TrainModeNotRestored(RuntimeCheck):
    CODE = "TS007"

    def install(self, events: Events, hooks: HookSet) -> None:
        import torch

        self._torch = torch
        self._modes = ModeIndex()
        #: Root modules called in eval mode with autograd on since the last step.
        self._pending: Any = IdentityMap()
        #: Where ``eval()`` was last called on a module (outermost call only); None: by a test function.
        self._eval_at: Any = IdentityMap()
        self._reported: Any = IdentityMap()
        #: optimizer -> (number of param groups, ids of its parameters)
        self._parameters: Any = IdentityMap()
        events.root_forward_post.append(self._on_forward)
        events.step_pre.append(self._on_step)
        events.step_post.append(self._on_step)
        events.module_registered.append(self._modes.invalidate)
        on_mode_change(hooks, self._on_mode)

    def _on_mode(self, module: Any, mode: bool) -> None:
        if mode is False:
            where = user_location()
            # eval() written in a test function: training in eval mode there is a determinism choice
            self._eval_at[module] = None if _in_test_function(where) else where

    def _on_forward(self, module: Any, args: tuple, output: Any) -> None:
        if module.training:
            return
        try:
            if self._torch.is_grad_enabled() and module not in self._reported:
                self._pending[module] = True
        except Exception:  # a bug here must never break the user's forward
            pass

    def _on_step(self, optimizer: Any) -> None:
        if not self._pending:
            return
        try:
            modules = list(self._pending.keys())
            self._pending.clear()
            for module in modules:
                self._judge(module, optimizer)
        except Exception:  # a bug here must never break the user's step
            pass

    def _judge(self, module: Any, optimizer: Any) -> None:
        if module.training or module in self._reported or not self._modes.modules(module):
            return
        if any(m.training for m in module.modules()):
            return  # partly in train mode: partial training / frozen parts on purpose
        known = self._parameters.get(optimizer)
        if known is None or known[0] != len(optimizer.param_groups):
            known = self._parameters[optimizer] = (len(optimizer.param_groups), _parameter_ids(optimizer))
        trained = known[1]
        if not any(id(p) in trained and p.grad is not None for p in module.parameters()):
            return  # not trained by this optimizer (a frozen teacher, another model's step)
        if self._eval_at.get(module, 0) is None:
            return  # put in eval mode by a test function itself
        inactive = _in_trained_part(module, set(map(id, self._modes.modules(module))), trained)
        if not inactive:
            return  # only frozen parts are mode-dependent: a linear probe on a frozen backbone
        where = self._eval_location(module)
        self._reported[module] = True
        self.report(f"{module_label(module)} trained in eval mode: "
                    f"{', '.join(sorted({type(m).__name__ for m in inactive})[:3])} inactive", where=where)

    def _eval_location(self, module: Any) -> Optional[Location]:
        where = self._eval_at.get(module)
        if where is not None:
            return where
        for owner, location in list(self._eval_at.items()):  # eval() called on a model that contains it
            if location is not None and owner is not module and any(m is module for m in owner.modules()):
                return location
        return None
