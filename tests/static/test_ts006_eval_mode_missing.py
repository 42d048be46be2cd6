"""TS006 static: realistic evaluation code, buggy and legitimate, beyond the inline examples."""

from __future__ import annotations

import pytest

from helpers import expected, found, lint

CODE = ["TS006"]

MNIST_SCRIPT = """
import torch
import torch.nn as nn
import torch.nn.functional as F


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 3, 1)
        self.dropout1 = nn.Dropout(0.25)
        self.fc1 = nn.Linear(9216, 10)

    def forward(self, x):
        return F.log_softmax(self.fc1(torch.flatten(self.dropout1(F.relu(self.conv1(x))), 1)), dim=1)


def train(model, device, loader, optimizer, epoch):
    model.train()
    for data, target in loader:
        optimizer.zero_grad()
        loss = F.nll_loss(model(data), target)
        loss.backward()
        optimizer.step()


def test(model, device, test_loader):
    {eval}
    test_loss, correct = 0, 0
    with torch.no_grad():
        for data, target in test_loader:
            data, target = data.to(device), target.to(device)
            output = model(data){mark}
            test_loss += F.nll_loss(output, target, reduction="sum").item()
            pred = output.argmax(dim=1, keepdim=True)
            correct += pred.eq(target.view_as(pred)).sum().item()
    return test_loss, correct


def main():
    device = torch.device("cpu")
    model = Net().to(device)
    optimizer = torch.optim.Adadelta(model.parameters(), lr=1.0)
    for epoch in range(1, 3):
        train(model, device, train_loader, optimizer, epoch)
        test(model, device, test_loader)


if __name__ == "__main__":
    main()
"""


def test_the_mnist_example_without_eval_is_reported_at_the_model_call() -> None:
    source = MNIST_SCRIPT.format(eval="pass", mark="  # expect: TS006")
    assert found(source, CODE) == expected(source)


def test_the_mnist_example_as_published_is_clean() -> None:
    assert found(MNIST_SCRIPT.format(eval="model.eval()", mark=""), CODE) == set()


def test_a_model_without_dropout_is_not_reported() -> None:
    source = MNIST_SCRIPT.format(eval="pass", mark="").replace("self.dropout1(", "(").replace(
        "self.dropout1 = nn.Dropout(0.25)", "pass")
    assert found(source, CODE) == set()


TRAINER_CLASS = """
import torch


class Trainer:
    def __init__(self, model, optimizer, loaders, criterion):
        self.model = model
        self.optimizer = optimizer
        self.train_loader, self.val_loader = loaders
        self.criterion = criterion

    def _set_mode(self, training):
        self.model.train(training)

    def train_epoch(self):
        self._set_mode(True)
        for x, y in self.train_loader:
            self.optimizer.zero_grad()
            self.criterion(self.model(x), y).backward()
            self.optimizer.step()

    @torch.no_grad()
    def evaluate(self):
        losses = []
        for x, y in self.val_loader:
            losses.append(self.criterion(self.model(x), y).item())
        return sum(losses) / len(losses)

    def fit(self, epochs):
        for epoch in range(epochs):
            self.train_epoch()
            self._set_mode(False)
            print(epoch, self.evaluate())
"""


def test_eval_mode_set_through_a_helper_method_is_seen() -> None:
    assert found(TRAINER_CLASS, CODE) == set()


def test_the_same_trainer_without_the_switch_is_reported() -> None:
    # (the helper taking a flag is left out: a call of it could set either mode, which keeps the rule quiet)
    source = TRAINER_CLASS.replace("            self._set_mode(False)\n", "").replace(
        "self._set_mode(True)", "self.model.train()").replace(
        "losses.append(self.criterion(self.model(x), y).item())",
        "losses.append(self.criterion(self.model(x), y).item())  # expect: TS006")
    assert found(source, CODE) == expected(source)


@pytest.mark.parametrize("source", [
    # a library module: evaluate() is called from another file, which may call eval()
    """
import torch
def evaluate(model, loader, metric):
    with torch.no_grad():
        for x, y in loader:
            metric.update(model(x), y)
    return metric.compute()
""",
    # a pytest test in a test file, with a model fixture
    """
import torch
def test_model_accuracy(model, loader):
    with torch.no_grad():
        accuracy = [(model(x).argmax(1) == y).float().mean() for x, y in loader]
    assert min(accuracy) > 0.5
""",
    # feature extraction: neither a metric nor an evaluation name
    """
import torch
def extract_features(backbone, loader):
    feats = []
    with torch.no_grad():
        for x, _ in loader:
            feats.append(backbone(x))
    return torch.cat(feats)
def main():
    backbone = build()
    print(extract_features(backbone, loader).shape)
""",
    # Lightning: the framework switches modes around validation_step
    """
import torch
import lightning as L
class Lit(L.LightningModule):
    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val_loss", self.loss(self.model(x), y))
""",
    # an eval() in a different branch of the same if still counts (conservative)
    """
import torch
def run(model, loader, criterion, mode):
    if mode == "val":
        model.eval()
    with torch.no_grad():
        for x, y in loader:
            loss = criterion(model(x), y)
""",
    # the model is put in eval mode by a context manager named so
    """
import torch
def evaluate(model, loader, criterion):
    with eval_mode(model), torch.no_grad():
        for x, y in loader:
            loss = criterion(model(x), y)
""",
])
def test_legitimate_patterns_are_silent(source: str, tmp_path) -> None:
    assert [f.format() for f in lint(source, CODE, path=str(tmp_path / "test_module.py"))] == []
