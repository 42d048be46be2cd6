"""TS005 builtin-sum-on-tensor: Python's ``sum()`` over a tensor, or over a generator that walks one.

Reported: a call of the real builtin ``sum`` (not a local ``def sum``, a
module-level ``sum = ...``, a parameter named ``sum`` or ``from torch import
sum``) whose first argument is *tensor-like*, or is a generator / list
comprehension whose first iterable is tensor-like (``sum(x.item() for x in t)``
walks ``t`` row by row just the same).

Tensor-like is inferred locally and conservatively; anything unknown is not:

* a call of a torch function that returns one tensor (``torch.randn``,
  ``torch.stack``, ``torch.from_numpy``, ``torch.nn.functional.*``,
  ``torch.linalg.norm``...), never ``torch.load``, ``torch.cuda.*``,
  ``torch.split`` / ``chunk`` / ``unbind`` / ``max(dim=...)`` (tuples);
* a tensor-returning method on a tensor-like receiver (``.view``, ``.float``,
  ``.detach``, ``.to``...), never ``.tolist()``, ``.item()``, ``.numpy()``,
  ``.size()``, ``.shape``;
* ``.grad`` of anything; ``.weight`` / ``.bias`` of anything but ``self``
  and configuration objects (``args``, ``cfg``...); ``.data`` / ``.T`` of a
  tensor-like;
* a subscript, arithmetic, comparison or unary operation on a tensor-like; an
  integer subscript of ``torch.max(t, dim)`` / ``torch.sort(t)``...;
* a name or ``self.attr`` whose value, as the shared ``ValueTracer`` follows it
  (the assignment that reaches the use, every ``self.attr = ...`` of the class,
  the argument at every call site of a module-level function), is tensor-like;
  a name only ever unpacked from ``torch.max(t, dim)`` and the like; a
  parameter annotated ``torch.Tensor`` that is never rebound. A value the
  tracer cannot pin down (a branch, a loop variable, ``t += 1``) is unknown.

So ``sum(model(x))`` (unknown type), ``sum(losses)`` (a list built with
``append``), ``sum(p.numel() for p in model.parameters())`` are never reported.
"""

from __future__ import annotations

import re
from typing import Dict, List, Optional

import libcst as cst

from ..names import collect_bindings, dotted
from ..names import bound_names
from ..tree import walk_nodes
from ..values import Frame, ValueTracer
from ..rule import FileContext, LintRule

#: torch.* functions that return a single tensor.
_TORCH_TENSOR_FUNCTIONS = frozenset({
    "tensor", "as_tensor", "from_numpy", "asarray", "Tensor", "FloatTensor", "LongTensor", "DoubleTensor",
    "IntTensor", "BoolTensor", "HalfTensor", "ByteTensor",
    "zeros", "ones", "empty", "full", "rand", "randn", "randint", "randperm", "arange", "linspace", "logspace",
    "eye", "zeros_like", "ones_like", "empty_like", "full_like", "rand_like", "randn_like", "randint_like",
    "normal", "bernoulli", "multinomial", "poisson",
    "stack", "cat", "concat", "concatenate", "hstack", "vstack", "dstack", "column_stack", "row_stack",
    "matmul", "mm", "bmm", "einsum", "outer", "cdist", "tensordot", "kron", "addmm", "baddbmm",
    "abs", "exp", "log", "log1p", "expm1", "sqrt", "rsqrt", "square", "pow", "neg", "sign", "round", "floor",
    "ceil", "clamp", "clip", "sigmoid", "tanh", "relu", "softmax", "log_softmax", "erf", "sin", "cos",
    "mul", "add", "sub", "div", "true_divide", "remainder", "lerp", "maximum", "minimum",
    "flatten", "squeeze", "unsqueeze", "reshape", "transpose", "permute", "t", "flip", "roll", "diag",
    "triu", "tril", "narrow", "select", "index_select", "gather", "masked_select", "take", "repeat_interleave",
    "tile", "cumsum", "cumprod", "diff", "bincount", "histc", "clone", "detach", "nan_to_num",
    "sum", "mean", "prod", "std", "var", "norm", "logsumexp", "argmax", "argmin", "count_nonzero",
    "eq", "ne", "gt", "lt", "ge", "le", "isnan", "isinf", "isfinite", "logical_and", "logical_or",
    "logical_not", "logical_xor", "masked_fill",
})
#: Submodules of torch whose functions return a tensor, minus those that return tuples.
_TENSOR_NAMESPACES = ("torch.nn.functional.", "torch.linalg.", "torch.fft.", "torch.special.")
_TUPLE_RETURNING = frozenset({
    "max_pool1d_with_indices", "max_pool2d_with_indices", "max_pool3d_with_indices",
    "fractional_max_pool2d_with_indices", "fractional_max_pool3d_with_indices", "adaptive_max_pool1d_with_indices",
    "adaptive_max_pool2d_with_indices", "adaptive_max_pool3d_with_indices", "multi_head_attention_forward",
    "eig", "eigh", "svd", "qr", "slogdet", "lstsq", "lu", "lu_factor", "lu_factor_ex", "inv_ex", "cholesky_ex",
    "solve_ex", "ldl_factor", "ldl_factor_ex", "eigvals", "eigvalsh",
})
#: Tensor methods that return one tensor (in-place ones return their receiver).
_TENSOR_METHODS = frozenset({
    "view", "view_as", "reshape", "reshape_as", "float", "double", "half", "bfloat16", "long", "int", "short",
    "bool", "byte", "char", "abs", "neg", "pow", "sqrt", "rsqrt", "square", "exp", "log", "log1p", "sigmoid",
    "tanh", "relu", "softmax", "log_softmax", "detach", "clone", "to", "cpu", "cuda", "type_as", "contiguous",
    "flatten", "squeeze", "unsqueeze", "t", "transpose", "permute", "expand", "expand_as", "repeat", "flip",
    "roll", "mul", "add", "sub", "div", "matmul", "mm", "bmm", "clamp", "clip", "sum", "mean", "prod", "norm",
    "std", "var", "round", "floor", "ceil", "masked_fill", "cumsum", "cumprod", "diff", "diag", "triu", "tril",
    "narrow", "select", "index_select", "gather", "argmax", "argmin", "nan_to_num", "reciprocal",
    "requires_grad_", "add_", "sub_", "mul_", "div_", "clamp_", "zero_", "fill_", "exp_", "abs_",
    "masked_fill_", "float_power", "pin_memory", "squeeze_", "unsqueeze_",
})
#: torch functions returning a tuple of tensors (``values, indices = torch.max(t, dim=1)``).
_TORCH_TUPLE_FUNCTIONS = frozenset({
    "torch.max", "torch.min", "torch.sort", "torch.topk", "torch.median", "torch.mode", "torch.kthvalue",
    "torch.std_mean", "torch.var_mean", "torch.aminmax",
})
_TENSOR_ATTRIBUTES_OF_ANYTHING = frozenset({"grad", "weight", "bias"})
#: Receivers whose ``.weight`` / ``.bias`` are likely configuration values, not parameters.
_CONFIG_RECEIVER = re.compile(r"^(self|args|arguments|cfg|config|conf|opt|opts|options|hparams|hp|params|"
                              r"settings|flags)$", re.IGNORECASE)
_TENSOR_ATTRIBUTES_OF_TENSORS = frozenset({"data", "T", "mT", "H", "mH", "real", "imag"})
_TENSOR_ANNOTATIONS = frozenset({"torch.Tensor", "torch.nn.Parameter", "torch.FloatTensor", "torch.LongTensor"})

_COMPREHENSIONS = (cst.GeneratorExp, cst.ListComp)
_MAX_DEPTH = 12


def _unpacked_from(scope: cst.CSTNode, name: str) -> Optional[cst.Call]:
    """The call that ``name`` is unpacked from when that is its only binding in the function
    (``_, predicted = torch.max(out, 1)``); None otherwise."""
    if not isinstance(scope, cst.FunctionDef) or not isinstance(scope.body, cst.IndentedBlock):
        return None
    params = scope.params
    if any(p.name.value == name for p in (*params.posonly_params, *params.params, *params.kwonly_params)):
        return None
    bound: Dict[str, str] = {}
    collect_bindings(scope.body.body, bound)
    if name not in bound:
        return None
    found: List[cst.Call] = []
    for node in walk_nodes(scope.body):
        if isinstance(node, (cst.FunctionDef, cst.ClassDef, cst.Lambda)):
            continue
        if isinstance(node, cst.Assign):
            for target in node.targets:
                if name in bound_names(target.target):
                    if not isinstance(target.target, (cst.Tuple, cst.List)) or not isinstance(node.value, cst.Call):
                        return None
                    found.append(node.value)
        elif isinstance(node, (cst.AugAssign, cst.AnnAssign, cst.For, cst.NamedExpr)):
            if name in bound_names(node.target):
                return None
        elif isinstance(node, cst.WithItem) and node.asname is not None:
            if name in bound_names(node.asname.name):
                return None
    return found[0] if len(found) == 1 else None


class BuiltinSumOnTensor(LintRule):
    CODE = "TS005"
    TRIGGERS = ("sum",)

    VALID = [
        # a list of per-batch losses
        "import torch\n"
        "def train(model, loader, criterion):\n"
        "    losses = []\n"
        "    for x, y in loader:\n"
        "        losses.append(criterion(model(x), y))\n"
        "    return sum(losses) / len(losses)\n",
        "total = sum([1.0, 2.0])\n",
        "def count(model):\n"
        "    return sum(p.numel() for p in model.parameters() if p.requires_grad)\n",
        # a local sum, a module-level sum, torch's sum
        "import torch\n"
        "def sum(values):\n"
        "    return values[0]\n"
        "t = torch.randn(3)\n"
        "print(sum(t))\n",
        "import torch\n"
        "sum = 0\n"
        "t = torch.randn(3)\n"
        "def f():\n"
        "    return sum(t)\n",
        "import torch\n"
        "from torch import sum\n"
        "t = torch.randn(3, 2)\n"
        "print(sum(t, dim=0))\n",
        "import torch\n"
        "def reduce(t, sum=torch.sum):\n"
        "    return sum(t)\n",
        # tensor.sum(), torch.sum()
        "import torch\n"
        "t = torch.randn(4, 3)\n"
        "a = t.sum()\n"
        "b = torch.sum(t, dim=1)\n",
        "def mean_loss(batch_losses):\n"
        "    batch_losses = [l for l in batch_losses]\n"
        "    return sum(x.item() for x in batch_losses) / len(batch_losses)\n",
        "print(sum(range(10)))\n",
        # unknown types: never guessed
        "import torch\n"
        "def f(model, x):\n"
        "    return sum(model(x))\n",
        "def f(values):\n"
        "    return sum(values)\n",
        # Python values out of tensors
        "import torch\n"
        "t = torch.randn(5)\n"
        "a = sum(t.tolist())\n"
        "b = sum(t.shape)\n"
        "c = sum(t.size())\n"
        "d = sum([t.item()])\n"
        "e = sum(x for x in t.numpy())\n",
        # tuples of tensors: split / chunk / unbind / max(dim) are deliberate
        "import torch\n"
        "t = torch.randn(6, 2)\n"
        "a = sum(torch.chunk(t, 3))\n"
        "b = sum(c.mean() for c in t.split(2))\n"
        "c = sum(t.unbind(1))\n"
        "d = sum(torch.max(t, dim=1))\n",
        # a name that is a tensor in one branch and a list in another
        "import torch\n"
        "def f(flag):\n"
        "    if flag:\n"
        "        values = torch.randn(3)\n"
        "    else:\n"
        "        values = [1.0, 2.0]\n"
        "    return sum(values)\n",
        # a comprehension variable shadowing a tensor-like name of the function
        "import torch\n"
        "def f(rows):\n"
        "    r = torch.zeros(3)\n"
        "    return [sum(r) for r in rows]\n",
        # a loop variable, a name bound only elsewhere
        "import torch\n"
        "def f(batches):\n"
        "    for t in batches:\n"
        "        print(sum(t))\n",
        # zip / enumerate over tensors: not inferred
        "import torch\n"
        "a, b = torch.randn(3), torch.randn(3)\n"
        "dot = sum(x * y for x, y in zip(a, b))\n",
        # torch functions that return no tensor
        "import torch\n"
        "state = torch.load('ckpt.pt')\n"
        "n = sum(torch.cuda.device_count() for _ in range(2))\n"
        "print(sum(state))\n",
    ]
    INVALID = [
        "import torch\n"
        "losses = torch.stack([torch.tensor(1.0), torch.tensor(2.0)])\n"
        "total = sum(losses)  # expect: TS005\n",
        "import torch\n"
        "def penalty(model: torch.nn.Module, t: torch.Tensor):\n"
        "    a = sum(t)  # expect: TS005\n"
        "    b = sum(w.norm() for w in model.fc.weight)  # expect: TS005\n"
        "    return a + b\n",
        "import torch\n"
        "import torch.nn.functional as F\n"
        "def f(logits, y):\n"
        "    probs = F.softmax(logits, dim=-1)\n"
        "    probs = probs.detach().cpu()\n"
        "    return sum(p.item() for p in probs[:, 0])  # expect: TS005\n",
        "import torch\n"
        "from torch import Tensor\n"
        "def f(x: Tensor):\n"
        "    return sum([v * 2 for v in x.flatten()])  # expect: TS005\n",
        "import numpy as np\n"
        "import torch\n"
        "arr = torch.from_numpy(np.ones(3)).float()\n"
        "print(sum(arr * 2))  # expect: TS005\n"
        "print(sum(param.grad))  # expect: TS005\n",
        "import torch\n"
        "def f():\n"
        "    t = torch.randn(3)\n"
        "    t = t.abs()\n"
        "    return sum(t), sum(-t)  # expect: TS005\n",
        # a module-level tensor bound once, read in a function
        "import torch\n"
        "t = torch.randn(3)\n"
        "def f():\n"
        "    return sum(t)  # expect: TS005\n",
    ]

    def __init__(self, context: FileContext) -> None:
        super().__init__(context)
        self._tracer = ValueTracer(context)

    def visit_Call(self, node: cst.Call) -> None:
        if not node.args or not self.context.is_builtin(node.func, "sum"):
            return
        first = node.args[0]
        if first.keyword is not None or first.star:
            return
        frame = self._tracer.here()
        value = first.value
        if isinstance(value, _COMPREHENSIONS):
            if self._tensor_like(value.for_in.iter, frame, 0):
                self.report(node, "sum() over a comprehension that iterates a tensor")
        elif self._tensor_like(value, frame, 0):
            self.report(node)

    # -- inference -----------------------------------------------------------------------------

    def _tensor_like(self, node: cst.BaseExpression, frame: Frame, depth: int) -> bool:
        """Whether ``node`` (evaluated in ``frame``) certainly holds a tensor, by local evidence."""
        if depth > _MAX_DEPTH:
            return False
        depth += 1
        if isinstance(node, cst.Name):
            return self._tensor_name(node, frame, depth)
        if isinstance(node, cst.Call):
            return self._tensor_call(node, frame, depth)
        if isinstance(node, cst.Attribute):
            attribute = node.attr.value
            if attribute == "grad":
                return True
            owner = node.value
            if frame.self_name is not None and isinstance(owner, cst.Name) and owner.value == frame.self_name:
                return self._all_tensor_like(self._tracer.values(node, frame), depth)  # self.x: what was assigned
            if attribute in _TENSOR_ATTRIBUTES_OF_ANYTHING:
                return not (isinstance(owner, cst.Name) and _CONFIG_RECEIVER.match(owner.value))
            return attribute in _TENSOR_ATTRIBUTES_OF_TENSORS and self._tensor_like(owner, frame, depth)
        if isinstance(node, cst.Subscript):
            if isinstance(node.value, cst.Call) and self._tensor_tuple(node.value, frame):
                return len(node.slice) == 1 and isinstance(node.slice[0].slice, cst.Index) \
                    and isinstance(node.slice[0].slice.value, cst.Integer)
            return self._tensor_like(node.value, frame, depth)
        if isinstance(node, cst.BinaryOperation):
            return self._tensor_like(node.left, frame, depth) or self._tensor_like(node.right, frame, depth)
        if isinstance(node, cst.UnaryOperation):
            return not isinstance(node.operator, cst.Not) and self._tensor_like(node.expression, frame, depth)
        if isinstance(node, cst.Comparison):
            if any(isinstance(c.operator, (cst.In, cst.NotIn, cst.Is, cst.IsNot)) for c in node.comparisons):
                return False
            return self._tensor_like(node.left, frame, depth) or any(
                self._tensor_like(c.comparator, frame, depth) for c in node.comparisons)
        if isinstance(node, cst.IfExp):
            return self._tensor_like(node.body, frame, depth) and self._tensor_like(node.orelse, frame, depth)
        return False

    def _all_tensor_like(self, values: Optional[list], depth: int) -> bool:
        return bool(values) and all(self._tensor_like(value, frame, depth) for value, frame in values)

    def _tensor_name(self, node: cst.Name, frame: Frame, depth: int) -> bool:
        values = self._tracer.values(node, frame)
        if values is not None:
            return self._all_tensor_like(values, depth)
        scope = frame.scope
        if not isinstance(scope, cst.FunctionDef):
            return False
        unpacked = _unpacked_from(scope, node.value)
        if unpacked is not None:
            return self._tensor_tuple(unpacked, frame)
        return self._annotated_tensor(scope, node.value)

    def _annotated_tensor(self, function: cst.FunctionDef, name: str) -> bool:
        """A parameter annotated ``torch.Tensor`` that the function never rebinds."""
        params = function.params
        for param in (*params.posonly_params, *params.params, *params.kwonly_params):
            if param.name.value == name and param.annotation is not None:
                annotation = param.annotation.annotation
                if dotted(annotation) is None or self.context.qualified_name(annotation) not in _TENSOR_ANNOTATIONS:
                    return False
                bound: Dict[str, str] = {}
                if isinstance(function.body, cst.IndentedBlock):
                    collect_bindings(function.body.body, bound)
                return name not in bound
        return False

    def _qualified(self, func: cst.BaseExpression, frame: Frame) -> Optional[str]:
        return self._tracer.qualified(func, frame) if dotted(func) is not None else None

    def _tensor_call(self, node: cst.Call, frame: Frame, depth: int) -> bool:
        func = node.func
        if isinstance(func, cst.Attribute) and func.attr.value in _TENSOR_METHODS \
                and self._tensor_like(func.value, frame, depth):
            return True
        name = self._qualified(func, frame)
        if name is None or not name.startswith("torch."):
            return False
        if any(arg.keyword is not None and arg.keyword.value in ("return_indices", "as_tuple") for arg in node.args):
            return False
        for namespace in _TENSOR_NAMESPACES:
            if name.startswith(namespace):
                rest = name[len(namespace):]
                return "." not in rest and rest not in _TUPLE_RETURNING and not rest.startswith("_")
        if name == "torch.nn.Parameter":
            return True
        rest = name[len("torch."):]
        if rest in ("max", "min"):  # a tensor for max(t) (and max(a, b)); a (values, indices) tuple with dim
            return len(node.args) == 1 and node.args[0].keyword is None and not node.args[0].star
        return rest in _TORCH_TENSOR_FUNCTIONS

    def _tensor_tuple(self, call: cst.Call, frame: Frame) -> bool:
        """``torch.max(t, dim=1)``, ``torch.sort(t)``...: a tuple whose every element is a tensor."""
        name = self._qualified(call.func, frame)
        if name not in _TORCH_TUPLE_FUNCTIONS:
            return False
        if name in ("torch.max", "torch.min", "torch.median", "torch.mode"):
            # torch.max(t) and torch.max(a, b) give one tensor: only the dim form is a tuple.
            positional = [a for a in call.args if a.keyword is None]
            dim = any(a.keyword is not None and a.keyword.value == "dim" for a in call.args)
            return dim or (len(positional) == 2 and isinstance(positional[1].value, (cst.Integer, cst.UnaryOperation)))
        return True
