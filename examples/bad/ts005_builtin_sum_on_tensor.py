"""TS005 builtin-sum-on-tensor: per-sample losses and correct predictions added up with Python's sum().

A small classifier trained with per-sample loss weights (``reduction="none"``,
then a weighted mean) and evaluated for accuracy. Both reductions use the
builtin ``sum()`` on a tensor: Python iterates the tensor row by row, one
autograd node and one kernel launch per sample (and, on a GPU, a device sync
per row for the accuracy count), where ``tensor.sum()`` is a single op.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def make_data(samples: int = 256, features: int = 10, classes: int = 3) -> tuple:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(samples, features, generator=generator)
    y = (x[:, :classes].argmax(dim=1) + (x[:, -1] > 1).long()) % classes
    weights = torch.where(y == 0, 2.0, 1.0)  # the rare class counts double
    return x, y, weights


def batches(x: torch.Tensor, y: torch.Tensor, w: torch.Tensor, size: int = 32):
    for start in range(0, len(x), size):
        yield x[start:start + size], y[start:start + size], w[start:start + size]


def train_epoch(model: nn.Module, optimizer: torch.optim.Optimizer, data: tuple) -> float:
    model.train()
    total = 0.0
    for x, y, w in batches(*data):
        optimizer.zero_grad()
        per_sample = F.cross_entropy(model(x), y, reduction="none") * w
        loss = sum(per_sample) / w.sum()  # expect: TS005
        loss.backward()
        optimizer.step()
        total += loss.item()
    return total


@torch.no_grad()
def accuracy(model: nn.Module, data: tuple) -> float:
    model.eval()
    correct = 0
    for x, y, _ in batches(*data):
        predicted = torch.argmax(model(x), dim=1)
        correct += int(sum(predicted == y))  # expect: TS005
    return correct / len(data[0])


def main() -> None:
    torch.manual_seed(0)
    data = make_data()
    model = nn.Sequential(nn.Linear(10, 32), nn.ReLU(), nn.Linear(32, 3))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for epoch in range(3):
        loss = train_epoch(model, optimizer, data)
        print(f"epoch {epoch}: loss {loss:.3f}  accuracy {accuracy(model, data):.2%}")


if __name__ == "__main__":
    main()
