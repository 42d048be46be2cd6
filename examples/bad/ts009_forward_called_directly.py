"""TS009 forward-called-directly: ``model.forward(x)`` skips the model's hooks.

A classifier whose inputs are standardised by a forward pre-hook registered on the model
(the statistics come from the training data). Training calls ``model(x)``, so the hook
runs; ``predict()`` calls ``model.forward(x)``, so it does not: predictions are made on
raw, unscaled inputs and the accuracy printed at the end is far below the training one.
"""

from __future__ import annotations

from typing import Tuple

import torch
from torch import nn


def make_data(samples: int = 256) -> Tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(samples, 5, generator=generator) * torch.tensor([1.0, 10.0, 100.0, 0.1, 5.0]) + 50.0
    y = ((x[:, 2] - 50.0) / 100.0 + (x[:, 1] - 50.0) / 10.0 > 0).long()
    return x, y


def add_standardisation(model: nn.Module, x: torch.Tensor) -> None:
    mean, std = x.mean(dim=0), x.std(dim=0)
    model.register_forward_pre_hook(lambda module, inputs: ((inputs[0] - mean) / std,))


def predict(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return model.forward(x).argmax(dim=1)  # expect: TS009


def main() -> None:
    torch.manual_seed(0)
    x, y = make_data()
    model = nn.Sequential(nn.Linear(5, 16), nn.ReLU(), nn.Linear(16, 2))
    add_standardisation(model, x)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
    model.train()
    for epoch in range(3):
        for i in range(0, len(x), 64):
            optimizer.zero_grad()
            loss = nn.functional.cross_entropy(model(x[i:i + 64]), y[i:i + 64])
            loss.backward()
            optimizer.step()
        print(f"epoch {epoch}: loss {loss.item():.3f}")
    accuracy = (predict(model, x) == y).float().mean().item()
    print(f"accuracy {accuracy:.3f}")


if __name__ == "__main__":
    main()
