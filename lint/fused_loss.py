"""An activation fed to a loss that applies that activation itself.

TS010 softmax-before-cross-entropy and TS019 sigmoid-before-bce-with-logits are
the same shape; this is their one implementation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, FrozenSet, List, Optional, Set, Tuple

import libcst as cst

from .patterns import _SAME_MODULE_METHODS, method_name, receiver
from .values import Frame, ValueTracer, is_module_class, returned_values
from .rule import FileContext
from .tree import walk_nodes

# ---- activation fed to a loss that applies it itself -------------------------------------------------

@dataclass(frozen=True)
class FusedLoss:
    """A loss that applies an activation to its input itself, and the spellings of that activation.

    Each activation table maps a spelling to the label a finding shows
    (``softmax``, ``log_softmax``, ``sigmoid``).
    """

    loss_functions: FrozenSet[str]
    loss_modules: FrozenSet[str]
    functions: Dict[str, str]
    methods: Dict[str, str]
    modules: Dict[str, str]


@dataclass(frozen=True)
class ActivationFeed:
    """What a flagged loss call is fed: the activation's label, and the model class it came through, if any."""

    label: str
    via: str = ""


#: Methods that return their receiver's values unchanged (shape, dtype, device, memory layout).
_VALUE_PASSTHROUGH = frozenset({
    "view", "reshape", "flatten", "squeeze", "unsqueeze", "permute", "transpose", "contiguous", "float",
    "double", "half", "bfloat16", "to", "type", "cpu", "cuda", "clone", "view_as", "reshape_as", "movedim",
})
_LOSS = ("loss", "", "")


class ActivationBeforeLoss:
    """Finds calls of a :class:`FusedLoss` whose input is that activation's output (TS010, TS019).

    The loss call is ``F.cross_entropy(x, ...)``, ``nn.CrossEntropyLoss(...)(x, ...)``
    or a call of a name / ``self.attr`` / parameter that holds a loss module. Its
    input is traced (see :class:`ValueTracer`) to the activation: a function
    (``F.softmax``), a tensor method (``x.softmax(1)``), an activation module
    (``nn.Softmax(1)(x)``, a name holding one), an ``nn.Sequential`` ending in one,
    or a model class of this file whose ``forward`` returns the activation on every
    ``return``. Shape-only methods (``view``, ``float``...) and indexing are
    looked through. Anything else, or any doubt, stops the trace.
    """

    def __init__(self, context: FileContext, loss: FusedLoss) -> None:
        self.context = context
        self.loss = loss
        self.tracer = ValueTracer(context)
        self._forward: Dict[int, Optional[Tuple[str, str]]] = {}
        self._loss_names: Optional[Set[str]] = None

    def feed(self, call: cst.Call) -> Optional[ActivationFeed]:
        """The activation feeding ``call``'s input, when ``call`` is the loss; else None."""
        frame: Optional[Frame] = None
        if self.context.qualified_name(call.func) not in self.loss.loss_functions:
            if not self._may_be_loss(call.func):
                return None
            frame = self.tracer.here()
            if self.called(call.func, frame, 0) != _LOSS:
                return None
        argument = _input_argument(call)
        if argument is None:
            return None
        found = self.label(argument, frame or self.tracer.here(), 0)
        return ActivationFeed(*found) if found is not None else None

    def _may_be_loss(self, func: cst.BaseExpression) -> bool:
        """Cheap pre-filter: is ``func`` a name that a loss module is assigned or passed to somewhere in the file?"""
        if isinstance(func, cst.Call):
            return True
        name = func.attr.value if isinstance(func, cst.Attribute) else func.value if isinstance(func, cst.Name) \
            else None
        if name is None:
            return False
        if self._loss_names is None:
            shorts = {q.rsplit(".", 1)[-1] for q in self.loss.loss_modules}
            mentioned = any(short in self.context.source for short in shorts)
            self._loss_names = self._collect_loss_names() if mentioned else set()
        return name in self._loss_names

    def _collect_loss_names(self) -> Set[str]:
        """Names (last component) assigned or passed a value whose code mentions a loss module class."""
        module = self.tracer.module
        short = {q.rsplit(".", 1)[-1] for q in self.loss.loss_modules}
        names: Set[str] = set()
        mentions: Dict[int, bool] = {}

        def lossy(value: cst.BaseExpression) -> bool:
            if _terminal_name(value) in names:
                return True
            if id(value) not in mentions:
                mentions[id(value)] = any(type(n) is cst.Name and n.value in short  # type: ignore[attr-defined]
                                          for n in walk_nodes(value))
            return mentions[id(value)]

        holders: List[Tuple[cst.BaseExpression, cst.BaseExpression]] = []
        for node in walk_nodes(module):
            kind = type(node)
            if kind is cst.Assign:
                holders.extend((t.target, node.value) for t in node.targets)  # type: ignore[attr-defined]
            elif kind is cst.AnnAssign and node.value is not None:  # type: ignore[attr-defined]
                holders.append((node.target, node.value))  # type: ignore[attr-defined]
        functions = [f for f in module.body if isinstance(f, cst.FunctionDef)]
        for _ in range(4):  # aliases and parameters of parameters
            before = len(names)
            for target, value in holders:
                text = _terminal_name(target)
                if text is not None and text not in names and lossy(value):
                    names.add(text)
            for function in functions:
                params = [p.name.value for p in (*function.params.posonly_params, *function.params.params)]
                for call, _frame in self.tracer.call_sites(function.name.value):
                    for position, arg in enumerate(call.args):
                        param = arg.keyword.value if arg.keyword is not None else \
                            params[position] if position < len(params) and not arg.star else None
                        if param is not None and param not in names and lossy(arg.value):
                            names.add(param)
            if len(names) == before:
                break
        return names

    # -- what a callee returns when called -------------------------------------------------------------

    def called(self, callee: cst.BaseExpression, frame: Frame, depth: int) -> Optional[Tuple[str, str, str]]:
        """``("loss", "", "")`` if calling ``callee`` computes the loss; ``("act", label, via)`` if it returns
        the activation's output; else None."""
        if depth > ValueTracer.MAX_DEPTH:
            return None
        if isinstance(callee, (cst.Name, cst.Attribute)):
            if isinstance(callee, cst.Attribute) and self.tracer.qualified(callee, frame) is not None:
                return None  # an imported function (F.relu), not an instance
            return self.tracer.agree(self.tracer.values(callee, frame), self._instance, depth)
        if isinstance(callee, cst.Call):
            return self._instance(callee, frame, depth)
        return None

    def _instance(self, expr: cst.BaseExpression, frame: Frame, depth: int) -> Optional[Tuple[str, str, str]]:
        """Like :meth:`called`, for an expression that evaluates to the callable (a constructor call, a name)."""
        if depth > ValueTracer.MAX_DEPTH:
            return None
        if not isinstance(expr, cst.Call):
            return self.called(expr, frame, depth + 1) if isinstance(expr, (cst.Name, cst.Attribute)) else None
        target = receiver(expr)
        if target is not None and method_name(expr) in _SAME_MODULE_METHODS \
                and self.tracer.qualified(expr.func, frame) is None:
            return self._instance(target, frame, depth + 1)
        qualified = self.tracer.qualified(expr.func, frame)
        if qualified is not None:
            if qualified in self.loss.loss_modules:
                return _LOSS
            label = self.loss.modules.get(qualified)
            if label is not None:
                return ("act", label, "")
            if qualified == "torch.nn.Sequential":
                layers = [a.value for a in expr.args if a.keyword is None and not a.star]
                if layers and len(layers) == len(expr.args):
                    last = self._instance(layers[-1], frame, depth + 1)
                    if last is not None and last[0] == "act":
                        return ("act", last[1], "nn.Sequential")
            return None
        cls = self.tracer.local_class(expr.func, frame)
        if cls is None:  # a factory function of this file: what it returns
            return self.tracer.agree(self.tracer.returned_values(expr.func, frame), self._instance, depth)
        returned = self.forward_label(cls, depth + 1)
        return ("act", returned[0], cls.name.value) if returned is not None else None

    def forward_label(self, cls: cst.ClassDef, depth: int) -> Optional[Tuple[str, str]]:
        """The activation every ``return`` of the class's ``forward`` returns (a module class of this file)."""
        key = id(cls)
        if key in self._forward:
            return self._forward[key]
        self._forward[key] = None  # breaks cycles
        result: Optional[Tuple[str, str]] = None
        if is_module_class(self.tracer, cls):
            forward = _method(cls, "forward")
            if forward is not None:
                frame = Frame(forward, cls)
                answers = {self.label(value, frame, depth + 1) for value in returned_values(forward)}
                if len(answers) == 1:
                    result = answers.pop()
            elif _method(cls, "__call__") is None:
                module_frame = Frame(self.tracer.module)
                for base in cls.bases:
                    local = self.tracer.local_class(base.value, module_frame)
                    if local is not None and local is not cls:
                        result = self.forward_label(local, depth + 1)
                        break
        self._forward[key] = result
        return result

    # -- what produced a value ----------------------------------------------------------------------------

    def label(self, expr: Optional[cst.BaseExpression], frame: Frame, depth: int) -> Optional[Tuple[str, str]]:
        """``(label, via)`` when ``expr`` is the activation's output; else None."""
        if expr is None or depth > ValueTracer.MAX_DEPTH:
            return None
        if isinstance(expr, cst.Call):
            qualified = self.tracer.qualified(expr.func, frame)
            if qualified is not None:
                found = self.loss.functions.get(qualified)
                return (found, "") if found is not None else None
            name = method_name(expr)
            target = receiver(expr)
            if name is not None and target is not None:
                root = target
                while isinstance(root, (cst.Attribute, cst.Subscript)):
                    root = root.value
                via_self = isinstance(root, cst.Name) and root.value == frame.self_name
                if name in self.loss.methods and not via_self:
                    return (self.loss.methods[name], "")
                if name in _VALUE_PASSTHROUGH:
                    return self.label(target, frame, depth + 1)
            result = self.called(expr.func, frame, depth + 1)
            if result is None:  # a helper function of this file: what it returns
                return self.tracer.agree(self.tracer.returned_values(expr.func, frame), self.label, depth)
            return (result[1], result[2]) if result[0] == "act" else None
        if isinstance(expr, cst.Subscript):
            return self.label(expr.value, frame, depth + 1)
        if isinstance(expr, cst.Name):
            return self.tracer.agree(self.tracer.values(expr, frame), self.label, depth)
        return None


def _input_argument(call: cst.Call) -> Optional[cst.BaseExpression]:
    """The loss input: the first positional argument, or ``input=``."""
    for arg in call.args:
        if arg.star:
            return None
        if arg.keyword is None:
            return arg.value
        if arg.keyword.value == "input":
            return arg.value
    return None


def _method(cls: cst.ClassDef, name: str) -> Optional[cst.FunctionDef]:
    if not isinstance(cls.body, cst.IndentedBlock):
        return None
    found = None
    for statement in cls.body.body:
        if isinstance(statement, cst.FunctionDef) and statement.name.value == name:
            found = statement
    return found


def _terminal_name(expr: cst.BaseExpression) -> Optional[str]:
    if isinstance(expr, cst.Name):
        return expr.value
    if isinstance(expr, cst.Attribute):
        return expr.attr.value
    return None
