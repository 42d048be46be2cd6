"""TS002 at runtime: layers with parameters constructed inside forward(), and every legitimate look-alike.

Each buggy model marks the line the finding must point at with ``# TS002 here``.
"""

from __future__ import annotations

import copy
import threading
from typing import Dict, Iterator, List, Optional

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from conftest import devices
from helpers import finding_lines, found_lines, marked_lines, single_thread, watch

CODES = ["TS002"]


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """Tiny models run fastest on one thread, above all on a shared, busy machine."""
    with single_thread():
        yield


def _train(model: nn.Module, steps: int = 3, dim: int = 4, device: str = "cpu") -> None:
    """A small training loop; the optimizer is built after a first call so lazy layers exist by then."""
    torch.manual_seed(0)
    model.to(device)
    x, y = torch.randn(8, dim, device=device), torch.randn(8, 2, device=device)
    with torch.no_grad():
        model(x)
    # A buggy model may own no parameter at all: its layers live only inside forward().
    optimizer = torch.optim.SGD(list(model.parameters()) or [torch.zeros(1, requires_grad=True)], lr=0.01)
    for _ in range(steps):
        optimizer.zero_grad()
        F.mse_loss(model(x), y).backward()
        optimizer.step()


# -- the bug ---------------------------------------------------------------------------


class ThrowAway(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.Linear(4, 2).to(x.device)(x)  # TS002 here


class RecreatedEveryCall(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.fc = nn.Linear(4, 2).to(x.device)  # TS002 here
        return self.fc(x)


class InsideSequential(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        head = nn.Sequential(
            nn.Linear(4, 8),  # TS002 here
            nn.ReLU(),
            nn.Linear(8, 2),  # TS002 here
        )
        return head.to(x.device)(x)


class Block(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.a = nn.Linear(dim, dim)
        self.b = nn.Linear(dim, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(torch.relu(self.a(x)))


class UserBlockInForward(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return Block(4).to(x.device)(x)  # TS002 here


class BuiltByHelper(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._head(x.shape[-1]).to(x.device)(x)

    def _head(self, dim: int) -> nn.Module:
        return nn.Linear(dim, 2)  # TS002 here


class ParameterEveryCall(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.scale = nn.Parameter(torch.ones(2, device=x.device))  # TS002 here
        return self.fc(x) * self.scale


class RegisteredEveryCall(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.register_parameter("shift", nn.Parameter(torch.zeros(2, device=x.device)))  # TS002 here
        return self.fc(x) + self.shift


class LazyThrowAway(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.LazyLinear(2).to(x.device)(x)  # TS002 here


class RecurrentInForward(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = nn.GRU(4, 2, batch_first=True).to(x.device)(x.unsqueeze(1))  # TS002 here
        return out.squeeze(1)


class Outer(nn.Module):
    """The re-creating module is a submodule: the finding names the submodule's line."""

    def __init__(self) -> None:
        super().__init__()
        self.inner = RecreatedEveryCall()
        self.norm = nn.LayerNorm(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.inner(x))


@pytest.mark.parametrize("model", [
    ThrowAway, RecreatedEveryCall, InsideSequential, UserBlockInForward, BuiltByHelper, ParameterEveryCall,
    RegisteredEveryCall, LazyThrowAway, RecurrentInForward,
])
@pytest.mark.parametrize("device", devices())
def test_a_layer_built_in_forward_is_reported_at_its_construction(model: type, device: str) -> None:
    assert found_lines(_train, model(), 3, 4, device, codes=CODES) == marked_lines(model, codes=CODES)


def test_a_submodule_that_recreates_its_layer_is_reported_inside_the_submodule() -> None:
    assert found_lines(_train, Outer(), codes=CODES) == marked_lines(RecreatedEveryCall, codes=CODES)


def test_a_throwaway_layer_is_reported_after_a_single_call() -> None:
    def once() -> None:
        ThrowAway()(torch.randn(2, 4))

    findings = watch(once, codes=CODES)
    assert finding_lines(findings) == marked_lines(ThrowAway, codes=CODES)
    assert "Linear" in findings[0].message and "ThrowAway" in findings[0].message


def test_a_recreated_layer_is_reported_once_however_many_calls() -> None:
    findings = watch(_train, RecreatedEveryCall(), 10, codes=CODES)
    assert len(findings) == 1
    assert "re-created" in findings[0].message


# -- legitimate look-alikes --------------------------------------------------------------


class LazyInit(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.proj: Optional[nn.Module] = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.proj is None:
            self.proj = nn.Linear(x.shape[-1], 2).to(x.device)
        return self.proj(x)


class LazyParameter(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 2)
        self.scale: Optional[nn.Parameter] = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.scale is None:
            self.scale = nn.Parameter(torch.ones(2, device=x.device))
        return self.fc(x) * self.scale


class ConstantParameterEveryCall(nn.Module):
    """``requires_grad=False``: a constant stored as a parameter, nothing the optimizer should train."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.scale = nn.Parameter(torch.full((2,), 0.5, device=x.device), requires_grad=False)
        return self.fc(x) * self.scale


class RebuildOnShapeChange(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.proj: Optional[nn.Linear] = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.proj is None or self.proj.in_features != x.shape[-1]:
            self.proj = nn.Linear(x.shape[-1], 2)
        return self.proj(x)


class PerTaskHeads(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.heads = nn.ModuleDict()

    def forward(self, x: torch.Tensor, task: str = "a") -> torch.Tensor:
        if task not in self.heads:
            self.heads[task] = nn.Linear(x.shape[-1], 2)
        return self.heads[task](x)


class LazyModules(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.LazyConv2d(4, 3, padding=1)
        self.bn = nn.LazyBatchNorm2d()
        self.fc = nn.LazyLinear(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.bn(self.conv(x.view(-1, 1, 2, 2))))
        return self.fc(h.flatten(1))


class DryRunInInit(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(4, 8), nn.LazyLinear(2))
        self.body(torch.zeros(1, 4))  # materialise the lazy layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class ParameterFree(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = nn.ReLU()(x)
        x = nn.Dropout(0.1)(x)
        x = nn.Flatten()(x.view(-1, 1, 2, 2))
        x = nn.MaxPool1d(1)(x.unsqueeze(1)).squeeze(1)
        x = nn.Sequential(nn.Identity(), nn.GELU())(x)
        x = nn.InstanceNorm1d(1)(x.unsqueeze(1)).squeeze(1)
        x = nn.LayerNorm(4, elementwise_affine=False)(x)
        return self.fc(x)


class Functional(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(2, 4))
        self.bias = nn.Parameter(torch.zeros(2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.register_buffer("last_mean", x.mean(0).detach())
        return F.linear(F.layer_norm(x, x.shape[-1:]), self.weight, self.bias)


class MadeInInit(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = self._make_layer(4, 8)
        self.block = Block(8)

    def _make_layer(self, cin: int, cout: int) -> nn.Module:
        return nn.Sequential(nn.Linear(cin, cout), nn.BatchNorm1d(cout), nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(self.features(x))


class TiedWeights(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.encoder = nn.Linear(4, 4)
        self.decoder = nn.Linear(4, 4, bias=False)
        self.out = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.decoder.weight = self.encoder.weight  # re-tied on every call: the same Parameter
        return self.out(self.decoder(self.encoder(x)))


class CachedFrozenNet(nn.Module):
    """A frozen helper network loaded on first use and kept out of the state dict on purpose."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 2)
        self._frozen: List[nn.Module] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self._frozen:
            self._frozen.append(nn.Linear(4, 4).requires_grad_(False))
        return self.fc(self._frozen[0](x))


class DeepCopyTeacher(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.student = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        teacher = copy.deepcopy(self.student).requires_grad_(False)
        return self.student(x) + 0.0 * teacher(x)


class FunctionalCall(nn.Module):
    """MAML-style: the inner net runs with adapted weights through torch.func.functional_call."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fast: Dict[str, torch.Tensor] = {k: v * 1.0 for k, v in self.net.named_parameters()}
        return torch.func.functional_call(self.net, fast, (x,))


class FixedFilters(nn.Module):
    """Modules used as functions with known weights: a Sobel filter, a frozen projection, given weights."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 2)
        self.register_buffer("kernel", torch.tensor([[-1.0, 0.0, 1.0]]).repeat(1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        sobel = nn.Conv1d(1, 1, 3, padding=1, bias=False).to(x.device)
        sobel.weight.data = self.kernel
        frozen = nn.Linear(4, 4).to(x.device).requires_grad_(False)
        given = nn.Linear(4, 4, bias=False).to(x.device)
        given.weight = nn.Parameter(torch.eye(4, device=x.device), requires_grad=False)
        h = sobel(x.unsqueeze(1)).squeeze(1) + frozen(x) + given(x)
        return self.fc(h)


@pytest.mark.parametrize("model", [
    FixedFilters, LazyInit, LazyParameter, ConstantParameterEveryCall, RebuildOnShapeChange, PerTaskHeads, LazyModules, DryRunInInit, ParameterFree,
    Functional, MadeInInit, TiedWeights, CachedFrozenNet, DeepCopyTeacher, FunctionalCall,
])
@pytest.mark.parametrize("device", devices())
def test_legitimate_patterns_are_silent(model: type, device: str) -> None:
    assert found_lines(_train, model(), 3, 4, device, codes=CODES) == set()


def test_a_shape_change_rebuild_is_silent() -> None:
    def run() -> None:
        model = RebuildOnShapeChange()
        for dim in (4, 6, 4, 6):
            model(torch.randn(2, dim))

    assert found_lines(run, codes=CODES) == set()


def test_lazy_heads_added_per_task_are_silent() -> None:
    def run() -> None:
        model = PerTaskHeads()
        for task in ("a", "b", "c", "a", "b"):
            model(torch.randn(2, 4), task)

    assert found_lines(run, codes=CODES) == set()


def test_lazy_init_in_many_instances_is_silent() -> None:
    def run() -> None:
        for _ in range(4):  # each instance is built, called twice, and dropped
            model = LazyInit()
            model(torch.randn(2, 4))
            model(torch.randn(2, 4))

    assert found_lines(run, codes=CODES) == set()


def test_models_built_in_a_test_between_calls_are_silent() -> None:
    def run() -> None:
        for width in (4, 8):
            model = nn.Sequential(nn.Linear(4, width), nn.ReLU(), nn.Linear(width, 2))
            _train(model, steps=2)
            probe = nn.Linear(2, 1)  # built at depth 0, between forwards
            probe(model(torch.randn(2, 4)))

    assert found_lines(run, codes=CODES) == set()


def test_a_torchvision_model_is_silent() -> None:
    torchvision = pytest.importorskip("torchvision")

    def run() -> None:
        model = torchvision.models.resnet18(num_classes=10)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
        x, y = torch.randn(2, 3, 16, 16), torch.tensor([1, 2])
        for _ in range(2):
            optimizer.zero_grad()
            F.cross_entropy(model(x), y).backward()
            optimizer.step()

    assert found_lines(run, codes=CODES) == set()


def test_a_model_built_in_another_thread_during_a_forward_is_silent() -> None:
    started, release = threading.Event(), threading.Event()

    class Waits(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            started.set()
            release.wait(5)
            return x

    def run() -> None:
        worker = threading.Thread(target=Waits(), args=(torch.randn(1),))
        worker.start()
        started.wait(5)
        try:
            nn.Linear(4, 4)  # built on the main thread while the worker is inside a forward
        finally:
            release.set()
            worker.join()

    assert found_lines(run, codes=CODES) == set()


def test_a_broken_registration_does_not_break_the_user_code() -> None:
    def run() -> None:
        model = LazyInit()
        model(torch.randn(2, 4))
        with pytest.raises(KeyError):
            model.register_parameter("a.b", nn.Parameter(torch.ones(1)))

    assert found_lines(run, codes=CODES) == set()
