"""TS001 zero-grad-missing at runtime: a step consumes gradients that survived the previous step.

What is watched, per parameter of every optimizer that steps:

* after each ``step()``: which tensor is in ``p.grad`` and its ``_version``;
* when a later backward reaches ``p`` (a tensor hook, before accumulation, put in
  place as the first backward after the step starts, unless a ``zero_grad()`` came
  first): if
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

Trust, to keep the usual loop at O(1) per step: an optimizer whose own
``zero_grad()`` (or a module's ``zero_grad()`` covering all its parameters) ran
between two of its steps clears every gradient it will use, so nothing can be
stale. From the step that closes such an iteration on, the optimizer is
*trusted*: no snapshot after its steps, no tensor hooks on its parameters, only
"was it cleared since its last step?" at each step. The first iteration is
always watched in full (``zero_grad()`` placed once before the loop is the
common bug). The first step of a trusted optimizer without a clearing since the
previous one ends the trust for good; that iteration cannot be judged (nothing
was noted after the step before), the following ones are: an intermittent
clearing (``if i % 2: optimizer.zero_grad()``) that began with a cleared
iteration is reported one uncleared iteration later.
"""

from __future__ import annotations

import functools
import weakref
from typing import Any, Callable, List, Optional

from ..events import Events
from ..hooks import HookSet
from ..identitymap import IdentityMap
from ..monitor import RuntimeCheck


class _GradState:
    """One parameter, and what is known about its ``.grad`` since its optimizer's last step.

    Its two tensor hooks are bound to it (``functools.partial``): a backward reaching
    the parameter costs two Python calls and a few attribute reads, no lookup.
    """

    __slots__ = ("param", "grad", "version", "pending", "stale", "evidence", "handles")

    def __init__(self, param: Any) -> None:
        self.param: Callable[[], Any] = weakref.ref(param)  # never keep the user's parameter alive
        #: The gradient the last step left (a weak reference: never keep a cleared one alive), or None.
        self.grad: Optional[Callable[[], Any]] = None
        self.version = 0
        self.pending = False
        self.stale = False
        #: Whether the gradient left by the step was non-zero when a backward first added to it:
        #: None until then; a bool tensor (not yet synchronised) or a bool afterwards.
        self.evidence: Any = None
        #: The removable handles of its two tensor hooks (empty while unhooked).
        self.handles: List[Any] = []

    def forget(self) -> None:
        """Cleared since the step (set to None, replaced, or changed in place)."""
        self.grad = None
        self.pending = self.stale = False


class _Watched:
    """One optimizer's parameters, as states in ``param_groups`` order (rebuilt if the groups change)."""

    __slots__ = ("layout", "states", "marks", "cleared", "trusted", "distrusted", "covering")

    def __init__(self) -> None:
        self.layout: List[int] = []
        self.states: List[_GradState] = []
        #: The check's stale-mark count at this optimizer's last step: nothing new since, nothing to judge.
        self.marks = 0
        #: Whether a zero_grad() clearing all its parameters ran since its last step.
        self.cleared = False
        self.trusted = False
        #: A trusted step came without a clearing: never trusted again.
        self.distrusted = False
        #: Module -> whether its zero_grad() clears all of this optimizer's parameters (per layout).
        self.covering: Any = IdentityMap()


class _NotHookable:
    """Stands for the hooks of a parameter that cannot have any (frozen, not a leaf, exotic)."""

    def remove(self) -> None:
        pass


_NOT_HOOKABLE = _NotHookable()


def _layout(optimizer: Any) -> List[int]:
    return [len(group["params"]) for group in optimizer.param_groups]


def _is_nonzero(value: Any) -> bool:
    try:
        return bool(value)
    except Exception:  # unknown: assume the stale gradient mattered only if we cannot tell otherwise
        return True


class ZeroGradMissing(RuntimeCheck):
    CODE = "TS001"

    def install(self, events: Events, hooks: HookSet) -> None:
        import torch

        from ..torchutil import backwards, on_call

        self._hooks = hooks
        self._states: Any = IdentityMap()
        self._optimizers: Any = IdentityMap()
        #: Optimizers already reported (one finding per optimizer: no stack walk per buggy step).
        self._reported: Any = IdentityMap()
        #: How many times a parameter became stale, and that count when the running step began:
        #: a closure optimizer (LBFGS) runs its backwards inside step(), judged after it.
        self._marks = 0
        self._marks_at_step = 0
        events.step_pre.append(self._on_step_pre)
        events.step_post.append(self._on_step_post)
        on_call(hooks, torch.optim.Optimizer, "zero_grad", self._on_optimizer_zero_grad)
        on_call(hooks, torch.nn.Module, "zero_grad", self._on_module_zero_grad)
        #: Optimizers whose parameters need their hooks before the next backward (noted after a step).
        self._to_hook: List[_Watched] = []
        backwards(hooks).before.append(self._before_backward)

    # -- optimizer steps -------------------------------------------------------------

    def _on_step_pre(self, optimizer: Any) -> None:
        self._marks_at_step = self._marks
        watched = self._optimizers.get(optimizer)
        if watched is not None and watched.marks != self._marks and not watched.trusted \
                and optimizer not in self._reported:
            self._check(optimizer, watched)

    def _on_step_post(self, optimizer: Any) -> None:
        watched = self._optimizers.get(optimizer)
        if watched is None:
            watched = self._optimizers[optimizer] = _Watched()
        else:
            cleared, watched.cleared = watched.cleared, False
            if watched.trusted:
                if cleared and len(optimizer.param_groups) == len(watched.layout):  # add_param_group ends trust
                    return
                watched.trusted = False
                # Without a clearing this iteration goes unjudged, and the following ones are watched in
                # full; new parameter groups are watched for one iteration before trust returns.
                watched.distrusted = not cleared
            else:
                if self._marks != self._marks_at_step and optimizer not in self._reported:
                    self._check(optimizer, watched)
                if cleared and not watched.distrusted:
                    self._trust(watched)
                    return
        self._remember(optimizer, watched)

    # -- zero_grad() calls: what earns an optimizer trust ------------------------------

    def _on_optimizer_zero_grad(self, args: tuple, kwargs: dict) -> None:
        watched = self._optimizers.get(args[0]) if args else None
        if watched is not None:
            watched.cleared = True

    def _on_module_zero_grad(self, args: tuple, kwargs: dict) -> None:
        module = args[0] if args else None
        for optimizer, watched in self._optimizers.items():
            if watched.cleared:
                continue
            covers = watched.covering.get(module)
            if covers is None:
                mine = {id(state.param()) for state in watched.states}
                theirs = {id(param) for param in module.parameters()}
                covers = watched.covering[module] = bool(mine) and mine <= theirs
            watched.cleared = covers

    def _trust(self, watched: _Watched) -> None:
        """Stop watching the parameters of an optimizer that is cleared between steps (unless another needs them)."""
        watched.trusted = True
        needed = {id(state) for other in self._optimizers.values() if not other.trusted for state in other.states}
        for state in watched.states:
            if id(state) not in needed:
                for handle in state.handles:
                    handle.remove()
                state.handles = []
            state.forget()

    def _check(self, optimizer: Any, watched: _Watched) -> None:
        for state in watched.states:
            if not state.stale or state.grad is None:
                continue
            param = state.param()
            grad = param.grad if param is not None else None
            if grad is None or state.grad() is not grad or not _is_nonzero(state.evidence):
                continue
            # Modified in place since the stale accumulation: clipped or unscaled (still stale),
            # or zeroed (harmless). Look at the values only on this rare path.
            if grad._version != state.version and not _is_nonzero(grad.any()):
                continue
            self._reported[optimizer] = True
            self.report(f"{type(optimizer).__name__}: a backward() since its previous step() "
                        "added to gradients that were never cleared")
            return

    def _remember(self, optimizer: Any, watched: _Watched) -> None:
        """Note the gradient each parameter holds as the step ends (the loop is inlined: it runs every step)."""
        layout = _layout(optimizer)
        if layout != watched.layout:
            watched.layout = layout
            watched.states = [self._state(param) for group in optimizer.param_groups for param in group["params"]]
            watched.covering.clear()
        watched.marks = self._marks
        self._to_hook.append(watched)
        for state in watched.states:
            param = state.param()
            if param is None:
                continue
            grad = param.grad
            state.pending = state.stale = False
            state.evidence = None
            if grad is None:
                state.grad = None
                continue
            reference = state.grad
            if reference is None or reference() is not grad:
                state.grad = weakref.ref(grad)
            state.version = grad._version

    # -- per-parameter hooks ---------------------------------------------------------

    def _before_backward(self) -> None:
        """Hook the parameters of optimizers not cleared since their step, as the first backward after it starts.

        Just in time: the usual loop clears before its backward, and its parameters
        are never hooked at all (hooking and unhooking them cost more than a step).
        """
        if not self._to_hook:
            return
        waiting, self._to_hook = self._to_hook, []
        for watched in waiting:
            if watched.cleared or watched.trusted:
                continue  # nothing can be stale this iteration
            for state in watched.states:
                if not state.handles:
                    param = state.param()
                    if param is not None:
                        self._hook(param, state)

    def _state(self, param: Any) -> _GradState:
        state = self._states.get(param)
        if state is None:
            state = self._states[param] = _GradState(param)
        return state

    def _hook(self, param: Any, state: _GradState) -> None:
        from torch.utils.hooks import unserializable_hook

        if not getattr(param, "requires_grad", False):
            return  # frozen for now: hooked the first step after it is unfrozen
        state.handles = [_NOT_HOOKABLE]
        if param.grad_fn is not None:
            return  # not a leaf: its gradient is never accumulated into .grad
        try:
            before = unserializable_hook(functools.partial(self._before_accumulation, state))
            state.handles = [self._hooks.add(param.register_hook(before))]
            state.handles.append(self._hooks.add(param.register_post_accumulate_grad_hook(
                functools.partial(self._after_accumulation, state))))
        except Exception:  # an exotic tensor subclass: leave this parameter unwatched
            pass

    def _before_accumulation(self, state: _GradState, incoming: Any) -> None:
        reference = state.grad
        if reference is None:
            return None  # no gradient left by a step, or cleared since
        try:
            param = state.param()
            grad = param.grad if param is not None else None
            if grad is not None and reference() is grad and grad._version == state.version:
                state.pending = True
                if state.evidence is None:
                    state.evidence = _any(grad)
            else:
                state.forget()
        except Exception:  # a bug here must never break the user's backward
            pass
        return None

    def _after_accumulation(self, state: _GradState, param: Any) -> None:
        if not state.pending:
            return
        try:
            grad = param.grad
            if grad is None:
                return
            state.pending = False
            state.stale = True
            self._marks += 1
            if state.grad is None or state.grad() is not grad:
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
