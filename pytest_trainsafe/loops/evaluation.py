"""Reference loop: evaluating a trained model restored from a checkpoint.

The evaluation function is decorated with ``@torch.no_grad()`` (no graph is
built for outputs that are never backpropagated) and puts the model in eval
mode (dropout off, batch-norm uses its running statistics). The checkpoint is
saved to and loaded from memory with ``map_location``, as one loads weights
trained on another device. Run it with ``python -m pytest_trainsafe.loops.evaluation``.
"""

from __future__ import annotations

import io
from typing import Dict

import torch
import torch.nn as nn
from torch.utils.data import DataLoader, TensorDataset

# inject TS003: from pytest_trainsafe.loops import other_device

FEATURES = 12
CLASSES = 5


class Net(nn.Module):
    def __init__(self, in_features: int = FEATURES, hidden: int = 24, classes: int = CLASSES) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Linear(in_features, hidden), nn.BatchNorm1d(hidden), nn.ReLU(),
                                      nn.Dropout(0.2))
        self.classifier = nn.Linear(hidden, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.features(x)
        return self.classifier(features)  # inject TS002: return nn.Linear(24, CLASSES).to(features.device)(features)


def checkpoint() -> bytes:
    """A serialized state dict, standing in for weights trained elsewhere."""
    torch.manual_seed(0)
    buffer = io.BytesIO()
    torch.save(Net().state_dict(), buffer)
    return buffer.getvalue()


def make_loader(samples: int = 64, batch_size: int = 16) -> DataLoader:
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(samples, FEATURES, generator=generator)
    y = torch.randint(0, CLASSES, (samples,), generator=generator)
    return DataLoader(TensorDataset(x, y), batch_size=batch_size)


@torch.no_grad()  # inject TS004:
def evaluate(model: nn.Module, loader: DataLoader, device: str) -> Dict[str, float]:
    """Mean loss, accuracy and per-class recall over ``loader``."""
    model.eval()
    loss_fn = nn.CrossEntropyLoss(reduction="sum")
    total_loss, correct = 0.0, 0
    hits = torch.zeros(CLASSES, device=device)
    counts = torch.zeros(CLASSES, device=device)
    for x, y in loader:
        x, y = x.to(device), y.to(device)  # inject TS003: x, y = x.to(other_device(device)), y.to(device)
        logits = model(x)
        total_loss += loss_fn(logits, y).item()
        predictions = torch.argmax(logits, dim=1)
        correct += (predictions == y).sum().item()  # inject TS005: correct += sum(predictions == y).item()
        hits += torch.bincount(y[predictions == y], minlength=CLASSES)
        counts += torch.bincount(y, minlength=CLASSES)
    seen = counts.sum().item()
    recall = hits / counts.clamp(min=1)
    return {"loss": total_loss / seen, "accuracy": correct / seen, "mean_recall": recall.mean().item()}


def run(device: str = "cpu", steps: int = 4) -> Dict[str, float]:
    """Restore the model and evaluate it on ``steps`` batches."""
    model = Net()
    model.load_state_dict(torch.load(io.BytesIO(checkpoint()), map_location="cpu", weights_only=True))
    model.to(device)
    return evaluate(model, make_loader(samples=16 * steps), device)


if __name__ == "__main__":
    print(run())
