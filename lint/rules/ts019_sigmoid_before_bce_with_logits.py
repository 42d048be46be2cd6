"""TS019 sigmoid-before-bce-with-logits: probabilities fed to a loss that applies the sigmoid itself."""

from __future__ import annotations

import libcst as cst

from ..fused_loss import ActivationBeforeLoss, FusedLoss
from ..rule import FileContext, LintRule

BCE_WITH_LOGITS = FusedLoss(
    loss_functions=frozenset({"torch.nn.functional.binary_cross_entropy_with_logits",
                              "torch.binary_cross_entropy_with_logits"}),
    loss_modules=frozenset({"torch.nn.BCEWithLogitsLoss"}),
    functions={"torch.sigmoid": "sigmoid", "torch.nn.functional.sigmoid": "sigmoid",
               "torch.special.expit": "sigmoid", "torch.Tensor.sigmoid": "sigmoid"},
    methods={"sigmoid": "sigmoid", "sigmoid_": "sigmoid"},
    modules={"torch.nn.Sigmoid": "sigmoid"},
)


class SigmoidBeforeBceWithLogits(LintRule):
    """The input of ``F.binary_cross_entropy_with_logits`` / ``nn.BCEWithLogitsLoss`` is a sigmoid output.

    Same tracing as TS010 (see ``patterns.ActivationBeforeLoss``), with the sigmoid
    and the logits form of binary cross-entropy.
    """

    CODE = "TS019"
    TRIGGERS = ("binary_cross_entropy_with_logits", "BCEWithLogitsLoss")

    VALID = [
        # The probability form of the loss takes the sigmoid output: correct.
        "import torch, torch.nn as nn\n"
        "criterion = nn.BCELoss()\n"
        "loss = criterion(torch.sigmoid(model(x)), y)\n",
        "import torch.nn.functional as F\n"
        "loss = F.binary_cross_entropy(F.sigmoid(logits), y)\n",
        # Sigmoid for metrics / thresholds only, after the loss on the logits.
        "import torch.nn as nn\n"
        "criterion = nn.BCEWithLogitsLoss(pos_weight=w)\n"
        "def train(model, loader):\n"
        "    for x, y in loader:\n"
        "        logits = model(x)\n"
        "        loss = criterion(logits, y)\n"
        "        preds = (logits.sigmoid() > 0.5).float()\n"
        "        logits = logits.sigmoid()\n",
        # Soft targets from a teacher: the target may be a probability.
        "import torch, torch.nn.functional as F\n"
        "def distill(student, teacher, x):\n"
        "    target = torch.sigmoid(teacher(x))\n"
        "    return F.binary_cross_entropy_with_logits(student(x), target)\n",
        # A model ending in nn.Sigmoid, trained with BCELoss.
        "import torch.nn as nn\n"
        "model = nn.Sequential(nn.Linear(4, 1), nn.Sigmoid())\n"
        "loss = nn.BCELoss()(model(x), y)\n",
        # Sigmoid only on one branch.
        "import torch, torch.nn.functional as F\n"
        "def step(model, x, y, squash):\n"
        "    out = model(x)\n"
        "    if squash:\n"
        "        out = torch.sigmoid(out)\n"
        "    return F.binary_cross_entropy_with_logits(out, y)\n",
        # A model that returns probabilities only in eval mode.
        "import torch, torch.nn as nn\n"
        "class Net(nn.Module):\n"
        "    def forward(self, x):\n"
        "        logits = self.fc(x)\n"
        "        return logits if self.training else torch.sigmoid(logits)\n"
        "net = Net()\n"
        "loss = nn.BCEWithLogitsLoss()(net(x), y)\n",
        # A gate inside the model: sigmoid is not the last op of forward.
        "import torch, torch.nn as nn\n"
        "class Gated(nn.Module):\n"
        "    def forward(self, x):\n"
        "        gate = torch.sigmoid(self.gate(x))\n"
        "        return self.fc(x) * gate\n"
        "model = Gated()\n"
        "loss = nn.BCEWithLogitsLoss()(model(x), y)\n",
        # A local helper named sigmoid is not torch's.
        "import torch.nn.functional as F\n"
        "def sigmoid(x):\n"
        "    return x * 2\n"
        "loss = F.binary_cross_entropy_with_logits(sigmoid(z), y)\n",
    ]
    INVALID = [
        "import torch, torch.nn as nn\n"
        "criterion = nn.BCEWithLogitsLoss()\n"
        "for x, y in loader:\n"
        "    probs = torch.sigmoid(model(x)).squeeze(1)\n"
        "    loss = criterion(probs, y)  # expect: TS019\n",
        "import torch.nn.functional as F\n"
        "loss = F.binary_cross_entropy_with_logits(logits.sigmoid(), y.float())  # expect: TS019\n",
        "from torch.nn.functional import binary_cross_entropy_with_logits, sigmoid\n"
        "loss = binary_cross_entropy_with_logits(input=sigmoid(z), target=y)  # expect: TS019\n",
        # A model of this file ending in nn.Sigmoid, a loss held on self.
        "import torch.nn as nn\n"
        "class Detector(nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.head = nn.Sequential(nn.Linear(8, 1), nn.Sigmoid())\n"
        "        self.loss_fn = nn.BCEWithLogitsLoss()\n"
        "    def training_step(self, batch, batch_idx):\n"
        "        x, y = batch\n"
        "        return self.loss_fn(self.head(x), y)  # expect: TS019\n",
        # The model's forward ends in torch.sigmoid; model and loss are passed to a training function.
        "import torch, torch.nn as nn\n"
        "class Net(nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.fc = nn.Linear(4, 1)\n"
        "    def forward(self, x):\n"
        "        return torch.sigmoid(self.fc(x))\n"
        "def train(model, loader, loss_fn, optimizer):\n"
        "    for x, y in loader:\n"
        "        optimizer.zero_grad()\n"
        "        loss = loss_fn(model(x).view(-1), y)  # expect: TS019\n"
        "        loss.backward()\n"
        "def main():\n"
        "    train(Net(), [], nn.BCEWithLogitsLoss(), None)\n",
    ]

    def __init__(self, context: FileContext) -> None:
        super().__init__(context)
        self._finder = ActivationBeforeLoss(context, BCE_WITH_LOGITS)

    def visit_Call(self, node: cst.Call) -> None:
        feed = self._finder.feed(node)
        if feed is None:
            return
        self.report(node, f"the input is the output of {feed.via}, which ends in {feed.label}" if feed.via else "")
