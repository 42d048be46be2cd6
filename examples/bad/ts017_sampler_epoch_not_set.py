"""TS017 sampler-epoch-not-set: every epoch replays the same shuffled order on this rank.

The per-rank body of a DistributedDataParallel training script, run here as
rank 0 of 2 (the launcher's ``num_replicas`` / ``rank`` passed explicitly, so no
process group is needed). The DistributedSampler shuffles, but ``set_epoch`` is
never called: its generator is seeded with ``seed + 0`` every epoch.
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
        total = 0.0
        for x, y in loader:  # expect: TS017
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
