"""Reference loop: a small CNN with batch-norm on torchvision's FakeData (random images, no download).

The same loop shape as the MLP's, on image batches, with Adam, batch-norm
(whose statistics make train/eval mode matter) and a validation pass under
``torch.inference_mode()``. Run it with ``python -m pytest_trainsafe.loops.cnn``.
"""

from __future__ import annotations

from typing import Dict, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader
from torchvision import datasets, transforms

# inject TS003: from pytest_trainsafe.loops import other_device
# inject TS004: import contextlib

IMAGE_SIZE = (1, 16, 16)
CLASSES = 4


class SmallCNN(nn.Module):
    """Two conv blocks, global average pooling and a linear classifier."""

    def __init__(self, channels: int = IMAGE_SIZE[0], classes: int = CLASSES) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, 8, kernel_size=3, padding=1)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 16, kernel_size=3, padding=1)
        self.bn2 = nn.BatchNorm2d(16)
        self.classifier = nn.Linear(16, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 2)
        x = F.relu(self.bn2(self.conv2(x)))
        x = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)
        return self.classifier(x)  # inject TS002: return nn.Linear(16, CLASSES).to(x.device)(x)


def make_loaders(train_size: int = 32, val_size: int = 16, batch_size: int = 8) -> Tuple[DataLoader, DataLoader]:
    """FakeData images as tensors; the validation images differ from the training ones (another offset)."""
    to_tensor = transforms.ToTensor()
    train_set = datasets.FakeData(size=train_size, image_size=IMAGE_SIZE, num_classes=CLASSES, transform=to_tensor)
    val_set = datasets.FakeData(size=val_size, image_size=IMAGE_SIZE, num_classes=CLASSES, transform=to_tensor,
                                random_offset=train_size)
    generator = torch.Generator().manual_seed(0)
    return (DataLoader(train_set, batch_size=batch_size, shuffle=True, generator=generator),
            DataLoader(val_set, batch_size=batch_size))


def train_one_epoch(model: nn.Module, loader: DataLoader, optimizer: torch.optim.Optimizer,
                    device: str, max_steps: int) -> Tuple[float, int]:
    """One pass over ``loader`` (at most ``max_steps`` batches); (mean loss, steps taken)."""
    model.train()
    total, steps = 0.0, 0
    for images, labels in loader:
        if steps == max_steps:
            break
        images, labels = images.to(device), labels.to(device)  # inject TS003: images, labels = images.to(other_device(device)), labels.to(device)
        optimizer.zero_grad(set_to_none=True)  # inject TS001: pass
        loss = F.cross_entropy(model(images), labels)
        loss.backward()
        optimizer.step()
        total += loss.item()
        steps += 1
    return total / max(steps, 1), steps


def evaluate(model: nn.Module, loader: DataLoader, device: str) -> Dict[str, float]:
    """Accuracy over ``loader`` in eval mode; inference_mode builds no graph at all."""
    model.eval()
    correct, seen = 0, 0
    with torch.inference_mode():  # inject TS004: with contextlib.nullcontext():
        for images, labels in loader:
            images, labels = images.to(device), labels.to(device)
            predictions = torch.argmax(model(images), dim=1)
            correct += (predictions == labels).sum().item()  # inject TS005: correct += sum(predictions == labels).item()
            seen += labels.numel()
    return {"accuracy": correct / seen}


def run(device: str = "cpu", steps: int = 8) -> Dict[str, float]:
    """Train for ``steps`` optimizer steps (validating after each epoch); the last metrics."""
    torch.manual_seed(0)
    train_loader, val_loader = make_loaders()
    model = SmallCNN().to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)

    done, train_loss = 0, float("nan")
    metrics: Dict[str, float] = {}
    while done < steps:
        train_loss, taken = train_one_epoch(model, train_loader, optimizer, device, steps - done)
        done += taken
        metrics = evaluate(model, val_loader, device)
    return {"train_loss": train_loss, "val_accuracy": metrics["accuracy"]}


if __name__ == "__main__":
    print(run())
