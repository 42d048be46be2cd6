"""TS015 at runtime: layers added to a model after its optimizer was built, and the legitimate look-alikes.

Each buggy function marks the line the finding must point at with ``# TS015 here``
(the registration, where the static rule reports too).
"""

from __future__ import annotations

from typing import Callable

import pytest
import torch
from torch import nn

from conftest import devices
from helpers import classification_batches, finding_lines, found_lines, marked_lines, watch

CODES = ["TS015"]


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Linear(6, 16), nn.ReLU())
        self.fc = nn.Linear(16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x))

    def replace_head(self, classes: int) -> None:
        self.add_module("fc", nn.Linear(16, classes))  # TS015 here


def _train(model: nn.Module, optimizer: torch.optim.Optimizer, device: str = "cpu") -> None:
    for x, y in classification_batches(device, features=6, classes=3):
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()


# -- the bug ---------------------------------------------------------------------------


def head_replaced_after_the_optimizer(device: str) -> None:
    model = Net().to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    model.fc = nn.Linear(16, 3).to(device)  # TS015 here
    _train(model, optimizer, device)


@pytest.mark.parametrize("device", devices())
def test_a_head_replaced_after_the_optimizer_is_reported_at_the_assignment(device: str) -> None:
    findings = watch(head_replaced_after_the_optimizer, device, codes=CODES)
    assert finding_lines(findings) == marked_lines(head_replaced_after_the_optimizer, codes=CODES)
    assert "Linear `fc` was added to Net" in findings[0].message
    assert "2 parameters" in findings[0].message


def head_replaced_by_a_method() -> None:
    model = Net()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.replace_head(3)
    _train(model, optimizer)


def weight_norm_after_the_optimizer() -> None:
    model = Net()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    nn.utils.parametrizations.weight_norm(model.fc)  # TS015 here
    _train(model, optimizer)


def replaced_during_training() -> None:
    model = Net()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    _train(model, optimizer)
    model.fc = nn.Sequential(nn.Dropout(0.1), nn.Linear(16, 3))  # TS015 here
    _train(model, optimizer)


def test_a_head_replaced_by_the_models_own_method_is_reported_in_that_method() -> None:
    assert found_lines(head_replaced_by_a_method, codes=CODES) == marked_lines(Net, codes=CODES)


@pytest.mark.parametrize("loop", [weight_norm_after_the_optimizer, replaced_during_training])
def test_other_ways_of_adding_parameters_late_are_reported(loop: Callable) -> None:
    assert found_lines(loop, codes=CODES) == marked_lines(loop, codes=CODES)


# -- legitimate look-alikes: silent ------------------------------------------------------


def head_replaced_before_the_optimizer() -> None:
    model = Net()
    model.fc = nn.Linear(16, 3)
    _train(model, torch.optim.SGD(model.parameters(), lr=0.1))


def optimizer_rebuilt_after_the_change() -> None:
    model = Net()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    model.fc = nn.Linear(16, 3)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    _train(model, optimizer)


def new_parameters_added_to_the_optimizer() -> None:
    model = Net()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    model.fc = nn.Linear(16, 3)
    optimizer.add_param_group({"params": model.fc.parameters(), "lr": 0.01})
    _train(model, optimizer)


def frozen_new_layer() -> None:
    model = Net()
    optimizer = torch.optim.SGD(model.features.parameters(), lr=0.1)
    model.fc = nn.Linear(16, 3).requires_grad_(False)
    _train(model, optimizer)


def second_optimizer_for_the_head() -> None:
    model = Net()
    backbone_optimizer = torch.optim.SGD(model.features.parameters(), lr=0.01)
    model.fc = nn.Linear(16, 3)
    head_optimizer = torch.optim.SGD(model.fc.parameters(), lr=0.1)
    for x, y in classification_batches(features=6, classes=3):
        backbone_optimizer.zero_grad()
        head_optimizer.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        backbone_optimizer.step()
        head_optimizer.step()


def head_only_fine_tuning_without_freezing() -> None:
    model = Net()
    _train(model, torch.optim.SGD(model.fc.parameters(), lr=0.1))


def gan_discriminator_built_after_the_generator_optimizer() -> None:
    generator = nn.Sequential(nn.Linear(2, 6))
    opt_g = torch.optim.Adam(generator.parameters(), lr=1e-3)
    discriminator = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 1))
    opt_d = torch.optim.Adam(discriminator.parameters(), lr=1e-3)
    for real, _ in classification_batches(features=6, classes=3):
        fake = generator(torch.randn(8, 2))
        opt_d.zero_grad()
        d_loss = discriminator(real).mean() - discriminator(fake).mean()  # no detach: G gets gradients too
        d_loss.backward()
        opt_d.step()
        opt_g.zero_grad()
        (-discriminator(generator(torch.randn(8, 2))).mean()).backward()
        opt_g.step()


def loss_network_built_after_the_optimizer() -> None:
    model = Net()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    perceptual = nn.Sequential(nn.Linear(3, 4), nn.Tanh())  # trainable, deliberately not optimized
    for x, _ in classification_batches(features=6, classes=3):
        optimizer.zero_grad()
        perceptual(model(x)).pow(2).mean().backward()
        optimizer.step()


def wrapped_and_averaged_after_the_optimizer() -> None:
    model = Net()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    wrapped = nn.DataParallel(model)
    ema = torch.optim.swa_utils.AveragedModel(model)
    _train(wrapped, optimizer)
    ema.update_parameters(model)


def unused_new_layer() -> None:
    model = Net()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    model.aux = nn.Linear(16, 1)  # never called: no gradient
    _train(model, optimizer)


def tied_weights_after_the_optimizer() -> None:
    model = nn.Sequential(nn.Embedding(10, 6), nn.Linear(6, 10, bias=False))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    model[1].weight = model[0].weight
    for _ in range(2):
        optimizer.zero_grad()
        model(torch.randint(0, 10, (4,))).sum().backward()
        optimizer.step()


def model_not_trained_here() -> None:
    model = Net()
    model.fc = nn.Linear(16, 3)
    model(torch.randn(2, 6)).sum().backward()


@pytest.mark.parametrize("loop", [head_replaced_before_the_optimizer, optimizer_rebuilt_after_the_change,
                                  new_parameters_added_to_the_optimizer, frozen_new_layer,
                                  second_optimizer_for_the_head, head_only_fine_tuning_without_freezing,
                                  gan_discriminator_built_after_the_generator_optimizer,
                                  loss_network_built_after_the_optimizer, wrapped_and_averaged_after_the_optimizer,
                                  unused_new_layer, tied_weights_after_the_optimizer, model_not_trained_here])
def test_legitimate_code_is_silent(loop: Callable) -> None:
    assert watch(loop, codes=CODES) == []


def test_the_optimizer_constructor_is_restored_and_nothing_is_kept_alive() -> None:
    import gc
    import weakref

    original = torch.optim.Optimizer.__init__
    refs = []

    def run() -> None:
        model = Net()
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        model.fc = nn.Linear(16, 3)
        refs.extend([weakref.ref(model), weakref.ref(optimizer)])

    watch(run, codes=CODES)
    gc.collect()
    assert torch.optim.Optimizer.__init__ is original
    assert [ref() for ref in refs] == [None, None]
