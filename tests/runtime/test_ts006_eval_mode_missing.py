"""TS006 at runtime: evaluation passes in train mode, and the legitimate no-grad train-mode forwards.

Each loop marks the line the finding must point at with ``# TS006 here``.
"""

from __future__ import annotations

import copy
from typing import Callable

import pytest
import torch
from torch import nn

from conftest import devices
from helpers import classification_batches, finding_lines, found_lines, marked_lines, watch

CODES = ["TS006"]


def _dropout_model(device: str = "cpu") -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Dropout(0.5), nn.Linear(16, 2)).to(device)


def _batchnorm_model(device: str = "cpu") -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 2)).to(device)


def _train(model: nn.Module, data, steps: int = 2) -> None:
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    model.train()
    for x, y in data[:steps]:
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()


def _evaluate(model: nn.Module, data) -> float:
    correct = 0
    with torch.no_grad():
        for x, y in data:
            correct += (model(x).argmax(1) == y).sum().item()  # TS006 here
    return correct


# -- the bug ---------------------------------------------------------------------------


def train_then_evaluate_in_train_mode(device: str, build: Callable) -> None:
    model = build(device)
    data = classification_batches(device)
    for epoch in range(2):
        _train(model, data)
        _evaluate(model, data)


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("build", [_dropout_model, _batchnorm_model], ids=["dropout", "batchnorm"])
def test_evaluating_a_trained_model_in_train_mode_is_reported_at_the_model_call(device: str, build) -> None:
    findings = watch(train_then_evaluate_in_train_mode, device, build, codes=CODES)
    assert finding_lines(findings) == marked_lines(_evaluate, codes=CODES)
    assert "train mode" in findings[0].message


def evaluate_under_inference_mode() -> None:
    model = _dropout_model()
    data = classification_batches()
    _train(model, data)
    with torch.inference_mode():
        for x, _ in data:
            model(x)  # TS006 here


def test_inference_mode_counts_as_evaluation() -> None:
    assert (found_lines(evaluate_under_inference_mode, codes=CODES)
            == marked_lines(evaluate_under_inference_mode, codes=CODES))


def trained_through_a_wrapper_then_evaluated() -> None:
    model = _dropout_model()
    wrapper = nn.Sequential(model)
    data = classification_batches()
    _train(wrapper, data)  # the root of training is the wrapper; model's parameters hold gradients
    with torch.no_grad():
        for x, _ in data:
            model(x)  # TS006 here


def test_a_model_trained_inside_a_wrapper_is_recognised_by_its_gradients() -> None:
    assert (found_lines(trained_through_a_wrapper_then_evaluated, codes=CODES)
            == marked_lines(trained_through_a_wrapper_then_evaluated, codes=CODES))


# -- legitimate look-alikes: silent -----------------------------------------------------


def evaluate_in_eval_mode() -> None:
    model = _dropout_model()
    data = classification_batches()
    _train(model, data)
    model.eval()
    _evaluate(model, data)


def evaluate_a_model_without_dropout_or_batchnorm() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    data = classification_batches()
    _train(model, data)
    _evaluate(model, data)


def evaluate_with_dropout_disabled() -> None:
    model = _dropout_model()
    data = classification_batches()
    _train(model, data)
    model[2].p = 0.0
    _evaluate(model, data)


def untrained_forwards_in_a_unit_test() -> None:
    model = _dropout_model()
    with torch.no_grad():
        for batch in (1, 2, 4):
            assert model(torch.randn(batch, 4)).shape == (batch, 2)


def a_single_no_grad_forward_after_training() -> None:
    model = _dropout_model()
    data = classification_batches()
    _train(model, data)
    with torch.no_grad():
        model(data[0][0])


def mean_teacher() -> None:
    student = _dropout_model()
    teacher = copy.deepcopy(student)
    for p in teacher.parameters():
        p.requires_grad_(False)
    optimizer = torch.optim.SGD(student.parameters(), lr=0.1)
    for x, y in classification_batches(n=4):
        with torch.no_grad():
            target = teacher(x).softmax(1)  # noisy teacher in train mode, on purpose
        loss = nn.functional.cross_entropy(student(x), y) + nn.functional.mse_loss(student(x).softmax(1), target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        with torch.no_grad():
            for t, s in zip(teacher.parameters(), student.parameters()):
                t.mul_(0.99).add_(s, alpha=0.01)


def swa_update_bn() -> None:
    model = _batchnorm_model()
    data = classification_batches()
    _train(model, data)
    swa = torch.optim.swa_utils.AveragedModel(model)
    swa.update_parameters(model)
    with torch.no_grad():
        torch.optim.swa_utils.update_bn([x for x, _ in data], swa)


def manual_batchnorm_recalibration() -> None:
    model = _batchnorm_model()
    data = classification_batches()
    _train(model, data)
    model.train()
    with torch.no_grad():
        for x, _ in data:
            model(x)


def monte_carlo_dropout_on_one_input() -> None:
    model = _dropout_model()
    data = classification_batches()
    _train(model, data)
    x = data[0][0]
    with torch.no_grad():
        samples = torch.stack([model(x) for _ in range(5)])
    assert samples.shape[0] == 5


def monte_carlo_dropout_after_train() -> None:
    model = _dropout_model()
    data = classification_batches()
    _train(model, data)
    model.eval()
    model.train()  # MC dropout: train mode on purpose
    with torch.no_grad():
        for x, _ in data:
            model(x)


def frozen_batchnorm_evaluation_of_a_batchnorm_only_model() -> None:
    model = _batchnorm_model()
    data = classification_batches()
    _train(model, data)
    model[1].eval()  # frozen batch-norm on purpose: nothing else is mode-dependent
    _evaluate(model, data)


def checkpointed_model_called_twice_before_backward() -> None:
    from torch.utils.checkpoint import checkpoint

    model = _dropout_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    data = classification_batches()
    for _ in range(2):
        x = data[0][0].requires_grad_()
        out = checkpoint(model, x, use_reentrant=True) + checkpoint(model, data[1][0].requires_grad_(),
                                                                   use_reentrant=True)
        optimizer.zero_grad()
        out.sum().backward()
        optimizer.step()


def gan_samples_between_steps() -> None:
    torch.manual_seed(0)
    generator = nn.Sequential(nn.Linear(2, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 4))
    optimizer = torch.optim.SGD(generator.parameters(), lr=0.1)
    fixed = torch.randn(8, 2)
    for _ in range(3):
        optimizer.zero_grad()
        generator(torch.randn(8, 2)).pow(2).mean().backward()
        optimizer.step()
        with torch.no_grad():
            generator(fixed)


@pytest.mark.parametrize("scenario", [
    evaluate_in_eval_mode, evaluate_a_model_without_dropout_or_batchnorm, evaluate_with_dropout_disabled,
    untrained_forwards_in_a_unit_test, a_single_no_grad_forward_after_training, mean_teacher, swa_update_bn,
    manual_batchnorm_recalibration, monte_carlo_dropout_on_one_input, monte_carlo_dropout_after_train,
    frozen_batchnorm_evaluation_of_a_batchnorm_only_model, checkpointed_model_called_twice_before_backward,
    gan_samples_between_steps,
], ids=lambda f: f.__name__)
def test_legitimate_no_grad_forwards_in_train_mode_are_silent(scenario: Callable) -> None:
    assert watch(scenario, codes=CODES) == []


def test_train_is_restored_after_the_test() -> None:
    original = nn.Module.train
    watch(evaluate_in_eval_mode, codes=CODES)
    assert nn.Module.train is original
    model = _dropout_model()
    assert model.eval().training is False and model.train().training is True


def test_gradients_left_by_training_outside_the_test_do_not_count() -> None:
    model = _dropout_model()
    data = classification_batches()
    _train(model, data)  # a fixture's training: not watched

    def shape_checks() -> None:
        with torch.no_grad():
            for x, _ in data:
                assert model(x).shape == (8, 2)

    assert watch(shape_checks, codes=CODES) == []
