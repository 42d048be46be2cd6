"""TS003 device-mismatch (best effort): a tensor created in ``forward()`` on the default device.

The runtime check is the real detector; this rule catches one well-known
source of mismatches before any run. Reported: inside the ``forward`` method of
a class with a base class, a torch factory call (``torch.zeros/ones/randn/rand/
empty/full/arange/eye/tensor/linspace/randint/randperm/logspace``, resolved
through the imports) that

* is given no ``device=`` (and no ``**kwargs``, nothing named ``device``
  positionally), is not ``*_like`` / ``x.new_*`` (those follow their source),
  and its value is not moved on the way (``.to(...)``, ``.cuda()``,
  ``.type_as(...)``), directly or through the name it is assigned to;
* is not 0-dim (``torch.tensor(0.5)``, ``torch.zeros(())``: torch accepts CPU
  scalars next to tensors on any device; ``torch.tensor(name)`` of unknown
  rank is not judged);
* is then combined with the forward's input (or a tensor derived from it, or a
  parameter/buffer of the module): an operand of arithmetic or a comparison,
  an element of ``torch.cat`` / ``torch.stack`` next to one, an argument of a
  torch function, of a combining tensor method (``x.masked_fill(mask, ...)``)
  or of a torch submodule (``self.lstm(x, (h0, c0))``) next to one, or the
  input of a submodule with weights (``self.pos_emb(torch.arange(T))``);

and only in files that move something to a device (``.to(device)``,
``.cuda()``, a ``device=`` that is not ``"cpu"``): a script that never leaves
the CPU has no mismatch to fear. Not reported: factories in ``__init__``
(buffers move with the model), results used only for shapes or Python numbers
(``.item()``, ``.tolist()``, ``.size()``), index tensors (``x[torch.arange(n)]``:
CPU indices are accepted), inputs whose name says they are lengths or sizes
(``lengths`` is often a CPU tensor on purpose, e.g. for ``pack_padded_sequence``).
"""

from __future__ import annotations

import re
from typing import Dict, Iterator, List, Optional, Set, Tuple, Union

import libcst as cst

from ..names import dotted
from ..tree import child_nodes
from ..rule import FileContext, LintRule

_FACTORIES = frozenset({
    "torch.zeros", "torch.ones", "torch.randn", "torch.rand", "torch.empty", "torch.full", "torch.arange",
    "torch.eye", "torch.tensor", "torch.linspace", "torch.logspace", "torch.randint", "torch.randperm",
})
#: Factories whose leading positional arguments are the shape.
_SHAPED = frozenset({"torch.zeros", "torch.ones", "torch.randn", "torch.rand", "torch.empty", "torch.full"})
#: Methods that move a tensor (to a device, or to another tensor's device and type).
_MOVING_METHODS = frozenset({"to", "cuda", "type_as", "to_device", "xpu", "mps"})
#: Methods whose result stays where their receiver is (and is still a tensor).
_STAYING_METHODS = frozenset({
    "float", "double", "half", "bfloat16", "long", "int", "bool", "byte", "short", "unsqueeze", "squeeze",
    "view", "reshape", "expand", "repeat", "t", "transpose", "permute", "flatten", "contiguous", "triu", "tril",
    "clone", "detach", "requires_grad_", "uniform_", "normal_", "fill_", "zero_", "masked_fill",
    "fill_diagonal_", "abs", "exp", "log", "sqrt", "pow", "mul", "add", "sub", "div", "neg", "softmax",
    "cumsum", "sin", "cos", "logical_not",
})
#: torch functions of one tensor whose result stays on that tensor's device.
_STAYING_FUNCTIONS = frozenset({
    "torch.triu", "torch.tril", "torch.diag", "torch.exp", "torch.log", "torch.sin", "torch.cos",
    "torch.sqrt", "torch.cumsum", "torch.flip", "torch.logical_not",
})
#: Tensor methods that need their tensor arguments on the receiver's device.
_COMBINING_METHODS = frozenset({
    "add", "add_", "sub", "sub_", "mul", "mul_", "div", "div_", "matmul", "mm", "bmm", "masked_fill",
    "masked_fill_", "where", "maximum", "minimum", "lerp", "lerp_", "addcmul", "addcdiv", "eq", "ne", "lt",
    "gt", "le", "ge", "dot", "logical_and", "logical_or", "bitwise_and", "bitwise_or", "masked_scatter",
    "pow", "fmod", "remainder", "clamp", "clamp_",
})
#: Attributes / methods of a tensor that are not tensors (shapes, numbers, devices).
_NOT_TENSOR_ATTRIBUTES = frozenset({
    "shape", "device", "dtype", "ndim", "is_cuda", "requires_grad", "layout", "names", "grad_fn", "is_leaf",
    "itemsize", "nbytes", "is_sparse", "is_quantized", "is_meta", "training",
})
_NOT_TENSOR_METHODS = frozenset({
    "size", "dim", "numel", "item", "tolist", "numpy", "stride", "data_ptr", "element_size", "nelement",
    "is_contiguous", "get_device", "storage_offset", "cpu", "is_floating_point", "keys", "items", "values",
    "ndimension", "__len__",
})
#: torch functions that may take index tensors on the CPU, or are not computations.
_UNJUDGED_TORCH = frozenset({
    "index_select", "gather", "scatter", "scatter_add", "take", "take_along_dim", "index_add", "index_copy",
    "index_fill", "index_put", "searchsorted", "bucketize", "save", "load", "is_tensor", "numel", "manual_seed",
    "is_floating_point", "typename", "Size", "device", "set_default_device", "empty_like", "zeros_like",
    "ones_like", "full_like", "rand_like", "randn_like", "randint_like", "broadcast_shapes", "isinstance",
})
_TORCH_NAMESPACES = ("torch.nn.functional.", "torch.linalg.", "torch.fft.", "torch.special.")
_CONCATENATIONS = frozenset({"torch.cat", "torch.stack", "torch.concat", "torch.concatenate", "torch.hstack",
                             "torch.vstack", "torch.dstack", "torch.column_stack"})
#: torch.nn layers whose input must live where their weights do.
_WEIGHTED_LAYERS = frozenset({
    "Linear", "Bilinear", "Embedding", "EmbeddingBag", "Conv1d", "Conv2d", "Conv3d", "ConvTranspose1d",
    "ConvTranspose2d", "ConvTranspose3d", "LSTM", "GRU", "RNN", "LSTMCell", "GRUCell", "RNNCell", "LayerNorm",
    "BatchNorm1d", "BatchNorm2d", "BatchNorm3d", "GroupNorm", "MultiheadAttention", "PReLU", "RMSNorm",
})
#: Inputs that are often CPU tensors on purpose (lengths for pack_padded_sequence, sizes).
_CPU_INPUT_NAME = re.compile(r"len|size|count|^num_|^n_", re.IGNORECASE)
_NESTED_SCOPES = (cst.FunctionDef, cst.ClassDef, cst.Lambda)
_CODE = cst.Module(body=[])


def _text(node: cst.CSTNode) -> str:
    return _CODE.code_for_node(node)


def _is_cpu_literal(node: cst.BaseExpression) -> bool:
    """``"cpu"``, ``'cpu'`` or ``torch.device("cpu")``."""
    if isinstance(node, cst.SimpleString):
        return node.evaluated_value == "cpu"
    if isinstance(node, cst.Call) and dotted(node.func) in ("torch.device", "device") and len(node.args) == 1:
        return _is_cpu_literal(node.args[0].value)
    return False


def _device_like(node: cst.BaseExpression) -> bool:
    """Whether ``.to(node)`` plausibly names a device other than the CPU (not a dtype)."""
    if _is_cpu_literal(node):
        return False
    if isinstance(node, (cst.SimpleString, cst.FormattedString, cst.ConcatenatedString)):
        return True
    text = _text(node).lower()
    return any(word in text for word in ("device", "cuda", "gpu", "rank", "mps", "xpu", "dev"))


def _leaves_the_device(node: cst.BaseExpression) -> bool:
    """``x.cpu()``, ``x.to("cpu")``, ``x.numpy()``, ``x.tolist()``, ``x.item()``, ``float(x)``..."""
    if not isinstance(node, cst.Call):
        return False
    func = node.func
    if isinstance(func, cst.Attribute):
        name = func.attr.value
        if name in ("cpu", "numpy", "tolist", "item"):
            return True
        return name == "to" and bool(node.args) and _is_cpu_literal(node.args[0].value)
    return isinstance(func, cst.Name) and func.value in ("float", "int", "bool", "list", "len")


def device_target(call: cst.Call) -> Union[bool, str]:
    """Whether ``call`` moves something off the CPU.

    True for ``x.cuda()``, ``x.to("cuda")``, ``x.to(args.device)``, ``f(..., device=<not "cpu">)``;
    the name itself for ``x.to(device)`` (it moves only if ``device`` is ever bound to something
    else than ``"cpu"``); False otherwise (``x.to(torch.float16)``, ``x.to("cpu")``).
    """
    func = call.func
    for arg in call.args:
        if arg.keyword is not None and arg.keyword.value == "device" and not _is_cpu_literal(arg.value):
            return arg.value.value if isinstance(arg.value, cst.Name) else True
    if isinstance(func, cst.Attribute):
        name = func.attr.value
        if name == "cuda":
            return True
        if name == "to" and call.args and call.args[0].keyword is None and _device_like(call.args[0].value):
            value = call.args[0].value
            return value.value if isinstance(value, cst.Name) else True
    return False


def _default_device_set(context: FileContext, call: cst.Call) -> bool:
    """``torch.set_default_device(...)`` / ``torch.set_default_tensor_type(...)``: factories follow it."""
    return context.qualified_name(call.func) in ("torch.set_default_device", "torch.set_default_tensor_type") \
        if dotted(call.func) is not None else False


#: Classes that are data transforms (run by a DataLoader on the CPU), by name.
_TRANSFORM_NAME = re.compile(r"transform|augment|jitter|collat", re.IGNORECASE)
#: Calls whose arguments are data transforms.
_TRANSFORM_CONTAINERS = frozenset({"Compose", "RandomApply", "RandomChoice", "RandomOrder"})


def _walk(node: cst.CSTNode) -> Iterator[cst.CSTNode]:
    """Descendants of ``node`` (itself excluded), not entering nested functions, classes or lambdas."""
    stack = list(child_nodes(node))
    while stack:
        current = stack.pop()
        yield current
        if not isinstance(current, _NESTED_SCOPES):
            stack.extend(child_nodes(current))


_PLAIN_ANNOTATIONS = frozenset({"int", "float", "bool", "str"})


def _may_be_device_tensor(param: cst.Param) -> bool:
    """Whether a forward() input may be a tensor on the model's device.

    Not: inputs named like lengths or sizes (often CPU tensors on purpose), inputs annotated
    ``int``/``float``/``bool``/``str``, inputs whose default is a number, string or bool.
    """
    if _CPU_INPUT_NAME.search(param.name.value):
        return False
    annotation = param.annotation.annotation if param.annotation is not None else None
    if isinstance(annotation, cst.Name) and annotation.value in _PLAIN_ANNOTATIONS:
        return False
    default = param.default
    if isinstance(default, (cst.Integer, cst.Float, cst.SimpleString, cst.ConcatenatedString)):
        return False
    return not (isinstance(default, cst.Name) and default.value in ("True", "False"))


class _ClassFacts:
    """What ``__init__`` registers: parameter/buffer attribute names, torch.nn submodules by attribute."""

    def __init__(self, context: FileContext, cls: cst.ClassDef) -> None:
        self.tensors: Set[str] = set()
        self.layers: Dict[str, str] = {}
        for statement in cls.body.body if isinstance(cls.body, cst.IndentedBlock) else ():
            if isinstance(statement, cst.FunctionDef) and statement.name.value == "__init__":
                self._read_init(context, statement)

    def _read_init(self, context: FileContext, init: cst.FunctionDef) -> None:
        params = init.params.params
        me = params[0].name.value if params else "self"
        for node in _walk(init.body):
            if isinstance(node, cst.Assign) and isinstance(node.value, cst.Call):
                name = context.qualified_name(node.value.func) if dotted(node.value.func) else None
                for target in node.targets:
                    attribute = target.target
                    if not (isinstance(attribute, cst.Attribute) and isinstance(attribute.value, cst.Name)
                            and attribute.value.value == me):
                        continue
                    if name in ("torch.nn.Parameter", "torch.nn.parameter.Parameter"):
                        self.tensors.add(attribute.attr.value)
                    elif name is not None and name.startswith("torch.nn.") and name.count(".") == 2:
                        self.layers[attribute.attr.value] = name.rsplit(".", 1)[1]
            elif isinstance(node, cst.Call) and isinstance(node.func, cst.Attribute) \
                    and node.func.attr.value in ("register_buffer", "register_parameter") and node.args \
                    and isinstance(node.args[0].value, cst.SimpleString):
                value = node.args[0].value.evaluated_value
                if isinstance(value, str):
                    self.tensors.add(value)


class _Forward:
    """One ``forward`` method: which tensors derive from its inputs, and which factories meet them."""

    def __init__(self, context: FileContext, cls: cst.ClassDef, function: cst.FunctionDef) -> None:
        self.context = context
        params = [*function.params.posonly_params, *function.params.params]
        self.me = params[0].name.value if params else ""
        self.facts = _ClassFacts(context, cls)
        self.parents: Dict[cst.CSTNode, cst.CSTNode] = {}
        self.nodes: List[cst.CSTNode] = []
        for node in _walk(function.body):
            self.nodes.append(node)
            for child in child_nodes(node):
                self.parents[child] = node
        self.parents[function.body] = function
        inputs = [p for p in (*params[1:], *function.params.kwonly_params) if _may_be_device_tensor(p)]
        self.tainted: Set[str] = {p.name.value for p in inputs}
        self.module_names: Set[str] = set()
        self._propagate()

    # -- which values are tensors derived from the input (or the module's own tensors) ----------------

    def _propagate(self) -> None:
        bindings = [n for n in self.nodes if isinstance(n, (cst.Assign, cst.AnnAssign, cst.For))]
        for _ in range(4):
            before = len(self.tainted) + len(self.module_names)
            for node in bindings:
                if isinstance(node, cst.For):
                    if self._self_chain(node.iter):
                        self.module_names.update(self._names(node.target))
                    elif self.is_tensor(node.iter):
                        self.tainted.update(self._names(node.target))
                elif node.value is not None and self.is_tensor(node.value):
                    targets = node.targets if isinstance(node, cst.Assign) else [node]
                    for target in targets:
                        self.tainted.update(self._names(target.target))
            if len(self.tainted) + len(self.module_names) == before:
                break
        # A name that is (also) bound to a CPU copy or a Python value may be on the CPU when used.
        for node in bindings:
            if isinstance(node, (cst.Assign, cst.AnnAssign)) and node.value is not None \
                    and _leaves_the_device(node.value):
                targets = node.targets if isinstance(node, cst.Assign) else [node]
                for target in targets:
                    self.tainted.difference_update(self._names(target.target))

    @staticmethod
    def _names(target: cst.CSTNode) -> Iterator[str]:
        if isinstance(target, cst.Name):
            yield target.value
        elif isinstance(target, (cst.Tuple, cst.List)):
            for element in target.elements:
                yield from _Forward._names(element.value)
        elif isinstance(target, cst.StarredElement):
            yield from _Forward._names(target.value)

    def _self_chain(self, node: cst.BaseExpression) -> bool:
        """``self.layers`` / ``self.blocks[1:]``: an attribute chain rooted at the module itself."""
        while isinstance(node, (cst.Attribute, cst.Subscript)):
            node = node.value
        return isinstance(node, cst.Name) and node.value == self.me and bool(self.me)

    def _qualified(self, node: cst.BaseExpression) -> Optional[str]:
        return self.context.qualified_name(node) if dotted(node) is not None else None

    def _judged_torch(self, name: Optional[str]) -> bool:
        """A torch function that computes with its tensor arguments (so they must share a device)."""
        if name is None or not name.startswith("torch."):
            return False
        for namespace in _TORCH_NAMESPACES:
            if name.startswith(namespace):
                rest = name[len(namespace):]
                return "." not in rest and not rest.startswith("_") and rest not in _UNJUDGED_TORCH
        rest = name[len("torch."):]
        return "." not in rest and rest[:1].islower() and rest not in _UNJUDGED_TORCH

    def is_tensor(self, node: cst.BaseExpression) -> bool:
        """Whether ``node`` is a tensor derived from the forward's inputs or the module's own tensors."""
        if isinstance(node, cst.Name):
            return node.value in self.tainted
        if isinstance(node, cst.Attribute):
            attribute = node.attr.value
            if isinstance(node.value, cst.Name) and node.value.value == self.me:
                return attribute in self.facts.tensors
            if attribute in ("weight", "bias") and self._self_chain(node.value):
                return True
            return attribute not in _NOT_TENSOR_ATTRIBUTES and self.is_tensor(node.value)
        if isinstance(node, cst.Subscript):
            return self.is_tensor(node.value)
        if isinstance(node, cst.Call):
            return self._is_tensor_call(node)
        if isinstance(node, cst.BinaryOperation):
            return self.is_tensor(node.left) or self.is_tensor(node.right)
        if isinstance(node, cst.UnaryOperation):
            return not isinstance(node.operator, cst.Not) and self.is_tensor(node.expression)
        if isinstance(node, cst.Comparison):
            return self.is_tensor(node.left) or any(self.is_tensor(c.comparator) for c in node.comparisons)
        if isinstance(node, cst.IfExp):
            return self.is_tensor(node.body) or self.is_tensor(node.orelse)
        return False

    def _is_tensor_call(self, node: cst.Call) -> bool:
        func = node.func
        if isinstance(func, cst.Attribute) and self.is_tensor(func.value):
            name = func.attr.value
            if name in _NOT_TENSOR_METHODS:
                return False
            if name == "to" and node.args and _is_cpu_literal(node.args[0].value):
                return False
            return True
        if self._self_chain(func) or (isinstance(func, cst.Name) and func.value in self.module_names) \
                or self._judged_torch(self._qualified(func)):
            return any(self._argument_is_tensor(arg.value) for arg in node.args)
        return False

    def _argument_is_tensor(self, value: cst.BaseExpression) -> bool:
        if isinstance(value, (cst.List, cst.Tuple)):
            return any(self.is_tensor(element.value) for element in value.elements)
        return self.is_tensor(value)

    # -- factories and where their values go ---------------------------------------------------

    def _unmoved_factory(self, call: cst.Call) -> bool:
        name = self._qualified(call.func)
        if name not in _FACTORIES:
            return False
        positional = []
        for arg in call.args:
            if arg.star == "**" or (arg.keyword is not None and arg.keyword.value == "device"):
                return False
            if arg.keyword is None:
                if "device" in _text(arg.value).lower():
                    return False
                positional.append(arg)
        if name == "torch.tensor":
            return bool(positional) and isinstance(positional[0].value, (cst.List, cst.Tuple, cst.ListComp)) \
                and bool(getattr(positional[0].value, "elements", True))
        if name in _SHAPED:
            shape = positional[:-1] if name == "torch.full" else positional
            sizes = [a for a in call.args if a.keyword is not None and a.keyword.value == "size"]
            if not shape and not sizes:
                return False
            first = (shape[0] if shape else sizes[0]).value
            if len(shape) <= 1 and isinstance(first, (cst.Tuple, cst.List)) and not first.elements:
                return False  # torch.zeros(()): a 0-dim tensor
        return True

    def _climb(self, node: cst.CSTNode) -> Optional[cst.CSTNode]:
        """The outermost expression that still holds ``node``'s value on ``node``'s device.

        None when the value is moved (``.to(...)``) or turned into something that is not a
        tensor (``.item()``, ``.shape``) or handed to a method this rule does not know.
        """
        current = node
        while True:
            parent = self.parents.get(current)
            if isinstance(parent, cst.Attribute) and parent.value is current:
                grand = self.parents.get(parent)
                attribute = parent.attr.value
                if isinstance(grand, cst.Call) and grand.func is parent:
                    if attribute in _MOVING_METHODS:
                        return None  # moved: ``torch.arange(n).to(x.device)``
                    if attribute in _STAYING_METHODS and not any(self._argument_is_tensor(a.value)
                                                                for a in grand.args):
                        current = grand
                        continue
                    if attribute in _COMBINING_METHODS:
                        return current  # judged as a combination by the caller
                    return None
                if attribute in ("T", "mT"):
                    current = parent
                    continue
                return None
            if isinstance(parent, cst.Subscript) and parent.value is current:
                current = parent
                continue
            if isinstance(parent, cst.Arg):
                call = self.parents.get(parent)
                if isinstance(call, cst.Call) and self._qualified(call.func) in _STAYING_FUNCTIONS \
                        and call.args and call.args[0] is parent:
                    current = call
                    continue
                return current
            if isinstance(parent, cst.BinaryOperation):
                other = parent.right if parent.left is current else parent.left
                if not self.is_tensor(other) and not isinstance(other, (cst.List, cst.Tuple)):
                    current = parent  # ``torch.arange(T) * 2`` stays where it was
                    continue
                return current
            if isinstance(parent, cst.ComparisonTarget):
                comparison = self.parents.get(parent)
                if isinstance(comparison, cst.Comparison) and not self._compared_with_tensor(comparison, current):
                    current = comparison  # ``torch.triu(ones) == 0``: a mask, still on the CPU
                    continue
                return current
            if isinstance(parent, cst.Comparison) and parent.left is current:
                if not self._compared_with_tensor(parent, current):
                    current = parent
                    continue
                return current
            if isinstance(parent, cst.UnaryOperation) and not isinstance(parent.operator, cst.Not):
                current = parent
                continue
            return current

    def _compared_with_tensor(self, comparison: cst.Comparison, operand: cst.CSTNode) -> bool:
        operands = [comparison.left, *(c.comparator for c in comparison.comparisons)]
        return any(self.is_tensor(other) for other in operands if other is not operand)

    def _combined(self, node: cst.CSTNode) -> bool:
        """Whether the value ``node`` (on the default device) meets an input-derived tensor here."""
        parent = self.parents.get(node)
        if isinstance(parent, cst.BinaryOperation):
            other = parent.right if parent.left is node else parent.left
            return self.is_tensor(other)
        if isinstance(parent, cst.ComparisonTarget):
            comparison = self.parents.get(parent)
            return isinstance(comparison, cst.Comparison) and self._compared_with_tensor(comparison, node)
        if isinstance(parent, cst.Comparison) and parent.left is node:
            return self._compared_with_tensor(parent, node)
        if isinstance(parent, cst.Attribute) and parent.value is node:  # factory.add(x)
            call = self.parents.get(parent)
            return isinstance(call, cst.Call) and call.func is parent and \
                parent.attr.value in _COMBINING_METHODS and any(self._argument_is_tensor(a.value) for a in call.args)
        if isinstance(parent, cst.Element):
            container = self.parents.get(parent)
            arg = self.parents.get(container) if isinstance(container, (cst.List, cst.Tuple)) else None
            if isinstance(arg, cst.Arg):
                call = self.parents.get(arg)
                if isinstance(call, cst.Call):
                    if self._qualified(call.func) in _CONCATENATIONS and call.args[0] is arg:
                        return any(self.is_tensor(e.value) for e in container.elements if e is not parent)
                    return self._meets_in_call(call, arg, solo=False)
            return False
        if isinstance(parent, cst.Arg):
            call = self.parents.get(parent)
            return isinstance(call, cst.Call) and self._meets_in_call(call, parent, solo=True)
        if isinstance(parent, cst.AugAssign) and parent.target is node:
            return self.is_tensor(parent.value)
        return False

    def _layer(self, func: cst.BaseExpression) -> Optional[str]:
        """``LSTM`` for ``self.lstm`` when ``__init__`` assigns ``self.lstm = nn.LSTM(...)``."""
        if isinstance(func, cst.Attribute) and isinstance(func.value, cst.Name) and func.value.value == self.me:
            return self.facts.layers.get(func.attr.value)
        return None

    def _meets_in_call(self, call: cst.Call, arg: cst.Arg, *, solo: bool) -> bool:
        """The value in ``arg`` is computed with the call's other (input-derived) tensor arguments."""
        func = call.func
        layer = self._layer(func)
        if layer is not None:
            if solo and layer in _WEIGHTED_LAYERS and call.args[0] is arg:
                return True
        elif isinstance(func, cst.Attribute) and self.is_tensor(func.value):
            if func.attr.value not in _COMBINING_METHODS:
                return False
            return True
        elif not self._judged_torch(self._qualified(func)) or self._qualified(func) in _CONCATENATIONS:
            return False
        return any(self._argument_is_tensor(other.value) for other in call.args if other is not arg)

    def mismatches(self) -> Iterator[cst.Call]:
        """Factory calls whose value meets an input-derived tensor on another device."""
        factories = [n for n in self.nodes if isinstance(n, cst.Call) and self._unmoved_factory(n)]
        if not factories:
            return
        tops = {call: self._climb(call) for call in factories}
        variables = self._factory_variables(tops)
        for call, top in tops.items():
            if top is None:
                continue
            if self._combined(top):
                yield call
                continue
            assigned = self._assigned(top)
            if assigned is not None and assigned[0] in variables and self._variable_combined(assigned[0]):
                yield call

    def _assigned(self, node: cst.CSTNode) -> Optional[Tuple[str, cst.CSTNode]]:
        """(``h0``, the assignment) for ``h0 = <node>``, and for ``state = (<node>, ...)``."""
        parent = self.parents.get(node)
        if isinstance(parent, cst.Element):
            container = self.parents.get(parent)
            if not isinstance(container, (cst.Tuple, cst.List)):
                return None
            node, parent = container, self.parents.get(container)
        if isinstance(parent, (cst.Assign, cst.AnnAssign)) and parent.value is node:
            targets = parent.targets if isinstance(parent, cst.Assign) else [parent]
            if len(targets) == 1 and isinstance(targets[0].target, cst.Name):
                return targets[0].target.value, parent
        return None

    def _factory_variables(self, tops: Dict[cst.Call, Optional[cst.CSTNode]]) -> Set[str]:
        """Names every binding of which (in this forward) holds factory values that stay where made."""
        good: Dict[str, Set[cst.CSTNode]] = {}
        for top in tops.values():
            assigned = self._assigned(top) if top is not None else None
            if assigned is not None:
                good.setdefault(assigned[0], set()).add(assigned[1])
        if not good:
            return set()
        bindings: Dict[str, Set[cst.CSTNode]] = {}
        for node in self.nodes:
            targets: List[cst.CSTNode] = []
            if isinstance(node, cst.Assign):
                targets = [t.target for t in node.targets]
            elif isinstance(node, (cst.AnnAssign, cst.For, cst.CompFor, cst.NamedExpr)):
                targets = [node.target]
            elif isinstance(node, cst.WithItem) and node.asname is not None:
                targets = [node.asname.name]
            for target in targets:
                for name in self._names(target):
                    bindings.setdefault(name, set()).add(node)
        return {name for name, nodes in good.items() if bindings.get(name, set()) <= nodes
                and name not in self.tainted}

    def _variable_combined(self, name: str) -> bool:
        for node in self.nodes:
            if isinstance(node, cst.Name) and node.value == name and self._is_read(node):
                top = self._climb(node)
                if top is not None and self._combined(top):
                    return True
        return False

    def _is_read(self, node: cst.Name) -> bool:
        """Whether this Name reads the variable (not an attribute name, a keyword or a binding target)."""
        parent = self.parents.get(node)
        if isinstance(parent, cst.Attribute):
            return parent.value is node
        if isinstance(parent, cst.Arg):
            return parent.value is node
        if isinstance(parent, (cst.AssignTarget, cst.Param, cst.AsName, cst.ImportAlias)):
            return False
        if isinstance(parent, (cst.For, cst.CompFor, cst.NamedExpr)):
            return parent.target is not node
        return True


def _is_method_of_class(context: FileContext) -> Optional[cst.ClassDef]:
    """The class whose body directly defines the function being visited."""
    stack = context.stack
    if len(stack) >= 3 and isinstance(stack[-2], cst.IndentedBlock) and isinstance(stack[-3], cst.ClassDef):
        return stack[-3]
    return None


class DeviceMismatch(LintRule):
    CODE = "TS003"
    TRIGGERS = ("forward",)

    VALID = [
        # device= from the input, *_like, new_*, moved right away
        "import torch\nfrom torch import nn\n"
        "class Net(nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.lstm = nn.LSTM(4, 8)\n"
        "        self.pos = nn.Embedding(16, 8)\n"
        "    def forward(self, x):\n"
        "        h0 = torch.zeros(1, x.size(1), 8, device=x.device)\n"
        "        c0 = x.new_zeros(1, x.size(1), 8)\n"
        "        out, _ = self.lstm(x, (h0, c0))\n"
        "        noise = torch.randn_like(out) + torch.zeros_like(out)\n"
        "        pos = torch.arange(x.size(0)).to(x.device)\n"
        "        return out + noise + self.pos(pos)[:, None]\n"
        "model = Net().to('cuda')\n",
        # a factory in __init__, registered as a buffer (it moves with the model)
        "import torch\nfrom torch import nn\n"
        "class Attention(nn.Module):\n"
        "    def __init__(self, T):\n"
        "        super().__init__()\n"
        "        self.register_buffer('mask', torch.tril(torch.ones(T, T)))\n"
        "    def forward(self, x):\n"
        "        return x.masked_fill(self.mask == 0, float('-inf'))\n"
        "model = Attention(8).cuda()\n",
        # a file that never moves anything to a device
        "import torch\nfrom torch import nn\n"
        "class Net(nn.Module):\n"
        "    def forward(self, x):\n"
        "        return x + torch.randn(x.shape)\n"
        "model = Net().to(torch.float64)\n",
        "import torch\nfrom torch import nn\n"
        "class Net(nn.Module):\n"
        "    def forward(self, x):\n"
        "        return x * torch.ones(3)\n"
        "model = Net().to('cpu')\n",
        # factory values used for shapes and Python numbers, or as indices
        "import torch\nfrom torch import nn\n"
        "class Net(nn.Module):\n"
        "    def forward(self, x, labels):\n"
        "        n = torch.arange(5).sum().item()\n"
        "        k = torch.tensor([1, 2]).tolist()\n"
        "        picked = x[torch.arange(x.size(0)), labels]\n"
        "        shuffled = x[torch.randperm(x.size(0))]\n"
        "        return picked * n + shuffled.sum() + len(k) + torch.zeros(4).shape[0]\n"
        "device = torch.device('cuda')\n"
        "model = Net().to(device)\n",
        # 0-dim CPU tensors are accepted next to any device
        "import torch\nfrom torch import nn\n"
        "class Net(nn.Module):\n"
        "    def forward(self, x):\n"
        "        return x * torch.tensor(2.0) + torch.zeros(()) + torch.full((), 0.5)\n"
        "model = Net().cuda()\n",
        # only Python numbers or other CPU factories meet the factory
        "import torch\nfrom torch import nn\n"
        "class Net(nn.Module):\n"
        "    def forward(self, x):\n"
        "        steps = torch.arange(10) * 2 + torch.ones(10)\n"
        "        return x, steps\n"
        "model = Net().to('cuda')\n",
        # the input moved to the CPU first, or a length tensor that lives on the CPU
        "import torch\nfrom torch import nn\n"
        "class Net(nn.Module):\n"
        "    def forward(self, x, lengths):\n"
        "        x = x.cpu()\n"
        "        mask = torch.arange(x.size(1))[None, :] < lengths[:, None]\n"
        "        return x * torch.ones(x.size(1)), mask\n"
        "model = Net().to('cuda')\n",
        # moved after the fact, through the name
        "import torch\nfrom torch import nn\n"
        "class Net(nn.Module):\n"
        "    def forward(self, x):\n"
        "        mask = torch.ones(x.size(0), 1)\n"
        "        mask = mask.to(x.device)\n"
        "        noise = torch.randn(x.shape).type_as(x)\n"
        "        return x * mask + noise\n"
        "model = Net().to('cuda')\n",
        # a custom helper (it may move its inputs) and a custom submodule are not judged
        "import torch\nfrom torch import nn\n"
        "from mylib import Block\n"
        "class Net(nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.block = Block()\n"
        "    def forward(self, x):\n"
        "        return self.block(x, torch.zeros(3)) + self.helper(x, torch.ones(3))\n"
        "model = Net().to('cuda')\n",
        # not a forward() of a class, or a class without bases
        "import torch\n"
        "def forward(x):\n"
        "    return x + torch.randn(3)\n"
        "class Plain:\n"
        "    def forward(self, x):\n"
        "        return x + torch.randn(3)\n"
        "x = torch.randn(3).to('cuda')\n",
        # parameter-free layers and index functions
        "import torch\nfrom torch import nn\n"
        "class Net(nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.act = nn.ReLU()\n"
        "    def forward(self, x):\n"
        "        y = self.act(torch.randn(3))\n"
        "        return torch.index_select(x, 0, torch.tensor([0, 1])), y\n"
        "model = Net().to('cuda')\n",
    ]
    INVALID = [
        # the classic: an RNN's initial state
        "import torch\nfrom torch import nn\n"
        "class Tagger(nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.lstm = nn.LSTM(4, 8, batch_first=True)\n"
        "    def forward(self, x):\n"
        "        h0 = torch.zeros(1, x.size(0), 8)  # expect: TS003\n"
        "        c0 = torch.zeros(1, x.size(0), 8)  # expect: TS003\n"
        "        out, _ = self.lstm(x, (h0, c0))\n"
        "        return out\n"
        "device = 'cuda' if torch.cuda.is_available() else 'cpu'\n"
        "model = Tagger().to(device)\n",
        # positions fed to an embedding, noise added to an activation
        "import torch\nimport torch.nn as nn\n"
        "class GPT(nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.tok = nn.Embedding(100, 16)\n"
        "        self.pos = nn.Embedding(32, 16)\n"
        "    def forward(self, idx):\n"
        "        B, T = idx.shape\n"
        "        h = self.tok(idx) + self.pos(torch.arange(T))  # expect: TS003\n"
        "        h = h + torch.randn(B, T, 16) * 0.1  # expect: TS003\n"
        "        return h\n"
        "model = GPT()\n"
        "model.cuda()\n",
        # a mask built from factories, then applied to the scores
        "import torch\nfrom torch import nn\n"
        "class Attention(nn.Module):\n"
        "    def forward(self, q, k):\n"
        "        T = q.size(1)\n"
        "        scores = q @ k.transpose(-2, -1)\n"
        "        mask = torch.triu(torch.ones(T, T), diagonal=1).bool()  # expect: TS003\n"
        "        return scores.masked_fill(mask, float('-inf'))\n"
        "def run(q, k, device):\n"
        "    return Attention().to(device)(q, k)\n",
        # concatenated with the input, handed to a torch function with it, combined with a parameter
        "import torch\nfrom torch import nn\nimport torch.nn.functional as F\n"
        "class Net(nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.scale = nn.Parameter(torch.ones(4))\n"
        "    def forward(self, x, y):\n"
        "        x = torch.cat([x, torch.zeros(x.size(0), 1)], dim=1)  # expect: TS003\n"
        "        loss = F.cross_entropy(x, y, weight=torch.tensor([1.0, 2.0, 1.0, 1.0, 1.0]))  # expect: TS003\n"
        "        return loss * self.scale.sum() + (self.scale * torch.rand(4)).sum()  # expect: TS003\n"
        "model = Net().to(torch.device('cuda:0'))\n",
    ]

    def __init__(self, context: FileContext) -> None:
        super().__init__(context)
        self._moves = False
        #: Names given to ``.to(name)`` / ``device=name``: they move things unless only ever "cpu".
        self._device_names: Set[str] = set()
        #: Per name, whether each of its assignments in the file is a "cpu" literal.
        self._cpu_only: Dict[str, bool] = {}
        self._default_device = False
        self._transforms: Set[str] = set()
        self._found: List[Tuple[str, cst.Call]] = []

    def visit_Call(self, node: cst.Call) -> None:
        if not self._moves:
            target = device_target(node)
            if target is True:
                self._moves = True
            elif target:
                self._device_names.add(target)  # type: ignore[arg-type]
        if _default_device_set(self.context, node):
            self._default_device = True
        self._note_transforms(node)

    def visit_Assign(self, node: cst.Assign) -> None:
        for target in node.targets:
            if isinstance(target.target, cst.Name):
                name = target.target.value
                self._cpu_only[name] = self._cpu_only.get(name, True) and _is_cpu_literal(node.value)

    def _note_transforms(self, call: cst.Call) -> None:
        """Remember classes instantiated as data transforms: ``Compose([Noise()])``, ``transform=Noise()``."""
        func = call.func
        callee = func.attr.value if isinstance(func, cst.Attribute) else func.value if isinstance(func, cst.Name) \
            else None
        for arg in call.args:
            if callee in _TRANSFORM_CONTAINERS or (arg.keyword is not None and "transform" in arg.keyword.value):
                for inner in _walk(arg):
                    if isinstance(inner, cst.Call) and isinstance(inner.func, cst.Name):
                        self._transforms.add(inner.func.value)

    def visit_FunctionDef(self, node: cst.FunctionDef) -> None:
        if node.name.value != "forward":
            return
        cls = _is_method_of_class(self.context)
        if cls is None or not cls.bases or _TRANSFORM_NAME.search(cls.name.value):
            return
        self._found.extend((cls.name.value, call) for call in _Forward(self.context, cls, node).mismatches())

    def leave_Module(self, node: cst.Module) -> None:
        moves = self._moves or any(not self._cpu_only.get(name, False) for name in self._device_names)
        if not moves or self._default_device:
            return
        seen: Set[cst.Call] = set()
        for cls, call in self._found:
            if call not in seen and cls not in self._transforms:
                seen.add(call)
                self.report(call, "created in forward() without device=, used with the input")
