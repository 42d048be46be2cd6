"""Reference loop: an MLP classifier trained on synthetic data, validated after every epoch.

The canonical shape of a PyTorch training loop: seed, data loaders, model moved
to the device once, then per epoch ``model.train()`` and per batch
zero_grad / forward / backward / step, followed by a validation pass in
``model.eval()`` under ``torch.no_grad()``. Run it with ``python -m
pytest_trainsafe.loops.mlp``.
"""

from __future__ import annotations

from typing import Dict, Tuple

import torch
import torch.nn as nn
from torch.utils.data import DataLoader, TensorDataset

# inject TS003: from pytest_trainsafe.loops import other_device
# inject TS004: import contextlib

FEATURES = 20
HIDDEN = 32
CLASSES = 4


class MLP(nn.Module):
    """Two hidden layers and a linear classification head, all created once in ``__init__``."""

    def __init__(self, in_features: int = FEATURES, hidden: int = HIDDEN, classes: int = CLASSES) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Linear(in_features, hidden), nn.ReLU(),
            nn.Linear(hidden, hidden), nn.ReLU(),
        )
        self.head = nn.Linear(hidden, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.body(x)
        return self.head(h)  # inject TS002: return nn.Linear(HIDDEN, CLASSES).to(h.device)(h)


def make_loaders(samples: int = 128, batch_size: int = 16) -> Tuple[DataLoader, DataLoader]:
    """Linearly separable synthetic classes: a training loader (shuffled) and a validation loader."""
    generator = torch.Generator().manual_seed(0)
    weights = torch.randn(FEATURES, CLASSES, generator=generator)

    def split(n: int) -> TensorDataset:
        x = torch.randn(n, FEATURES, generator=generator)
        return TensorDataset(x, (x @ weights).argmax(dim=1))

    train = DataLoader(split(samples), batch_size=batch_size, shuffle=True, generator=generator)
    val = DataLoader(split(samples // 2), batch_size=batch_size)
    return train, val


def train_one_epoch(model: nn.Module, loader: DataLoader, optimizer: torch.optim.Optimizer,
                    loss_fn: nn.Module, device: str, max_steps: int) -> Tuple[float, int]:
    """Train for one pass over ``loader`` (at most ``max_steps`` batches); (mean loss, steps taken)."""
    model.train()
    total, steps = 0.0, 0
    for x, y in loader:
        if steps == max_steps:
            break
        x, y = x.to(device), y.to(device)  # inject TS003: x, y = x.to(other_device(device)), y.to(device)
        optimizer.zero_grad(set_to_none=True)  # inject TS001: pass
        loss = loss_fn(model(x), y)
        loss.backward()
        optimizer.step()
        total += loss.item()
        steps += 1
    return total / max(steps, 1), steps


def evaluate(model: nn.Module, loader: DataLoader, loss_fn: nn.Module, device: str) -> Dict[str, float]:
    """Mean loss and accuracy over ``loader``, in eval mode and without building a graph."""
    model.eval()
    total_loss, correct, seen = 0.0, 0, 0
    with torch.no_grad():  # inject TS004: with contextlib.nullcontext():
        for x, y in loader:
            x, y = x.to(device), y.to(device)
            logits = model(x)
            total_loss += loss_fn(logits, y).item() * y.size(0)
            predictions = torch.argmax(logits, dim=1)
            correct += (predictions == y).sum().item()  # inject TS005: correct += sum(predictions == y).item()
            seen += y.size(0)
    return {"loss": total_loss / seen, "accuracy": correct / seen}


def run(device: str = "cpu", steps: int = 16) -> Dict[str, float]:
    """Train for ``steps`` optimizer steps (validating after each epoch); the last metrics."""
    torch.manual_seed(0)
    train_loader, val_loader = make_loaders()
    model = MLP().to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()

    done, train_loss = 0, float("nan")
    metrics: Dict[str, float] = {}
    while done < steps:
        train_loss, taken = train_one_epoch(model, train_loader, optimizer, loss_fn, device, steps - done)
        done += taken
        metrics = evaluate(model, val_loader, loss_fn, device)
    return {"train_loss": train_loss, "val_loss": metrics["loss"], "val_accuracy": metrics["accuracy"]}


if __name__ == "__main__":
    print(run())
