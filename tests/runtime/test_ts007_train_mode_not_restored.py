"""TS007 at runtime: training steps on a model left in eval mode, and the legitimate look-alikes.

Each scenario marks the line the finding must point at (the ``eval()`` never undone) with
``# TS007 here``.
"""

from __future__ import annotations

from typing import Callable

import pytest
import torch
from torch import nn

from conftest import devices
from helpers import classification_batches, finding_lines, found_lines, marked_lines, watch

CODES = ["TS007"]


def _model(device: str = "cpu", dropout: bool = True) -> nn.Module:
    torch.manual_seed(0)
    middle = nn.Dropout(0.3) if dropout else nn.Identity()
    return nn.Sequential(nn.Linear(4, 16), nn.BatchNorm1d(16) if dropout else nn.Identity(), nn.ReLU(), middle,
                         nn.Linear(16, 2)).to(device)


def _step(model: nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor) -> None:
    optimizer.zero_grad()
    nn.functional.cross_entropy(model(x), y).backward()
    optimizer.step()


def _validate(model: nn.Module, data) -> float:
    model.eval()  # TS007 here
    with torch.no_grad():
        return sum((model(x).argmax(1) == y).sum().item() for x, y in data)


# -- the bug ---------------------------------------------------------------------------


def train_once_then_eval_every_epoch(device: str) -> None:
    model = _model(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    data = classification_batches(device)
    model.train()
    for epoch in range(2):
        for x, y in data:
            _step(model, optimizer, x, y)
        model.eval()  # TS007 here
        with torch.no_grad():
            [model(x) for x, _ in data]


@pytest.mark.parametrize("device", devices())
def test_the_second_epoch_in_eval_mode_is_reported_at_the_eval_call(device: str) -> None:
    findings = watch(train_once_then_eval_every_epoch, device, codes=CODES)
    assert finding_lines(findings) == marked_lines(train_once_then_eval_every_epoch, codes=CODES)
    assert "eval mode" in findings[0].message


def validation_helper_leaves_eval_mode() -> None:
    model = _model()
    optimizer = torch.optim.Adam(model.parameters())
    data = classification_batches()
    for epoch in range(2):
        for x, y in data:
            _step(model, optimizer, x, y)
        _validate(model, data)


def test_an_eval_inside_a_helper_is_reported_inside_it() -> None:
    assert found_lines(validation_helper_leaves_eval_mode, codes=CODES) == marked_lines(_validate, codes=CODES)


def eval_called_on_a_wrapper() -> None:
    model = _model()
    wrapper = nn.ModuleDict({"model": model})
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    wrapper.eval()  # TS007 here
    for x, y in classification_batches():
        _step(model, optimizer, x, y)


def test_an_eval_on_an_enclosing_module_is_found() -> None:
    assert found_lines(eval_called_on_a_wrapper, codes=CODES) == marked_lines(eval_called_on_a_wrapper, codes=CODES)


def model_built_in_eval_mode_elsewhere() -> None:
    model = _model()
    model.training = False
    for module in model.modules():
        module.training = False
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    for x, y in classification_batches():
        _step(model, optimizer, x, y)


def test_without_an_eval_call_the_step_is_reported() -> None:
    findings = watch(model_built_in_eval_mode_elsewhere, codes=CODES)
    assert len(findings) == 1 and "optimizer.step()" in open(findings[0].path).read().splitlines()[
        findings[0].line - 1]


# -- legitimate look-alikes: silent -----------------------------------------------------


def train_restored_every_epoch() -> None:
    model = _model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    data = classification_batches()
    for epoch in range(2):
        model.train()
        for x, y in data:
            _step(model, optimizer, x, y)
        _validate(model, data)


def frozen_batchnorm_submodule() -> None:
    model = _model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    model.train()
    model[1].eval()  # frozen batch-norm statistics on purpose
    for x, y in classification_batches():
        _step(model, optimizer, x, y)


def partial_training_of_the_head() -> None:
    model = _model()
    optimizer = torch.optim.SGD(model[4].parameters(), lr=0.1)
    model.eval()
    model[4].train()
    for x, y in classification_batches():
        _step(model, optimizer, x, y)


def frozen_teacher_in_eval_mode() -> None:
    teacher, student = _model(), _model()
    teacher.eval()
    teacher.requires_grad_(False)
    optimizer = torch.optim.SGD(student.parameters(), lr=0.1)
    for x, y in classification_batches():
        optimizer.zero_grad()
        loss = nn.functional.mse_loss(student(x), teacher(x)) + nn.functional.cross_entropy(student(x), y)
        loss.backward()
        optimizer.step()


def model_without_dropout_or_batchnorm() -> None:
    model = _model(dropout=False)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    model.eval()
    for x, y in classification_batches():
        _step(model, optimizer, x, y)


def eval_forward_with_grad_then_train_again() -> None:
    model = _model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    data = classification_batches()
    for x, y in data:
        model.train()
        _step(model, optimizer, x, y)
        model.eval()
        model(x)  # an evaluation forward with autograd on (TS004's business, not this rule's)


def two_models_one_in_eval_not_stepped() -> None:
    model, other = _model(), _model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    other.eval()
    for x, y in classification_batches():
        _step(model, optimizer, x, y)
        other(x)


@pytest.mark.parametrize("scenario", [
    train_restored_every_epoch, frozen_batchnorm_submodule, partial_training_of_the_head, frozen_teacher_in_eval_mode,
    model_without_dropout_or_batchnorm, eval_forward_with_grad_then_train_again, two_models_one_in_eval_not_stepped,
], ids=lambda f: f.__name__)
def test_legitimate_eval_mode_uses_are_silent(scenario: Callable) -> None:
    assert watch(scenario, codes=CODES) == []


def test_an_inline_training_loop_in_a_test_function_may_train_in_eval_mode() -> None:
    def test_overfit_one_batch_deterministically() -> None:
        model = _model()
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        model.eval()
        x, y = classification_batches()[0]
        for _ in range(3):
            _step(model, optimizer, x, y)

    assert watch(test_overfit_one_batch_deterministically, codes=CODES) == []


def linear_probe_on_a_frozen_backbone() -> None:
    torch.manual_seed(0)
    backbone = nn.Sequential(nn.Linear(4, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Dropout(0.2))
    model = nn.Sequential(backbone, nn.Linear(16, 2))
    for p in backbone.parameters():
        p.requires_grad_(False)
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    model.eval()  # MoCo-style linear classification: the frozen backbone's batch-norm stays frozen
    for x, y in classification_batches():
        _step(model, optimizer, x, y)


def test_a_linear_probe_in_eval_mode_is_silent() -> None:
    assert watch(linear_probe_on_a_frozen_backbone, codes=CODES) == []


def fine_tuning_a_head_with_dropout_in_eval_mode() -> None:
    torch.manual_seed(0)
    backbone = nn.Sequential(nn.Linear(4, 16), nn.ReLU())
    model = nn.Sequential(backbone, nn.Dropout(0.5), nn.Linear(16, 2))
    optimizer = torch.optim.SGD(model[2].parameters(), lr=0.1)
    model.eval()  # TS007 here
    for x, y in classification_batches():
        _step(model, optimizer, x, y)


def test_a_trained_head_with_dropout_left_in_eval_mode_is_reported() -> None:
    assert (found_lines(fine_tuning_a_head_with_dropout_in_eval_mode, codes=CODES)
            == marked_lines(fine_tuning_a_head_with_dropout_in_eval_mode, codes=CODES))
