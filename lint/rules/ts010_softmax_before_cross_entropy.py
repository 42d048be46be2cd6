"""TS010 softmax-before-cross-entropy: probabilities fed to a loss that applies log-softmax itself."""

from __future__ import annotations

import libcst as cst

from ..fused_loss import ActivationBeforeLoss, FusedLoss
from ..rule import FileContext, LintRule

CROSS_ENTROPY = FusedLoss(
    loss_functions=frozenset({"torch.nn.functional.cross_entropy"}),
    loss_modules=frozenset({"torch.nn.CrossEntropyLoss"}),
    functions={"torch.softmax": "softmax", "torch.nn.functional.softmax": "softmax",
               "torch.Tensor.softmax": "softmax", "torch.Tensor.log_softmax": "log_softmax",
               "torch.special.softmax": "softmax", "torch.log_softmax": "log_softmax",
               "torch.nn.functional.log_softmax": "log_softmax", "torch.special.log_softmax": "log_softmax"},
    methods={"softmax": "softmax", "log_softmax": "log_softmax"},
    modules={"torch.nn.Softmax": "softmax", "torch.nn.Softmax2d": "softmax", "torch.nn.LogSoftmax": "log_softmax"},
)


class SoftmaxBeforeCrossEntropy(LintRule):
    """The input of ``F.cross_entropy`` / ``nn.CrossEntropyLoss`` is a softmax or log_softmax output."""

    CODE = "TS010"
    TRIGGERS = ("cross_entropy", "CrossEntropyLoss")

    VALID = [
        # The correct pairing: log_softmax with the negative log-likelihood loss.
        "import torch.nn.functional as F\n"
        "def step(model, x, y):\n"
        "    log_probs = F.log_softmax(model(x), dim=1)\n"
        "    return F.nll_loss(log_probs, y)\n",
        "import torch.nn as nn\n"
        "class Net(nn.Module):\n"
        "    def forward(self, x):\n"
        "        return nn.functional.log_softmax(self.fc(x), dim=1)\n"
        "model = Net()\n"
        "criterion = nn.NLLLoss()\n"
        "loss = criterion(model(x), y)\n",
        # Softmax for metrics only, computed from the logits that go to the loss.
        "import torch.nn as nn\n"
        "criterion = nn.CrossEntropyLoss()\n"
        "def train(model, loader):\n"
        "    for x, y in loader:\n"
        "        logits = model(x)\n"
        "        loss = criterion(logits, y)\n"
        "        probs = logits.softmax(dim=1)\n"
        "        logits = probs\n",
        # Soft targets (knowledge distillation): probabilities are the target, not the input.
        "import torch.nn.functional as F\n"
        "def distill(student, teacher, x, T=2.0):\n"
        "    soft = F.softmax(teacher(x) / T, dim=1)\n"
        "    return F.cross_entropy(student(x) / T, soft, label_smoothing=0.1)\n",
        # A softmax applied on one branch only, or only in eval mode: not certain.
        "import torch.nn.functional as F\n"
        "def step(model, x, y, calibrated):\n"
        "    out = model(x)\n"
        "    if calibrated:\n"
        "        out = F.softmax(out, dim=1)\n"
        "    return F.cross_entropy(out, y)\n",
        "import torch.nn as nn, torch.nn.functional as F\n"
        "class Net(nn.Module):\n"
        "    def forward(self, x):\n"
        "        x = self.fc(x)\n"
        "        if not self.training:\n"
        "            return F.softmax(x, dim=1)\n"
        "        return x\n"
        "model = Net()\n"
        "loss = F.cross_entropy(model(x), y)\n",
        # A local function called softmax is not torch's.
        "import torch.nn.functional as F\n"
        "def softmax(x):\n"
        "    return x\n"
        "loss = F.cross_entropy(softmax(logits), y)\n",
        # The probabilities of a tuple-returning model are not what goes to the loss.
        "import torch.nn as nn, torch.nn.functional as F\n"
        "class Net(nn.Module):\n"
        "    def forward(self, x):\n"
        "        logits = self.fc(x)\n"
        "        return logits, F.softmax(logits, dim=1)\n"
        "model = Net()\n"
        "logits, probs = model(x)\n"
        "loss = nn.CrossEntropyLoss()(logits, y)\n",
        # log of probabilities into NLLLoss, a model ending in softmax: correct.
        "import torch, torch.nn as nn\n"
        "model = nn.Sequential(nn.Linear(4, 3), nn.Softmax(dim=1))\n"
        "loss = nn.NLLLoss()(torch.log(model(x) + 1e-8), y)\n",
        # A training function called with two different models: no single answer.
        "import torch.nn as nn\n"
        "def fit(model, x, y):\n"
        "    return nn.functional.cross_entropy(model(x), y)\n"
        "fit(nn.Sequential(nn.Linear(4, 3), nn.Softmax(dim=1)), x, y)\n"
        "fit(nn.Linear(4, 3), x, y)\n",
        # The criterion may be either loss.
        "import torch.nn as nn\n"
        "criterion = nn.CrossEntropyLoss() if multiclass else nn.BCELoss()\n"
        "loss = criterion(probs.softmax(1), y)\n",
        # Not torch: scipy's softmax on an array; a class that is not an nn.Module.
        "import scipy.special, torch.nn.functional as F\n"
        "p = scipy.special.softmax(z, axis=1)\n"
        "loss = F.cross_entropy(torch.as_tensor(p), y)\n",
        "import torch.nn.functional as F\n"
        "class Head:\n"
        "    def forward(self, x):\n"
        "        return F.softmax(x, dim=1)\n"
        "head = Head()\n"
        "loss = F.cross_entropy(head(x), y)\n",
        # Reassigned after the loss, in a loop: the loss saw the logits.
        "import torch.nn.functional as F\n"
        "for x, y in loader:\n"
        "    out = model(x)\n"
        "    loss = F.cross_entropy(out, y)\n"
        "    out = F.softmax(out, dim=1)\n",
    ]
    INVALID = [
        "import torch.nn.functional as F\n"
        "loss = F.cross_entropy(F.softmax(logits, dim=1), y)  # expect: TS010\n",
        "import torch, torch.nn as nn\n"
        "criterion = nn.CrossEntropyLoss()\n"
        "for x, y in loader:\n"
        "    probs = torch.softmax(model(x), dim=-1)\n"
        "    loss = criterion(probs, y)  # expect: TS010\n",
        "from torch.nn.functional import cross_entropy, log_softmax\n"
        "loss = cross_entropy(input=log_softmax(out, 1), target=y)  # expect: TS010\n",
        "import torch.nn as nn\n"
        "loss = nn.CrossEntropyLoss(label_smoothing=0.1)(out.softmax(dim=1).float(), y)  # expect: TS010\n",
        # A model of this file whose forward always returns probabilities.
        "import torch.nn as nn\n"
        "import torch.nn.functional as F\n"
        "class Net(nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.fc = nn.Linear(4, 3)\n"
        "    def forward(self, x):\n"
        "        x = F.softmax(self.fc(x), dim=1)\n"
        "        return x\n"
        "def train(model, loader, criterion, optimizer):\n"
        "    for x, y in loader:\n"
        "        out = model(x)\n"
        "        loss = criterion(out, y)  # expect: TS010\n"
        "        acc = (out.argmax(1) == y).float().mean()\n"
        "def main():\n"
        "    model = Net().to('cpu')\n"
        "    train(model, loader, nn.CrossEntropyLoss(), None)\n",
        # An nn.Sequential ending in nn.Softmax, a loss module held on self.
        "import torch.nn as nn\n"
        "class Classifier(nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.net = nn.Sequential(nn.Linear(8, 4), nn.ReLU(), nn.Linear(4, 3), nn.Softmax(dim=1))\n"
        "        self.loss_fn = nn.CrossEntropyLoss()\n"
        "    def training_step(self, batch, batch_idx):\n"
        "        x, y = batch\n"
        "        return self.loss_fn(self.net(x), y)  # expect: TS010\n",
        # An activation module held on self, returned by forward.
        "import torch.nn as nn\n"
        "class Net(nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.fc = nn.Linear(4, 3)\n"
        "        self.softmax = nn.Softmax(dim=1)\n"
        "    def forward(self, x):\n"
        "        return self.softmax(self.fc(x))\n"
        "model = Net()\n"
        "criterion = nn.CrossEntropyLoss()\n"
        "if __name__ == '__main__':\n"
        "    for x, y in loader:\n"
        "        loss = criterion(model(x), y)  # expect: TS010\n",
    ]

    def __init__(self, context: FileContext) -> None:
        super().__init__(context)
        self._finder = ActivationBeforeLoss(context, CROSS_ENTROPY)

    def visit_Call(self, node: cst.Call) -> None:
        feed = self._finder.feed(node)
        if feed is None:
            return
        if feed.via:
            detail = f"the input is the output of {feed.via}, which ends in {feed.label}"
        else:
            detail = f"the input is a {feed.label} output"
        if feed.label == "log_softmax":
            detail += ": redundant, use F.nll_loss / nn.NLLLoss or pass the logits"
        self.report(node, detail)
