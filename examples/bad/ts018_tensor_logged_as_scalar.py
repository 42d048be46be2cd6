"""TS018 tensor-logged-as-scalar: the loss tensor itself is handed to TensorBoard every step.

A small classifier logging its training loss and accuracy to TensorBoard.
``writer.add_scalar("loss/train", loss, step)`` passes the tensor that was just
backpropagated, graph included; the writer has to convert it itself.
(Needs the optional ``tensorboard`` package.)
"""

from __future__ import annotations

import tempfile

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
from torch.utils.tensorboard import SummaryWriter


def make_loader(samples: int = 128) -> DataLoader:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(samples, 10, generator=generator)
    y = (x[:, :3] + 0.1 * torch.randn(samples, 3, generator=generator)).argmax(dim=1)
    return DataLoader(TensorDataset(x, y), batch_size=32, shuffle=True, generator=generator)


def train(log_dir: str, epochs: int = 2) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(10, 32), nn.ReLU(), nn.Linear(32, 3))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    criterion = nn.CrossEntropyLoss()
    loader = make_loader()
    writer = SummaryWriter(log_dir=log_dir)
    step = 0
    for epoch in range(epochs):
        for x, y in loader:
            optimizer.zero_grad()
            logits = model(x)
            loss = criterion(logits, y)
            loss.backward()
            optimizer.step()
            accuracy = (logits.argmax(dim=1) == y).float().mean().item()
            writer.add_scalar("loss/train", loss, step)  # expect: TS018
            writer.add_scalar("accuracy/train", accuracy, step)
            step += 1
    writer.close()


def main() -> None:
    with tempfile.TemporaryDirectory() as log_dir:
        train(log_dir)


if __name__ == "__main__":
    main()
