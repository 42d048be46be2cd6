"""TS016 at runtime: the first non-finite loss or gradient, and the legitimate look-alikes.

Each buggy loop marks the line the finding must point at with ``# TS016 here``.
"""

from __future__ import annotations

from typing import Callable

import pytest
import torch
from torch import nn

from conftest import devices
from helpers import finding_lines, marked_lines, regression_batches, tiny_mlp, watch

CODES = ["TS016"]


# -- the bug ---------------------------------------------------------------------------


def diverging_learning_rate(device: str) -> None:
    model = tiny_mlp(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=50.0)
    for x, y in regression_batches(device, n=20):
        optimizer.zero_grad()
        loss = nn.functional.mse_loss(model(x), y)
        loss.backward()
        optimizer.step()  # TS016 here


@pytest.mark.parametrize("device", devices())
def test_a_diverging_run_is_reported_once_at_the_step_with_the_step_number(device: str) -> None:
    findings = watch(diverging_learning_rate, device, codes=CODES)
    assert finding_lines(findings) == marked_lines(diverging_learning_rate, codes=CODES)
    assert len(findings) == 1
    assert "the loss is" in findings[0].message and "at step " in findings[0].message


def log_of_zero() -> None:
    model = tiny_mlp()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    for x, y in regression_batches(n=6):
        optimizer.zero_grad()
        loss = -torch.log(torch.sigmoid(model(x)) * 0).mean()
        loss.backward()
        optimizer.step()  # TS016 here


def test_a_loss_that_is_infinite_from_the_start_is_reported_at_step_1() -> None:
    (finding,) = watch(log_of_zero, codes=CODES)
    assert (finding.path, finding.line) in marked_lines(log_of_zero, codes=CODES)
    assert "the loss is +Inf at step 1" in finding.message


def gradient_only() -> None:
    model = tiny_mlp()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    for x, _ in regression_batches(n=6):
        optimizer.zero_grad()
        out = model(x)
        loss = (out - out.detach()).abs().sqrt().mean()  # 0, but d/dx sqrt(|x|) at 0 is NaN
        loss.backward()
        optimizer.step()  # TS016 here


def test_a_non_finite_gradient_with_a_finite_loss_names_the_parameter_and_the_step_that_applied_it() -> None:
    (finding,) = watch(gradient_only, codes=CODES)
    assert (finding.path, finding.line) in marked_lines(gradient_only, codes=CODES)
    assert "`model.0.weight` turned non-finite in step 1, whose loss was finite" in finding.message


def gradient_hidden_from_the_loss() -> None:
    model = tiny_mlp()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    for x, _ in regression_batches(n=4):
        optimizer.zero_grad()
        out = model(x)
        # The classic trap: the unselected branch's sqrt has a NaN gradient. Once the weights are NaN,
        # ``out > 0`` is False everywhere and the loss stays 0: no loss is ever non-finite.
        loss = torch.where(out > 0, out.sqrt(), torch.zeros_like(out)).mean() * 0
        loss.backward()
        optimizer.step()  # TS016 here


def test_a_non_finite_gradient_that_no_loss_shows_is_found_in_the_parameters() -> None:
    (finding,) = watch(gradient_hidden_from_the_loss, codes=CODES)
    assert {(finding.path, finding.line)} == marked_lines(gradient_hidden_from_the_loss, codes=CODES)
    assert "turned non-finite in step 1, while the losses stayed finite" in finding.message


KEPT = {}


def gradient_hidden_late_in_a_model_that_outlives_the_test() -> None:
    model = KEPT["model"] = tiny_mlp()  # as a fixture's model outlives the test body
    optimizer = KEPT["optimizer"] = torch.optim.SGD(model.parameters(), lr=0.1)
    for step, (x, y) in enumerate(regression_batches(n=5), start=1):
        optimizer.zero_grad()
        out = model(x)
        if step < 3:
            loss = nn.functional.mse_loss(out, y)
        else:
            loss = torch.where(out > 0, out.sqrt(), torch.zeros_like(out)).mean() * 0
        loss.backward()
        optimizer.step()  # TS016 here


def test_parameters_are_looked_at_after_the_test_for_what_the_steps_in_between_did_not_show() -> None:
    try:
        (finding,) = watch(gradient_hidden_late_in_a_model_that_outlives_the_test, codes=CODES)
    finally:
        KEPT.clear()
    assert {(finding.path, finding.line)} == \
        marked_lines(gradient_hidden_late_in_a_model_that_outlives_the_test, codes=CODES)
    assert "turned non-finite in one of steps 2-5, while the losses stayed finite" in finding.message


def infinite_loss_term() -> None:
    model = tiny_mlp()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    for x, y in regression_batches(n=6):
        optimizer.zero_grad()
        loss = nn.functional.mse_loss(model(x), y) + torch.tensor(float("inf"))  # the gradients stay finite
        loss.backward()
        optimizer.step()  # TS016 here


def test_an_infinite_loss_is_reported_even_when_its_gradients_are_finite() -> None:
    (finding,) = watch(infinite_loss_term, codes=CODES)
    assert {(finding.path, finding.line)} == marked_lines(infinite_loss_term, codes=CODES)
    assert "the loss is +Inf at step 1" in finding.message


def nan_in_the_data_with_a_hand_written_update() -> None:
    model = tiny_mlp()
    for x, y in regression_batches(n=3):
        y = y * float("nan")
        loss = nn.functional.mse_loss(model(x), y)
        loss.backward()  # TS016 here
        with torch.no_grad():
            for p in model.parameters():
                p -= 0.1 * p.grad
                p.grad = None


def test_without_an_optimizer_the_first_non_finite_backward_is_reported() -> None:
    (finding,) = watch(nan_in_the_data_with_a_hand_written_update, codes=CODES)
    assert {(finding.path, finding.line)} == marked_lines(nan_in_the_data_with_a_hand_written_update, codes=CODES)
    assert "the loss is NaN and no optimizer step followed" in finding.message


# -- legitimate look-alikes: silent ------------------------------------------------------


def finite_training() -> None:
    model = tiny_mlp()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for x, y in regression_batches(n=6):
        optimizer.zero_grad()
        nn.functional.mse_loss(model(x), y).backward()
        optimizer.step()


def _scaled_training(fused: bool) -> None:
    model = tiny_mlp()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, fused=fused)
    scaler = torch.amp.GradScaler("cpu", init_scale=3e38)  # scaled gradients overflow: the scaler skips
    for x, y in regression_batches(n=8):
        optimizer.zero_grad()
        loss = nn.functional.mse_loss(model(x), y)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
    assert scaler.get_scale() < 3e38  # some steps really were skipped


def grad_scaler_skipping_overflowing_steps() -> None:
    _scaled_training(fused=False)


def grad_scaler_with_a_fused_optimizer() -> None:
    _scaled_training(fused=True)


def guard_skipping_a_bad_batch() -> None:
    model = tiny_mlp()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    for i, (x, y) in enumerate(regression_batches(n=6)):
        optimizer.zero_grad()
        loss = nn.functional.mse_loss(model(x), y) + (float("inf") if i == 0 else 0.0)
        loss.backward()
        if not torch.isfinite(loss):
            continue
        optimizer.step()


def large_float16_gradients() -> None:
    torch.manual_seed(0)
    weight = nn.Parameter(torch.zeros(4096, dtype=torch.float16))
    optimizer = torch.optim.SGD([weight], lr=1e-9)
    for _ in range(2):
        optimizer.zero_grad()
        (weight.float() * 60000.0).sum().backward()  # every gradient is 60000: its 2-norm overflows float16
        optimizer.step()


def sparse_gradients() -> None:
    embedding = nn.Embedding(10, 4, sparse=True)
    optimizer = torch.optim.SparseAdam(embedding.parameters(), lr=1e-2)
    for _ in range(2):
        optimizer.zero_grad()
        embedding(torch.tensor([1, 2, 3])).sum().backward()
        optimizer.step()


def test_the_grad_scaler_is_restored_after_the_test() -> None:
    original = torch.amp.GradScaler.scale
    watch(grad_scaler_skipping_overflowing_steps, codes=CODES)
    assert torch.amp.GradScaler.scale is original


def meta_tensors() -> None:
    model = nn.Linear(4, 1, device="meta")
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(2):
        optimizer.zero_grad()
        model(torch.randn(8, 4, device="meta")).sum().backward()
        optimizer.step()


@pytest.mark.parametrize("loop", [finite_training, grad_scaler_skipping_overflowing_steps,
                                  grad_scaler_with_a_fused_optimizer, guard_skipping_a_bad_batch,
                                  large_float16_gradients, sparse_gradients, meta_tensors])
def test_legitimate_loops_are_silent(loop: Callable) -> None:
    assert watch(loop, codes=CODES) == []
