"""Reference loop: DistributedDataParallel on the gloo backend, two processes on one machine.

The canonical shape of a multi-process training script: ``run()`` starts one
process per rank with ``torch.multiprocessing.spawn``; each rank joins the
process group (a file rendezvous in a temporary directory: no network beyond
loopback), builds the same model, wraps it in ``DistributedDataParallel``
(which averages the gradients across ranks during ``backward()``) and trains on
its own shard of the data, chosen by a ``DistributedSampler`` that is re-seeded
with ``set_epoch(epoch)`` at the start of every epoch. Run it with ``python -m
pytest_trainsafe.loops.ddp``.

``_worker`` is pickled by reference into each child process, so this module
must be importable by name there (it is; an injected copy must be written to a
directory on ``sys.path`` under an importable name, see tests/distributed).
"""

from __future__ import annotations

import datetime
import json
import os
import shutil
import tempfile
from typing import Dict

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn as nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, TensorDataset
from torch.utils.data.distributed import DistributedSampler

WORLD_SIZE = 2
FEATURES = 8
HIDDEN = 16
CLASSES = 3


class MLP(nn.Module):
    """One hidden layer and a classification head, created once in ``__init__``."""

    def __init__(self, in_features: int = FEATURES, hidden: int = HIDDEN, classes: int = CLASSES) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(in_features, hidden), nn.ReLU())
        self.head = nn.Linear(hidden, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


def make_dataset(samples: int = 64) -> TensorDataset:
    """Synthetic, linearly separable classes; every rank builds the same dataset from the same seed."""
    generator = torch.Generator().manual_seed(0)
    weights = torch.randn(FEATURES, CLASSES, generator=generator)
    x = torch.randn(samples, FEATURES, generator=generator)
    return TensorDataset(x, (x @ weights).argmax(dim=1))


def train(rank: int, world_size: int, device: torch.device, epochs: int, max_steps: int) -> float:
    """This rank's training: its shard of the data, a DDP-wrapped model; the last epoch's mean loss."""
    torch.manual_seed(0)  # the same initial weights everywhere (DDP also broadcasts rank 0's)
    dataset = make_dataset()
    sampler = DistributedSampler(dataset, num_replicas=world_size, rank=rank, shuffle=True)
    loader = DataLoader(dataset, batch_size=8, sampler=sampler)
    model = DistributedDataParallel(MLP().to(device), device_ids=[device.index] if device.type == "cuda" else None)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()

    mean_loss = float("nan")
    for epoch in range(epochs):
        sampler.set_epoch(epoch)  # inject TS017: pass
        model.train()
        total, steps = 0.0, 0
        for x, y in loader:
            if steps == max_steps:
                break
            x, y = x.to(device), y.to(device)
            optimizer.zero_grad(set_to_none=True)  # inject TS001: pass
            loss = loss_fn(model(x), y)
            loss.backward()  # DistributedDataParallel all-reduces the gradients here
            optimizer.step()
            total += loss.item()
            steps += 1
        mean_loss = total / max(steps, 1)
    return mean_loss


def _worker(rank: int, world_size: int, workdir: str, device: str, epochs: int, steps: int, timeout: float) -> None:
    """One rank: join the group, train, and (rank 0) write the loss averaged over the ranks to ``workdir``."""
    torch.set_num_threads(1)  # the ranks share the machine's cores
    dist.init_process_group("gloo", init_method="file://" + os.path.join(workdir, "rendezvous"), rank=rank,
                            world_size=world_size, timeout=datetime.timedelta(seconds=timeout))
    try:
        local = torch.device(f"cuda:{rank % torch.cuda.device_count()}") if device.startswith("cuda") \
            else torch.device(device)
        mean_loss = train(rank, world_size, local, epochs, steps)
        averaged = torch.tensor([mean_loss], device=local)
        dist.all_reduce(averaged)  # a collective: every rank takes part
        if rank == 0:
            with open(os.path.join(workdir, "metrics.json"), "w", encoding="utf-8") as handle:
                json.dump({"train_loss": averaged.item() / world_size}, handle)
    finally:
        dist.destroy_process_group()


def run(device: str = "cpu", steps: int = 3, epochs: int = 2, world_size: int = WORLD_SIZE,
        timeout: float = 120.0, start_method: str = "spawn") -> Dict[str, float]:
    """Train on ``world_size`` processes for ``epochs`` epochs of ``steps`` steps each; rank 0's metrics.

    ``timeout`` bounds the rendezvous and every collective, so a rank that dies
    early makes the others fail instead of hanging. ``start_method="spawn"``
    (the portable default, what ``mp.spawn`` does) starts fresh interpreters that
    import torch again; ``"fork"`` (Linux, CPU only) starts the ranks in a
    fraction of the time, which is what the test suite uses for most cases.
    """
    workdir = tempfile.mkdtemp(prefix="trainsafe-ddp-")
    args = (world_size, workdir, device, epochs, steps, timeout)
    try:
        if start_method == "spawn":
            mp.spawn(_worker, args=args, nprocs=world_size)
        else:
            mp.start_processes(_worker, args=args, nprocs=world_size, start_method=start_method)
        with open(os.path.join(workdir, "metrics.json"), encoding="utf-8") as handle:
            return json.load(handle)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    print(run())
