"""Synthetic data: three Gaussian blobs, so the tests need no download."""

from __future__ import annotations

from typing import Tuple

import torch
from torch.utils.data import DataLoader, TensorDataset


def make_dataset(samples: int, in_features: int = 8, classes: int = 3, seed: int = 0) -> TensorDataset:
    generator = torch.Generator().manual_seed(seed)
    centers = 2.0 * torch.randn(classes, in_features, generator=generator)
    labels = torch.randint(0, classes, (samples,), generator=generator)
    features = centers[labels] + torch.randn(samples, in_features, generator=generator)
    return TensorDataset(features, labels)


def make_loaders(samples: int = 256, batch_size: int = 32, seed: int = 0) -> Tuple[DataLoader, DataLoader]:
    """A shuffled training loader and a validation loader drawn from the same blobs."""
    train = make_dataset(samples, seed=seed)
    val = make_dataset(samples // 4, seed=seed)
    generator = torch.Generator().manual_seed(seed)
    return (DataLoader(train, batch_size=batch_size, shuffle=True, generator=generator),
            DataLoader(val, batch_size=batch_size))
