"""TS014 wrong-functional-module: ``torch.functional`` imported where ``torch.nn.functional`` was meant."""

from __future__ import annotations

import libcst as cst

from ..names import dotted
from ..rule import LintRule

# torch.functional holds tensor utilities (einsum, norm, split...), none of the
# layer functions people import "F" for. Importing one of its real members by
# name is fine; what is flagged is the module itself, or a layer function
# imported from it.
_LAYER_FUNCTIONS = frozenset({
    "relu", "gelu", "silu", "sigmoid", "tanh", "softmax", "log_softmax", "dropout", "linear", "conv1d",
    "conv2d", "conv3d", "max_pool2d", "avg_pool2d", "cross_entropy", "nll_loss", "mse_loss", "l1_loss",
    "binary_cross_entropy", "binary_cross_entropy_with_logits", "batch_norm", "layer_norm", "embedding",
    "pad", "interpolate", "leaky_relu", "elu", "one_hot", "normalize", "adaptive_avg_pool2d",
})


class WrongFunctionalModule(LintRule):
    CODE = "TS014"
    TRIGGERS = ("torch.functional", "torch import functional")

    VALID = [
        "import torch.nn.functional as F\n",
        "from torch.nn import functional as F\n",
        "from torch.functional import einsum, norm\n",
        "import torch\ny = torch.functional.einsum('ij->j', x)\n",
    ]
    INVALID = [
        "import torch.functional as F  # expect: TS014\n",
        "from torch import functional as F  # expect: TS014\n",
        "from torch.functional import relu  # expect: TS014\n",
    ]

    def visit_Import(self, node: cst.Import) -> None:
        for alias in node.names:
            if dotted(alias.name) == "torch.functional" and alias.asname is not None:
                self.report(node)

    def visit_ImportFrom(self, node: cst.ImportFrom) -> None:
        if node.relative or node.module is None or isinstance(node.names, cst.ImportStar):
            return
        module = dotted(node.module)
        for alias in node.names:
            name = alias.name.value if isinstance(alias.name, cst.Name) else None
            if module == "torch" and name == "functional":
                self.report(node)
            elif module == "torch.functional" and name in _LAYER_FUNCTIONS:
                self.report(node, f"{name} lives in torch.nn.functional")
