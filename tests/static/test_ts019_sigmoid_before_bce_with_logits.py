"""TS019 static: the sigmoid form of TS010's tracing (shared in patterns.ActivationBeforeLoss).

The tracing itself is tested with TS010; these check the sigmoid spellings and the
loss pairings that are specific to binary cross-entropy.
"""

from __future__ import annotations

import pytest

from helpers import expected, found, lint

CODES = ["TS019"]
HEADER = "import torch\nimport torch.nn as nn\nimport torch.nn.functional as F\n"


@pytest.mark.parametrize("line", [
    "loss = F.binary_cross_entropy_with_logits(torch.sigmoid(z), y)  # expect: TS019\n",
    "loss = F.binary_cross_entropy_with_logits(F.sigmoid(z), y)  # expect: TS019\n",
    "loss = F.binary_cross_entropy_with_logits(torch.special.expit(z), y)  # expect: TS019\n",
    "loss = F.binary_cross_entropy_with_logits(z.sigmoid_(), y)  # expect: TS019\n",
    "loss = torch.binary_cross_entropy_with_logits(z.sigmoid(), y)  # expect: TS019\n",
    "loss = nn.BCEWithLogitsLoss()(nn.Sigmoid()(z), y)  # expect: TS019\n",
    "loss = nn.BCEWithLogitsLoss(reduction='sum')(z.sigmoid()[:, 0], y)  # expect: TS019\n",
    # Not the logits loss, or not a sigmoid.
    "loss = F.binary_cross_entropy(torch.sigmoid(z), y)\n",
    "loss = nn.BCELoss()(nn.Sigmoid()(z), y)\n",
    "loss = F.binary_cross_entropy_with_logits(F.logsigmoid(z), y)\n",
    "loss = F.binary_cross_entropy_with_logits(torch.tanh(z), y)\n",
    "loss = F.binary_cross_entropy_with_logits(z, torch.sigmoid(t))\n",
    "loss = F.cross_entropy(torch.sigmoid(z), y)\n",
])
def test_sigmoid_spellings_and_loss_pairings(line: str) -> None:
    source = HEADER + line
    assert found(source, CODES) == expected(source)


def test_a_model_class_ending_in_sigmoid_is_named_in_the_message() -> None:
    source = HEADER + (
        "class Net(nn.Module):\n"
        "    def forward(self, x):\n"
        "        x = self.fc(x)\n"
        "        return torch.sigmoid(x)\n"
        "model = Net()\n"
        "loss = nn.BCEWithLogitsLoss()(model(x), y)\n"
    )
    (finding,) = lint(source, CODES)
    assert finding.line == 9
    assert "output of Net, which ends in sigmoid" in finding.message


def test_a_cross_entropy_file_is_not_reported_as_ts019() -> None:
    assert lint(HEADER + "loss = F.cross_entropy(F.softmax(z, 1), y)\n", CODES) == []
