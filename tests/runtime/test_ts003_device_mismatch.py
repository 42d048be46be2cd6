"""TS003 at runtime: tensors fed to torch's modules (or optimizer state) on another device, and look-alikes.

Without a GPU, ``meta`` stands in for the second device. A module call is
looked at when it raises, and torch raises on every CPU/CUDA mix but not on
every meta/CPU one (embedding lookups): the runs wrap the call in
``try``/``except``, and the one mix meta accepts is expected only on CUDA.
Lines the finding must point at end with ``# TS003 here``.
"""

from __future__ import annotations

from typing import Callable

import pytest
import torch
from torch import nn

from conftest import devices
from helpers import finding_lines, found_lines, marked_lines, tiny_mlp, watch

CODES = ["TS003"]


def _other(device: str) -> str:
    """A second device to mismatch with ``device``: meta on a CPU-only machine, the CPU next to CUDA."""
    return "meta" if device == "cpu" else "cpu"


def _accelerator(device: str) -> str:
    """A device that is not the CPU, for a model whose forward() wrongly creates tensors on the CPU."""
    return "meta" if device == "cpu" else device


# -- the bug: modules -----------------------------------------------------------------------


def input_left_behind(device: str) -> None:
    model = tiny_mlp(outputs=3).to(_other(device))
    x = torch.randn(5, 4, device=device)
    try:
        model(x)  # TS003 here
    except RuntimeError:
        pass


def model_left_behind(device: str) -> None:
    model = tiny_mlp(outputs=3).to(device)
    x = torch.randn(5, 4).to(_other(device))
    try:
        model(x)  # TS003 here
    except RuntimeError:
        pass


def target_left_behind(device: str) -> None:
    model = tiny_mlp(outputs=3).to(_other(device))
    criterion = nn.CrossEntropyLoss()
    x, y = torch.randn(5, 4).to(_other(device)), torch.randint(0, 3, (5,), device=device)
    try:
        loss = criterion(model(x), y)  # TS003 here
        loss.backward()
    except RuntimeError:
        pass


def class_weights_left_behind(device: str) -> None:
    criterion = nn.CrossEntropyLoss(weight=torch.ones(3, device=device))
    logits, y = torch.randn(5, 3).to(_other(device)), torch.randint(0, 3, (5,)).to(_other(device))
    try:
        criterion(logits, y)  # TS003 here
    except RuntimeError:
        pass


class Tagger(nn.Module):
    """The classic: an LSTM's initial state created in forward() on the default (CPU) device."""

    def __init__(self) -> None:
        super().__init__()
        self.lstm = nn.LSTM(4, 8, batch_first=True)
        self.head = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h0 = torch.zeros(1, x.size(0), 8)
        c0 = torch.zeros(1, x.size(0), 8)
        out, _ = self.lstm(x, (h0, c0))  # TS003 here
        return self.head(out[:, -1])


def initial_state_left_behind(device: str) -> None:
    model = Tagger().to(_accelerator(device))
    try:
        model(torch.randn(2, 5, 4).to(_accelerator(device)))
    except RuntimeError:
        pass


class PositionalModel(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.tokens = nn.Embedding(10, 4)
        self.positions = nn.Embedding(16, 4)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return self.tokens(idx) + self.positions(torch.arange(idx.size(1)))  # TS003 here


def positions_left_behind(device: str) -> None:
    model = PositionalModel().to(_accelerator(device))
    try:  # embedding lookups do not check devices on meta: torch raises here on CUDA only
        model(torch.randint(0, 10, (2, 6)).to(_accelerator(device)))
    except RuntimeError:
        pass


BUGS = [input_left_behind, model_left_behind, target_left_behind, class_weights_left_behind,
        initial_state_left_behind, positions_left_behind]


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("bug", BUGS, ids=lambda f: f.__name__)
def test_mismatch_is_reported_at_the_call(bug: Callable, device: str) -> None:
    if bug is positions_left_behind and device == "cpu":
        pytest.skip("meta embedding lookups accept CPU indices: nothing raises (see the test below)")
    target = bug if bug not in (initial_state_left_behind, positions_left_behind) else \
        (Tagger.forward if bug is initial_state_left_behind else PositionalModel.forward)
    assert found_lines(bug, device, codes=CODES) == marked_lines(target, codes=CODES)


def test_a_mix_that_torch_computes_is_not_reported() -> None:
    """Only a call that raises is looked at: meta weights looked up with CPU indices compute, so no finding."""
    model = PositionalModel().to("meta")
    findings = watch(lambda device: model(torch.randint(0, 10, (2, 6)).to("meta")), "cpu", codes=CODES)
    assert findings == []


def test_a_call_that_raises_for_another_reason_is_not_reported() -> None:
    def wrong_shape(device: str) -> None:
        with pytest.raises(RuntimeError):
            nn.Linear(4, 2).to(device)(torch.randn(3, 5, device=device))

    assert watch(wrong_shape, "cpu", codes=CODES) == []


def test_a_mismatch_inside_nested_torch_modules_names_the_innermost() -> None:
    """The module whose arguments are wrong, by its path; the containers the error passes through add nothing."""
    layer = nn.TransformerEncoderLayer(d_model=4, nhead=1, dim_feedforward=8, dropout=0.0).to("meta")

    def run(device: str) -> None:
        with pytest.raises(RuntimeError):
            nn.TransformerEncoder(layer, num_layers=1, enable_nested_tensor=False)(torch.randn(3, 2, 4))

    (finding,) = watch(run, "cpu", codes=CODES)
    assert finding.detail == ("MultiheadAttention (TransformerEncoder.layers.0.self_attn) got argument 0 on cpu, "
                              "its parameters are on meta")


def test_message_names_module_argument_and_both_devices() -> None:
    (finding,) = watch(input_left_behind, "cpu", codes=CODES)
    assert finding.code == "TS003"
    assert finding.detail == "Linear (Sequential.0) got argument 0 on cpu, its parameters are on meta"
    (finding,) = watch(model_left_behind, "cpu", codes=CODES)
    assert finding.detail == "Linear (Sequential.0) got argument 0 on meta, its parameters are on cpu"


def test_message_for_a_loss_compares_its_arguments() -> None:
    (finding,) = watch(target_left_behind, "cpu", codes=CODES)
    assert finding.detail == "CrossEntropyLoss got argument 1 on cpu, argument 0 is on meta"
    (finding,) = watch(class_weights_left_behind, "cpu", codes=CODES)
    assert finding.detail == "CrossEntropyLoss got argument 0 on meta, its buffers are on cpu"


def test_message_for_a_tuple_argument_names_the_submodule() -> None:
    (finding,) = watch(initial_state_left_behind, "cpu", codes=CODES)
    assert finding.detail == "LSTM (Tagger.lstm) got argument 1 on cpu, its parameters are on meta"


def test_the_finding_is_recorded_before_torchs_error() -> None:
    model = nn.Linear(4, 2).to("meta")

    def run() -> None:
        model(torch.randn(3, 4))

    from pytest_trainsafe.runtime.monitor import Monitor

    monitor = Monitor(CODES)
    monitor.start()
    try:
        with pytest.raises(RuntimeError):
            run()
        assert [f.code for f in monitor.findings] == ["TS003"]
    finally:
        monitor.stop()


# -- the bug: optimizer state ---------------------------------------------------------------


def optimizer_state_moved(device: str) -> None:
    model = tiny_mlp(outputs=3).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    x, y = torch.randn(8, 4, device=device), torch.randint(0, 3, (8,), device=device)
    nn.functional.cross_entropy(model(x), y).backward()
    optimizer.step()
    optimizer.zero_grad()
    # A checkpoint's optimizer state moved with a hand-written helper, the model left where it was.
    for state in optimizer.state.values():
        for key, value in state.items():
            if torch.is_tensor(value) and value.dim() > 0:
                state[key] = value.to(_other(device))
    nn.functional.cross_entropy(model(x), y).backward()
    try:
        optimizer.step()  # TS003 here
    except RuntimeError:
        pass


@pytest.mark.parametrize("device", devices())
def test_optimizer_state_on_another_device_is_reported_at_step(device: str) -> None:
    findings = watch(optimizer_state_moved, device, codes=CODES)
    assert finding_lines(findings) == marked_lines(optimizer_state_moved, codes=CODES)
    assert findings[0].detail.startswith("Adam state 'exp_avg' of a 8x4 parameter is on ")


# -- legitimate look-alikes: silent ---------------------------------------------------------


def train_on_one_device(device: str) -> None:
    model = tiny_mlp(outputs=3).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    criterion = nn.CrossEntropyLoss(weight=torch.ones(3, device=device))
    for _ in range(3):
        x, y = torch.randn(8, 4, device=device), torch.randint(0, 3, (8,), device=device)
        optimizer.zero_grad()
        criterion(model(x), y).backward()
        optimizer.step()


class MovesItsInput(nn.Module):
    """A custom module that moves what it is given: custom classes are never checked."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.randn(4, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.to(self.w.device) @ self.w


def custom_module_moves_input(device: str) -> None:
    model = MovesItsInput().to(_other(device))
    model(torch.randn(3, 4, device=device))


class Scatter(nn.Module):
    """A DataParallel-like wrapper: moves the batch to its inner module's device."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x.to(next(self.inner.parameters()).device))


def wrapper_moves_input(device: str) -> None:
    Scatter(tiny_mlp(outputs=3).to(_other(device)))(torch.randn(3, 4, device=device))


def data_parallel_on_cpu(device: str) -> None:
    model = nn.DataParallel(tiny_mlp(outputs=3).to(device))
    model(torch.randn(3, 4, device=device))


def cpu_scalars_next_to_other_devices(device: str) -> None:
    other = _other(device)
    nn.MSELoss()(torch.randn(()).to(other), torch.tensor(1.0))
    nn.L1Loss()(torch.randn(()).to(other), torch.tensor(0.5))


def parameter_free_modules_on_any_device(device: str) -> None:
    other = _other(device)
    nn.ReLU()(torch.randn(3).to(other))
    nn.Dropout(0.1)(torch.randn(3, device=device))
    nn.Sequential(nn.ReLU(), nn.Flatten())(torch.randn(2, 3).to(other))
    nn.MSELoss()(torch.randn(3).to(other), torch.randn(3).to(other))


def packed_sequence_keeps_batch_sizes_on_cpu(device: str) -> None:
    from torch.nn.utils.rnn import pack_padded_sequence

    other = _other(device)
    lstm = nn.LSTM(4, 8, batch_first=True).to(other)
    packed = pack_padded_sequence(torch.randn(2, 5, 4).to(other), torch.tensor([5, 3]), batch_first=True)
    assert packed.batch_sizes.device.type == "cpu"
    lstm(packed)


def ctc_lengths_on_cpu(device: str) -> None:
    other = _other(device)
    log_probs = torch.randn(10, 2, 5).log_softmax(2).to(other)
    targets = torch.randint(1, 5, (2, 4))
    try:  # no meta kernel for CTC: only the absence of a finding matters here
        nn.CTCLoss()(log_probs, targets, torch.tensor([10, 10]), torch.tensor([4, 4]))
    except (RuntimeError, NotImplementedError):
        pass


def offloading_hook_replaces_forward(device: str) -> None:
    other = _other(device)
    layer = nn.Linear(4, 2).to(other)
    original = layer.forward
    layer.forward = lambda x: original(x.to(other))  # what accelerate's AlignDevicesHook does, in short
    layer(torch.randn(3, 4, device=device))


def lazy_module_before_first_forward(device: str) -> None:
    model = nn.Sequential(nn.LazyLinear(3), nn.ReLU()).to(device)
    model(torch.randn(2, 4, device=device))


def adam_step_counter_stays_on_cpu(device: str) -> None:
    model = nn.Linear(3, 2).to(_other(device))
    optimizer = torch.optim.Adam(model.parameters())
    for _ in range(2):
        model.weight.grad = torch.zeros(2, 3, device=_other(device))
        model.bias.grad = torch.zeros(2, device=_other(device))
        optimizer.step()
    assert optimizer.state[model.weight]["step"].device.type == "cpu"


class OffloadingOptimizer(torch.optim.Optimizer):
    """A third-party optimizer that keeps its state on the CPU on purpose."""

    def __init__(self, params) -> None:
        super().__init__(params, {"lr": 0.1})

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for param in group["params"]:
                state = self.state[param]
                if "cpu_copy" not in state:
                    state["cpu_copy"] = torch.zeros(param.shape)


def third_party_optimizer_offloads_state(device: str) -> None:
    model = nn.Linear(3, 2).to(_other(device))
    optimizer = OffloadingOptimizer(model.parameters())
    optimizer.step()
    optimizer.step()


def torchvision_model_on_cpu(device: str) -> None:
    torchvision = pytest.importorskip("torchvision")
    model = torchvision.models.resnet18(num_classes=4).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x, y = torch.randn(2, 3, 32, 32, device=device), torch.tensor([0, 3], device=device)
    for _ in range(2):
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        model(x)


LOOK_ALIKES = [train_on_one_device, custom_module_moves_input, wrapper_moves_input, data_parallel_on_cpu,
               cpu_scalars_next_to_other_devices, parameter_free_modules_on_any_device,
               packed_sequence_keeps_batch_sizes_on_cpu, ctc_lengths_on_cpu, offloading_hook_replaces_forward,
               lazy_module_before_first_forward, adam_step_counter_stays_on_cpu,
               third_party_optimizer_offloads_state, torchvision_model_on_cpu]


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("look_alike", LOOK_ALIKES, ids=lambda f: f.__name__)
def test_look_alike_is_silent(look_alike: Callable, device: str) -> None:
    assert watch(look_alike, device, codes=CODES) == []


def test_hooks_are_gone_after_the_run() -> None:
    from torch.nn.modules import module as torch_module
    from torch.optim import optimizer as torch_optimizer

    before = (len(torch_module._global_forward_pre_hooks), len(torch_optimizer._global_optimizer_pre_hooks))
    watch(input_left_behind, "cpu", codes=CODES)
    after = (len(torch_module._global_forward_pre_hooks), len(torch_optimizer._global_optimizer_pre_hooks))
    assert after == before
