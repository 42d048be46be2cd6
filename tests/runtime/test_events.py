"""The shared event sources: module calls seen through one ``nn.Module._call_impl`` wrapper.

The wrapper must see what the global forward hooks it replaced saw (the outermost
call, every call of a subscribed class), stay out of what the user computes and
raises, and step aside while torch.compile traces.
"""

from __future__ import annotations

from typing import Any, List, Tuple

import pytest
import torch
from torch import nn

from helpers import regression_batches, tiny_mlp
from pytest_trainsafe.runtime.events import Events
from pytest_trainsafe.runtime.hooks import HookSet


class Recorder:
    def __init__(self) -> None:
        self.pre: List[str] = []
        self.post: List[Tuple[str, Any]] = []
        self.classes: List[type] = []
        self.calls: List[str] = []
        self.roots_seen_inside: List[Any] = []

    def subscribe(self, events: Events, per_call_for: type = nn.Linear) -> None:
        events.root_forward_pre.append(lambda module, args: self.pre.append(type(module).__name__))
        events.root_forward_post.append(lambda module, args, output: self.post.append((type(module).__name__,
                                                                                      output)))

        def on_class(cls: type) -> Any:
            self.classes.append(cls)
            if issubclass(cls, per_call_for):
                return lambda module, args: (self.calls.append(type(module).__name__),
                                             self.roots_seen_inside.append(events.root))
            return None

        events.module_class.append(on_class)


def watched(recorder: Recorder, per_call_for: type = nn.Linear) -> Tuple[Events, HookSet]:
    events, hooks = Events(), HookSet()
    recorder.subscribe(events, per_call_for)
    events.install(hooks)
    return events, hooks


def test_only_the_outermost_call_is_a_root_and_classes_are_dispatched_once() -> None:
    recorder = Recorder()
    model = tiny_mlp()
    events, hooks = watched(recorder)
    try:
        model(torch.randn(2, 4))
        model(torch.randn(2, 4))
    finally:
        hooks.remove_all()
    assert recorder.pre == ["Sequential", "Sequential"]
    assert [name for name, _ in recorder.post] == ["Sequential", "Sequential"]
    assert recorder.classes == [nn.Sequential, nn.Linear, nn.ReLU]  # each class once, in order of first call
    assert recorder.calls == ["Linear", "Linear"] * 2  # every call of a subscribed class
    assert recorder.roots_seen_inside == [model] * 4
    assert events.root is None


def test_a_failing_call_reaches_the_user_unchanged_and_resets_the_root() -> None:
    class Broken(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            raise KeyError("from the user's forward")

    recorder = Recorder()
    events, hooks = watched(recorder)
    try:
        with pytest.raises(KeyError, match="from the user's forward"):
            Broken()(torch.randn(1))
    finally:
        hooks.remove_all()
    assert recorder.post == [("Broken", None)]  # post subscribers still ran, as always_call hooks do
    assert events.root is None


def test_a_broken_subscriber_is_recorded_and_never_reaches_the_user() -> None:
    events, hooks = Events(), HookSet()
    events.module_class.append(lambda cls: lambda module, args: 1 / 0)
    events.root_forward_post.append(lambda module, args, output: [][1])
    events.install(hooks)
    try:
        out = nn.Linear(2, 1)(torch.ones(1, 2))
    finally:
        hooks.remove_all()
    assert out.shape == (1, 1)
    assert any("ZeroDivisionError" in error for error in events.errors)
    assert any("IndexError" in error for error in events.errors)


class SmoothedLoss(nn.Module):
    """A loss written by the user: it may build layers or depend on the mode, so it is a root like a model."""

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return nn.functional.cross_entropy(logits, target, label_smoothing=0.1)


def test_a_torch_loss_called_outside_the_model_is_no_root_event() -> None:
    recorder = Recorder()
    logits, target = torch.randn(4, 3), torch.tensor([0, 1, 2, 0])
    events, hooks = watched(recorder, per_call_for=nn.Module)
    try:
        nn.CrossEntropyLoss()(logits, target)
        SmoothedLoss()(logits, target)
    finally:
        hooks.remove_all()
    assert recorder.pre == ["SmoothedLoss"]
    assert [name for name, _ in recorder.post] == ["SmoothedLoss"]
    assert recorder.calls == ["CrossEntropyLoss", "SmoothedLoss"]  # still seen per class


def test_the_wrapper_is_removed_with_the_tests_hooks() -> None:
    original = vars(nn.Module)["_call_impl"]
    events, hooks = watched(Recorder())
    assert vars(nn.Module)["_call_impl"] is not original
    hooks.remove_all()
    assert vars(nn.Module)["_call_impl"] is original


def _train_compiled(in_place: bool, steps: int = 3) -> List[float]:
    torch.manual_seed(0)
    model = tiny_mlp()
    if in_place:  # Module.compile(): __call__ runs the compiled call directly, never _call_impl
        model.compile(backend="eager")
        compiled = model
    else:
        compiled = torch.compile(model, backend="eager")
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    losses = []
    for x, y in regression_batches(n=steps):
        optimizer.zero_grad()
        loss = nn.functional.mse_loss(compiled(x), y)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


@pytest.mark.parametrize("in_place", [False, True], ids=["torch.compile(model)", "model.compile()"])
def test_a_compiled_model_trains_the_same_watched_and_the_checks_stay_out_of_its_trace(in_place: bool) -> None:
    from pytest_trainsafe.runtime.monitor import Monitor, runtime_checks

    torch._dynamo.reset()
    expected = _train_compiled(in_place)
    torch._dynamo.reset()
    monitor = Monitor(list(runtime_checks()))
    monitor.start()
    try:
        losses = _train_compiled(in_place)
    finally:
        with _no_warning():
            monitor.stop()
        torch._dynamo.reset()
    assert losses == expected
    assert monitor.findings == []
    assert monitor.events.errors == []


class _no_warning:
    """Fail if the monitor warns that a check broke (its internal errors are surfaced as a RuntimeWarning)."""

    def __enter__(self) -> None:
        import warnings

        self._catcher = warnings.catch_warnings(record=True)
        self._caught = self._catcher.__enter__()
        warnings.simplefilter("always")

    def __exit__(self, *exc: object) -> None:
        self._catcher.__exit__(*exc)
        assert not [w for w in self._caught if "trainsafe" in str(w.message)]


def test_step_counters_need_no_subscriber_and_stop_with_the_tests_hooks() -> None:
    from torch.optim import optimizer as torch_optimizer

    model = tiny_mlp()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    events, hooks = Events(), HookSet()
    events.count_steps()
    events.install(hooks)
    try:
        for x, y in regression_batches(n=3):
            nn.functional.mse_loss(model(x), y).backward()
            optimizer.step()
        assert (events.steps_begun, events.steps_done) == (3, 3)
    finally:
        hooks.remove_all()
    assert not torch_optimizer._global_optimizer_pre_hooks and not torch_optimizer._global_optimizer_post_hooks
    optimizer.step()
    assert events.steps_done == 3


def test_torch_export_of_a_watched_model_is_not_observed() -> None:
    """torch.export runs the model's Python on fake tensors: the wrapper only forwards, no check sees them."""
    from helpers import watch_outcome

    model = tiny_mlp()
    recorder = Recorder()
    events, hooks = watched(recorder)
    try:
        exported = torch.export.export(model, (torch.randn(2, 4),))
    finally:
        hooks.remove_all()
    assert recorder.pre == [] and recorder.post == []
    x = torch.randn(2, 4)
    assert torch.equal(exported.module()(x), model(x))
    findings, error = watch_outcome(lambda: torch.export.export(model, (x,)))
    assert error is None and findings == []
