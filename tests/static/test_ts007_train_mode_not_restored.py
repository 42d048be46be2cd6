"""TS007 static: realistic training scripts, buggy and legitimate, beyond the inline examples."""

from __future__ import annotations

import pytest

from helpers import expected, found, lint

CODE = ["TS007"]

SCRIPT = """
import torch
from torch import nn


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(8, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Dropout(0.2))
        self.head = nn.Linear(32, 2)

    def forward(self, x):
        return self.head(self.body(x))


def validate(model, loader, criterion):
    model.eval(){mark}
    with torch.no_grad():
        return sum(criterion(model(x), y).item() for x, y in loader)


def main():
    model = Net()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    criterion = nn.CrossEntropyLoss()
    {train_before}
    for epoch in range(5):
        {train_inside}
        for x, y in train_loader:
            optimizer.zero_grad()
            loss = criterion(model(x), y)
            loss.backward()
            optimizer.step()
        print(epoch, validate(model, val_loader, criterion))


if __name__ == "__main__":
    main()
"""


def test_train_once_before_the_epoch_loop_is_reported_at_the_helpers_eval() -> None:
    source = SCRIPT.format(mark="  # expect: TS007", train_before="model.train()", train_inside="pass")
    assert found(source, CODE) == expected(source)


def test_train_at_every_epoch_is_clean() -> None:
    assert found(SCRIPT.format(mark="", train_before="pass", train_inside="model.train()"), CODE) == set()


def test_a_model_without_dropout_or_batchnorm_is_not_reported() -> None:
    source = SCRIPT.format(mark="", train_before="model.train()", train_inside="pass").replace(
        "nn.BatchNorm1d(32), nn.ReLU(), nn.Dropout(0.2)", "nn.ReLU()")
    assert found(source, CODE) == set()


def test_noqa_silences_a_deliberate_eval_mode_training() -> None:
    source = SCRIPT.format(mark="  # noqa: TS007", train_before="model.train()", train_inside="pass")
    assert found(source, CODE) == set()


@pytest.mark.parametrize("source", [
    # GAN: each network's optimizer; the discriminator is put in eval mode only for sampling, then back
    """
import torch
def train_gan(G, D, loader):
    opt_g = torch.optim.Adam(G.parameters())
    opt_d = torch.optim.Adam(D.parameters())
    for epoch in range(3):
        G.train(); D.train()
        for real in loader:
            opt_d.zero_grad()
            d_loss(D(real), D(G(noise()).detach())).backward()
            opt_d.step()
            opt_g.zero_grad()
            g_loss(D(G(noise()))).backward()
            opt_g.step()
        G.eval()
        with torch.no_grad():
            save(G(fixed))
""",
    # eval() inside a no_grad evaluation, then train() inside the same iteration before the next step
    """
import torch
def fit(model, loader, opt):
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for step, (x, y) in enumerate(loader):
        if step % 100 == 0:
            model.eval()
            with torch.no_grad():
                log(model(x))
            model.train()
        opt.zero_grad()
        loss_fn(model(x), y).backward()
        opt.step()
""",
    # an unknown helper that may restore train mode
    """
import torch
from utils import set_train_mode
def fit(model, loader):
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for epoch in range(3):
        set_train_mode(model)
        for x, y in loader:
            opt.zero_grad()
            loss_fn(model(x), y).backward()
            opt.step()
        model.eval()
""",
    # the optimizer is built elsewhere: the linter cannot tell the model is the one being trained
    """
import torch
def finetune(model, loader, opt):
    model.eval()
    for x, y in loader:
        opt.zero_grad()
        loss_fn(model(x), y).backward()
        opt.step()
""",
    # eval() then training inside a pytest test file's test function
    """
import torch
def test_training_step_is_deterministic():
    model = Net()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    model.eval()
    for x, y in batches:
        opt.zero_grad()
        loss_fn(model(x), y).backward()
        opt.step()
""",
])
def test_legitimate_patterns_are_silent(source: str, tmp_path) -> None:
    assert [f.format() for f in lint(source, CODE, path=str(tmp_path / "test_training.py"))] == []
