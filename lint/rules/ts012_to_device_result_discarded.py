"""TS012 to-device-result-discarded: ``x.to(device)`` on a tensor as a bare statement.

``nn.Module.to()`` / ``.cuda()`` move a module in place, so ``model.to(device)`` as a
statement is correct; ``Tensor.to()`` returns a new tensor and leaves ``x`` where it
was. The two look identical, so the rule reports a statement only when its receiver
is known to be a tensor, and stays silent on anything else (objects whose ``.to()``
works in place, like Hugging Face's ``BatchEncoding`` or PyG's ``Data``, included).
"""

from __future__ import annotations

from typing import List, Optional, Tuple

import libcst as cst

from ..names import dotted
from ..patterns import method_name, receiver
from ..values import Frame, Value, ValueTracer, reaching_binding
from ..rule import FileContext, Fix, LintRule

#: Tensor methods that return a converted copy and leave the receiver unchanged.
_CONVERSIONS = frozenset({"to", "cuda", "cpu", "float", "double", "half", "bfloat16", "long", "int"})

#: torch functions (import-resolved) that always return a tensor.
_FACTORIES = frozenset({f"torch.{name}" for name in (
    "tensor", "as_tensor", "from_numpy", "zeros", "ones", "empty", "full", "rand", "randn", "randint", "randperm",
    "arange", "linspace", "logspace", "eye", "zeros_like", "ones_like", "empty_like", "full_like", "rand_like",
    "randn_like", "randint_like", "stack", "cat", "concat", "concatenate", "hstack", "vstack", "normal",
    "bernoulli", "multinomial", "Tensor", "FloatTensor", "LongTensor", "DoubleTensor", "IntTensor", "BoolTensor",
    "HalfTensor", "ByteTensor", "matmul", "mm", "bmm", "einsum", "outer", "flatten", "clone", "exp", "log",
    "sigmoid", "softmax", "tanh", "relu", "abs", "sqrt", "argmax", "argmin", "one_hot", "frombuffer",
)})
#: Tensor methods that return a tensor when called on one.
_TENSOR_METHODS = frozenset({
    "to", "cuda", "cpu", "float", "double", "half", "bfloat16", "long", "int", "bool", "view", "reshape",
    "unsqueeze", "squeeze", "permute", "transpose", "contiguous", "clone", "detach", "flatten", "t", "expand",
    "repeat", "type_as", "view_as", "reshape_as", "sum", "mean", "abs", "exp", "log", "sqrt", "clamp", "pow",
    "argmax", "softmax", "sigmoid", "requires_grad_", "pin_memory", "masked_fill", "index_select", "gather",
})
#: Names of the items of a batch that are tensors whatever the dataset (never a whole batch:
#: ``batch``, ``data``, ``inputs`` may be a BatchEncoding or a PyG Data, whose .to() is in place).
_TENSOR_ITEM_NAMES = frozenset({
    "images", "image", "imgs", "img", "labels", "label", "targets", "target", "masks", "mask", "x", "y", "xb",
    "yb", "x_batch", "y_batch", "batch_x", "batch_y", "features",
})
_LOADERS = frozenset({"torch.utils.data.DataLoader", "torch.utils.data.dataloader.DataLoader"})
_TENSOR_DATASETS = frozenset({"torch.utils.data.TensorDataset", "torch.utils.data.dataset.TensorDataset"})
#: Keys of a batch dict whose value is a tensor (Hugging Face and torchvision conventions).
_TENSOR_KEYS = frozenset({
    "input_ids", "attention_mask", "token_type_ids", "position_ids", "labels", "label", "pixel_values",
    "pixel_mask", "input_values", "input_features", "decoder_input_ids", "decoder_attention_mask",
    "inputs_embeds", "start_positions", "end_positions", "image", "images", "target", "targets",
})


class ToDeviceResultDiscarded(LintRule):
    """A statement ``x.to(...)`` / ``x.cuda()`` / ``x.float()``... whose receiver is a tensor."""

    CODE = "TS012"
    TRIGGERS = (".to(", ".cuda(", ".cpu(", ".float(", ".double(", ".half(", ".bfloat16(", ".long(", ".int(")

    VALID = [
        # Modules move in place: correct.
        "import torch, torch.nn as nn\n"
        "model = nn.Linear(4, 2)\n"
        "model.to(device)\n"
        "model.cuda()\n"
        "model.half()\n",
        "import torch.nn as nn\n"
        "class Net(nn.Module):\n"
        "    pass\n"
        "def setup(device):\n"
        "    net = Net()\n"
        "    net.to(device)\n"
        "    for layer in net.children():\n"
        "        layer.float()\n",
        "def run(model, criterion, device):\n"
        "    model.to(device)\n"
        "    criterion.cuda()\n"
        "    self_model = model\n"
        "    self_model.cpu()\n",
        # The result is used: assigned, returned, passed on.
        "import torch\n"
        "x = torch.randn(3)\n"
        "x = x.to(device)\n"
        "y = x.cuda().float()\n"
        "print(x.cpu())\n",
        # Objects whose .to() works in place (Hugging Face BatchEncoding, PyG Data), or unknown.
        "def train(model, loader, device):\n"
        "    for batch in loader:\n"
        "        batch.to(device)\n"
        "        model(**batch)\n",
        "def train(model, loader, device):\n"
        "    for data in loader:\n"
        "        data.to(device)\n"
        "        inputs, labels = data\n"
        "        inputs.to(device)\n",
        "def step(x, y, device):\n"
        "    x.to(device)\n",
        "import torch\n"
        "def step(device, cond):\n"
        "    x = get_batch()\n"
        "    if cond:\n"
        "        x = torch.zeros(3)\n"
        "    x.to(device)\n",
        # A dict key that is not a known tensor field.
        "def step(batch, device):\n"
        "    batch['graph'].to(device)\n",
        # A fresh tensor moved for the side effect: initialising the CUDA context.
        "import torch\n"
        "torch.zeros(1).cuda()\n"
        "torch.empty(0).to('cuda')\n",
        # A for loop over models, over a list of tensors; loader items whose names do not say tensor
        # (a tokenizer's BatchEncoding, a graph batch: their .to() is in place).
        "import torch\n"
        "for model in (net_a, net_b):\n"
        "    model.to(device)\n"
        "for t in [torch.zeros(1), torch.ones(1)]:\n"
        "    t.cuda()\n"
        "for inputs, labels in train_loader:\n"
        "    inputs.to(device)\n"
        "for graph, y in pairs:\n"
        "    y.to(device)\n",
        # Not the tensor methods: torch.cuda functions, a local class with .to().
        "import torch\n"
        "torch.cuda.init()\n"
        "class Batch:\n"
        "    def to(self, device):\n"
        "        self.device = device\n"
        "b = Batch()\n"
        "b.to('cuda')\n",
    ]
    INVALID = [
        "import torch\n"
        "x = torch.randn(8, 4)\n"
        "x.to('cuda')  # expect: TS012\n",
        "import torch\n"
        "def step(model, device):\n"
        "    inputs = torch.from_numpy(array).float()\n"
        "    inputs.cuda()  # expect: TS012\n"
        "    labels = torch.tensor(targets)\n"
        "    labels.long()  # expect: TS012\n"
        "    return model(inputs)\n",
        "import torch\n"
        "from torch.utils.data import DataLoader, TensorDataset\n"
        "loader = DataLoader(TensorDataset(torch.randn(64, 4), torch.randint(0, 2, (64,))), batch_size=8)\n"
        "def train(model, device):\n"
        "    for i, (x, y) in enumerate(loader):\n"
        "        x.to(device)  # expect: TS012\n"
        "        y.to(device)  # expect: TS012\n"
        "        model(x)\n",
        "import torch\n"
        "def forward_step(model, x: torch.Tensor, device):\n"
        "    x.to(device)  # expect: TS012\n"
        "    return model(x)\n",
        "def step(model, batch, device):\n"
        "    batch['input_ids'].to(device)  # expect: TS012\n"
        "    return model(**batch)\n",
        # Image / label items of any loader (by their names), directly or unpacked from the batch.
        "from tqdm import tqdm\n"
        "def train(model, dataloaders, device):\n"
        "    for images, labels in dataloaders['train']:\n"
        "        images.to(device)  # expect: TS012\n"
        "        labels.to(device)  # expect: TS012\n"
        "    for batch in tqdm(val_loader):\n"
        "        images, targets = batch\n"
        "        images.cuda()  # expect: TS012\n",
    ]

    def __init__(self, context: FileContext) -> None:
        super().__init__(context)
        self._tracer = ValueTracer(context)

    def visit_Expr(self, node: cst.Expr) -> None:
        call = node.value
        if not isinstance(call, cst.Call) or method_name(call) not in _CONVERSIONS:
            return
        target = receiver(call)
        if not isinstance(target, (cst.Name, cst.Subscript)) or self.context.qualified_name(call.func) is not None:
            # ``torch.zeros(1).cuda()`` as a statement is for its side effect (CUDA initialisation);
            # ``torch.cuda(...)`` is a module function.
            return
        frame = self._tracer.here()
        if self._is_tensor(target, frame, 0):
            assign = cst.Assign(targets=[cst.AssignTarget(target=target)], value=call)
            self.report(node, f"{method_name(call)}() returns a new tensor",
                        fix=Fix(assign, "assign the converted tensor back"))

    # -- is this expression known to be a tensor? ----------------------------------------------------

    def _is_tensor(self, expr: cst.BaseExpression, frame: Frame, depth: int) -> Optional[bool]:
        """True when ``expr`` certainly evaluates to a ``torch.Tensor``; None when unknown."""
        if depth > ValueTracer.MAX_DEPTH:
            return None
        if isinstance(expr, cst.Call):
            qualified = self._tracer.qualified(expr.func, frame)
            if qualified is not None:
                return True if qualified in _FACTORIES or qualified.startswith("torch.nn.functional.") else None
            target = receiver(expr)
            if target is not None and method_name(expr) in _TENSOR_METHODS:
                return self._is_tensor(target, frame, depth + 1)
            return self._tracer.agree(self._tracer.returned_values(expr.func, frame), self._is_tensor, depth)
        if isinstance(expr, cst.Subscript):
            if self._is_tensor(expr.value, frame, depth + 1):
                return True
            return True if _tensor_key(expr) else None
        if isinstance(expr, cst.BinaryOperation):
            if self._is_tensor(expr.left, frame, depth + 1) or self._is_tensor(expr.right, frame, depth + 1):
                return True
            return None
        if isinstance(expr, cst.UnaryOperation):
            return self._is_tensor(expr.expression, frame, depth + 1)
        if isinstance(expr, cst.Name):
            return self._name_is_tensor(expr, frame, depth)
        return None

    def _name_is_tensor(self, name: cst.Name, frame: Frame, depth: int) -> Optional[bool]:
        found = self._tracer.agree(self._tracer.values(name, frame), self._is_tensor, depth)
        if found is not None:
            return found
        binding = reaching_binding(self._tracer, name, frame)
        if isinstance(binding, cst.For):
            return True if self._loop_item_is_tensor(binding, name.value, frame, depth) else None
        if isinstance(binding, cst.Assign):
            return self._unpacked_is_tensor(binding, name.value, frame, depth)
        if binding is None:  # a parameter: its annotation
            annotation = _parameter_annotation(frame, name.value)
            if annotation is not None and self._tracer.qualified(annotation, frame) == "torch.Tensor":
                return True
        return None

    def _loop_item_is_tensor(self, loop: cst.For, name: str, frame: Frame, depth: int) -> bool:
        """Whether ``name`` is one of the tensors a loop over a DataLoader unpacks (``for x, y in loader``).

        Any item of a loader over a ``TensorDataset`` / torchvision dataset; for any other
        loader, only items whose name says image / label / target / mask / x / y.
        """
        iterable, target = self._unwrap(loop.iter, loop.target)
        if not isinstance(target, (cst.Tuple, cst.List)) or not any(
                isinstance(e.value, cst.Name) and e.value.value == name for e in target.elements):
            return False  # one name for the whole batch: a list, a dict, or an object with an in-place .to()
        if self._tracer.agree(self._values_or_self(iterable, frame), self._is_tensor_loader, depth):
            return True
        return name in _TENSOR_ITEM_NAMES and self._is_loader(iterable, frame, depth)

    def _unpacked_is_tensor(self, assign: cst.Assign, name: str, frame: Frame, depth: int) -> Optional[bool]:
        """``images, labels = batch`` (an item of a loop over a loader), or ``a, b = x1, x2`` element-wise."""
        if len(assign.targets) != 1 or not isinstance(assign.targets[0].target, (cst.Tuple, cst.List)):
            return None
        elements = [e.value for e in assign.targets[0].target.elements]
        if any(isinstance(e, cst.StarredElement) for e in elements):
            return None
        index = next((i for i, e in enumerate(elements) if isinstance(e, cst.Name) and e.value == name), None)
        if index is None:
            return None
        value = assign.value
        if isinstance(value, (cst.Tuple, cst.List)):
            if len(value.elements) != len(elements) or any(isinstance(e, cst.StarredElement) for e in value.elements):
                return None
            return self._is_tensor(value.elements[index].value, frame, depth + 1)
        if isinstance(value, cst.Name) and name in _TENSOR_ITEM_NAMES:
            loop = reaching_binding(self._tracer, value, frame)
            if isinstance(loop, cst.For):
                iterable, target = self._unwrap(loop.iter, loop.target)
                if isinstance(target, cst.Name) and target.value == value.value \
                        and self._is_loader(iterable, frame, depth):
                    return True
        return None

    def _unwrap(self, iterable: cst.BaseExpression,
                target: cst.BaseExpression) -> Tuple[cst.BaseExpression, Optional[cst.BaseExpression]]:
        """The loader and the batch target under ``enumerate(...)`` / ``tqdm(...)``."""
        while isinstance(iterable, cst.Call) and iterable.args:
            if self.context.is_builtin(iterable.func, "enumerate"):
                if not (isinstance(target, cst.Tuple) and len(target.elements) == 2):
                    return iterable, None
                target = target.elements[1].value
            elif (self._tracer.qualified(iterable.func, self._tracer.here()) or "").split(".")[0] != "tqdm":
                break
            iterable = iterable.args[0].value
        return iterable, target

    def _is_loader(self, expr: cst.BaseExpression, frame: Frame, depth: int) -> bool:
        """A DataLoader (built in this file), or a name that says so (``train_loader``, ``loaders["val"]``)."""
        if self._tracer.agree(self._values_or_self(expr, frame), self._is_any_loader, depth):
            return True
        text = dotted(expr.value if isinstance(expr, cst.Subscript) else expr)
        return text is not None and "loader" in text.rpartition(".")[2].lower()

    def _is_any_loader(self, expr: cst.BaseExpression, frame: Frame, depth: int) -> Optional[bool]:
        if not isinstance(expr, cst.Call):
            return None
        if self._tracer.qualified(expr.func, frame) in _LOADERS:
            return True
        return self._tracer.agree(self._tracer.returned_values(expr.func, frame), self._is_any_loader, depth)

    def _values_or_self(self, expr: cst.BaseExpression, frame: Frame) -> Optional[List[Value]]:
        return [(expr, frame)] if isinstance(expr, cst.Call) else self._tracer.values(expr, frame)

    def _is_tensor_loader(self, expr: cst.BaseExpression, frame: Frame, depth: int) -> Optional[bool]:
        if not isinstance(expr, cst.Call):
            return None
        if self._tracer.qualified(expr.func, frame) not in _LOADERS:  # a factory function of this file?
            return self._tracer.agree(self._tracer.returned_values(expr.func, frame), self._is_tensor_loader, depth)
        dataset = next((a.value for a in expr.args if a.keyword is None or a.keyword.value == "dataset"), None)
        if dataset is None:
            return None
        return self._tracer.agree(self._values_or_self(dataset, frame), self._is_tensor_dataset, depth)

    def _is_tensor_dataset(self, expr: cst.BaseExpression, frame: Frame, depth: int) -> Optional[bool]:
        if not isinstance(expr, cst.Call):
            return None
        qualified = self._tracer.qualified(expr.func, frame)
        if qualified in _TENSOR_DATASETS or (qualified or "").startswith("torchvision.datasets."):
            return True
        return None


def _tensor_key(expr: cst.Subscript) -> bool:
    """``batch["input_ids"]``: a string key that names a tensor field."""
    if len(expr.slice) != 1 or not isinstance(expr.slice[0].slice, cst.Index):
        return False
    key = expr.slice[0].slice.value
    return isinstance(key, cst.SimpleString) and key.evaluated_value in _TENSOR_KEYS


def _parameter_annotation(frame: Frame, name: str) -> Optional[cst.BaseExpression]:
    """The annotation of parameter ``name`` of the frame's function, if it has one."""
    scope = frame.scope
    if not isinstance(scope, cst.FunctionDef):
        return None
    params = scope.params
    for param in (*params.posonly_params, *params.params, *params.kwonly_params):
        if param.name.value == name:
            return param.annotation.annotation if param.annotation is not None else None
    return None
