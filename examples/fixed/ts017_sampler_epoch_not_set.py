"""TS017 sampler-epoch-not-set, fixed: ``sampler.set_epoch(epoch)`` at the start of every epoch.

Each epoch now draws a new permutation (seeded by ``seed + epoch``), the same one
on every rank, so the ranks still split the data without overlap.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
from torch.utils.data.distributed import DistributedSampler


def make_dataset(samples: int = 128) -> TensorDataset:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(samples, 12, generator=generator)
    y = (x[:, :4].sum(dim=1) > 0).long()
    return TensorDataset(x, y)


def train(rank: int = 0, world_size: int = 2, epochs: int = 3) -> float:
    torch.manual_seed(0)
    dataset = make_dataset()
    sampler = DistributedSampler(dataset, num_replicas=world_size, rank=rank, shuffle=True, seed=17)
    loader = DataLoader(dataset, batch_size=16, sampler=sampler, drop_last=True)
    model = nn.Sequential(nn.Linear(12, 32), nn.ReLU(), nn.Linear(32, 2))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    criterion = nn.CrossEntropyLoss()
    for epoch in range(epochs):
        model.train()
        sampler.set_epoch(epoch)
        total = 0.0
        for x, y in loader:
            optimizer.zero_grad()
            loss = criterion(model(x), y)
            loss.backward()
            optimizer.step()
            total += loss.item()
        print(f"rank {rank} epoch {epoch}: mean loss {total / len(loader):.4f}")
    return total / len(loader)


def main() -> None:
    train()


if __name__ == "__main__":
    main()
