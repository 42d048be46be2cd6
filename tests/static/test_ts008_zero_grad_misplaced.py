"""TS008 static: realistic training code, buggy and legitimate, beyond the inline examples."""

from __future__ import annotations

import pytest

from helpers import expected, found

CODE = ["TS008"]


@pytest.mark.parametrize("source", [
    # the canonical PyTorch tutorial loop
    """
def train_loop(dataloader, model, loss_fn, optimizer):
    model.train()
    for batch, (X, y) in enumerate(dataloader):
        pred = model(X)
        loss = loss_fn(pred, y)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
""",
    # DCGAN tutorial order: module zero_grad, two optimizers
    """
import torch
netD, netG = Discriminator(), Generator()
optimizerD = torch.optim.Adam(netD.parameters(), lr=2e-4)
optimizerG = torch.optim.Adam(netG.parameters(), lr=2e-4)
for epoch in range(5):
    for i, data in enumerate(dataloader, 0):
        netD.zero_grad()
        errD_real = criterion(netD(data[0]).view(-1), label)
        errD_real.backward()
        fake = netG(noise)
        errD_fake = criterion(netD(fake.detach()).view(-1), label)
        errD_fake.backward()
        optimizerD.step()
        netG.zero_grad()
        errG = criterion(netD(fake).view(-1), label)
        errG.backward()
        optimizerG.step()
""",
    # accumulation with an early-exit branch and a scheduler
    """
for step, batch in enumerate(loader):
    with accelerator.accumulate(model):
        loss = model(**batch).loss
        accelerator.backward(loss)
        if accelerator.sync_gradients:
            accelerator.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        lr_scheduler.step()
        optimizer.zero_grad()
""",
    # zero_grad in a try / finally after the step
    """
for x, y in loader:
    try:
        loss_fn(model(x), y).backward()
        optimizer.step()
    finally:
        optimizer.zero_grad()
""",
    # a backward to get input gradients (FGSM), cleared, then the real backward
    """
for x, y in loader:
    x.requires_grad_(True)
    loss_fn(model(x), y).backward()
    x_adv = x + eps * x.grad.sign()
    optimizer.zero_grad()
    loss_fn(model(x_adv.detach()), y).backward()
    optimizer.step()
""",
])
def test_legitimate_orders_are_silent(source: str) -> None:
    assert found(source, CODE) == set()


def test_a_while_loop_reaching_its_own_start_is_reported() -> None:
    source = """
step = 0
while step < 100:
    optimizer.step()
    loss = loss_fn(model(x), y)
    loss.backward()
    optimizer.zero_grad()  # expect: TS008
    step += 1
"""
    assert found(source, CODE) == expected(source)


def test_each_misplaced_zero_grad_is_reported_once() -> None:
    source = """
def train(model, loader, optimizer):
    for x, y in loader:
        loss_fn(model(x), y).backward()
        optimizer.zero_grad()  # expect: TS008
        optimizer.step()
"""
    assert found(source, CODE) == expected(source)
