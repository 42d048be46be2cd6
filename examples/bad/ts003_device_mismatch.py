"""TS003 device-mismatch: an LSTM's initial state is created on the CPU inside forward().

A small sequence classifier (embedding, LSTM, linear head) trained on synthetic
token sequences. The model and every batch are moved to ``device``, but
``forward()`` builds the LSTM's initial hidden and cell states with
``torch.zeros(...)`` and no ``device=``: they land on the CPU at every call. On a
GPU machine the first forward pass dies in the LSTM with an error that names
neither the module nor the tensors; CPU-only CI never sees it.

Without a GPU this script uses PyTorch's ``meta`` device as the second device,
so the mismatch shows (and is caught) on any machine.
"""

from __future__ import annotations

import torch
from torch import nn

# The device the model trains on. Without a GPU, "meta" (tensors with shapes but no
# data) stands in for it, so the CPU-vs-device mistake below shows on any machine.
device = "cuda" if torch.cuda.is_available() else "meta"


class SequenceClassifier(nn.Module):
    def __init__(self, vocab: int = 50, hidden: int = 32, classes: int = 4) -> None:
        super().__init__()
        self.hidden = hidden
        self.embed = nn.Embedding(vocab, 16)
        self.lstm = nn.LSTM(16, hidden, batch_first=True)
        self.head = nn.Linear(hidden, classes)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        emb = self.embed(tokens)
        size = (1, tokens.size(0), self.hidden)
        out, _ = self.lstm(emb, (torch.zeros(size), torch.zeros(size)))  # expect: TS003
        return self.head(out[:, -1])


def make_batches(count: int = 4, batch: int = 8, length: int = 12) -> list:
    generator = torch.Generator().manual_seed(0)
    batches = []
    for _ in range(count):
        tokens = torch.randint(0, 50, (batch, length), generator=generator)
        labels = tokens[:, 0] % 4
        batches.append((tokens, labels))
    return batches


def describe(loss: torch.Tensor) -> str:
    return "n/a (meta tensors hold no values)" if loss.is_meta else f"{loss.item():.3f}"


def train(epochs: int = 2) -> None:
    torch.manual_seed(0)
    model = SequenceClassifier().to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    criterion = nn.CrossEntropyLoss()
    for epoch in range(epochs):
        model.train()
        for tokens, labels in make_batches():
            tokens, labels = tokens.to(device), labels.to(device)
            optimizer.zero_grad()
            loss = criterion(model(tokens), labels)
            loss.backward()
            optimizer.step()
        print(f"epoch {epoch}: last loss {describe(loss)}")


def main() -> None:
    try:
        train()
    except RuntimeError as error:  # what the mismatch looks like without trainsafe
        print(f"training crashed: {error}")


if __name__ == "__main__":
    main()
