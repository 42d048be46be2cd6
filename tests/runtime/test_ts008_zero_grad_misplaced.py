"""TS008 at runtime: a step whose gradients were just cleared, and the legitimate orders.

Each scenario marks the line the finding must point at with ``# TS008 here``.
"""

from __future__ import annotations

from typing import Callable

import pytest
import torch
from torch import nn

from conftest import devices
from helpers import finding_lines, found_lines, marked_lines, regression_batches, tiny_mlp, watch

CODES = ["TS008"]


# -- the bug ---------------------------------------------------------------------------


def zero_grad_between_backward_and_step(device: str) -> None:
    model = tiny_mlp(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    for x, y in regression_batches(device):
        loss = nn.functional.mse_loss(model(x), y)
        loss.backward()
        optimizer.zero_grad()  # TS008 here
        optimizer.step()


@pytest.mark.parametrize("device", devices())
def test_zero_grad_between_backward_and_step_is_reported_at_the_zero_grad(device: str) -> None:
    findings = watch(zero_grad_between_backward_and_step, device, codes=CODES)
    assert finding_lines(findings) == marked_lines(zero_grad_between_backward_and_step, codes=CODES)
    assert "SGD" in findings[0].message


def zero_grad_without_set_to_none() -> None:
    model = tiny_mlp()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.1)
    for x, y in regression_batches():
        nn.functional.mse_loss(model(x), y).backward()
        optimizer.zero_grad(set_to_none=False)  # TS008 here
        optimizer.step()


def module_zero_grad_between() -> None:
    model = tiny_mlp()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    for x, y in regression_batches():
        nn.functional.mse_loss(model(x), y).backward()
        model.zero_grad()  # TS008 here
        optimizer.step()


def zero_grad_at_the_end_of_the_iteration() -> None:
    model = tiny_mlp()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    for x, y in regression_batches():
        optimizer.step()
        nn.functional.mse_loss(model(x), y).backward()
        optimizer.zero_grad()  # TS008 here


@pytest.mark.parametrize("scenario", [zero_grad_without_set_to_none, module_zero_grad_between,
                                      zero_grad_at_the_end_of_the_iteration], ids=lambda f: f.__name__)
def test_other_forms_are_reported_at_the_zero_grad(scenario: Callable) -> None:
    assert found_lines(scenario, codes=CODES) == marked_lines(scenario, codes=CODES)


# -- legitimate orders: silent ------------------------------------------------------------


def canonical_order() -> None:
    model = tiny_mlp()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    for x, y in regression_batches():
        optimizer.zero_grad()
        nn.functional.mse_loss(model(x), y).backward()
        optimizer.step()


def zero_grad_after_step() -> None:
    model = tiny_mlp()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    for x, y in regression_batches():
        nn.functional.mse_loss(model(x), y).backward()
        optimizer.step()
        optimizer.zero_grad()


def gradient_accumulation() -> None:
    model = tiny_mlp()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    for i, (x, y) in enumerate(regression_batches(n=4)):
        (nn.functional.mse_loss(model(x), y) / 2).backward()
        if (i + 1) % 2 == 0:
            optimizer.step()
            optimizer.zero_grad()


def gan_clears_the_discriminator_after_the_generators_backward() -> None:
    torch.manual_seed(0)
    generator, discriminator = nn.Linear(2, 4), nn.Linear(4, 1)
    opt_g = torch.optim.SGD(generator.parameters(), lr=0.1)
    opt_d = torch.optim.SGD(discriminator.parameters(), lr=0.1)
    for real, _ in regression_batches():
        opt_d.zero_grad()
        fake = generator(torch.randn(8, 2))
        (discriminator(fake.detach()).mean() - discriminator(real).mean()).backward()
        opt_d.step()
        opt_g.zero_grad()
        (-discriminator(generator(torch.randn(8, 2))).mean()).backward()
        opt_d.zero_grad()  # D's gradients from G's loss are thrown away: legitimate
        opt_g.step()


def lbfgs_closure() -> None:
    model = tiny_mlp()
    optimizer = torch.optim.LBFGS(model.parameters(), lr=0.1, max_iter=2)
    x, y = regression_batches()[0]

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = nn.functional.mse_loss(model(x), y)
        loss.backward()
        return loss

    for _ in range(3):
        optimizer.step(closure)


def gradients_put_back_by_hand() -> None:
    model = tiny_mlp()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    for x, y in regression_batches():
        nn.functional.mse_loss(model(x), y).backward()
        saved = [p.grad.clone() for p in model.parameters()]
        optimizer.zero_grad()
        for p, g in zip(model.parameters(), saved):
            p.grad = g * 0.5
        optimizer.step()


def another_models_zero_grad() -> None:
    encoder, head = tiny_mlp(), nn.Linear(1, 1)
    optimizer = torch.optim.SGD(head.parameters(), lr=0.1)
    for x, y in regression_batches():
        nn.functional.mse_loss(head(encoder(x)), y).backward()
        encoder.zero_grad()  # the frozen encoder's gradients are thrown away
        optimizer.step()


def amp_order() -> None:
    model = tiny_mlp()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scaler = torch.amp.GradScaler("cpu")
    for x, y in regression_batches():
        optimizer.zero_grad()
        scaler.scale(nn.functional.mse_loss(model(x), y)).backward()
        scaler.step(optimizer)
        scaler.update()


@pytest.mark.parametrize("scenario", [
    canonical_order, zero_grad_after_step, gradient_accumulation,
    gan_clears_the_discriminator_after_the_generators_backward, lbfgs_closure, gradients_put_back_by_hand,
    another_models_zero_grad, amp_order,
], ids=lambda f: f.__name__)
def test_legitimate_orders_are_silent(scenario: Callable) -> None:
    assert watch(scenario, codes=CODES) == []


def test_zero_grad_is_restored_after_the_test() -> None:
    optimizer_zero_grad, module_zero_grad = torch.optim.Optimizer.zero_grad, nn.Module.zero_grad
    watch(canonical_order, codes=CODES)
    assert torch.optim.Optimizer.zero_grad is optimizer_zero_grad and nn.Module.zero_grad is module_zero_grad
