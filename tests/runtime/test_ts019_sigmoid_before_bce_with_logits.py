"""TS019 at runtime: BCE-with-logits fed sigmoid outputs, and the legitimate look-alikes.

Each function marks the line the finding must point at with ``# TS019 here``.
"""

from __future__ import annotations

from typing import Callable, Tuple

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from conftest import devices
from helpers import finding_lines, found_lines, marked_lines, tiny_mlp, watch

CODES = ["TS019"]


def _batch(device: str = "cpu") -> Tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(8, 4, generator=generator).to(device)
    return x, (x[:, :1] > 0).float()


# -- the bug ---------------------------------------------------------------------------


def train_model_ending_in_sigmoid(device: str) -> None:
    model = nn.Sequential(nn.Linear(4, 1), nn.Sigmoid()).to(device)
    criterion = nn.BCEWithLogitsLoss()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = _batch(device)
    for _ in range(3):
        optimizer.zero_grad()
        loss = criterion(model(x), y)  # TS019 here
        loss.backward()
        optimizer.step()


@pytest.mark.parametrize("device", devices())
def test_a_model_ending_in_sigmoid_is_reported_at_the_loss_call(device: str) -> None:
    findings = watch(train_model_ending_in_sigmoid, device, codes=CODES)
    assert finding_lines(findings) == marked_lines(train_model_ending_in_sigmoid, codes=CODES)


def functional_with_squeeze() -> None:
    model = tiny_mlp()
    x, y = _batch()
    probs = torch.sigmoid(model(x)).squeeze(1)
    F.binary_cross_entropy_with_logits(probs, y.squeeze(1), pos_weight=torch.tensor(2.0)).backward()  # TS019 here


def test_a_squeezed_sigmoid_into_the_functional_loss_is_reported() -> None:
    assert found_lines(functional_with_squeeze, codes=CODES) == marked_lines(functional_with_squeeze, codes=CODES)


def keyword_input() -> None:
    model = tiny_mlp()
    x, y = _batch()
    loss = F.binary_cross_entropy_with_logits(target=y, input=model(x).sigmoid())  # TS019 here
    loss.backward()


def test_the_input_passed_by_keyword_is_checked() -> None:
    assert found_lines(keyword_input, codes=CODES) == marked_lines(keyword_input, codes=CODES)


# -- legitimate look-alikes: silent --------------------------------------------------------


def sigmoid_with_bce_loss() -> None:
    model = tiny_mlp()
    x, y = _batch()
    probs = torch.sigmoid(model(x))
    nn.BCELoss()(probs, y).backward()
    F.binary_cross_entropy(probs.detach(), y)


def sigmoid_for_metrics_after_the_loss() -> None:
    model = tiny_mlp()
    x, y = _batch()
    logits = model(x)
    F.binary_cross_entropy_with_logits(logits, y).backward()
    _ = ((logits.sigmoid() > 0.5).float() == y).float().mean()


def teacher_probabilities_as_targets() -> None:
    student, teacher = tiny_mlp(), tiny_mlp()
    x, _ = _batch()
    with torch.no_grad():
        targets = torch.sigmoid(teacher(x))
    F.binary_cross_entropy_with_logits(student(x), targets).backward()


def gated_model() -> None:
    torch.manual_seed(0)
    gate, head = nn.Linear(4, 1), nn.Linear(4, 1)
    x, y = _batch()
    logits = head(x) * torch.sigmoid(gate(x))
    nn.BCEWithLogitsLoss()(logits, y).backward()


def evaluation_without_grad_on_small_logits() -> None:
    model = nn.Sequential(nn.Linear(4, 1)).eval()
    with torch.no_grad():
        nn.init.constant_(model[0].weight, 0.01)
        x, y = _batch()
        F.binary_cross_entropy_with_logits(model(x) + 0.5, y)


@pytest.mark.parametrize("function", [
    sigmoid_with_bce_loss,
    sigmoid_for_metrics_after_the_loss,
    teacher_probabilities_as_targets,
    gated_model,
    evaluation_without_grad_on_small_logits,
])
def test_legitimate_look_alikes_are_silent(function: Callable) -> None:
    assert found_lines(function, codes=CODES) == set()


def test_the_wrapper_is_transparent_and_removed_after_the_test() -> None:
    original = F.binary_cross_entropy_with_logits
    x = torch.randn(4, 1, requires_grad=True)
    y = torch.ones(4, 1)
    results = []

    def run() -> None:
        assert F.binary_cross_entropy_with_logits.__wrapped__ is original
        results.append(F.binary_cross_entropy_with_logits(x, y, reduction="sum"))
        results.append(nn.BCEWithLogitsLoss(reduction="sum")(x, y))

    assert found_lines(run, codes=CODES) == set()
    assert F.binary_cross_entropy_with_logits is original
    assert all(torch.equal(r, original(x, y, reduction="sum")) for r in results)


@pytest.mark.filterwarnings("ignore::FutureWarning")
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_a_scripted_loss_module_still_scripts_while_watched() -> None:
    def run() -> None:
        loss = torch.jit.script(nn.BCEWithLogitsLoss())
        loss(torch.randn(4, 1), torch.ones(4, 1))

    assert found_lines(run, codes=CODES) == set()
