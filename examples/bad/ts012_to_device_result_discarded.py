"""TS012 to-device-result-discarded: batches "moved" to the device with a bare ``x.to(device)``.

A regression model on synthetic data. ``model.to(device)`` moves the model in place
(correct), but ``inputs.to(device)`` returns a moved *copy* and leaves ``inputs``
where it was. On a CPU-only CI machine nothing happens; on a GPU the first forward
crashes with "Expected all tensors to be on the same device".
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset


def make_loader(samples: int = 128, features: int = 8) -> DataLoader:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(samples, features, generator=generator)
    y = x @ torch.randn(features, 1, generator=generator) + 0.1 * torch.randn(samples, 1, generator=generator)
    return DataLoader(TensorDataset(x, y), batch_size=32, shuffle=True, generator=generator)


def main() -> None:
    torch.manual_seed(0)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 1))
    model.to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    loader = make_loader()
    for epoch in range(3):
        total = 0.0
        for inputs, targets in loader:
            inputs.to(device)  # expect: TS012
            targets.to(device)  # expect: TS012
            optimizer.zero_grad()
            loss = nn.functional.mse_loss(model(inputs), targets)
            loss.backward()
            optimizer.step()
            total += loss.item()
        print(f"epoch {epoch}: mean loss {total / len(loader):.4f}")


if __name__ == "__main__":
    main()
