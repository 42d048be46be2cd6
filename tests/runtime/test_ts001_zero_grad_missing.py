"""TS001 at runtime: stale gradients reaching optimizer.step(), and every legitimate look-alike.

Each loop marks the line the finding must point at with ``# TS001 here``.
"""

from __future__ import annotations

from typing import Callable, List

import pytest
import torch
from torch import nn

from conftest import devices
from helpers import finding_lines, found_lines, marked_lines, regression_batches, tiny_mlp, watch

CODES = ["TS001"]


# -- the bug ---------------------------------------------------------------------------


def loop_without_zero_grad(device: str) -> None:
    model = tiny_mlp(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    for x, y in regression_batches(device, n=4):
        loss = nn.functional.mse_loss(model(x), y)
        loss.backward()
        optimizer.step()  # TS001 here


@pytest.mark.parametrize("device", devices())
def test_a_loop_without_zero_grad_is_reported_at_its_step(device: str) -> None:
    findings = watch(loop_without_zero_grad, device, codes=CODES)
    assert finding_lines(findings) == marked_lines(loop_without_zero_grad, codes=CODES)
    assert "SGD" in findings[0].message


def zero_grad_once_before_the_loop() -> None:
    model = tiny_mlp()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    optimizer.zero_grad()
    for x, y in regression_batches(n=4):
        nn.functional.mse_loss(model(x), y).backward()
        optimizer.step()  # TS001 here


def zero_grad_without_set_to_none_once_before_the_loop() -> None:
    model = tiny_mlp()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    optimizer.zero_grad(set_to_none=False)
    for x, y in regression_batches(n=4):
        nn.functional.mse_loss(model(x), y).backward()
        optimizer.step()  # TS001 here


def clipping_without_zero_grad() -> None:
    model = tiny_mlp()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    for x, y in regression_batches(n=4):
        nn.functional.mse_loss(model(x), y).backward()
        nn.utils.clip_grad_norm_(model.parameters(), 0.01)  # rescales .grad in place
        optimizer.step()  # TS001 here


def amp_without_zero_grad() -> None:
    model = tiny_mlp()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    scaler = torch.amp.GradScaler("cpu")
    for x, y in regression_batches(n=4):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = nn.functional.mse_loss(model(x).float(), y)
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
        scaler.step(optimizer)  # TS001 here
        scaler.update()


def lbfgs_closure_without_zero_grad() -> None:
    model = tiny_mlp()
    optimizer = torch.optim.LBFGS(model.parameters(), lr=0.1, max_iter=2)
    x, y = regression_batches(n=1)[0]

    def closure() -> torch.Tensor:
        loss = nn.functional.mse_loss(model(x), y)
        loss.backward()
        return loss

    for _ in range(3):
        optimizer.step(closure)  # TS001 here


@pytest.mark.parametrize("loop", [
    zero_grad_once_before_the_loop, zero_grad_without_set_to_none_once_before_the_loop,
    clipping_without_zero_grad, amp_without_zero_grad, lbfgs_closure_without_zero_grad,
])
def test_stale_gradients_are_reported_at_the_step(loop: Callable) -> None:
    assert found_lines(loop, codes=CODES) == marked_lines(loop, codes=CODES)


def _gan(missing: str) -> None:
    torch.manual_seed(0)
    generator = nn.Sequential(nn.Linear(2, 8), nn.ReLU(), nn.Linear(8, 4))
    discriminator = nn.Sequential(nn.Linear(4, 8), nn.LeakyReLU(0.2), nn.Linear(8, 1))
    opt_g = torch.optim.Adam(generator.parameters(), lr=1e-3)
    opt_d = torch.optim.Adam(discriminator.parameters(), lr=1e-3)
    criterion = nn.BCEWithLogitsLoss()
    for real, _ in regression_batches(n=4):
        ones, zeros = torch.ones(8, 1), torch.zeros(8, 1)
        if missing != "d":
            discriminator.zero_grad()
        fake = generator(torch.randn(8, 2))
        loss_d = criterion(discriminator(real), ones) + criterion(discriminator(fake.detach()), zeros)
        loss_d.backward()
        opt_d.step()  # TS001 here (d)
        if missing != "g":
            generator.zero_grad()
        loss_g = criterion(discriminator(fake), ones)  # also reaches the discriminator's parameters
        loss_g.backward()
        opt_g.step()  # TS001 here (g)


@pytest.mark.parametrize("missing", ["d", "g"])
def test_a_gan_missing_one_zero_grad_is_reported_at_that_models_step(missing: str) -> None:
    assert found_lines(_gan, missing, codes=CODES) == marked_lines(_gan, codes=CODES, tag=missing)


def test_a_buggy_loop_is_reported_once_per_step_site() -> None:
    assert len(watch(loop_without_zero_grad, "cpu", codes=CODES)) == 1


# -- trust: an optimizer cleared between its steps is watched in O(1) ------------------------


def _tensor_hooks(model: nn.Module) -> int:
    return sum(len(p._backward_hooks or {}) + len(p._post_accumulate_grad_hooks or {}) for p in model.parameters())


@pytest.mark.parametrize("clear", ["optimizer", "model"])
def test_a_loop_cleared_before_its_backward_never_hooks_its_parameters(clear: str) -> None:
    model = tiny_mlp()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    hooks_after_each_backward: List[int] = []

    def train() -> None:
        for x, y in regression_batches(n=4):
            (optimizer if clear == "optimizer" else model).zero_grad()
            nn.functional.mse_loss(model(x), y).backward()
            hooks_after_each_backward.append(_tensor_hooks(model))
            optimizer.step()

    assert watch(train, codes=CODES) == []
    assert hooks_after_each_backward == [0, 0, 0, 0]


def test_parameters_are_hooked_as_the_first_backward_after_an_uncleared_step_starts() -> None:
    model = tiny_mlp()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    hooks_after_each_backward: List[int] = []

    def train() -> None:
        for x, y in regression_batches(n=3):
            nn.functional.mse_loss(model(x), y).backward()
            hooks_after_each_backward.append(_tensor_hooks(model))
            optimizer.step()

    assert len(watch(train, codes=CODES)) == 1
    hooked = 2 * len(list(model.parameters()))
    assert hooks_after_each_backward == [0, hooked, hooked]
    assert _tensor_hooks(model) == 0  # and none is left after the test


def part_of_the_model_cleared() -> None:
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 1))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    for x, y in regression_batches(n=4):
        model[0].zero_grad()  # the head's gradients are never cleared
        nn.functional.mse_loss(model(x), y).backward()
        optimizer.step()  # TS001 here


def clearing_every_other_iteration_from_the_second() -> None:
    """Cleared in the second iteration (trust), not in the third (trust ends, unjudged), found in the fifth."""
    model = tiny_mlp()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    for i, (x, y) in enumerate(regression_batches(n=5)):
        if i % 2 == 1:
            optimizer.zero_grad()
        nn.functional.mse_loss(model(x), y).backward()
        optimizer.step()  # TS001 here


def clearing_every_other_iteration_from_the_first() -> None:
    model = tiny_mlp()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    for i, (x, y) in enumerate(regression_batches(n=2)):
        if i % 2 == 0:
            optimizer.zero_grad()
        nn.functional.mse_loss(model(x), y).backward()
        optimizer.step()  # TS001 here


def a_parameter_group_added_later_is_never_cleared() -> None:
    """``model.zero_grad()`` clears every parameter until a group from outside the model joins the optimizer."""
    model, head = tiny_mlp(), nn.Linear(1, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    for i, (x, y) in enumerate(regression_batches(n=5)):
        if i == 2:
            optimizer.add_param_group({"params": head.parameters()})
        model.zero_grad()
        nn.functional.mse_loss(head(model(x)), y).backward()
        optimizer.step()  # TS001 here


@pytest.mark.parametrize("loop", [
    part_of_the_model_cleared, clearing_every_other_iteration_from_the_second,
    clearing_every_other_iteration_from_the_first, a_parameter_group_added_later_is_never_cleared,
], ids=lambda loop: loop.__name__)
def test_a_clearing_that_misses_some_iterations_or_parameters_is_reported(loop: Callable) -> None:
    assert found_lines(loop, codes=CODES) == marked_lines(loop, codes=CODES)


def test_the_first_uncleared_iteration_after_trust_goes_unjudged() -> None:
    """The documented cost of trust: nothing was noted after the step before it (found one iteration later)."""
    def three_steps() -> None:
        model = tiny_mlp()
        optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
        for i, (x, y) in enumerate(regression_batches(n=3)):
            if i == 1:
                optimizer.zero_grad()
            nn.functional.mse_loss(model(x), y).backward()
            optimizer.step()

    assert watch(three_steps, codes=CODES) == []


# -- legitimate look-alikes: silent ------------------------------------------------------


def gradient_accumulation() -> None:
    model = tiny_mlp()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    optimizer.zero_grad()
    for i, (x, y) in enumerate(regression_batches(n=6)):
        (nn.functional.mse_loss(model(x), y) / 3).backward()
        if (i + 1) % 3 == 0:
            optimizer.step()
            optimizer.zero_grad()


def zero_grad_at_the_end() -> None:
    model = tiny_mlp()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    for x, y in regression_batches(n=4):
        nn.functional.mse_loss(model(x), y).backward()
        optimizer.step()
        optimizer.zero_grad()


def grad_set_to_none_by_hand() -> None:
    model = tiny_mlp()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    for x, y in regression_batches(n=4):
        for p in model.parameters():
            p.grad = None
        nn.functional.mse_loss(model(x), y).backward()
        optimizer.step()


def model_zero_grad() -> None:
    model = tiny_mlp()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    for x, y in regression_batches(n=4):
        model.zero_grad()
        nn.functional.mse_loss(model(x), y).backward()
        optimizer.step()


def zero_grad_without_set_to_none(device: str = "cpu") -> None:
    model = tiny_mlp(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    for x, y in regression_batches(device, n=4):
        optimizer.zero_grad(set_to_none=False)
        nn.functional.mse_loss(model(x), y).backward()
        optimizer.step()


def grad_data_zeroed_by_hand(device: str = "cpu") -> None:
    """``.data.zero_()`` does not bump the version counter: the values tell it was cleared."""
    model = tiny_mlp(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    for x, y in regression_batches(device, n=4):
        nn.functional.mse_loss(model(x), y).backward()
        optimizer.step()
        for p in model.parameters():
            if p.grad is not None:
                p.grad.data.zero_()


def lbfgs_closure_with_zero_grad() -> None:
    model = tiny_mlp()
    optimizer = torch.optim.LBFGS(model.parameters(), lr=0.1, max_iter=3)
    x, y = regression_batches(n=1)[0]

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = nn.functional.mse_loss(model(x), y)
        loss.backward()
        return loss

    for _ in range(3):
        optimizer.step(closure)


def dcgan(set_to_none: bool = True, detach: bool = True) -> None:
    """The DCGAN example's order: the generator's backward runs through the discriminator
    after the discriminator's step; the discriminator clears its gradients only next iteration."""
    torch.manual_seed(0)
    generator = nn.Sequential(nn.Linear(2, 8), nn.ReLU(), nn.Linear(8, 4))
    discriminator = nn.Sequential(nn.Linear(4, 8), nn.LeakyReLU(0.2), nn.Linear(8, 1))
    opt_g = torch.optim.Adam(generator.parameters(), lr=1e-3)
    opt_d = torch.optim.Adam(discriminator.parameters(), lr=1e-3)
    criterion = nn.BCEWithLogitsLoss()
    for real, _ in regression_batches(n=4):
        ones, zeros = torch.ones(8, 1), torch.zeros(8, 1)
        discriminator.zero_grad(set_to_none=set_to_none)
        criterion(discriminator(real), ones).backward()
        fake = generator(torch.randn(8, 2))
        criterion(discriminator(fake.detach() if detach else fake), zeros).backward(retain_graph=not detach)
        opt_d.step()
        generator.zero_grad(set_to_none=set_to_none)
        criterion(discriminator(fake), ones).backward()
        opt_g.step()


def amp_grad_scaler() -> None:
    model = tiny_mlp()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    scaler = torch.amp.GradScaler("cpu")
    for x, y in regression_batches(n=4):
        optimizer.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = nn.functional.mse_loss(model(x).float(), y)
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        scaler.step(optimizer)
        scaler.update()


def two_optimizers_on_disjoint_parameters() -> None:
    model = tiny_mlp()
    first = torch.optim.SGD(model[0].parameters(), lr=0.01)
    second = torch.optim.Adam(model[2].parameters(), lr=0.01)
    for x, y in regression_batches(n=4):
        first.zero_grad()
        second.zero_grad()
        nn.functional.mse_loss(model(x), y).backward()
        first.step()
        second.step()


def a_single_step() -> None:
    model = tiny_mlp()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    x, y = regression_batches(n=1)[0]
    nn.functional.mse_loss(model(x), y).backward()
    optimizer.step()


def autograd_grad_after_the_step() -> None:
    """torch.autograd.grad reads gradients without accumulating them into .grad."""
    model = tiny_mlp()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    for x, y in regression_batches(n=4):
        loss = nn.functional.mse_loss(model(x), y)
        grads = torch.autograd.grad(loss, list(model.parameters()), retain_graph=True)
        assert len(grads) == 4
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


def adversarial_training() -> None:
    """FGSM: a first backward (for the input gradient) before zero_grad, then the real one."""
    model = tiny_mlp()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    for x, y in regression_batches(n=4):
        x = x.clone().requires_grad_(True)
        nn.functional.mse_loss(model(x), y).backward()
        x_adv = (x + 0.01 * x.grad.sign()).detach()
        optimizer.zero_grad()
        nn.functional.mse_loss(model(x_adv), y).backward()
        optimizer.step()


def clipping_with_zero_grad() -> None:
    model = tiny_mlp()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    for x, y in regression_batches(n=4):
        optimizer.zero_grad()
        nn.functional.mse_loss(model(x), y).backward()
        nn.utils.clip_grad_norm_(model.parameters(), 0.01)
        optimizer.step()


def a_parameter_that_stops_receiving_gradients() -> None:
    """A head used once: its zeroed gradient stays in .grad (set_to_none=False) but is all zeros."""
    model = tiny_mlp()
    head = nn.Linear(1, 1)
    optimizer = torch.optim.SGD([*model.parameters(), *head.parameters()], lr=0.01, momentum=0.9)
    for i, (x, y) in enumerate(regression_batches(n=4)):
        if i == 1:  # a backward into the head after its step, cleared right after
            nn.functional.mse_loss(head(model(x).detach()), y).backward()
        optimizer.zero_grad(set_to_none=False)
        out = model(x)
        nn.functional.mse_loss(head(out) if i == 0 else out, y).backward()
        optimizer.step()


def a_second_backward_through_a_cleared_model() -> None:
    """Two losses, two backwards, one step, per iteration: accumulation within one step."""
    model = tiny_mlp()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    for x, y in regression_batches(n=4):
        optimizer.zero_grad()
        out = model(x)
        nn.functional.mse_loss(out, y).backward(retain_graph=True)
        out.abs().mean().backward()
        optimizer.step()


@pytest.mark.parametrize("loop", [
    gradient_accumulation, zero_grad_at_the_end, grad_set_to_none_by_hand, model_zero_grad,
    zero_grad_without_set_to_none, grad_data_zeroed_by_hand, lbfgs_closure_with_zero_grad, dcgan,
    amp_grad_scaler, two_optimizers_on_disjoint_parameters, a_single_step, autograd_grad_after_the_step,
    adversarial_training, clipping_with_zero_grad, a_parameter_that_stops_receiving_gradients,
    a_second_backward_through_a_cleared_model,
], ids=lambda loop: loop.__name__)
def test_a_legitimate_loop_is_not_reported(loop: Callable) -> None:
    assert watch(loop, codes=CODES) == []


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("loop", [zero_grad_without_set_to_none, grad_data_zeroed_by_hand],
                         ids=lambda loop: loop.__name__)
def test_in_place_clearing_is_not_reported_on_any_device(loop: Callable, device: str) -> None:
    assert watch(loop, device, codes=CODES) == []


@pytest.mark.parametrize("set_to_none", [True, False])
@pytest.mark.parametrize("detach", [True, False])
def test_a_dcgan_loop_is_not_reported(set_to_none: bool, detach: bool) -> None:
    assert watch(dcgan, set_to_none, detach, codes=CODES) == []


def test_no_hook_outlives_the_test() -> None:
    model = tiny_mlp()
    watch(loop_without_zero_grad, "cpu", codes=CODES)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    watch(zero_grad_at_the_end, codes=CODES)
    for x, y in regression_batches(n=2):
        watch(lambda: (nn.functional.mse_loss(model(x), y).backward(), optimizer.step()), codes=CODES)
    assert all(not p._backward_hooks and not p._post_accumulate_grad_hooks for p in model.parameters())


def test_the_training_computes_the_same_values_when_watched() -> None:
    def train() -> torch.Tensor:
        model = tiny_mlp()
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        for x, y in regression_batches(n=4):
            nn.functional.mse_loss(model(x), y).backward()
            optimizer.step()
        return torch.cat([p.detach().flatten() for p in model.parameters()])

    result: List[torch.Tensor] = []
    watch(lambda: result.append(train()), codes=CODES)
    assert torch.equal(result[0], train())
