"""Fan-out of module calls, optimizer steps and registrations to the checks that subscribed to them.

Each event source is installed at most once per test, however many checks
listen, so an event costs one Python call plus one per subscriber.
Subscribers must do O(1) work and return None: nothing they do may change the
user's computation.

Module calls are seen through one wrapper of ``nn.Module._call_impl`` (what
``nn.Module.__call__`` calls for a module that was not compiled in place), not
through torch's global forward hooks: any global forward hook sends *every*
module call in the process down ``_call_impl``'s slow path (about 2.7 us a call
with two do-nothing hooks, against 0.4 us for the wrapper). Not ``__call__``
itself: assigning a dunder on ``nn.Module`` makes CPython rewrite the call slot
of every Module subclass loaded, twice per test (about 0.5 ms). A module compiled
in place (``model.compile()``) has ``__call__`` run its compiled call directly:
its calls are not seen, as no call inside a compiled region is. The checks only
need two things from a call: whether it is the outermost one (``root``), and,
for some classes of module, a look at its arguments. The second is dispatched
per class: a ``module_class`` subscriber sees each class once per test and
returns what, if anything, to call for every call of a module of that class.
A call that raises is shown to ``module_raised`` subscribers (innermost module
first) as the exception passes through: free until something raises.

Root events are about models: a call of one of torch's own loss modules
(``nn.CrossEntropyLoss()(logits, y)``, outside any model) is the root while it
runs but is not shown to root subscribers, as it owns no layers, creates none
and computes alike in train and eval mode.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional, Tuple

from .hooks import HookSet

RootPre = Callable[[Any, tuple], None]
RootPost = Callable[[Any, tuple, Any], None]
#: ``subscriber(cls)`` -> what to call, ``per_call(module, args)``, for every call of a module of ``cls``, or None.
ModuleClass = Callable[[type], Optional[Callable[[Any, tuple], None]]]
#: ``subscriber(module, args, exc)``: a module call raised ``exc`` (re-raised unchanged afterwards).
ModuleRaised = Callable[[Any, tuple, Exception], None]
StepHook = Callable[[Any], None]
Registration = Callable[[Any, str, Any], None]


def _is_torch_loss(cls: type) -> bool:
    from torch.nn.modules.loss import _Loss

    return issubclass(cls, _Loss) and (cls.__module__ or "").startswith("torch.")


class Events:
    """Subscriber lists filled by checks in ``install``; the event sources installed by :meth:`install`."""

    def __init__(self) -> None:
        #: Called for the outermost model call only: most checks care about "the model was
        #: called", not about each of its layers. Post subscribers also run when the call
        #: raised (with ``output`` None), as torch's ``always_call`` forward hooks do.
        self.root_forward_pre: List[RootPre] = []
        self.root_forward_post: List[RootPost] = []
        self.module_class: List[ModuleClass] = []
        self.module_raised: List[ModuleRaised] = []
        self.step_pre: List[StepHook] = []
        self.step_post: List[StepHook] = []
        self.parameter_registered: List[Registration] = []
        self.module_registered: List[Registration] = []
        #: The module whose outermost call is running now (None outside any model call, and
        #: when no check subscribed to module calls).
        self.root: Any = None
        #: Optimizer steps begun and completed so far in the test (any optimizer), for checks
        #: that only count them: reading a counter costs nothing per step, a subscriber a call.
        #: Kept once a check asks for them (:meth:`count_steps`) or subscribes to steps.
        self.steps_begun = 0
        self.steps_done = 0
        self._count_steps = False
        #: Module class -> the per-call subscribers for its instances (filled on first call).
        self._per_class: Dict[type, Tuple[Callable[[Any, tuple], None], ...]] = {}
        #: Module class -> whether its outermost calls are root events (not for torch's losses).
        self._model_class: Dict[type, bool] = {}
        self._exporting: Callable[[], bool] = lambda: False
        #: Errors raised by subscribers: swallowed so that a bug in a check never
        #: reaches the user's code, and surfaced by the monitor after the test.
        self.errors: List[str] = []

    def _fan_out(self, subscribers: Any, *args: Any) -> None:
        for subscriber in subscribers:
            try:
                subscriber(*args)
            except Exception as exc:
                self.failed(subscriber, exc)

    def failed(self, subscriber: Any, exc: Exception) -> None:
        """Keep (at most 10 of) the errors of subscribers, named after the check that owns them."""
        owner = getattr(getattr(subscriber, "__self__", None), "CODE", "trainsafe")
        if len(self.errors) < 10:
            self.errors.append(f"{owner}: {type(exc).__name__}: {exc}")

    def count_steps(self) -> None:
        """Keep :attr:`steps_begun` and :attr:`steps_done` (installs the step hooks)."""
        self._count_steps = True

    def install(self, hooks: HookSet) -> None:
        from torch.nn.modules import module as torch_module
        from torch.optim import optimizer as torch_optimizer

        if self.root_forward_pre or self.root_forward_post or self.module_class or self.module_raised:
            self._watch_module_calls(hooks)
        if self.step_pre or self.step_post or self._count_steps:
            hooks.add(torch_optimizer.register_optimizer_step_pre_hook(self._on_step_pre))
            hooks.add(torch_optimizer.register_optimizer_step_post_hook(self._on_step_post))
        if self.parameter_registered:
            hooks.add(torch_module.register_module_parameter_registration_hook(self._on_parameter))
        if self.module_registered:
            hooks.add(torch_module.register_module_module_registration_hook(self._on_module))

    # -- module calls ----------------------------------------------------------------------

    def _watch_module_calls(self, hooks: HookSet) -> None:
        import torch

        from .torchutil import is_dynamo_compiling as compiling
        from .torchutil import is_exporting

        self._exporting = is_exporting

        original = torch.nn.Module._call_impl
        per_class = self._per_class
        first_call = self._first_call_of_class
        failed = self.failed
        root_call = self._root_call
        raised = self._raised
        events = self

        def _call_impl(module: Any, *args: Any, **kwargs: Any) -> Any:
            __tracebackhide__ = True  # noqa: F841  (pytest leaves this frame out of tracebacks)
            if compiling():  # torch.compile traces the module itself, never trainsafe
                return original(module, *args, **kwargs)
            calls = per_class.get(type(module))
            if calls is None:
                calls = first_call(type(module))
            for call in calls:  # usually none; inlined, as this runs for every module call
                try:
                    call(module, args)
                except Exception as exc:
                    failed(call, exc)
            if events.root is None:
                return root_call(original, module, args, kwargs)
            try:
                return original(module, *args, **kwargs)
            except Exception as exc:
                raised(module, args, exc)
                raise

        _call_impl.__wrapped__ = original  # type: ignore[attr-defined]
        _call_impl.__qualname__ = getattr(original, "__qualname__", "Module._call_impl")
        _call_impl.trainsafe_wrapper = True  # type: ignore[attr-defined]  (the stand-in probe looks past it)
        hooks.patch(torch.nn.Module, "_call_impl", _call_impl)

    def _first_call_of_class(self, cls: type) -> Tuple[Callable[[Any, tuple], None], ...]:
        calls = []
        for subscriber in self.module_class:
            try:
                per_call = subscriber(cls)
            except Exception as exc:
                self.failed(subscriber, exc)
                continue
            if per_call is not None:
                calls.append(per_call)
        found = self._per_class[cls] = tuple(calls)
        return found

    def _root_call(self, original: Callable[..., Any], module: Any, args: tuple, kwargs: dict) -> Any:
        __tracebackhide__ = True  # noqa: F841
        if self._exporting():  # torch.export runs the model's Python on fake tensors: nothing to watch
            return original(module, *args, **kwargs)
        output = None
        self.root = module
        model = self._model_class.get(type(module))
        if model is None:
            model = self._model_class[type(module)] = not _is_torch_loss(type(module))
        try:
            if model and self.root_forward_pre:
                self._fan_out(self.root_forward_pre, module, args)
            output = original(module, *args, **kwargs)
            return output
        except Exception as exc:
            self._raised(module, args, exc)
            raise
        finally:
            try:
                if model and self.root_forward_post:
                    self._fan_out(self.root_forward_post, module, args, output)
            finally:
                self.root = None

    def _raised(self, module: Any, args: tuple, exc: Exception) -> None:
        __tracebackhide__ = True  # noqa: F841
        if self.module_raised:
            self._fan_out(self.module_raised, module, args, exc)

    # -- optimizer steps and registrations -------------------------------------------------

    def _on_step_pre(self, optimizer: Any, args: tuple, kwargs: dict) -> None:
        self.steps_begun += 1
        self._fan_out(self.step_pre, optimizer)

    def _on_step_post(self, optimizer: Any, args: tuple, kwargs: dict) -> None:
        self.steps_done += 1
        self._fan_out(self.step_post, optimizer)

    def _on_parameter(self, module: Any, name: str, param: Any) -> None:
        self._fan_out(self.parameter_registered, module, name, param)

    def _on_module(self, module: Any, name: str, submodule: Any) -> None:
        self._fan_out(self.module_registered, module, name, submodule)
