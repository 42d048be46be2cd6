"""TS006 eval-mode-missing: validation runs with dropout and batch-norm still in train mode.

A small classifier with batch-norm and dropout on synthetic data, trained for a few
epochs with a validation pass after each one. ``train_one_epoch()`` switches the model
to train mode, but ``validate()`` never switches it to eval mode: dropout keeps
dropping activations, batch-norm normalises each validation batch with its own
statistics and overwrites its running statistics with validation data.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset


class Classifier(nn.Module):
    def __init__(self, features: int = 12, hidden: int = 32, classes: int = 3) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(features, hidden), nn.BatchNorm1d(hidden), nn.ReLU(), nn.Dropout(0.3))
        self.head = nn.Linear(hidden, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


def make_loaders(samples: int = 256, features: int = 12, classes: int = 3):
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(samples, features, generator=generator)
    y = (x[:, :classes] + 0.2 * torch.randn(samples, classes, generator=generator)).argmax(dim=1)
    train = TensorDataset(x[:192], y[:192])
    val = TensorDataset(x[192:], y[192:])
    return (DataLoader(train, batch_size=32, shuffle=True, generator=generator),
            DataLoader(val, batch_size=32))


def train_one_epoch(model: nn.Module, loader: DataLoader, optimizer: torch.optim.Optimizer,
                    loss_fn: nn.Module) -> float:
    model.train()
    total = 0.0
    for x, y in loader:
        optimizer.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        optimizer.step()
        total += loss.item()
    return total / len(loader)


def validate(model: nn.Module, loader: DataLoader, loss_fn: nn.Module):
    total, correct, seen = 0.0, 0, 0
    with torch.no_grad():
        for x, y in loader:
            logits = model(x)  # expect: TS006
            total += loss_fn(logits, y).item()
            correct += (logits.argmax(dim=1) == y).sum().item()
            seen += len(y)
    return total / len(loader), correct / seen


def main() -> None:
    torch.manual_seed(0)
    model = Classifier()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    loss_fn = nn.CrossEntropyLoss()
    train_loader, val_loader = make_loaders()
    for epoch in range(3):
        train_loss = train_one_epoch(model, train_loader, optimizer, loss_fn)
        val_loss, accuracy = validate(model, val_loader, loss_fn)
        print(f"epoch {epoch}: train {train_loss:.3f}  val {val_loss:.3f}  accuracy {accuracy:.3f}")


if __name__ == "__main__":
    main()
