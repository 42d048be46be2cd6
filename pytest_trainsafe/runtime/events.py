"""Fan-out of torch's global hooks to the checks that subscribed to them.

Each torch hook is registered at most once per test, however many checks
listen, so a module call or an optimizer step costs one Python call per hook
kind plus one per subscriber. Subscribers must do O(1) work and return None:
a non-None return from a torch hook would change the user's computation.
"""

from __future__ import annotations

from typing import Any, Callable, List

from .hooks import HookSet

ForwardPre = Callable[[Any, tuple], None]
ForwardPost = Callable[[Any, tuple, Any], None]
StepHook = Callable[[Any], None]
Registration = Callable[[Any, str, Any], None]


class Events:
    """Subscriber lists filled by checks in ``install``; torch hooks installed by :meth:`install`."""

    def __init__(self) -> None:
        self.forward_pre: List[ForwardPre] = []
        self.forward_post: List[ForwardPost] = []
        #: Called only for the outermost model call (``depth == 1``): most checks care about
        #: "the model was called", not about each of its layers, and this skips the rest.
        self.root_forward_pre: List[ForwardPre] = []
        self.root_forward_post: List[ForwardPost] = []
        self.step_pre: List[StepHook] = []
        self.step_post: List[StepHook] = []
        self.parameter_registered: List[Registration] = []
        self.module_registered: List[Registration] = []
        self.track_depth = False
        #: How many module forwards are running right now (0 outside any model call).
        self.depth = 0
        #: Errors raised by subscribers: swallowed so that a bug in a check never
        #: reaches the user's code, and surfaced by the monitor after the test.
        self.errors: List[str] = []

    def _fan_out(self, subscribers: list, *args: Any) -> None:
        for subscriber in subscribers:
            try:
                subscriber(*args)
            except Exception as exc:
                owner = getattr(getattr(subscriber, "__self__", None), "CODE", "trainsafe")
                if len(self.errors) < 10:
                    self.errors.append(f"{owner}: {type(exc).__name__}: {exc}")

    def install(self, hooks: HookSet) -> None:
        from torch.nn.modules import module as torch_module
        from torch.optim import optimizer as torch_optimizer

        if self.forward_pre or self.forward_post or self.root_forward_pre or self.root_forward_post \
                or self.track_depth:
            hooks.add(torch_module.register_module_forward_pre_hook(self._on_forward_pre))
            hooks.add(torch_module.register_module_forward_hook(self._on_forward, always_call=True))
        if self.step_pre:
            hooks.add(torch_optimizer.register_optimizer_step_pre_hook(self._on_step_pre))
        if self.step_post:
            hooks.add(torch_optimizer.register_optimizer_step_post_hook(self._on_step_post))
        if self.parameter_registered:
            hooks.add(torch_module.register_module_parameter_registration_hook(self._on_parameter))
        if self.module_registered:
            hooks.add(torch_module.register_module_module_registration_hook(self._on_module))

    def _on_forward_pre(self, module: Any, args: tuple) -> None:
        self.depth += 1
        if self.depth == 1 and self.root_forward_pre:
            self._fan_out(self.root_forward_pre, module, args)
        if self.forward_pre:
            self._fan_out(self.forward_pre, module, args)

    def _on_forward(self, module: Any, args: tuple, output: Any) -> None:
        try:
            if self.forward_post:
                self._fan_out(self.forward_post, module, args, output)
            if self.depth == 1 and self.root_forward_post:
                self._fan_out(self.root_forward_post, module, args, output)
        finally:
            self.depth -= 1

    def _on_step_pre(self, optimizer: Any, args: tuple, kwargs: dict) -> None:
        self._fan_out(self.step_pre, optimizer)

    def _on_step_post(self, optimizer: Any, args: tuple, kwargs: dict) -> None:
        self._fan_out(self.step_post, optimizer)

    def _on_parameter(self, module: Any, name: str, param: Any) -> None:
        self._fan_out(self.parameter_registered, module, name, param)

    def _on_module(self, module: Any, name: str, submodule: Any) -> None:
        self._fan_out(self.module_registered, module, name, submodule)
