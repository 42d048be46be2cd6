"""TS011 at runtime: loss graphs kept alive across steps by an accumulator, and the legitimate look-alikes.

Each buggy loop marks the line the finding must point at with ``# TS011 here``
(the accumulation, where the static rule reports too).
"""

from __future__ import annotations

import gc
from collections import deque
from typing import Callable, Tuple

import pytest
import torch
from torch import nn

from conftest import devices
from helpers import finding_lines, found_lines, marked_lines, regression_batches, tiny_mlp, watch

CODES = ["TS011"]
STEPS = 6


def _setup(device: str = "cpu"):
    model = tiny_mlp(device)
    return model, torch.optim.SGD(model.parameters(), lr=0.01)


# -- the bug ---------------------------------------------------------------------------


def running_loss_without_item(device: str) -> None:
    model, optimizer = _setup(device)
    running_loss = 0.0
    for x, y in regression_batches(device, n=STEPS):
        optimizer.zero_grad()
        loss = nn.functional.mse_loss(model(x), y)
        loss.backward()
        optimizer.step()
        running_loss += loss  # TS011 here


@pytest.mark.parametrize("device", devices())
def test_a_running_loss_without_item_is_reported_at_the_accumulation(device: str) -> None:
    findings = watch(running_loss_without_item, device, codes=CODES)
    assert finding_lines(findings) == marked_lines(running_loss_without_item, codes=CODES)
    assert "`running_loss`" in findings[0].message


def tensor_accumulator_before_backward() -> None:
    model, optimizer = _setup()
    total = torch.zeros(())
    for x, y in regression_batches(n=STEPS):
        optimizer.zero_grad()
        loss = nn.functional.mse_loss(model(x), y)
        total = total + loss * x.size(0)  # TS011 here
        loss.backward()
        optimizer.step()


def list_of_losses() -> None:
    model, optimizer = _setup()
    losses = []
    for x, y in regression_batches(n=STEPS):
        optimizer.zero_grad()
        loss = nn.functional.mse_loss(model(x), y)
        loss.backward()
        optimizer.step()
        losses.append(loss)  # TS011 here
    print(torch.stack(losses).mean().item())


class Trainer:
    def __init__(self) -> None:
        self.model, self.optimizer = _setup()
        self.epoch_loss = 0

    def fit(self) -> None:
        for x, y in regression_batches(n=STEPS):
            self.optimizer.zero_grad()
            loss = nn.functional.mse_loss(self.model(x), y)
            loss.backward()
            self.optimizer.step()
            self.epoch_loss += loss  # TS011 here


def attribute_accumulator() -> None:
    Trainer().fit()


def _step(model, optimizer, x, y) -> torch.Tensor:
    optimizer.zero_grad()
    loss = nn.functional.mse_loss(model(x), y)
    loss.backward()
    optimizer.step()
    return loss


def accumulator_in_the_calling_function() -> None:
    model, optimizer = _setup()
    total = 0
    for x, y in regression_batches(n=STEPS):
        total += _step(model, optimizer, x, y)  # TS011 here


def hand_written_sgd() -> None:
    model, _ = _setup()
    total = 0
    for x, y in regression_batches(n=STEPS):
        loss = nn.functional.mse_loss(model(x), y)
        loss.backward()
        with torch.no_grad():
            for p in model.parameters():
                p -= 0.01 * p.grad
                p.grad = None
        total = total + loss  # TS011 here


@pytest.mark.parametrize("loop", [tensor_accumulator_before_backward, list_of_losses, attribute_accumulator,
                                  accumulator_in_the_calling_function, hand_written_sgd])
def test_every_way_of_keeping_the_losses_is_reported_at_its_line(loop: Callable) -> None:
    target = Trainer.fit if loop is attribute_accumulator else loop
    assert found_lines(loop, codes=CODES) == marked_lines(target, codes=CODES)


# -- legitimate look-alikes: silent ------------------------------------------------------


def with_item() -> None:
    model, optimizer = _setup()
    running, history = 0.0, []
    for x, y in regression_batches(n=STEPS):
        optimizer.zero_grad()
        loss = nn.functional.mse_loss(model(x), y)
        loss.backward()
        optimizer.step()
        running += loss.item() * x.size(0)
        history.append(loss.detach())


def under_no_grad() -> None:
    model, optimizer = _setup()
    total = torch.zeros(())
    for x, y in regression_batches(n=STEPS):
        optimizer.zero_grad()
        loss = nn.functional.mse_loss(model(x), y)
        loss.backward()
        optimizer.step()
        with torch.no_grad():
            total += loss


def gradient_accumulation_of_the_sum() -> None:
    model, optimizer = _setup()
    loss_sum = 0
    for i, (x, y) in enumerate(regression_batches(n=12)):
        loss_sum = loss_sum + nn.functional.mse_loss(model(x), y)
        if i % 3 == 2:
            optimizer.zero_grad()
            (loss_sum / 3).backward()
            optimizer.step()
            loss_sum = 0


def stacked_list_backpropagated() -> None:
    model, optimizer = _setup()
    losses = []
    for i, (x, y) in enumerate(regression_batches(n=12)):
        losses.append(nn.functional.mse_loss(model(x), y))
        if len(losses) == 2:
            optimizer.zero_grad()
            torch.stack(losses).mean().backward()
            optimizer.step()
            losses = []


def previous_loss_kept() -> None:
    model, optimizer = _setup()
    previous = None
    window = deque(maxlen=2)
    for x, y in regression_batches(n=STEPS):
        optimizer.zero_grad()
        loss = nn.functional.mse_loss(model(x), y)
        loss.backward()
        optimizer.step()
        if previous is not None and loss.item() > previous.item():
            pass
        previous = loss
        window.append(loss)


def same_loss_backpropagated_again() -> None:
    model, optimizer = _setup()
    loss = model[0].weight.sum() * 2  # saves no parameter: it can be backpropagated after a step
    for _ in range(STEPS):
        optimizer.zero_grad()
        loss.backward(retain_graph=True)
        optimizer.step()


def gan_with_two_optimizers() -> None:
    torch.manual_seed(0)
    generator, discriminator = nn.Linear(2, 4), nn.Sequential(nn.Linear(4, 1), nn.Sigmoid())
    opt_g = torch.optim.Adam(generator.parameters(), lr=1e-3)
    opt_d = torch.optim.Adam(discriminator.parameters(), lr=1e-3)
    bce = nn.BCELoss()
    for real, _ in regression_batches(n=STEPS):
        fake = generator(torch.randn(8, 2))
        opt_d.zero_grad()
        d_loss = bce(discriminator(real), torch.ones(8, 1)) + bce(discriminator(fake.detach()), torch.zeros(8, 1))
        d_loss.backward()
        opt_d.step()
        opt_g.zero_grad()
        g_loss = bce(discriminator(fake), torch.ones(8, 1))
        g_loss.backward()
        opt_g.step()


def several_losses_backpropagated_separately_without_optimizer() -> None:
    model, _ = _setup()
    for x, y in regression_batches(n=STEPS):
        out = model(x)
        first = nn.functional.mse_loss(out, y)
        second = nn.functional.l1_loss(out, y)
        third = out.pow(2).mean()
        fourth = out.abs().mean()
        first.backward(retain_graph=True)
        second.backward(retain_graph=True)
        third.backward(retain_graph=True)
        fourth.backward()
        with torch.no_grad():
            for p in model.parameters():
                p -= 0.01 * p.grad
                p.grad = None


def gradient_penalty_with_create_graph() -> None:
    model, optimizer = _setup()
    penalties = []
    for x, y in regression_batches(n=STEPS):
        optimizer.zero_grad()
        x = x.requires_grad_()
        out = model(x)
        (grad,) = torch.autograd.grad(out.sum(), x, create_graph=True)
        penalty = grad.pow(2).mean()
        loss = nn.functional.mse_loss(out, y) + penalty
        loss.backward()
        optimizer.step()
        penalties.append(penalty.item())


def too_short_to_tell() -> None:
    model, optimizer = _setup()
    total = 0
    for x, y in regression_batches(n=3):
        optimizer.zero_grad()
        loss = nn.functional.mse_loss(model(x), y)
        loss.backward()
        optimizer.step()
        total += loss


@pytest.mark.parametrize("loop", [with_item, under_no_grad, gradient_accumulation_of_the_sum,
                                  stacked_list_backpropagated, previous_loss_kept, same_loss_backpropagated_again,
                                  gan_with_two_optimizers, several_losses_backpropagated_separately_without_optimizer,
                                  gradient_penalty_with_create_graph, too_short_to_tell])
def test_legitimate_loops_are_silent(loop: Callable) -> None:
    assert watch(loop, codes=CODES) == []


# -- the mechanism ---------------------------------------------------------------------------


def accumulation_that_starts_late() -> None:
    model, optimizer = _setup()
    total = 0.0
    for step, (x, y) in enumerate(regression_batches(n=33)):
        optimizer.zero_grad()
        loss = nn.functional.mse_loss(model(x), y)
        loss.backward()
        optimizer.step()
        if step >= 6:
            total += loss  # TS011 here


def test_an_accumulation_that_starts_after_the_first_steps_is_found_at_a_later_tracked_step(monkeypatch) -> None:
    from pytest_trainsafe.runtime.checks import ts011_loss_accumulated_with_graph as check

    created = []

    class Counted(check._Sentinel):
        __slots__ = ()

        def __init__(self) -> None:
            created.append(1)

    monkeypatch.setattr(check, "_Sentinel", Counted)
    findings = watch(accumulation_that_starts_late, codes=CODES)
    assert finding_lines(findings) == marked_lines(accumulation_that_starts_late, codes=CODES)
    # Generations 1-4, 8, 16, 24 and 32 were tracked, not each of the 33 steps.
    assert len(created) == 8



def test_nothing_remains_after_the_test_even_while_the_user_keeps_the_graphs(monkeypatch) -> None:
    import weakref

    from pytest_trainsafe.runtime.checks import ts011_loss_accumulated_with_graph as check

    created: "weakref.WeakSet" = weakref.WeakSet()

    class Recorded(check._Sentinel):
        __slots__ = ()

        def __init__(self) -> None:
            created.add(self)

    monkeypatch.setattr(check, "_Sentinel", Recorded)
    original = torch.autograd.backward
    kept = []

    def keep() -> None:
        model, optimizer = _setup()
        total = 0
        for x, y in regression_batches(n=3):
            loss = nn.functional.mse_loss(model(x), y)
            loss.backward()
            optimizer.step()
            total = total + loss
        kept.append(total)
        assert len(created) == 3  # one hook per step's loss while the test runs

    watch(keep, codes=CODES)
    assert torch.autograd.backward is original
    assert kept[0].grad_fn is not None  # the user's graphs are alive, our hooks on them are not
    gc.collect()
    assert len(created) == 0


def test_the_wrapped_backward_is_transparent() -> None:
    def run() -> Tuple[torch.Tensor, torch.Tensor]:
        w = torch.ones(3, requires_grad=True)
        (w * 2).sum().backward()
        torch.autograd.backward([(w * 3).sum()], retain_graph=False)
        with pytest.raises(RuntimeError):
            torch.ones(2).sum().backward()  # no graph: torch's own error, unchanged
        return w.grad

    def check() -> None:
        assert torch.equal(run(), torch.full((3,), 5.0))

    assert watch(check, codes=CODES) == []
