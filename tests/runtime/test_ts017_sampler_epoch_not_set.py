"""TS017 at runtime: a training DistributedSampler iterated again without set_epoch, and the look-alikes.

No process group is needed: the samplers are built with ``num_replicas=2, rank=0``.
Each buggy loop marks the line the finding must point at with ``# TS017 here``.
"""

from __future__ import annotations

from typing import Callable

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
from torch.utils.data.distributed import DistributedSampler

from helpers import finding_lines, found_lines, marked_lines, watch

CODES = ["TS017"]


def _dataset(samples: int = 32) -> TensorDataset:
    generator = torch.Generator().manual_seed(0)
    return TensorDataset(torch.randn(samples, 4, generator=generator), torch.randn(samples, 1, generator=generator))


def _setup():
    torch.manual_seed(0)
    model = nn.Linear(4, 1)
    return model, torch.optim.SGD(model.parameters(), lr=0.01)


def _step(model: nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor) -> None:
    optimizer.zero_grad()
    nn.functional.mse_loss(model(x), y).backward()
    optimizer.step()


# -- the bug ---------------------------------------------------------------------------


def epochs_without_set_epoch() -> None:
    model, optimizer = _setup()
    dataset = _dataset()
    sampler = DistributedSampler(dataset, num_replicas=2, rank=0)
    loader = DataLoader(dataset, batch_size=4, sampler=sampler)
    for epoch in range(3):
        for x, y in loader:  # TS017 here
            _step(model, optimizer, x, y)


def test_epochs_without_set_epoch_are_reported_at_the_loop_over_the_loader() -> None:
    findings = watch(epochs_without_set_epoch, codes=CODES)
    assert finding_lines(findings) == marked_lines(epochs_without_set_epoch, codes=CODES)
    assert "the shuffle of epoch 0 is replayed" in findings[0].message


def a_new_sampler_every_epoch() -> None:
    model, optimizer = _setup()
    dataset = _dataset()
    for epoch in range(2):
        loader = DataLoader(dataset, batch_size=4, sampler=DistributedSampler(dataset, num_replicas=2, rank=0))
        for x, y in loader:  # TS017 here
            _step(model, optimizer, x, y)


def with_an_evaluation_pass_each_epoch() -> None:
    model, optimizer = _setup()
    train, val = _dataset(), _dataset(16)
    sampler = DistributedSampler(train, num_replicas=2, rank=0)
    train_loader = DataLoader(train, batch_size=4, sampler=sampler)
    val_loader = DataLoader(val, batch_size=8)
    for epoch in range(2):
        for x, y in train_loader:  # TS017 here
            _step(model, optimizer, x, y)
        with torch.no_grad():
            for x, _ in val_loader:
                model(x)


def step_based_loop_restarting_the_iterator() -> None:
    model, optimizer = _setup()
    dataset = _dataset(16)
    loader = DataLoader(dataset, batch_size=4, sampler=DistributedSampler(dataset, num_replicas=2, rank=0))
    iterator = iter(loader)
    for _ in range(5):
        try:
            x, y = next(iterator)
        except StopIteration:
            iterator = iter(loader)
            x, y = next(iterator)  # TS017 here
        _step(model, optimizer, x, y)


@pytest.mark.parametrize("loop", [a_new_sampler_every_epoch, with_an_evaluation_pass_each_epoch,
                                  step_based_loop_restarting_the_iterator])
def test_other_ways_of_replaying_the_order_are_reported(loop: Callable) -> None:
    assert found_lines(loop, codes=CODES) == marked_lines(loop, codes=CODES)


# -- legitimate look-alikes: silent ------------------------------------------------------


def with_set_epoch() -> None:
    model, optimizer = _setup()
    dataset = _dataset()
    sampler = DistributedSampler(dataset, num_replicas=2, rank=0, seed=3)
    loader = DataLoader(dataset, batch_size=4, sampler=sampler)
    for epoch in range(3):
        loader.sampler.set_epoch(epoch)
        for x, y in loader:
            _step(model, optimizer, x, y)


def without_shuffle() -> None:
    model, optimizer = _setup()
    dataset = _dataset()
    loader = DataLoader(dataset, batch_size=4, sampler=DistributedSampler(dataset, num_replicas=2, rank=0,
                                                                           shuffle=False))
    for epoch in range(3):
        for x, y in loader:
            _step(model, optimizer, x, y)


def shuffling_evaluation_sampler_every_epoch() -> None:
    model, optimizer = _setup()
    train, val = _dataset(), _dataset(16)
    train_sampler = DistributedSampler(train, num_replicas=2, rank=0)
    train_loader = DataLoader(train, batch_size=4, sampler=train_sampler)
    val_loader = DataLoader(val, batch_size=8, sampler=DistributedSampler(val, num_replicas=2, rank=0))
    for epoch in range(3):
        train_sampler.set_epoch(epoch)
        for x, y in train_loader:
            _step(model, optimizer, x, y)
        with torch.no_grad():
            for x, _ in val_loader:
                model(x)


def evaluation_only() -> None:
    model, _ = _setup()
    dataset = _dataset()
    loader = DataLoader(dataset, batch_size=8, sampler=DistributedSampler(dataset, num_replicas=2, rank=0))
    with torch.no_grad():
        for _ in range(2):
            for x, _ in loader:
                model(x)


def single_epoch() -> None:
    model, optimizer = _setup()
    dataset = _dataset()
    for x, y in DataLoader(dataset, batch_size=4, sampler=DistributedSampler(dataset, num_replicas=2, rank=0)):
        _step(model, optimizer, x, y)


def two_ranks_of_the_same_data() -> None:
    model, optimizer = _setup()
    dataset = _dataset()
    for rank in range(2):
        for x, y in DataLoader(dataset, batch_size=4, sampler=DistributedSampler(dataset, num_replicas=2, rank=rank)):
            _step(model, optimizer, x, y)


@pytest.mark.parametrize("loop", [with_set_epoch, without_shuffle, shuffling_evaluation_sampler_every_epoch,
                                  evaluation_only, single_epoch, two_ranks_of_the_same_data])
def test_legitimate_loops_are_silent(loop: Callable) -> None:
    assert watch(loop, codes=CODES) == []


def test_the_sampler_and_the_loader_are_restored() -> None:
    originals = DistributedSampler.__iter__, DataLoader.__iter__
    watch(epochs_without_set_epoch, codes=CODES)
    assert (DistributedSampler.__iter__, DataLoader.__iter__) == originals


def worker_processes() -> None:
    model, optimizer = _setup()
    dataset = _dataset(16)
    sampler = DistributedSampler(dataset, num_replicas=2, rank=0)
    loader = DataLoader(dataset, batch_size=4, sampler=sampler, num_workers=1)
    for epoch in range(2):
        for x, y in loader:  # TS017 here
            _step(model, optimizer, x, y)


def test_a_loader_with_worker_processes_is_watched_too() -> None:
    assert found_lines(worker_processes, codes=CODES) == marked_lines(worker_processes, codes=CODES)
