"""TS010 softmax-before-cross-entropy, fixed: the model returns logits; probabilities only for metrics.

``forward`` returns the raw scores, ``nn.CrossEntropyLoss`` applies ``log_softmax``
to them itself, and the evaluation turns them into probabilities after the loss,
for the accuracy only.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset


class Classifier(nn.Module):
    def __init__(self, features: int = 10, classes: int = 3) -> None:
        super().__init__()
        self.hidden = nn.Linear(features, 32)
        self.out = nn.Linear(32, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.hidden(x))
        return self.out(x)


def make_loader(samples: int = 128, features: int = 10, classes: int = 3) -> DataLoader:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(samples, features, generator=generator)
    y = (x[:, :classes] + 0.1 * torch.randn(samples, classes, generator=generator)).argmax(dim=1)
    return DataLoader(TensorDataset(x, y), batch_size=32, shuffle=True, generator=generator)


def train_one_epoch(model: nn.Module, loader: DataLoader, criterion: nn.Module,
                    optimizer: torch.optim.Optimizer) -> float:
    model.train()
    total = 0.0
    for x, y in loader:
        optimizer.zero_grad()
        loss = criterion(model(x), y)
        loss.backward()
        optimizer.step()
        total += loss.item()
    return total / len(loader)


@torch.no_grad()
def evaluate(model: nn.Module, loader: DataLoader, criterion: nn.Module) -> float:
    model.eval()
    correct, total_loss = 0, 0.0
    for x, y in loader:
        logits = model(x)
        total_loss += criterion(logits, y).item()
        probs = logits.softmax(dim=1)
        correct += int((probs.argmax(dim=1) == y).sum())
    model.train()
    return correct / len(loader.dataset)


def main() -> None:
    torch.manual_seed(0)
    model = Classifier()
    criterion = nn.CrossEntropyLoss()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    loader = make_loader()
    for epoch in range(3):
        loss = train_one_epoch(model, loader, criterion, optimizer)
        accuracy = evaluate(model, loader, criterion)
        print(f"epoch {epoch}: loss {loss:.4f}, accuracy {accuracy:.2f}")


if __name__ == "__main__":
    main()
