"""The training loop, and ``python -m tinynet.train`` to run it."""

from __future__ import annotations

import argparse
from typing import Dict, List, Optional

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from .data import make_loaders
from .evaluate import evaluate
from .model import TinyNet


def train_one_epoch(model: nn.Module, loader: DataLoader, optimizer: torch.optim.Optimizer,
                    device: str = "cpu", max_steps: Optional[int] = None) -> float:
    """One pass over ``loader`` (or its first ``max_steps`` batches); the mean training loss."""
    model.train()
    total, steps = 0.0, 0
    for x, y in loader:
        if max_steps is not None and steps == max_steps:
            break
        x, y = x.to(device), y.to(device)
        optimizer.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
        total += loss.item()
        steps += 1
    return total / max(steps, 1)


def fit(model: nn.Module, train_loader: DataLoader, val_loader: DataLoader, epochs: int = 5,
        lr: float = 1e-2, device: str = "cpu", max_steps: Optional[int] = None) -> List[Dict[str, float]]:
    """Train for ``epochs`` epochs, validating after each; the history of metrics."""
    model.to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    history = []
    for epoch in range(epochs):
        train_loss = train_one_epoch(model, train_loader, optimizer, device, max_steps)
        history.append({"epoch": float(epoch), "train_loss": train_loss, **evaluate(model, val_loader, device)})
    return history


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description="Train tinynet on synthetic blobs.")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--lr", type=float, default=1e-2)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    train_loader, val_loader = make_loaders()
    for metrics in fit(TinyNet(), train_loader, val_loader, args.epochs, args.lr, args.device):
        print(", ".join(f"{key} {value:.4f}" for key, value in metrics.items()))


if __name__ == "__main__":
    main()
