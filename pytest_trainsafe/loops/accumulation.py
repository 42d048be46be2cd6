"""Reference loop: gradient accumulation over ``accumulation_steps`` micro-batches, with mixed precision.

Gradients of several micro-batches are summed (each loss divided by the number
of micro-batches, so the sum is the mean), then one optimizer step is taken and
the gradients are cleared: several ``backward()`` calls per ``step()`` are
correct here, and trainsafe must never flag them. Mixed precision follows the
recipe of ``torch.amp``: autocast for the forward pass (float16 with a
GradScaler on CUDA; bfloat16, which needs no scaling, on the CPU). The scaler
is disabled on the CPU, where its methods are pass-throughs, so one loop serves
both. Run it with ``python -m pytest_trainsafe.loops.accumulation``.
"""

from __future__ import annotations

from typing import Dict

import torch
import torch.nn as nn
from torch.utils.data import DataLoader, TensorDataset

# inject TS003: from pytest_trainsafe.loops import other_device

FEATURES = 16
CLASSES = 3


class Classifier(nn.Module):
    def __init__(self, in_features: int = FEATURES, hidden: int = 32, classes: int = CLASSES) -> None:
        super().__init__()
        self.hidden = nn.Linear(in_features, hidden)
        self.norm = nn.LayerNorm(hidden)
        self.out = nn.Linear(hidden, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.norm(self.hidden(x)))
        return self.out(h)  # inject TS002: return nn.Linear(32, CLASSES).to(h.device)(h)


def make_loader(samples: int = 96, micro_batch: int = 8) -> DataLoader:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(samples, FEATURES, generator=generator)
    y = (x[:, :CLASSES] + 0.1 * torch.randn(samples, CLASSES, generator=generator)).argmax(dim=1)
    return DataLoader(TensorDataset(x, y), batch_size=micro_batch, shuffle=True, generator=generator)


def run(device: str = "cpu", steps: int = 3, accumulation_steps: int = 4) -> Dict[str, float]:
    """Take ``steps`` optimizer steps of ``accumulation_steps`` micro-batches each; the last mean loss."""
    torch.manual_seed(0)
    device_type = torch.device(device).type
    amp_dtype = torch.float16 if device_type == "cuda" else torch.bfloat16
    model = Classifier().to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    scaler = torch.amp.GradScaler(device_type, enabled=device_type == "cuda")
    loss_fn = nn.CrossEntropyLoss()
    loader = make_loader()

    model.train()
    taken, running, last_loss = 0, 0.0, float("nan")
    while taken < steps:
        for i, (x, y) in enumerate(loader):
            x, y = x.to(device), y.to(device)  # inject TS003: x, y = x.to(other_device(device)), y.to(device)
            with torch.autocast(device_type, dtype=amp_dtype):
                loss = loss_fn(model(x), y) / accumulation_steps
            scaler.scale(loss).backward()
            running += loss.item()
            if (i + 1) % accumulation_steps == 0:
                scaler.step(optimizer)
                scaler.update()
                optimizer.zero_grad(set_to_none=True)  # inject TS001: pass
                last_loss, running = running, 0.0
                taken += 1
                if taken == steps:
                    break
    return {"train_loss": last_loss, "optimizer_steps": float(taken)}


if __name__ == "__main__":
    print(run())
