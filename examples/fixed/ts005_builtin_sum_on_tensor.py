"""TS005 builtin-sum-on-tensor, fixed: tensors are reduced with tensor.sum().

The same weighted classifier as ``examples/bad/ts005_builtin_sum_on_tensor.py``:
``per_sample.sum()`` and ``(predicted == y).sum()`` are one op each, whatever
the batch size, and the accuracy count is read back once per batch.
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
        loss = per_sample.sum() / w.sum()
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
        correct += int((predicted == y).sum())
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
