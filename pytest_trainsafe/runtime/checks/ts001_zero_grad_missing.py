"""TS001 zero-grad-missing at runtime: a step consumes gradients that survived the previous step.

What is watched, per parameter of every optimizer that steps:

* after each ``step()``: which tensor is in ``p.grad`` and its ``_version``;
* when a later backward reaches ``p`` (a tensor hook, before accumulation): if
  ``p.grad`` is still that tensor at that version, nothing cleared it since the
  step (``zero_grad()`` sets it to None or zeroes it in place, which bumps the
  version; ``p.grad = None`` replaces it). The parameter is *pending*;
* after that backward has accumulated into ``p.grad`` (a post-accumulate hook):
  a pending parameter is *stale*: ``.grad`` now holds old + new gradients.
  ``torch.autograd.grad`` runs the first hook but never the second, so it
  creates nothing;
* at the next ``step()`` of the optimizer that owns ``p``: a stale parameter
  whose ``.grad`` is still that accumulated tensor is the finding, reported at
  the ``step()`` line.

Judging at step time, not at backward time, keeps legitimate loops silent where
a backward flows through a model whose optimizer clears its gradients only
later (a GAN's generator loss backpropagates through the discriminator after
the discriminator's step; the discriminator's ``zero_grad()`` comes at the
start of its next iteration). Gradient accumulation never looks stale: its
extra backwards come after a clearing, not after a step.

Clearing through ``p.grad.data.zero_()`` does not bump the version, so the
first time a parameter becomes pending, whether its old gradient is non-zero is
recorded (a reduction queued on the gradient's device, read only when a finding
is about to be made): stale zeros are harmless and never reported.
"""

from __future__ import annotations

import functools
import weakref
from typing import Any, Callable, Iterator

from ..events import Events
from ..hooks import HookSet
from ..monitor import RuntimeCheck


class _GradState:
    """What is known about one parameter's ``.grad`` since its optimizer's last step."""

    __slots__ = ("grad", "version", "pending", "stale", "evidence")

    def __init__(self, grad: Any) -> None:
        self.grad: Callable[[], Any] = weakref.ref(grad)  # never keep a cleared gradient alive
        self.version: int = grad._version
        self.pending = False
        self.stale = False
        #: Whether the gradient left by the step was non-zero when a backward first added to it:
        #: None until then; a bool tensor (not yet synchronised) or a bool afterwards.
        self.evidence: Any = None


def _parameters(optimizer: Any) -> Iterator[Any]:
    for group in optimizer.param_groups:
        yield from group["params"]


def _is_nonzero(value: Any) -> bool:
    try:
        return bool(value)
    except Exception:  # unknown: assume the stale gradient mattered only if we cannot tell otherwise
        return True


class ZeroGradMissing(RuntimeCheck):
    CODE = "TS001"

    def install(self, events: Events, hooks: HookSet) -> None:
        from ..torchutil import IdentityMap  # WeakIdKeyDictionary's semantics, ~10x cheaper per lookup

        self._hooks = hooks
        self._states: Any = IdentityMap()
        self._stale: Any = IdentityMap()
        self._hooked: Any = IdentityMap()
        #: Optimizers already reported (one finding per optimizer: no stack walk per buggy step).
        self._reported: "weakref.WeakSet[Any]" = weakref.WeakSet()
        #: How many times a parameter became stale, and that count when the running step began:
        #: a closure optimizer (LBFGS) runs its backwards inside step(), judged after it.
        self._marks = 0
        self._marks_at_step = 0
        events.step_pre.append(self._on_step_pre)
        events.step_post.append(self._on_step_post)

    # -- optimizer steps -------------------------------------------------------------

    def _on_step_pre(self, optimizer: Any) -> None:
        try:
            self._marks_at_step = self._marks
            if self._stale and optimizer not in self._reported:
                self._check(optimizer)
        except Exception:  # a bug here must never break the user's step
            pass

    def _on_step_post(self, optimizer: Any) -> None:
        try:
            if self._marks != self._marks_at_step and optimizer not in self._reported:
                self._check(optimizer)
            self._remember(optimizer)
        except Exception:
            pass

    def _check(self, optimizer: Any) -> None:
        for param in _parameters(optimizer):
            if param not in self._stale:
                continue
            state = self._states.get(param)
            grad = param.grad
            if state is None or grad is None or state.grad() is not grad:
                continue
            if not _is_nonzero(state.evidence):
                continue
            # Modified in place since the stale accumulation: clipped or unscaled (still stale),
            # or zeroed (harmless). Look at the values only on this rare path.
            if grad._version != state.version and not _is_nonzero(grad.any()):
                continue
            self._reported.add(optimizer)
            self.report(f"{type(optimizer).__name__}: a backward() since its previous step() "
                        "added to gradients that were never cleared")
            return

    def _remember(self, optimizer: Any) -> None:
        states, stale, hooked = self._states, self._stale, self._hooked
        for param in _parameters(optimizer):
            if param not in hooked:
                self._hook(param)
            stale.pop(param, None)
            grad = param.grad
            if grad is None:
                states.pop(param, None)
                continue
            state = states.get(param)
            if state is None or state.grad() is not grad:
                states[param] = _GradState(grad)
            else:
                state.version = grad._version
                state.pending = state.stale = False
                state.evidence = None

    # -- per-parameter hooks ---------------------------------------------------------

    def _hook(self, param: Any) -> None:
        from torch.utils.hooks import unserializable_hook

        if not getattr(param, "requires_grad", False):
            return  # frozen for now: hooked the first step after it is unfrozen
        self._hooked[param] = True
        if param.grad_fn is not None:
            return  # not a leaf: its gradient is never accumulated into .grad
        try:
            before = unserializable_hook(functools.partial(self._before_accumulation, weakref.ref(param)))
            self._hooks.add(param.register_hook(before))
            self._hooks.add(param.register_post_accumulate_grad_hook(self._after_accumulation))
        except Exception:  # an exotic tensor subclass: leave this parameter unwatched
            pass

    def _before_accumulation(self, param_ref: Callable[[], Any], incoming: Any) -> None:
        try:
            param = param_ref()
            state = self._states.get(param) if param is not None else None
            if state is None:
                return None
            grad = param.grad
            if grad is not None and state.grad() is grad and grad._version == state.version:
                state.pending = True
                if state.evidence is None:
                    state.evidence = _any(grad)
            else:  # cleared since the step (None, replaced, or changed in place)
                del self._states[param]
                self._stale.pop(param, None)
        except Exception:
            pass
        return None

    def _after_accumulation(self, param: Any) -> None:
        try:
            state = self._states.get(param)
            if state is None or not state.pending:
                return
            grad = param.grad
            if grad is None:
                return
            state.pending = False
            state.stale = True
            self._stale[param] = True
            self._marks += 1
            if state.grad() is not grad:
                state.grad = weakref.ref(grad)
            state.version = grad._version
        except Exception:
            pass


def _any(grad: Any) -> Any:
    """``grad.any()`` without synchronising (a bool tensor); True where it cannot be computed (sparse)."""
    try:
        return grad.detach().any()
    except Exception:
        return True
