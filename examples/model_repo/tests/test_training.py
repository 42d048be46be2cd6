"""Fast tests of the training code. CI runs them with ``pytest --trainsafe``: a training pitfall
introduced into tinynet (a dropped zero_grad(), an evaluation pass that builds a graph...) fails
them with the rule's code and the line to change, even though every assertion below still holds."""

import math

import pytest
import torch

from tinynet import TinyNet, evaluate, fit, make_loaders, train_one_epoch


@pytest.fixture
def loaders():
    torch.manual_seed(0)
    return make_loaders(samples=64, batch_size=16)


def test_a_few_training_steps_update_every_parameter(loaders):
    train_loader, _ = loaders
    model = TinyNet()
    before = [p.detach().clone() for p in model.parameters()]
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)

    loss = train_one_epoch(model, train_loader, optimizer, max_steps=3)

    assert math.isfinite(loss)
    assert all(not torch.equal(old, new) for old, new in zip(before, model.parameters()))


def test_evaluation_reports_loss_and_accuracy_and_leaves_the_weights_alone(loaders):
    _, val_loader = loaders
    model = TinyNet()
    before = {name: p.detach().clone() for name, p in model.named_parameters()}

    metrics = evaluate(model, val_loader)

    assert 0.0 <= metrics["accuracy"] <= 1.0
    assert metrics["loss"] > 0.0
    assert all(torch.equal(before[name], p) for name, p in model.named_parameters())


def test_fit_alternates_training_and_validation(loaders):
    train_loader, val_loader = loaders
    history = fit(TinyNet(), train_loader, val_loader, epochs=2, max_steps=3)

    assert [metrics["epoch"] for metrics in history] == [0.0, 1.0]
    assert all(math.isfinite(metrics["train_loss"]) for metrics in history)


def test_training_on_the_blobs_beats_chance():
    torch.manual_seed(0)
    train_loader, val_loader = make_loaders(samples=128, batch_size=16)
    history = fit(TinyNet(), train_loader, val_loader, epochs=3, lr=3e-2)

    assert history[-1]["accuracy"] > 0.6
