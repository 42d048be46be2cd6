"""The evaluation loop: eval mode (dropout off) and no autograd graph."""

from __future__ import annotations

from typing import Dict

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader


@torch.no_grad()
def evaluate(model: nn.Module, loader: DataLoader, device: str = "cpu") -> Dict[str, float]:
    """Mean cross-entropy and accuracy of ``model`` over ``loader``."""
    model.eval()
    total_loss, correct, seen = 0.0, 0, 0
    for x, y in loader:
        x, y = x.to(device), y.to(device)
        logits = model(x)
        total_loss += F.cross_entropy(logits, y, reduction="sum").item()
        correct += (logits.argmax(dim=1) == y).sum().item()
        seen += y.numel()
    return {"loss": total_loss / seen, "accuracy": correct / seen}
