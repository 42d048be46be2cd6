"""TS012 static: a conversion statement is reported only when its receiver is certainly a tensor."""

from __future__ import annotations

import pytest

from helpers import expected, found, lint

CODES = ["TS012"]
HEADER = (
    "import torch\n"
    "import torch.nn as nn\n"
    "from torch.utils.data import DataLoader, TensorDataset\n"
    "from torchvision import datasets, transforms\n"
    "from tqdm import tqdm\n"
)


def _check(body: str) -> None:
    source = HEADER + body
    assert found(source, CODES) == expected(source)


@pytest.mark.parametrize("body", [
    # A torchvision dataset behind the loader, iterated through tqdm.
    "train_set = datasets.MNIST('data', train=True, transform=transforms.ToTensor())\n"
    "loader = DataLoader(train_set, batch_size=32)\n"
    "def train(model, device):\n"
    "    for images, labels in tqdm(loader):\n"
    "        images.to(device)  # expect: TS012\n"
    "        labels.cuda()  # expect: TS012\n",
    # The loader built inline; enumerate around it.
    "def train(model, x, y, device):\n"
    "    for step, (xb, yb) in enumerate(DataLoader(TensorDataset(x, y), batch_size=4)):\n"
    "        xb.to(device, non_blocking=True)  # expect: TS012\n",
    # Chains of tensor operations, a parameter fed tensors at every call of the file.
    "def prepare(features, device):\n"
    "    features.to(device)  # expect: TS012\n"
    "    return features\n"
    "prepare(torch.randn(4, 3), 'cuda')\n"
    "prepare(torch.zeros(2, 3).float(), 'cuda')\n",
    "x = torch.randn(3) * 2 + 1\n"
    "x.half()  # expect: TS012\n"
    "mask = torch.ones(3).bool()[None]\n"
    "mask.to('cuda')  # expect: TS012\n",
    # A tensor annotation from `from torch import Tensor`.
    "from torch import Tensor\n"
    "def step(x: Tensor, device: str) -> None:\n"
    "    x.cuda()  # expect: TS012\n",
])
def test_reported_when_the_receiver_is_a_tensor(body: str) -> None:
    _check(body)


@pytest.mark.parametrize("body", [
    # The annotated parameter is reassigned from something unknown first.
    "def step(x: torch.Tensor, device):\n"
    "    x = wrap(x)\n"
    "    x.to(device)\n",
    # Annotated as something else.
    "def step(model: nn.Module, device):\n"
    "    model.to(device)\n",
    # Calls of the function pass different kinds of things.
    "def prepare(thing, device):\n"
    "    thing.to(device)\n"
    "prepare(torch.randn(4), 'cuda')\n"
    "prepare(nn.Linear(2, 2), 'cuda')\n",
    # A loader over a dataset class of the user: items of unknown type.
    "class Graphs(torch.utils.data.Dataset):\n"
    "    pass\n"
    "loader = DataLoader(Graphs(), batch_size=4)\n"
    "for data, label in loader:\n"
    "    data.to('cuda')\n",
    # The loop target reassigned conditionally before the statement.
    "loader = DataLoader(TensorDataset(torch.randn(8, 2)), batch_size=4)\n"
    "for (x,) in loader:\n"
    "    if flag:\n"
    "        x = model(x)\n"
    "    x.to('cuda')\n",
    # Module-level tensor rebound twice, read from a function.
    "x = torch.randn(3)\n"
    "x = make()\n"
    "def move():\n"
    "    x.cuda()\n",
    # A module class of this file.
    "class Net(nn.Module):\n"
    "    pass\n"
    "net = Net()\n"
    "net.cuda()\n"
    "net.double()\n",
])
def test_silent_when_the_receiver_may_not_be_a_tensor(body: str) -> None:
    _check(body)


def test_the_statement_is_reported_with_the_method_in_the_message() -> None:
    (finding,) = lint(HEADER + "t = torch.arange(4)\nt.long()\n", CODES)
    assert finding.line == 7
    assert "long() returns a new tensor" in finding.message
