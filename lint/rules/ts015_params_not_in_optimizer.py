"""TS015 params-not-in-optimizer (static, best effort): a layer added to a model after its optimizer.

The pattern, in one function (or module-level script code), in source order:

1. ``opt = torch.optim.X(<... M.parameters() ...>)`` (also through a name bound
   earlier to an expression with ``M.parameters()``, param-group dicts included);
2. later, ``M.attr = nn.Linear(...)`` (or ``M.a.b = ...``, ``M.add_module("head",
   nn.Linear(...))``): a torch.nn layer that has parameters (a container holding
   one counts; ``nn.Identity()``, activations, dropout and pooling do not), not
   frozen in the same expression (``.requires_grad_(False)``);
3. ``opt`` is still used afterwards.

The assignment is reported. Deliberately silent when, after the assignment, the
optimizer is rebuilt (``opt`` re-assigned, or any torch optimizer constructed),
``opt.add_param_group(...)`` is called, or the new layer is frozen
(``M.attr.requires_grad_(False)``, a ``for`` over its parameters setting
``requires_grad``); when the optimizer and the assignment sit in different
branches of an ``if`` (only an optimizer built in an enclosing block of the
assignment counts); and for layers the linter cannot see the parameters of (a
class of the user's own, a torchvision model).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, FrozenSet, List, Set, Tuple

import libcst as cst

from ..names import dotted
from ..patterns import method_name, receiver, receiver_text
from ..values import enclosing_scope
from ..tree import child_nodes, walk_nodes
from ..rule import LintRule

#: torch.nn classes that create parameters by default (InstanceNorm is not affine by default).
_PARAMETERIZED = frozenset({
    "Linear", "Bilinear", "LazyLinear", "Conv1d", "Conv2d", "Conv3d", "ConvTranspose1d", "ConvTranspose2d",
    "ConvTranspose3d", "LazyConv1d", "LazyConv2d", "LazyConv3d", "Embedding", "EmbeddingBag", "BatchNorm1d",
    "BatchNorm2d", "BatchNorm3d", "SyncBatchNorm", "LayerNorm", "GroupNorm", "RMSNorm", "LSTM", "GRU", "RNN",
    "LSTMCell", "GRUCell", "RNNCell", "MultiheadAttention", "Transformer", "TransformerEncoder",
    "TransformerDecoder", "TransformerEncoderLayer", "TransformerDecoderLayer", "PReLU", "Parameter",
})
_CONTAINERS = frozenset({"Sequential", "ModuleList", "ModuleDict", "ParameterList", "ParameterDict"})
#: Methods returning the same module: ``nn.Linear(8, 2).to(device)``.
_SAME_MODULE = frozenset({"to", "cuda", "cpu", "float", "double", "half", "bfloat16", "train"})
_REGISTRATIONS = frozenset({"add_module", "register_module", "register_parameter"})
_NOT_OPTIMIZERS = ("torch.optim.lr_scheduler.", "torch.optim.swa_utils.")


@dataclass(eq=False)
class _Built:
    """An optimizer built from the parameters of some models."""

    index: int
    target: str
    models: FrozenSet[str]
    block: cst.CSTNode


@dataclass(eq=False)
class _Added:
    index: int
    node: cst.CSTNode
    target: str
    ancestors: Tuple[cst.CSTNode, ...]


class _Scope:
    """One function body (or module-level code) in source order: optimizers, added layers, what follows."""

    def __init__(self, rule: "ParamsNotInOptimizer", scope: cst.CSTNode) -> None:
        self.rule = rule
        self.counter = 0
        self.path: List[cst.CSTNode] = [scope]
        self.built: List[_Built] = []
        self.added: List[_Added] = []
        #: Names bound to an expression that reads ``M.parameters()``: name -> {M}.
        self.parameter_sources: Dict[str, FrozenSet[str]] = {}
        #: (index, text) of every name / dotted chain read or written.
        self.mentions: List[Tuple[int, str]] = []
        #: (index, optimizer text) of each re-binding, and of each ``add_param_group`` call.
        self.rebound: List[Tuple[int, str]] = []
        self.extended: List[Tuple[int, str]] = []
        self.constructed: List[int] = []
        #: (index, model text) of each freezing of a layer (``X.requires_grad_(False)``, a loop over its parameters).
        self.frozen: List[Tuple[int, str]] = []
        body = scope.body if isinstance(scope, cst.FunctionDef) else scope
        for child in child_nodes(body):
            self.walk(child)

    def walk(self, node: cst.CSTNode) -> None:
        self.counter += 1
        index = self.counter
        if isinstance(node, (cst.FunctionDef, cst.ClassDef, cst.Lambda)):
            return
        if isinstance(node, (cst.Name, cst.Attribute)):
            text = dotted(node)
            if text is not None:
                self.mentions.append((index, text))
        if isinstance(node, cst.Assign):
            self.assigned(node, index)
        elif isinstance(node, cst.Call):
            self.called(node, index)
        elif isinstance(node, cst.For):
            self.loop(node, index)
        self.path.append(node)
        for child in child_nodes(node):
            self.walk(child)
        self.path.pop()

    def assigned(self, node: cst.Assign, index: int) -> None:
        targets = [dotted(t.target) for t in node.targets]
        for target in targets:
            if target is not None:
                self.rebound.append((index, target))
        models = self.models_in(node.value)
        if models and len(targets) == 1 and targets[0] is not None and "." not in targets[0]:
            self.parameter_sources[targets[0]] = models
        if self.rule.is_optimizer(node.value):
            for target in targets:
                if target is not None:
                    self.built.append(_Built(index, target, self.models_in(node.value), self.block()))
        elif len(targets) == 1 and targets[0] is not None and "." in targets[0] \
                and self.rule.has_parameters(node.value):
            self.added.append(_Added(index, node, targets[0], tuple(self.path)))

    def block(self) -> cst.CSTNode:
        """The block the current statement sits in (the scope itself for its top-level statements)."""
        return next((n for n in reversed(self.path) if isinstance(n, (cst.IndentedBlock, cst.Module))), self.path[0])

    def called(self, node: cst.Call, index: int) -> None:
        method = method_name(node)
        owner = receiver_text(node)
        if self.rule.is_optimizer(node):
            self.constructed.append(index)
        elif method == "add_param_group" and owner is not None:
            self.extended.append((index, owner))
        elif method == "requires_grad_" and owner is not None and not _is_true_argument(node):
            self.frozen.append((index, owner))
        elif method in _REGISTRATIONS and owner is not None and len(node.args) >= 2:
            name = node.args[0].value
            label = name.evaluated_value if isinstance(name, cst.SimpleString) else None
            if self.rule.has_parameters(node.args[1].value):
                target = f"{owner}.{label}" if isinstance(label, str) else f"{owner}.<{method}>"
                self.added.append(_Added(index, node, target, tuple(self.path)))

    def loop(self, node: cst.For, index: int) -> None:
        """``for p in M.parameters(): p.requires_grad = False`` freezes M."""
        frozen = any(isinstance(n, cst.Attribute) and n.attr.value == "requires_grad"
                     for n in walk_nodes(node.body, into_scopes=False))
        if frozen:
            for model in self.models_in(node.iter):
                self.frozen.append((index, model))

    def models_in(self, expression: cst.CSTNode) -> FrozenSet[str]:
        """Receivers of ``.parameters()`` / ``.named_parameters()`` read by ``expression`` (through names too)."""
        found: Set[str] = set()
        for node in walk_nodes(expression, into_scopes=False):
            if isinstance(node, cst.Call) and method_name(node) in ("parameters", "named_parameters"):
                text = receiver_text(node)
                if text is not None:
                    found.add(text)
            elif isinstance(node, cst.Name) and node.value in self.parameter_sources:
                found |= self.parameter_sources[node.value]
        return frozenset(found)


def _is_true_argument(call: cst.Call) -> bool:
    """``X.requires_grad_()`` / ``X.requires_grad_(True)``: not a freeze."""
    if not call.args:
        return True
    value = call.args[0].value
    return isinstance(value, cst.Name) and value.value == "True"


def _within(prefix: str, text: str) -> bool:
    return text == prefix or text.startswith(prefix + ".")


class ParamsNotInOptimizer(LintRule):
    CODE = "TS015"
    TRIGGERS = ("optim",)

    VALID = [
        # the head replaced before the optimizer is built
        "import torch\nfrom torch import nn\n"
        "def build(model):\n"
        "    model.fc = nn.Linear(512, 10)\n"
        "    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)\n"
        "    return model, optimizer\n",
        # the optimizer rebuilt, or extended, after the change
        "import torch\nfrom torch import nn\n"
        "def finetune(model, train):\n"
        "    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)\n"
        "    train(model, optimizer)\n"
        "    model.fc = nn.Linear(512, 10)\n"
        "    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)\n"
        "    train(model, optimizer)\n",
        "import torch\nfrom torch import nn\n"
        "def finetune(model, train):\n"
        "    optimizer = torch.optim.Adam(model.parameters())\n"
        "    model.head = nn.Sequential(nn.Dropout(0.2), nn.Linear(512, 10))\n"
        "    optimizer.add_param_group({'params': model.head.parameters()})\n"
        "    train(model, optimizer)\n",
        # a separate optimizer for the new head
        "import torch\nfrom torch import nn\n"
        "def finetune(model, train):\n"
        "    optimizer = torch.optim.Adam(model.backbone.parameters())\n"
        "    model.head = nn.Linear(512, 10)\n"
        "    head_optimizer = torch.optim.Adam(model.head.parameters())\n"
        "    train(model, optimizer, head_optimizer)\n",
        # the optimizer trains another part of the model than the one replaced
        "import torch\nfrom torch import nn\n"
        "def finetune(model, train):\n"
        "    optimizer = torch.optim.SGD(model.head.parameters(), lr=0.1)\n"
        "    model.backbone.fc = nn.Linear(512, 512)\n"
        "    train(model, optimizer)\n",
        # parameter-free replacements, and a frozen new layer
        "import torch\nfrom torch import nn\n"
        "def features(model, train):\n"
        "    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)\n"
        "    model.fc = nn.Identity()\n"
        "    model.act = nn.ReLU()\n"
        "    model.proj = nn.Linear(512, 64).requires_grad_(False)\n"
        "    model.extra = nn.Linear(512, 64)\n"
        "    for p in model.extra.parameters():\n"
        "        p.requires_grad = False\n"
        "    train(model, optimizer)\n",
        # the optimizer is not used after the change
        "import torch\nfrom torch import nn\n"
        "def stages(model, train, make_optimizer):\n"
        "    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)\n"
        "    train(model, optimizer)\n"
        "    model.fc = nn.Linear(512, 10)\n"
        "    train(model, make_optimizer(model))\n",
        # different branches
        "import torch\nfrom torch import nn\n"
        "def build(model, resume):\n"
        "    if resume:\n"
        "        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)\n"
        "    else:\n"
        "        model.fc = nn.Linear(512, 10)\n"
        "        optimizer = None\n"
        "    return optimizer\n",
        # a learning-rate scheduler is not an optimizer; another model is not this model
        "import torch\nfrom torch import nn\n"
        "def build(model, other):\n"
        "    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)\n"
        "    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, 1)\n"
        "    other.fc = nn.Linear(512, 10)\n"
        "    return optimizer, scheduler\n",
    ]
    INVALID = [
        # transfer learning: the new head is never trained
        "import torch\nimport torchvision\nfrom torch import nn\n"
        "def main(train):\n"
        "    model = torchvision.models.resnet18()\n"
        "    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)\n"
        "    model.fc = nn.Linear(model.fc.in_features, 10)  # expect: TS015\n"
        "    train(model, optimizer)\n",
        # through a parameter list, in a container, with add_module, on self
        "import torch\nfrom torch import nn\nfrom torch.optim import AdamW\n"
        "class Trainer:\n"
        "    def setup(self):\n"
        "        params = [p for p in self.model.parameters() if p.requires_grad]\n"
        "        self.optimizer = AdamW(params, lr=1e-3)\n"
        "        self.model.classifier = nn.Sequential(nn.Dropout(0.1), nn.Linear(768, 2))  # expect: TS015\n"
        "        self.model.add_module('pooler', nn.Linear(768, 768))  # expect: TS015\n"
        "        return self.optimizer\n",
        # a new parameter, module-level script code
        "import torch\nimport torch.nn as nn\n"
        "optimizer = torch.optim.Adam([{'params': model.parameters(), 'lr': 1e-3}])\n"
        "model.temperature = nn.Parameter(torch.ones(1))  # expect: TS015\n"
        "for x, y in loader:\n"
        "    optimizer.step()\n",
    ]

    def visit_Module(self, node: cst.Module) -> None:
        self._with_optimizer: Set[int] = set()

    def visit_Call(self, node: cst.Call) -> None:
        if self.is_optimizer(node):
            self._with_optimizer.add(id(enclosing_scope(self.context)))

    def leave_FunctionDef(self, node: cst.FunctionDef) -> None:
        if id(node) in self._with_optimizer:
            self._check(_Scope(self, node))

    def leave_Module(self, node: cst.Module) -> None:
        if id(node) in self._with_optimizer:
            self._check(_Scope(self, node))

    # -- recognisers (also used by _Scope) ------------------------------------------------

    def is_optimizer(self, expression: cst.BaseExpression) -> bool:
        """``torch.optim.SGD(...)``, ``Adam(...)`` imported from torch.optim; not a scheduler."""
        if not isinstance(expression, cst.Call):
            return False
        qualified = self.context.qualified_name(expression.func)
        if qualified is None or not qualified.startswith("torch.optim.") or qualified.startswith(_NOT_OPTIMIZERS):
            return False
        return qualified.rpartition(".")[2][:1].isupper()

    def has_parameters(self, expression: cst.BaseExpression) -> bool:
        """Whether ``expression`` builds a torch.nn layer with trainable parameters."""
        while isinstance(expression, cst.Call) and method_name(expression) in _SAME_MODULE | {"requires_grad_"}:
            if method_name(expression) == "requires_grad_" and not _is_true_argument(expression):
                return False
            expression = receiver(expression)  # type: ignore[assignment]
        if not isinstance(expression, cst.Call):
            return False
        qualified = self.context.qualified_name(expression.func) or ""
        if not qualified.startswith("torch.nn."):
            return False
        name = qualified.rpartition(".")[2]
        if name in _PARAMETERIZED:
            return True
        if name in _CONTAINERS:
            return any(isinstance(n, cst.Call) and self.has_parameters(n)
                       for arg in expression.args for n in walk_nodes(arg.value, into_scopes=False))
        return False

    # -- the verdict ---------------------------------------------------------------------

    def _check(self, scope: _Scope) -> None:
        for added in scope.added:
            for built in scope.built:
                if built.index < added.index and self._stale(scope, built, added):
                    self.report(added.node, f"`{added.target}` is not in `{built.target}`, built before it")
                    break

    @staticmethod
    def _stale(scope: _Scope, built: _Built, added: _Added) -> bool:
        if not any(_within(model, added.target) and model != added.target for model in built.models):
            return False
        if not any(ancestor is built.block for ancestor in added.ancestors):
            return False  # built in another branch
        after = added.index
        if any(index > after and text == built.target for index, text in scope.rebound) \
                or any(index > after and text == built.target for index, text in scope.extended) \
                or any(index > after for index in scope.constructed) \
                or any(index > after and _within(added.target, text) for index, text in scope.frozen):
            return False
        return any(index > after and _within(built.target, text) for index, text in scope.mentions)
