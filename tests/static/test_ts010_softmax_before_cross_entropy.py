"""TS010 static: how far the input of a cross-entropy call is traced, and where the trace must stop.

The inline VALID / INVALID examples on the rule cover the everyday forms; these
cover the tracing rules (reaching assignments, branches, loops, parameters,
callbacks, shadowing) one at a time.
"""

from __future__ import annotations

import pytest

from helpers import expected, found, lint

CODES = ["TS010"]

HEADER = "import torch\nimport torch.nn as nn\nimport torch.nn.functional as F\n"


def _check(source: str) -> None:
    source = HEADER + source
    assert found(source, CODES) == expected(source)


@pytest.mark.parametrize("body", [
    # A chain of names.
    "def step(model, x, y):\n"
    "    probs = F.softmax(model(x), dim=1)\n"
    "    out = probs\n"
    "    return F.cross_entropy(out, y)  # expect: TS010\n",
    # Inside a with block (autocast) the assignment always runs.
    "def step(model, x, y):\n"
    "    with torch.autocast('cpu'):\n"
    "        out = model(x).softmax(-1)\n"
    "    return F.cross_entropy(out, y)  # expect: TS010\n",
    # Inside a try body too.
    "def step(model, x, y):\n"
    "    try:\n"
    "        out = torch.log_softmax(model(x), 1)\n"
    "    finally:\n"
    "        pass\n"
    "    return F.cross_entropy(out, y)  # expect: TS010\n",
    # In the same loop body, before the loss.
    "def train(model, loader):\n"
    "    criterion = nn.CrossEntropyLoss()\n"
    "    for x, y in loader:\n"
    "        out = nn.functional.softmax(model(x), dim=1)\n"
    "        loss = criterion(out, y)  # expect: TS010\n",
    # A module-level criterion and activation layer read from a function.
    "criterion = nn.CrossEntropyLoss()\n"
    "softmax = nn.Softmax(dim=1)\n"
    "def step(model, x, y):\n"
    "    return criterion(softmax(model(x)), y)  # expect: TS010\n",
    # Keyword arguments at the call site of a training function.
    "class Net(nn.Module):\n"
    "    def forward(self, x):\n"
    "        return F.log_softmax(self.fc(x), dim=1)\n"
    "def fit(loader, *, model, loss_fn):\n"
    "    for x, y in loader:\n"
    "        loss_fn(model(x), y)  # expect: TS010\n"
    "fit([], model=Net(), loss_fn=nn.CrossEntropyLoss())\n",
    # A model class inheriting forward from a class of this file.
    "class Base(nn.Module):\n"
    "    def forward(self, x):\n"
    "        return self.head(x).softmax(dim=-1)\n"
    "class Net(Base):\n"
    "    def __init__(self):\n"
    "        super().__init__()\n"
    "        self.head = nn.Linear(2, 2)\n"
    "net = Net()\n"
    "loss = F.cross_entropy(net(x), y)  # expect: TS010\n",
    # A loss held on self, assigned in a base class of this file.
    "class Base(nn.Module):\n"
    "    def __init__(self):\n"
    "        super().__init__()\n"
    "        self.criterion = nn.CrossEntropyLoss()\n"
    "class Model(Base):\n"
    "    def step(self, x, y):\n"
    "        return self.criterion(torch.softmax(x, 1), y)  # expect: TS010\n",
    # A multi-line call is reported on its first line.
    "def step(model, x, y):\n"
    "    return F.cross_entropy(  # expect: TS010\n"
    "        F.softmax(model(x), dim=1),\n"
    "        y,\n"
    "    )\n",
])
def test_traced_to_a_softmax(body: str) -> None:
    _check(body)


@pytest.mark.parametrize("body", [
    # Conditional assignment, loop-body assignment used after the loop, except clause.
    "def step(model, x, y, flag):\n"
    "    out = model(x)\n"
    "    if flag:\n"
    "        out = F.softmax(out, 1)\n"
    "    return F.cross_entropy(out, y)\n",
    "def step(model, xs, y):\n"
    "    for x in xs:\n"
    "        out = F.softmax(model(x), 1)\n"
    "    return F.cross_entropy(out, y)\n",
    "def step(model, x, y):\n"
    "    try:\n"
    "        out = model(x)\n"
    "    except RuntimeError:\n"
    "        out = F.softmax(model(x), 1)\n"
    "    return F.cross_entropy(out, y)\n",
    # Reassigned through unpacking or augmented assignment: the value is unknown.
    "def step(model, x, y):\n"
    "    out = F.softmax(model(x), 1)\n"
    "    out, aux = model(x)\n"
    "    return F.cross_entropy(out, y)\n",
    "def step(model, x, y):\n"
    "    out = F.softmax(model(x), 1)\n"
    "    out += 0\n"
    "    return F.cross_entropy(out, y)\n",
    # A comprehension variable shadows the outer name.
    "def step(model, xs, y):\n"
    "    out = F.softmax(model(xs[0]), 1)\n"
    "    return sum(F.cross_entropy(out, y) for out in xs)\n",
    # A global rebound twice at module level: no single value.
    "criterion = nn.CrossEntropyLoss()\n"
    "criterion = nn.NLLLoss()\n"
    "def step(x, y):\n"
    "    return criterion(F.log_softmax(x, 1), y)\n",
    # A parameter whose callers are not all known: a default is used, or it is passed as a callback.
    "def fit(x, y, criterion=None):\n"
    "    return criterion(F.softmax(x, 1), y)\n"
    "fit(x, y, nn.CrossEntropyLoss())\n"
    "fit(x, y)\n",
    "def fit(model, x, y):\n"
    "    return F.cross_entropy(model(x), y)\n"
    "fit(nn.Sequential(nn.Linear(2, 2), nn.Softmax(1)), x, y)\n"
    "run_in_background(fit)\n",
    # A method's parameter: its callers are not resolved.
    "class Trainer:\n"
    "    def step(self, model, x, y):\n"
    "        return F.cross_entropy(model(x), y)\n"
    "Trainer().step(nn.Sequential(nn.Linear(2, 2), nn.Softmax(1)), x, y)\n",
    # An attribute of something else than self.
    "def step(trainer, x, y):\n"
    "    return trainer.criterion(F.softmax(x, 1), y)\n",
    # The criterion is a custom loss class defined here, not CrossEntropyLoss.
    "class FocalLoss(nn.Module):\n"
    "    def forward(self, probs, y):\n"
    "        return -(probs.gather(1, y[:, None]).log()).mean()\n"
    "criterion = FocalLoss()\n"
    "loss = criterion(F.softmax(x, 1), y)\n",
    # torch.log of probabilities is not traced: a different (and rarer) spelling.
    "def step(model, x, y):\n"
    "    return F.cross_entropy(torch.log(F.softmax(model(x), 1)), y)\n",
    # Gumbel-softmax samples, sparsemax-style helpers: other functions.
    "def step(model, x, y):\n"
    "    return F.cross_entropy(F.gumbel_softmax(model(x), tau=1.0), y)\n",
    # The loss input is a logits field of a model output, not a softmax.
    "def step(model, batch):\n"
    "    outputs = model(**batch)\n"
    "    probs = outputs.logits.softmax(-1)\n"
    "    return F.cross_entropy(outputs.logits, batch['labels'])\n",
])
def test_the_trace_stops_where_the_value_is_uncertain(body: str) -> None:
    _check(body)


def test_a_file_without_the_loss_is_not_looked_at() -> None:
    source = HEADER + "probs = F.softmax(x, 1)\nloss = F.nll_loss(probs.log(), y)\n"
    assert lint(source, CODES) == []


def test_the_message_names_the_model_class_it_came_through() -> None:
    source = HEADER + (
        "class Net(nn.Module):\n"
        "    def forward(self, x):\n"
        "        return F.softmax(self.fc(x), dim=1)\n"
        "model = Net()\n"
        "loss = nn.CrossEntropyLoss()(model(x), y)\n"
    )
    (finding,) = lint(source, CODES)
    assert "output of Net, which ends in softmax" in finding.message


def test_log_softmax_findings_say_it_is_redundant() -> None:
    (finding,) = lint(HEADER + "loss = F.cross_entropy(F.log_softmax(x, 1), y)\n", CODES)
    assert "redundant" in finding.message and "nll_loss" in finding.message
