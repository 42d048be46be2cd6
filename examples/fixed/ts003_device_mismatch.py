"""TS003 device-mismatch, fixed: the LSTM's initial state is created on the input's device.

The same sequence classifier as ``examples/bad/ts003_device_mismatch.py``.
``forward()`` now passes ``device=tokens.device`` to ``torch.zeros``, so the
initial states follow the batch wherever the model runs (``tokens.new_zeros(...)``
would do too; or leave the state out, and ``nn.LSTM`` creates zeros itself).

Without a GPU this script uses PyTorch's ``meta`` device as the second device,
like the buggy one: it runs end to end on any machine.
"""

from __future__ import annotations

import torch
from torch import nn

# The device the model trains on. Without a GPU, "meta" (tensors with shapes but no
# data) stands in for it, so the script exercises a second device on any machine.
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
        state = (torch.zeros(size, device=tokens.device), torch.zeros(size, device=tokens.device))
        out, _ = self.lstm(emb, state)
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
    train()


if __name__ == "__main__":
    main()
