"""The stand-in device probe: a forward on fake "cuda" tensors finds GPU-only device mismatches on a CPU.

Each mismatch a GPU run would raise inside ``forward`` is reported as TS003 at
its line; every correct look-alike is silent; and the probe changes nothing the
test computes (parameters, buffers, attributes, hooks, random numbers).
"""

from __future__ import annotations

from typing import Optional

import pytest

from helpers import watch

torch = pytest.importorskip("torch")
nn = torch.nn

from pytest_trainsafe.runtime.standin_device import check_device_portable  # noqa: E402


def _line_of(cls: type, text: str) -> int:
    import inspect

    lines, start = inspect.getsourcelines(cls)
    numbers = [start + i for i, line in enumerate(lines) if text in line]
    assert len(numbers) == 1, numbers
    return numbers[0]


# -- the bugs -----------------------------------------------------------------------------


class PlainAttribute(nn.Module):
    """A tensor kept as a plain attribute: Module.to() never moves it."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(4, 4)
        self.scale = torch.ones(4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x) * self.scale  # mismatch


class CreatedWithoutDevice(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        noise = torch.zeros(x.shape[0], 4)
        return self.linear(x) + noise  # mismatch


class ConstantFromList(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(3, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x) * torch.tensor([1.0, 2.0, 3.0])  # mismatch


class HardCodedCpu(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.first = nn.Linear(4, 4)
        self.second = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.first(x).cpu()
        return self.second(h)  # mismatch


@pytest.mark.parametrize("cls", [PlainAttribute, CreatedWithoutDevice, ConstantFromList, HardCodedCpu])
def test_a_gpu_only_mismatch_in_forward_is_reported_at_its_line(cls: type) -> None:
    report = check_device_portable(cls(), torch.randn(2, 4 if cls is not ConstantFromList else 3))
    assert [(f.code, f.line) for f in report.findings] == [("TS003", _line_of(cls, "# mismatch"))]
    assert report.findings[0].path == __file__
    detail = report.findings[0].detail
    assert ("cuda:0 and cpu" in detail or "cpu and cuda:0" in detail) and report.inconclusive is None


# -- correct look-alikes --------------------------------------------------------------------


class Portable(nn.Module):
    """Everything a careful author writes: buffers, x.device, *_like, new_*, CPU scalars, tied weights."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(10, 4)
        self.linear = nn.Linear(4, 4)
        self.head = nn.Linear(4, 10, bias=False)
        self.head.weight = self.embed.weight  # tied
        self.norm = nn.BatchNorm1d(4)
        self.drop = nn.Dropout(0.5)
        self.register_buffer("scale", torch.ones(4))
        self.register_buffer("offset", torch.zeros(4), persistent=False)

    def forward(self, tokens: torch.Tensor, extra: Optional[dict] = None) -> torch.Tensor:
        h = self.norm(self.linear(self.embed(tokens)) * self.scale + self.offset)
        h = h + torch.zeros(h.shape, device=h.device) + torch.zeros_like(h) + h.new_ones(h.shape)
        h = h * torch.tensor(0.5) + torch.arange(4, device=tokens.device)  # a CPU 0-dim scalar is fine
        if extra is not None:
            h = h + extra["bias"]
        return self.head(self.drop(h))


def test_a_portable_model_is_clean() -> None:
    report = check_device_portable(Portable(), torch.tensor([1, 2, 3]), extra={"bias": torch.ones(4)})
    assert report.findings == [] and report.clean, report.inconclusive


def test_a_forward_that_needs_data_is_inconclusive_never_a_finding() -> None:
    class Branchy(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.linear = nn.Linear(4, 4)
            self.scale = torch.ones(4)  # would be a mismatch, but the branch comes first

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if x.sum() > 0:
                return self.linear(x) * self.scale
            return self.linear(x)

    report = check_device_portable(Branchy(), torch.randn(2, 4))
    assert report.findings == [] and report.inconclusive


def test_keep_on_cpu_leaves_a_keyword_argument_where_the_gpu_run_leaves_it() -> None:
    class Weighted(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.linear = nn.Linear(4, 4)

        def forward(self, x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
            return self.linear(x) * weights  # mismatch when weights stay on the CPU

    x, weights = torch.randn(2, 4), torch.ones(4)
    assert check_device_portable(Weighted(), x, weights=weights).clean
    assert len(check_device_portable(Weighted(), x, weights=weights, keep_on_cpu={"weights"}).findings) == 1


# -- the probe changes nothing the test computes --------------------------------------------


class Caching(nn.Module):
    """Caches a tensor on first use and counts calls through a hook: side effects on the module."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(4, 4)
        self.norm = nn.BatchNorm1d(4)
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not hasattr(self, "cache"):
            self.cache = torch.ones(4, device=x.device)
        self.calls += 1
        return self.norm(self.linear(x)) * self.cache


def test_the_probe_leaves_model_hooks_rng_and_values_untouched() -> None:
    torch.manual_seed(0)
    model, x = Caching(), torch.randn(3, 4)
    seen = []
    model.register_forward_hook(lambda module, args, output: seen.append(output))
    parameters = {name: (p, p.detach().clone()) for name, p in model.named_parameters()}
    buffers = {name: b.clone() for name, b in model.named_buffers()}
    rng = torch.random.get_rng_state()

    assert check_device_portable(model, x).clean

    assert torch.equal(torch.random.get_rng_state(), rng)
    assert seen == [] and model.calls == 0 and not hasattr(model, "cache")
    for name, (parameter, value) in parameters.items():
        assert dict(model.named_parameters())[name] is parameter and torch.equal(parameter, value)
    assert all(torch.equal(b, buffers[name]) for name, b in model.named_buffers())
    model(x)  # the real model still runs, on real tensors
    assert len(seen) == 1 and type(seen[0]) is torch.Tensor and model.calls == 1


def test_the_probe_is_invisible_to_the_runtime_checks() -> None:
    findings = watch(lambda: check_device_portable(Portable(), torch.tensor([1, 2]), extra={"bias": torch.ones(4)}))
    assert findings == []


def test_keep_on_cpu_takes_positions_too() -> None:
    class Weighted(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.linear = nn.Linear(4, 4)

        def forward(self, x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
            return self.linear(x) * weights

    x, weights = torch.randn(2, 4), torch.ones(4)
    assert check_device_portable(Weighted(), x, weights).clean
    assert len(check_device_portable(Weighted(), x, weights, keep_on_cpu={1}).findings) == 1


def test_the_reference_models_are_portable() -> None:
    from pytest_trainsafe.loops import cnn, mlp

    assert check_device_portable(mlp.MLP(), torch.randn(2, mlp.FEATURES)).clean
    assert check_device_portable(cnn.SmallCNN(), torch.randn(2, *cnn.IMAGE_SIZE)).clean


def test_an_op_that_asks_the_cuda_runtime_is_inconclusive_and_warns_nothing() -> None:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        report = check_device_portable(nn.LSTM(4, 8, batch_first=True), torch.randn(2, 5, 4))
    assert report.findings == []
    assert report.inconclusive or report.clean  # cuDNN's RNN path needs a driver; a GPU machine may run it


class LazyOnCpu(nn.Module):
    """A layer built on first call, after model.to(device): on the CPU, under a GPU model."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if "proj" not in self._modules:
            self.proj = nn.Linear(4, 2)
        return self.proj(x)  # mismatch


def test_a_layer_built_lazily_on_the_cpu_is_a_gpu_only_mismatch() -> None:
    report = check_device_portable(LazyOnCpu(), torch.randn(3, 4))
    assert [(f.code, f.line) for f in report.findings] == [("TS003", _line_of(LazyOnCpu, "# mismatch"))]


def test_a_layer_built_lazily_in_forward_is_not_left_behind_with_fake_weights() -> None:
    class Lazy(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if "proj" not in self._modules:
                self.proj = nn.Linear(4, 2, device=x.device)
                self.register_buffer("seen", torch.zeros(1, device=x.device))
            return self.proj(x)

    model, x = Lazy(), torch.randn(3, 4)
    assert check_device_portable(model, x).clean
    assert dict(model.named_modules()) == {"": model} and dict(model.named_buffers()) == {}
    assert type(model(x)) is torch.Tensor and type(model.proj.weight.data) is torch.Tensor
