"""TS002 layer-in-forward: a layer with parameters is constructed inside ``forward()``.

A layer built in ``forward()`` (or in a method that ``forward()`` calls through
``self.<name>(...)``) gets fresh random weights on every call, and its
parameters are never in the optimizer. What is flagged, inside a class with
base classes (an ``nn.Module`` subclass, not an ``autograd.Function``):

* a call that resolves through the imports to a ``torch.nn`` layer that has
  parameters as configured (``Linear``, ``Conv2d``, ``LSTM``, ``BatchNorm2d``
  unless ``affine=False``, ``InstanceNorm2d`` only with ``affine=True``,
  ``Lazy*`` variants...) or to ``torch.nn.Parameter``;
* a call of a class defined at the top of the same file whose ``__init__`` (or a
  helper only it reaches) builds such layers, or which subclasses one (a user
  block);

reached from ``forward`` through unguarded ``self.<helper>(...)`` calls (a helper
only reached from ``__init__`` is construction code). Deliberately silent: a
construction under a lazy-initialisation guard (``if self.proj is None:``, ``if not
hasattr(self, "proj"):``, ``if self.proj is None or self.proj.in_features != d:``,
``self.proj = self.proj or nn.Linear(...)``, an ``except`` handler, after an early
``if key in self.cache: return ...``), parameter-free modules (``nn.ReLU()``,
``nn.Dropout()``, ``nn.Sequential`` itself: only its parameterized contents count),
a module given fixed weights before use (``conv.weight.data = kernel``,
``.requires_grad_(False)``, ``teacher.load_state_dict(state)``: used as a function),
``F.*`` functions, nested functions and lambdas defined inside ``forward``, and
names that resolve to something other than ``torch.nn`` (a local ``Linear`` class, a
local variable called ``nn``).
"""

from __future__ import annotations

from typing import Dict, Iterator, List, Optional, Set, Tuple

import libcst as cst

from ..names import LOCAL, dotted
from ..rule import FileContext, LintRule
from ..tree import walk_nodes

#: torch.nn classes that always own parameters.
_ALWAYS = frozenset({
    "Linear", "Bilinear", "LazyLinear",
    "Conv1d", "Conv2d", "Conv3d", "ConvTranspose1d", "ConvTranspose2d", "ConvTranspose3d",
    "LazyConv1d", "LazyConv2d", "LazyConv3d", "LazyConvTranspose1d", "LazyConvTranspose2d",
    "LazyConvTranspose3d",
    "Embedding", "EmbeddingBag",
    "RNN", "LSTM", "GRU", "RNNCell", "LSTMCell", "GRUCell",
    "MultiheadAttention", "Transformer", "TransformerEncoderLayer", "TransformerDecoderLayer",
    "TransformerEncoder", "TransformerDecoder", "PReLU", "AdaptiveLogSoftmaxWithLoss",
    "Parameter",
})
#: Normalisation layers whose parameters depend on one flag: (keyword, positional index, default).
_AFFINE: Dict[str, Tuple[str, int, bool]] = {
    **{name: ("affine", 3, True) for name in ("BatchNorm1d", "BatchNorm2d", "BatchNorm3d", "SyncBatchNorm")},
    **{name: ("affine", 2, True) for name in ("LazyBatchNorm1d", "LazyBatchNorm2d", "LazyBatchNorm3d")},
    **{name: ("affine", 3, False) for name in ("InstanceNorm1d", "InstanceNorm2d", "InstanceNorm3d")},
    # The lazy instance norms default to affine=True (unlike the eager ones).
    **{name: ("affine", 2, True) for name in ("LazyInstanceNorm1d", "LazyInstanceNorm2d", "LazyInstanceNorm3d")},
    "LayerNorm": ("elementwise_affine", 2, True),
    "RMSNorm": ("elementwise_affine", 2, True),
    "GroupNorm": ("affine", 3, True),
}
_NOT_MODULES = frozenset({"torch.autograd.Function", "torch.autograd.function.Function", "builtins.object"})
_GUARD_CALLS = frozenset({"hasattr", "getattr"})


def _torch_nn_name(qualified: Optional[str]) -> Optional[str]:
    """``Linear`` for ``torch.nn.Linear`` / ``torch.nn.modules.Linear``; None for anything else."""
    if qualified is None:
        return None
    for prefix in ("torch.nn.modules.", "torch.nn."):
        if qualified.startswith(prefix):
            rest = qualified[len(prefix):]
            return rest if "." not in rest else None
    return None


def _subclasses_a_layer(name: Optional[str]) -> bool:
    """Whether a class deriving from ``torch.nn.<name>`` owns parameters by default."""
    return name is not None and (name in _ALWAYS or (name in _AFFINE and _AFFINE[name][2]))


def _bool_literal(node: cst.BaseExpression) -> Optional[bool]:
    if isinstance(node, cst.Name) and node.value in ("True", "False"):
        return node.value == "True"
    return None


def _has_parameters(name: str, call: cst.Call) -> bool:
    """Whether ``torch.nn.<name>(...)`` called with these arguments creates parameters."""
    if name == "Parameter":  # nn.Parameter(t, requires_grad=False) is a constant, not a trained weight
        return not any(arg.keyword is not None and arg.keyword.value == "requires_grad"
                       and _bool_literal(arg.value) is False for arg in call.args)
    if name in _ALWAYS:
        return True
    spec = _AFFINE.get(name)
    if spec is None:
        return False
    keyword, index, default = spec
    for position, arg in enumerate(call.args):
        if arg.keyword is not None:
            if arg.keyword.value == keyword:
                literal = _bool_literal(arg.value)
                return default if literal is None else literal
        elif arg.star:
            return default
        elif position == index:
            literal = _bool_literal(arg.value)
            return default if literal is None else literal
    return default


def _walk(node: cst.CSTNode) -> Iterator[cst.CSTNode]:
    """``node`` and its descendants, not entering nested functions, lambdas or classes."""
    return walk_nodes(node, into_scopes=False)


def _self_attributes(node: cst.CSTNode, self_name: str) -> Set[str]:
    """Attributes read on ``self`` in ``node`` (``getattr(self, ...)`` counts as ``*``); ``training`` excluded."""
    found: Set[str] = set()
    for current in _walk(node):
        if isinstance(current, cst.Attribute) and isinstance(current.value, cst.Name) \
                and current.value.value == self_name and current.attr.value != "training":
            found.add(current.attr.value)
        elif _is_guard_call(current, self_name):
            found.add("*")
    return found


def _is_guard_call(node: cst.CSTNode, self_name: str) -> bool:
    """``hasattr(self, ...)`` / ``getattr(self, ...)``."""
    return isinstance(node, cst.Call) and isinstance(node.func, cst.Name) and node.func.value in _GUARD_CALLS \
        and bool(node.args) and isinstance(node.args[0].value, cst.Name) and node.args[0].value.value == self_name


def _assigns_self(body: cst.CSTNode, attributes: Set[str], self_name: str) -> bool:
    """Whether ``body`` assigns ``self.<one of attributes>``."""
    for current in _walk(body):
        targets: List[cst.BaseExpression] = []
        if isinstance(current, cst.Assign):
            targets = [target.target for target in current.targets]
        elif isinstance(current, (cst.AnnAssign, cst.AugAssign)):
            targets = [current.target]
        for target in targets:
            if isinstance(target, cst.Attribute) and isinstance(target.value, cst.Name) \
                    and target.value.value == self_name and target.attr.value in attributes:
                return True
    return False


def _is_guard_test(test: cst.BaseExpression, self_name: str, body: Optional[cst.CSTNode]) -> bool:
    """A condition that checks the module's own state: lazy initialisation or a rebuild on change.

    ``self.x is None``, ``self.x.in_features != d``, ``not self.built``, ``not hasattr(self, "x")``,
    ``key not in self.heads``; or any test on ``self.x`` whose body assigns ``self.x``.
    """
    for current in _walk(test):
        if isinstance(current, cst.Comparison):
            operands = [current.left, *(target.comparator for target in current.comparisons)]
            if any(_self_attributes(operand, self_name) for operand in operands):
                return True
        elif isinstance(current, cst.UnaryOperation) and isinstance(current.operator, cst.Not):
            if _self_attributes(current.expression, self_name):
                return True
        elif _is_guard_call(current, self_name):
            return True
    if body is None:
        return False
    attributes = _self_attributes(test, self_name)
    return bool(attributes) and _assigns_self(body, attributes, self_name)


def _exits(block: cst.BaseSuite) -> bool:
    """Whether a block ends its function early (a ``return`` or ``raise`` among its statements)."""
    statements = block.body if isinstance(block, cst.IndentedBlock) else [block]
    for statement in statements:
        smalls = statement.body if isinstance(statement, (cst.SimpleStatementLine, cst.SimpleStatementSuite)) else ()
        if any(isinstance(small, (cst.Return, cst.Raise)) for small in smalls):
            return True
    return False


def _guards(node: cst.CSTNode, child: cst.CSTNode, self_name: str) -> bool:
    """Whether ``node`` makes code in its ``child`` a guarded (once-only / on-change) construction."""
    if isinstance(node, (cst.If, cst.While)):
        return child is not node.test and _is_guard_test(node.test, self_name, node.body)
    if isinstance(node, cst.IfExp):
        return child is not node.test and _is_guard_test(node.test, self_name, None)
    if isinstance(node, cst.BooleanOperation):  # self.proj = self.proj or nn.Linear(...)
        return child is node.right and isinstance(node.operator, cst.Or) \
            and bool(_self_attributes(node.left, self_name))
    if isinstance(node, cst.ExceptHandler):  # try: self.proj / except AttributeError: self.proj = ...
        return True
    if isinstance(node, cst.IndentedBlock):  # if key in self.heads: return ...  (then build)
        for statement in node.body:
            if statement is child:
                return False
            # Any test of the module's state that leaves early: ``if self.built: return``.
            if isinstance(statement, cst.If) and _exits(statement.body) \
                    and _self_attributes(statement.test, self_name):
                return True
    return False


#: In-place tensor methods that give a weight fixed values (a blur or Sobel kernel), not random ones.
_FIXING_METHODS = frozenset({"copy_", "fill_", "set_"})
_FIXING_INITS = frozenset({"constant_", "ones_", "zeros_", "eye_", "dirac_"})


def _chained_target(stack: List[cst.CSTNode], call: cst.Call) -> Tuple[Optional[str], bool]:
    """Where a construction is stored, and whether it is frozen on the spot.

    Climbs method chains (``nn.Conv2d(...).to(device).requires_grad_(False)``) up to the
    statement: (the dotted assignment target or None, whether ``requires_grad_(False)`` was called).
    """
    index = len(stack) - 1
    current: cst.CSTNode = call
    frozen = False
    while index >= 2:
        attribute, outer = stack[index - 1], stack[index - 2]
        if not (isinstance(attribute, cst.Attribute) and attribute.value is current
                and isinstance(outer, cst.Call) and outer.func is attribute):
            break
        if attribute.attr.value == "requires_grad_" and outer.args and _bool_literal(outer.args[0].value) is False:
            frozen = True
        current = outer
        index -= 2
    parent = stack[index - 1] if index >= 1 else None
    target: Optional[cst.BaseExpression] = None
    if isinstance(parent, cst.Assign) and parent.value is current and len(parent.targets) == 1:
        target = parent.targets[0].target
    elif isinstance(parent, cst.AnnAssign) and parent.value is current:
        target = parent.target
    return (dotted(target) if target is not None else None), frozen


def _fixes_weights(function: cst.FunctionDef, target: str) -> bool:
    """Whether ``function`` gives the module stored in ``target`` fixed or existing weights.

    ``conv.weight = kernel``, ``conv.weight.data = kernel``, ``conv.weight.data.copy_(k)``,
    ``conv.weight.requires_grad = False``, ``conv.requires_grad_(False)``,
    ``conv.load_state_dict(state)``, ``nn.init.constant_(conv.weight, 1 / 9)``: a module used as a
    function with known weights, not a layer meant to be trained.
    """
    weight = f"{target}.weight"
    for node in _walk(function.body):
        targets: List[cst.BaseExpression] = []
        if isinstance(node, cst.Assign):
            targets = [t.target for t in node.targets]
        elif isinstance(node, (cst.AnnAssign, cst.AugAssign)):
            targets = [node.target]
        if any((dotted(t) or "").startswith(weight) for t in targets):
            return True
        if not isinstance(node, cst.Call):
            continue
        name = dotted(node.func) or ""
        first = node.args[0].value if node.args else None
        if name == f"{target}.load_state_dict":
            return True
        if name in (f"{target}.requires_grad_", f"{weight}.requires_grad_") \
                and first is not None and _bool_literal(first) is False:
            return True
        if name.startswith(f"{weight}.") and name.rpartition(".")[2] in _FIXING_METHODS:
            return True
        if name.rpartition(".")[2] in _FIXING_INITS and first is not None and dotted(first) == weight:
            return True
    return False


def _self_name(function: cst.FunctionDef) -> Optional[str]:
    params = function.params.posonly_params or function.params.params
    return params[0].name.value if params else None


class _Construction:
    __slots__ = ("method", "call", "label", "user_class")

    def __init__(self, method: str, call: cst.Call, label: str, user_class: Optional[str]) -> None:
        self.method = method
        self.call = call
        self.label = label
        self.user_class = user_class


class _ClassInfo:
    """What one class's methods construct and which of its own methods they call."""

    def __init__(self, node: cst.ClassDef, module_like: bool, top_level: bool,
                 layer_base: bool, base_names: Set[str]) -> None:
        self.node = node
        self.module_like = module_like
        self.top_level = top_level
        self.layer_base = layer_base
        self.base_names = base_names
        self.methods: Set[str] = {
            statement.name.value for statement in (node.body.body if isinstance(node.body, cst.IndentedBlock) else ())
            if isinstance(statement, cst.FunctionDef)
        }
        #: method -> [(called method, guarded)]
        self.edges: Dict[str, List[Tuple[str, bool]]] = {}
        #: Unguarded constructions (reported when reached from forward).
        self.unguarded: List[_Construction] = []
        #: Every construction, guarded or not (to tell a user block: its __init__ builds layers).
        self.all: List[_Construction] = []

    def reach(self, start: str, *, unguarded_only: bool) -> Set[str]:
        """Methods reachable from ``start`` through ``self.<method>(...)`` calls (``__init__`` not entered
        from elsewhere)."""
        if start not in self.methods:
            return set()
        seen = {start}
        todo = [start]
        while todo:
            for callee, guarded in self.edges.get(todo.pop(), ()):
                if callee in seen or callee == "__init__" or (guarded and unguarded_only):
                    continue
                seen.add(callee)
                todo.append(callee)
        return seen


class LayerInForward(LintRule):
    CODE = "TS002"
    TRIGGERS = ("forward",)

    VALID = [
        # Layers built in __init__, used in forward.
        "import torch.nn as nn\n"
        "class Net(nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.fc = nn.Linear(4, 2)\n"
        "    def forward(self, x):\n"
        "        return self.fc(x)\n",
        # A helper that builds layers, called only from __init__ (ResNet's _make_layer).
        "from torch import nn\n"
        "class Net(nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.layer1 = self._make_layer(3, 8)\n"
        "    def _make_layer(self, cin, cout):\n"
        "        return nn.Sequential(nn.Conv2d(cin, cout, 3), nn.BatchNorm2d(cout), nn.ReLU())\n"
        "    def forward(self, x):\n"
        "        return self.layer1(x)\n",
        # One-time lazy initialisation, in its usual spellings.
        "import torch.nn as nn\n"
        "class Head(nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.proj = None\n"
        "    def forward(self, x):\n"
        "        if self.proj is None:\n"
        "            self.proj = nn.Linear(x.shape[-1], 2)\n"
        "        return self.proj(x)\n",
        "import torch.nn as nn\n"
        "class Head(nn.Module):\n"
        "    def forward(self, x):\n"
        "        if not hasattr(self, 'proj'):\n"
        "            self.proj = nn.Linear(x.shape[-1], 2).to(x.device)\n"
        "        return self.proj(x)\n",
        "import torch.nn as nn\n"
        "class Head(nn.Module):\n"
        "    def forward(self, x):\n"
        "        if self.proj is None or self.proj.in_features != x.shape[-1]:\n"
        "            self.proj = nn.Linear(x.shape[-1], 2)\n"
        "        return self.proj(x)\n",
        "import torch.nn as nn\n"
        "class Head(nn.Module):\n"
        "    def forward(self, x):\n"
        "        if not self.built:\n"
        "            self._build(x.shape[-1])\n"
        "        return self.proj(x)\n"
        "    def _build(self, dim):\n"
        "        self.proj = nn.Linear(dim, 2)\n"
        "        self.built = True\n",
        "import torch.nn as nn\n"
        "class Head(nn.Module):\n"
        "    def forward(self, x):\n"
        "        if self.first_call:\n"
        "            self.scale = nn.Parameter(x.new_ones(x.shape[-1]))\n"
        "            self.first_call = False\n"
        "        return x * self.scale\n",
        "import torch.nn as nn\n"
        "class Head(nn.Module):\n"
        "    def forward(self, x):\n"
        "        self.proj = self.proj or nn.Linear(x.shape[-1], 2)\n"
        "        return self.proj(x)\n",
        "import torch.nn as nn\n"
        "class Head(nn.Module):\n"
        "    def forward(self, x):\n"
        "        proj = self.proj if self.proj is not None else nn.Linear(4, 2)\n"
        "        return proj(x)\n",
        "import torch.nn as nn\n"
        "class Head(nn.Module):\n"
        "    def forward(self, x):\n"
        "        try:\n"
        "            proj = self.proj\n"
        "        except AttributeError:\n"
        "            proj = self.proj = nn.Linear(x.shape[-1], 2)\n"
        "        return proj(x)\n",
        # Per-key lazy heads with an early return.
        "import torch.nn as nn\n"
        "class Heads(nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.heads = nn.ModuleDict()\n"
        "    def forward(self, x, task):\n"
        "        return self._head(task, x.shape[-1])(x)\n"
        "    def _head(self, task, dim):\n"
        "        if task in self.heads:\n"
        "            return self.heads[task]\n"
        "        self.heads[task] = head = nn.Linear(dim, 2)\n"
        "        return head\n",
        # Parameter-free modules and functional calls in forward.
        "import torch.nn as nn\n"
        "import torch.nn.functional as F\n"
        "class Net(nn.Module):\n"
        "    def forward(self, x):\n"
        "        x = nn.ReLU()(x)\n"
        "        x = nn.Dropout(0.1)(x)\n"
        "        x = nn.MaxPool2d(2)(x)\n"
        "        x = nn.Flatten()(x)\n"
        "        x = nn.Sequential(nn.Identity(), nn.GELU())(x)\n"
        "        x = nn.Softmax(dim=-1)(x)\n"
        "        x = nn.InstanceNorm1d(4)(x)\n"
        "        x = nn.BatchNorm1d(4, affine=False)(x)\n"
        "        x = nn.LayerNorm(4, elementwise_affine=False)(x)\n"
        "        x = nn.GroupNorm(2, 4, 1e-5, False)(x)\n"
        "        x = F.layer_norm(x, x.shape[-1:])\n"
        "        return F.linear(x, self.weight, self.bias)\n",
        # A module used as a function with fixed weights (a Sobel filter), or frozen on the spot.
        "import torch\n"
        "import torch.nn as nn\n"
        "class EdgeLoss(nn.Module):\n"
        "    def forward(self, x, y):\n"
        "        sobel = nn.Conv2d(1, 1, 3, padding=1, bias=False)\n"
        "        sobel.weight.data = self.kernel.view(1, 1, 3, 3)\n"
        "        blur = nn.Conv2d(1, 1, 3, bias=False).to(x.device)\n"
        "        nn.init.constant_(blur.weight, 1 / 9)\n"
        "        proj = nn.Linear(4, 4).requires_grad_(False)\n"
        "        return (sobel(x) - sobel(y)).abs().mean() + blur(x).mean() + proj(x).mean()\n",
        # A buffer registered in forward is not a parameter.
        "import torch\n"
        "import torch.nn as nn\n"
        "class Stats(nn.Module):\n"
        "    def forward(self, x):\n"
        "        self.register_buffer('last_mean', x.mean(0).detach())\n"
        "        return x - self.last_mean\n",
        # Names that only look like torch.nn.
        "import torch.nn as torch_nn\n"
        "class Linear:\n"
        "    def __init__(self, a, b):\n"
        "        self.a, self.b = a, b\n"
        "    def __call__(self, x):\n"
        "        return x\n"
        "class Net(torch_nn.Module):\n"
        "    def forward(self, x):\n"
        "        return Linear(4, 2)(x)\n",
        "import torch.nn\n"
        "class Net(torch.nn.Module):\n"
        "    def forward(self, x, nn):\n"
        "        return nn.Linear(4, 2)(x)\n",
        "from mylib import nn\n"
        "class Net(nn.Module):\n"
        "    def forward(self, x):\n"
        "        return nn.Linear(4, 2)(x)\n",
        # super().forward and isinstance checks are not constructions.
        "import torch.nn as nn\n"
        "class Wide(nn.Linear):\n"
        "    def forward(self, x):\n"
        "        assert not isinstance(x, nn.Linear)\n"
        "        return super().forward(x) * 2\n",
        # Models built in a training function, a test, or another model's __init__.
        "import torch\n"
        "import torch.nn as nn\n"
        "def train():\n"
        "    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 1))\n"
        "    opt = torch.optim.SGD(model.parameters(), lr=0.1)\n"
        "    for _ in range(3):\n"
        "        opt.zero_grad()\n"
        "        model(torch.randn(2, 4)).sum().backward()\n"
        "        opt.step()\n"
        "def test_forward():\n"
        "    layer = nn.Linear(4, 2)\n"
        "    assert layer(torch.randn(1, 4)).shape == (1, 2)\n",
        "import torch.nn as nn\n"
        "import torchvision\n"
        "class Block(nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.conv = nn.Conv2d(3, 3, 3)\n"
        "    def forward(self, x):\n"
        "        return self.conv(x)\n"
        "class Model(nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.block = Block()\n"
        "        self.backbone = torchvision.models.resnet18(num_classes=10)\n"
        "    def forward(self, x):\n"
        "        return self.backbone(self.block(x))\n",
        # A parameter-free user class built in forward.
        "import torch.nn as nn\n"
        "class Scale(nn.Module):\n"
        "    def __init__(self, k):\n"
        "        super().__init__()\n"
        "        self.k = k\n"
        "    def forward(self, x):\n"
        "        return x * self.k\n"
        "class Net(nn.Module):\n"
        "    def forward(self, x):\n"
        "        return Scale(2)(x)\n",
        # A class with no forward method; a method forward() never reaches.
        "import torch.nn as nn\n"
        "class Builder:\n"
        "    def build(self):\n"
        "        return nn.Linear(4, 2)\n"
        "class Net(nn.Module):\n"
        "    def forward(self, x):\n"
        "        return x\n"
        "    def reset_head(self):\n"
        "        self.head = nn.Linear(4, 2)\n",
        # Not a module: an autograd Function, and a class without bases.
        "import torch\n"
        "import torch.nn as nn\n"
        "class Fn(torch.autograd.Function):\n"
        "    @staticmethod\n"
        "    def forward(ctx, x):\n"
        "        ctx.layer = nn.Linear(4, 4)\n"
        "        return x\n"
        "class Runner:\n"
        "    def forward(self, x):\n"
        "        return nn.Linear(4, 2)(x)\n",
        # Decorators, defaults and nested functions are not the forward body.
        "import torch.nn as nn\n"
        "class Net(nn.Module):\n"
        "    def forward(self, x, make=lambda: nn.Linear(4, 2)):\n"
        "        def hook(module, inputs):\n"
        "            return None\n"
        "        return x\n",
        # Weight tying and parametrisation of existing parameters.
        "import torch.nn as nn\n"
        "class LM(nn.Module):\n"
        "    def forward(self, ids):\n"
        "        h = self.embed(ids)\n"
        "        return nn.functional.linear(h, self.embed.weight)\n",
        # Frozen lookup built from an existing tensor (not torch.nn.Embedding's constructor).
        "import torch.nn as nn\n"
        "class Lookup(nn.Module):\n"
        "    def forward(self, ids):\n"
        "        return nn.Embedding.from_pretrained(self.table, freeze=True)(ids)\n",
    ]
    INVALID = [
        "import torch.nn as nn\n"
        "class Net(nn.Module):\n"
        "    def forward(self, x):\n"
        "        return nn.Linear(4, 2)(x)  # expect: TS002\n",
        "import torch.nn as nn\n"
        "class Net(nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.fc = nn.Linear(4, 2)\n"
        "    def forward(self, x):\n"
        "        self.fc = nn.Linear(4, 2)  # expect: TS002\n"
        "        return self.fc(x)\n",
        "from torch.nn import Conv2d, ReLU\n"
        "from torch import nn\n"
        "class Net(nn.Module):\n"
        "    def forward(self, x):\n"
        "        x = ReLU()(x)\n"
        "        return Conv2d(3, 8, 3)(x)  # expect: TS002\n",
        "import torch\n"
        "class Net(torch.nn.Module):\n"
        "    def forward(self, x):\n"
        "        layer = torch.nn.Linear(x.shape[-1], 1)  # expect: TS002\n"
        "        return layer(x)\n",
        # A helper reached from forward, transitively.
        "import torch.nn as nn\n"
        "class Net(nn.Module):\n"
        "    def forward(self, x):\n"
        "        return self._head(x)\n"
        "    def _head(self, x):\n"
        "        return self._make(x.shape[-1])(x)\n"
        "    def _make(self, dim):\n"
        "        return nn.Sequential(\n"
        "            nn.Linear(dim, 8),  # expect: TS002\n"
        "            nn.ReLU(),\n"
        "            nn.LayerNorm(8),  # expect: TS002\n"
        "        )\n",
        "import torch\n"
        "import torch.nn as nn\n"
        "class Scale(nn.Module):\n"
        "    def forward(self, x):\n"
        "        self.scale = nn.Parameter(torch.ones(x.shape[-1]))  # expect: TS002\n"
        "        return x * self.scale\n",
        # A user block (its __init__ builds layers), and a subclass of a torch layer.
        "import torch.nn as nn\n"
        "class Net(nn.Module):\n"
        "    def forward(self, x):\n"
        "        x = Block(4)(x)  # expect: TS002\n"
        "        return Wide(4, 4)(x)  # expect: TS002\n"
        "class Block(nn.Module):\n"
        "    def __init__(self, dim):\n"
        "        super().__init__()\n"
        "        self.body = self._build(dim)\n"
        "    def _build(self, dim):\n"
        "        return nn.Linear(dim, dim)\n"
        "    def forward(self, x):\n"
        "        return self.body(x)\n"
        "class Wide(nn.Linear):\n"
        "    pass\n",
        # A flag that is not a lazy-init guard, a comprehension, lazy and affine variants.
        "import torch.nn as nn\n"
        "class Net(nn.Module):\n"
        "    def forward(self, x):\n"
        "        if self.use_norm:\n"
        "            x = nn.BatchNorm1d(x.shape[1])(x)  # expect: TS002\n"
        "        x = nn.InstanceNorm1d(4, affine=True)(x)  # expect: TS002\n"
        "        layers = [nn.LazyLinear(4) for _ in range(2)]  # expect: TS002\n"
        "        for layer in layers:\n"
        "            x = layer(x)\n"
        "        return x\n",
        # Inside a lazy-init guard, a layer called on the spot is still thrown away.
        "import torch.nn as nn\n"
        "class Net(nn.Module):\n"
        "    def forward(self, x):\n"
        "        if self.proj is None:\n"
        "            x = nn.Linear(4, 4)(x)  # expect: TS002\n"
        "        return x\n",
    ]

    def __init__(self, context: FileContext) -> None:
        super().__init__(context)
        self._open: List[_ClassInfo] = []
        self._closed: List[_ClassInfo] = []
        self._top_classes: Set[str] = set()

    # -- traversal -------------------------------------------------------------------

    def visit_Module(self, node: cst.Module) -> None:
        self._top_classes = {statement.name.value for statement in node.body if isinstance(statement, cst.ClassDef)}

    def visit_ClassDef(self, node: cst.ClassDef) -> None:
        positional = [arg.value for arg in node.bases if arg.keyword is None and not arg.star]
        names = [self.context.qualified_name(base) for base in positional]
        module_like = bool(positional) and not any(name in _NOT_MODULES for name in names)
        layer_base = any(_subclasses_a_layer(_torch_nn_name(name)) for name in names)
        base_names = {base.value for base in positional if isinstance(base, cst.Name)}
        top_level = len(self.context.stack) == 2  # Module, ClassDef
        self._open.append(_ClassInfo(node, module_like, top_level, layer_base, base_names))

    def leave_ClassDef(self, original_node: cst.ClassDef) -> None:
        self._closed.append(self._open.pop())

    def visit_Call(self, node: cst.Call) -> None:
        if not self._open:
            return
        info = self._open[-1]
        func = node.func
        label: Optional[str] = None
        user_class: Optional[str] = None
        callee: Optional[str] = None
        receiver: Optional[str] = None
        name = _torch_nn_name(self.context.qualified_name(func))
        if name is not None:
            if not _has_parameters(name, node):
                return
            label = f"nn.{name}"
        elif isinstance(func, cst.Name) and func.value in self._top_classes and self._module_level(func.value):
            user_class = func.value
        elif isinstance(func, cst.Attribute) and isinstance(func.value, cst.Name) and func.attr.value in info.methods:
            callee = func.attr.value
            receiver = func.value.value
        else:
            return
        where = self._method_context(info)
        if where is None:
            return
        function, self_name, chain = where
        method = function.name.value
        guarded = self_name is not None and any(_guards(parent, child, self_name) for parent, child in chain)
        if callee is not None:
            if receiver == self_name:
                info.edges.setdefault(method, []).append((callee, guarded))
            return
        construction = _Construction(method, node, label or str(user_class), user_class)
        info.all.append(construction)
        called_on_the_spot = isinstance(self.context.stack[-2], cst.Call) and self.context.stack[-2].func is node
        if guarded and not called_on_the_spot:
            return
        target, frozen = _chained_target(self.context.stack, node)
        if frozen or (target is not None and _fixes_weights(function, target)):
            return  # a module used as a function with fixed weights (a blur kernel), not a layer to train
        info.unguarded.append(construction)

    def leave_Module(self, original_node: cst.Module) -> None:
        blocks = self._user_blocks()
        for info in self._closed:
            if not info.module_like:
                continue
            reached = info.reach("forward", unguarded_only=True)
            for construction in info.unguarded:
                if construction.method not in reached:
                    continue
                if construction.user_class is not None and construction.user_class not in blocks:
                    continue
                self.report(construction.call, self._detail(construction))

    # -- helpers ---------------------------------------------------------------------

    def _method_context(
        self, info: _ClassInfo,
    ) -> Optional[Tuple[cst.FunctionDef, Optional[str], List[Tuple[cst.CSTNode, cst.CSTNode]]]]:
        """(method, its self parameter, [(ancestor, child)...] up to it) when the current call is in the
        body of a method of ``info``'s class, not in a nested function, lambda or class."""
        stack = self.context.stack
        chain: List[Tuple[cst.CSTNode, cst.CSTNode]] = []
        index = len(stack) - 2
        child = stack[-1]
        while index >= 0:
            parent = stack[index]
            if isinstance(parent, (cst.Lambda, cst.ClassDef)):
                return None
            if isinstance(parent, cst.FunctionDef):
                break
            chain.append((parent, child))
            child = parent
            index -= 1
        else:
            return None
        function = stack[index]
        assert isinstance(function, cst.FunctionDef)
        if child is not function.body or index < 2:
            return None
        if stack[index - 2] is not info.node or stack[index - 1] is not info.node.body:
            return None
        return function, _self_name(function), chain

    def _module_level(self, name: str) -> bool:
        """Whether ``name`` here refers to a binding of the module scope (not a local of a function)."""
        scope = self.context.resolver.scope
        first = True
        while scope is not None:
            if name in scope.global_names:
                return True
            if (first or scope.kind != "class") and name in scope.bindings:
                return scope.kind == "module" and scope.bindings[name] == LOCAL
            first = False
            scope = scope.parent
        return False

    def _user_blocks(self) -> Set[str]:
        """Top-level classes of this file whose construction creates parameters."""
        infos = {info.node.name.value: info for info in self._closed if info.top_level and info.module_like}
        blocks: Set[str] = set()
        changed = True
        while changed:
            changed = False
            for name, info in infos.items():
                if name in blocks:
                    continue
                init = info.reach("__init__", unguarded_only=False)
                builds = any(c.method in init and (c.user_class is None or c.user_class in blocks) for c in info.all)
                if info.layer_base or builds or info.base_names & blocks:
                    blocks.add(name)
                    changed = True
        return blocks

    @staticmethod
    def _detail(construction: _Construction) -> str:
        what = f"{construction.label}(...)"
        if construction.user_class is not None:
            what += " builds layers"
        if construction.method == "forward":
            return what
        return f"{what} in {construction.method}(), reached from forward()"
