"""TS019 sigmoid-before-bce-with-logits: a binary classifier ends in nn.Sigmoid and uses BCEWithLogitsLoss.

A small detector on synthetic data (is the first feature positive?). The head ends
in ``nn.Sigmoid()``, and the loss is ``nn.BCEWithLogitsLoss``, which applies the
sigmoid again: the loss only sees inputs in (0, 1), so it can never go below
about 0.31, its gradients are squashed, and the model learns slowly.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset


def make_loader(samples: int = 128, features: int = 6) -> DataLoader:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(samples, features, generator=generator)
    y = (x[:, 0] + 0.1 * torch.randn(samples, generator=generator) > 0).float()
    return DataLoader(TensorDataset(x, y), batch_size=32, shuffle=True, generator=generator)


def build_model(features: int = 6) -> nn.Module:
    return nn.Sequential(nn.Linear(features, 16), nn.ReLU(), nn.Linear(16, 1), nn.Sigmoid())


def main() -> None:
    torch.manual_seed(0)
    model = build_model()
    criterion = nn.BCEWithLogitsLoss(pos_weight=torch.tensor(1.5))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    loader = make_loader()
    for epoch in range(3):
        total, correct = 0.0, 0
        for x, y in loader:
            optimizer.zero_grad()
            probs = model(x).squeeze(1)
            loss = criterion(probs, y)  # expect: TS019
            loss.backward()
            optimizer.step()
            total += loss.item()
            correct += int(((probs > 0.5).float() == y).sum())
        print(f"epoch {epoch}: loss {total / len(loader):.4f}, accuracy {correct / len(loader.dataset):.2f}")


if __name__ == "__main__":
    main()
