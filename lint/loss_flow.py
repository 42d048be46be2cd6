"""Loss tensors through one function body (TS011 loss-accumulated-with-graph, TS018
tensor-logged-as-scalar): which names hold a loss where, which are backpropagated,
and which names an expression's value still carries.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Dict, FrozenSet, List, Optional, Set, Tuple

import libcst as cst

from .names import dotted
from .patterns import method_name, receiver
from .rule import FileContext
from .tree import child_nodes

# ---------------------------------------------------------------------------------------
# Loss tensors through one function body (TS011 loss-accumulated-with-graph, TS018
# tensor-logged-as-scalar): which names hold a loss tensor where, which are
# backpropagated, and which names an expression's value still carries.


#: ``torch.nn.functional`` losses whose name does not end in ``_loss``.
_FUNCTIONAL_LOSSES = frozenset({"cross_entropy", "binary_cross_entropy", "binary_cross_entropy_with_logits",
                                "kl_div"})
#: What people call a loss module or function: ``criterion(out, y)``, ``self.loss_fn(out, y)``, ``ce_crit``.
#: Not ``compute_loss`` / ``val_loss(...)``: helpers named so often return a Python number.
_LOSS_CALLABLE = re.compile(r"^(?:\w+_)?(?:criterion|crit|loss_?fn|loss_?func(?:tion)?)$", re.IGNORECASE)
#: Tensor methods whose result still holds the receiver's autograd graph.
GRAPH_KEEPING_METHODS = frozenset({
    "mean", "sum", "squeeze", "unsqueeze", "reshape", "view", "flatten", "float", "double", "half", "bfloat16",
    "to", "cpu", "cuda", "clone", "abs", "contiguous", "mul", "div", "add", "sub",
})
#: Calls that run a backward pass through their receiver or arguments.
BACKWARD_METHODS = frozenset({"backward", "manual_backward"})
_BACKWARD_FUNCTIONS = frozenset({"torch.autograd.backward"})
#: Calls after which the graph of what they mention is in use (never "kept for nothing").
_GRAPH_USES = frozenset({"torch.autograd.grad", "torch.autograd.backward"})
_SKIPPED_SCOPES = (cst.FunctionDef, cst.ClassDef, cst.Lambda)


def expression_text(node: cst.CSTNode) -> Optional[str]:
    """Dotted text of a name chain (``self.total``), or the code of a subscript (``stats['loss']``)."""
    text = dotted(node)  # type: ignore[arg-type]
    if text is not None:
        return text
    if isinstance(node, cst.Subscript):
        return cst.Module([]).code_for_node(node)
    return None


def _unwrap_same_object(call: cst.BaseExpression) -> cst.BaseExpression:
    """``nn.CrossEntropyLoss()`` for ``nn.CrossEntropyLoss().to(device)``."""
    while isinstance(call, cst.Call) and method_name(call) in ("to", "cuda", "cpu"):
        call = call.func.value  # type: ignore[union-attr]
    return call


def _is_loss_class(func: cst.BaseExpression) -> bool:
    text = dotted(func)
    last = text.rpartition(".")[2] if text else ""
    return last.endswith("Loss") and last[:1].isupper()


def loss_module_names(module: cst.Module) -> FrozenSet[str]:
    """Dotted targets bound anywhere in the file to a loss module: ``crit = nn.CrossEntropyLoss()``,
    ``self.criterion = FocalLoss(...)``."""
    names: Set[str] = set()
    stack: List[cst.CSTNode] = [module]
    while stack:
        node = stack.pop()
        if isinstance(node, cst.Assign):
            value = _unwrap_same_object(node.value)
            if isinstance(value, cst.Call) and _is_loss_class(value.func):
                names.update(t for t in (dotted(target.target) for target in node.targets) if t)
        stack.extend(child_nodes(node))
    return frozenset(names)


@dataclass(eq=False)
class _Binding:
    name: str
    #: Position just after the binding statement (its value is read before it).
    index: int
    value: Optional[cst.BaseExpression]
    augmented: bool = False
    loss: Optional[bool] = None  # computed lazily


@dataclass(eq=False)
class BackwardCall:
    call: cst.Call
    index: int
    #: Enclosing nodes, outermost (the scope) first.
    ancestors: Tuple[cst.CSTNode, ...]
    #: Names and dotted / subscript texts read by the call (receiver and arguments).
    mentions: FrozenSet[str]


class LossFlow:
    """One function body (or module-level code) in source order: bindings, backward calls, loss tensors.

    ``holds_loss(name_node)`` answers whether a name, where it is read, holds a
    loss tensor: it was last bound to a loss (``criterion(...)``,
    ``F.cross_entropy(...)``, ``outputs.loss``, arithmetic on a loss), or it is
    backpropagated while bound to that same value. A loss computed under
    ``no_grad`` is a loss tensor too (without a graph): ask ``in_no_grad`` where
    the graph matters. Nested functions and classes are not entered (they are
    scopes of their own).
    """

    def __init__(self, context: FileContext, scope: cst.CSTNode, loss_modules: FrozenSet[str],
                 collect: Tuple[type, ...] = ()) -> None:
        self.context = context
        self._loss_modules = loss_modules
        self._collect = collect
        self._counter = 0
        self._index: Dict[int, int] = {}
        self._bindings: Dict[str, List[_Binding]] = {}
        self.backward_calls: List[BackwardCall] = []
        self._graph_uses: Set[str] = set()
        self._graph_reach: Optional[FrozenSet[str]] = None
        #: (node, its ancestors outermost first) for every node of a ``collect`` type, in source order.
        self.collected: List[Tuple[cst.CSTNode, Tuple[cst.CSTNode, ...]]] = []
        self._path: List[cst.CSTNode] = [scope]
        if isinstance(scope, cst.FunctionDef):
            params = scope.params
            for param in (*params.posonly_params, *params.params, *params.kwonly_params):
                self._bind(param.name.value, None)
            self._walk(scope.body)
        else:
            for statement in child_nodes(scope):
                self._walk(statement)

    # -- the walk ----------------------------------------------------------------------

    def _tick(self) -> int:
        self._counter += 1
        return self._counter

    def _bind(self, name: str, value: Optional[cst.BaseExpression], augmented: bool = False) -> None:
        self._bindings.setdefault(name, []).append(_Binding(name, self._tick(), value, augmented))

    def _bind_target(self, target: cst.BaseExpression, value: Optional[cst.BaseExpression]) -> None:
        if isinstance(target, cst.Name):
            self._bind(target.value, value)
        elif isinstance(target, (cst.Tuple, cst.List)):
            for element in target.elements:
                self._bind_target(element.value, None)
        elif isinstance(target, cst.StarredElement):
            self._bind_target(target.value, None)

    def _walk(self, node: cst.CSTNode) -> None:
        self._index[id(node)] = self._tick()
        if isinstance(node, self._collect):
            self.collected.append((node, tuple(self._path)))
        if isinstance(node, cst.Call):
            self._note_call(node)
        self._path.append(node)
        try:
            if isinstance(node, cst.Assign):
                self._walk(node.value)
                for target in node.targets:
                    self._walk(target.target)
                for target in node.targets:
                    self._bind_target(target.target, node.value)
            elif isinstance(node, (cst.AugAssign, cst.AnnAssign)):
                if node.value is not None:
                    self._walk(node.value)
                self._walk(node.target)
                if isinstance(node.target, cst.Name) and node.value is not None:
                    self._bind(node.target.value, node.value, augmented=isinstance(node, cst.AugAssign))
            elif isinstance(node, cst.For):
                self._walk(node.iter)
                self._bind_target(node.target, None)
                self._walk(node.body)
                if node.orelse is not None:
                    self._walk(node.orelse)
            elif isinstance(node, cst.NamedExpr):
                self._walk(node.value)
                self._bind_target(node.target, node.value)
            else:
                for child in child_nodes(node):
                    if isinstance(child, _SKIPPED_SCOPES):
                        if isinstance(child, (cst.FunctionDef, cst.ClassDef)):
                            self._bind(child.name.value, None)
                        continue
                    self._walk(child)
                if isinstance(node, cst.WithItem) and node.asname is not None:
                    self._bind_target(node.asname.name, None)  # type: ignore[arg-type]
                elif isinstance(node, cst.ExceptHandler) and node.name is not None:
                    self._bind_target(node.name.name, None)  # type: ignore[arg-type]
        finally:
            self._path.pop()

    def _note_call(self, call: cst.Call) -> None:
        name = method_name(call)
        qualified = None if name in BACKWARD_METHODS else self.context.qualified_name(call.func)
        if name in BACKWARD_METHODS or qualified in _BACKWARD_FUNCTIONS:
            self.backward_calls.append(BackwardCall(call, self._counter, tuple(self._path), self.mentions(call)))
        if name in BACKWARD_METHODS or qualified in _GRAPH_USES:
            self._graph_uses |= self.mentions(call)

    # -- questions ---------------------------------------------------------------------

    def index(self, node: cst.CSTNode) -> int:
        """Position of ``node`` in source order (-1 for a node the walk did not enter)."""
        return self._index.get(id(node), -1)

    @staticmethod
    def mentions(node: cst.CSTNode) -> FrozenSet[str]:
        """Every name, dotted chain and subscript text read inside ``node``."""
        found: Set[str] = set()
        stack = [node]
        while stack:
            current = stack.pop()
            if isinstance(current, (cst.Name, cst.Attribute, cst.Subscript)):
                text = expression_text(current)
                if text is not None:
                    found.add(text)
            if not isinstance(current, cst.Name):
                stack.extend(child_nodes(current))
        return frozenset(found)

    def backpropagated(self, text: str) -> bool:
        """Whether ``text`` (a name, ``self.total``, ``stats['loss']``) is read by a backward / autograd call,
        directly or through names bound from it (``mean = total / n`` then ``mean.backward()``)."""
        if self._graph_reach is None:
            reach = set(self._graph_uses)
            grown = True
            while grown:
                grown = False
                for name, bindings in self._bindings.items():
                    if name not in reach:
                        continue
                    for binding in bindings:
                        if binding.value is not None and not self.mentions(binding.value) <= reach:
                            reach |= self.mentions(binding.value)
                            grown = True
            self._graph_reach = frozenset(reach)
        return text in self._graph_reach

    def _region(self, name: str, at: int) -> Tuple[Optional[_Binding], int, int]:
        """The binding of ``name`` visible at position ``at``, and the span until the next binding."""
        start, end, current = -1, 1 << 60, None
        for binding in self._bindings.get(name, ()):
            if binding.index <= at:
                start, current = binding.index, binding
            else:
                end = binding.index
                break
        return current, start, end

    def backward_calls_of(self, name: cst.Name) -> List[BackwardCall]:
        """Backward calls that read ``name`` while it holds the value it has at this read."""
        _, start, end = self._region(name.value, self.index(name))
        return [call for call in self.backward_calls if start < call.index < end and name.value in call.mentions]

    def holds_loss(self, name: cst.Name) -> bool:
        """Whether the name holds a loss tensor where it is read."""
        at = self.index(name)
        if at < 0:
            return False
        binding, _, _ = self._region(name.value, at)
        return bool(binding is not None and self._binding_is_loss(binding)) or bool(self.backward_calls_of(name))

    def _binding_is_loss(self, binding: _Binding) -> bool:
        if binding.loss is None:
            binding.loss = False  # no cycles: values only read earlier bindings
            if binding.value is not None:
                if binding.augmented:
                    previous, _, _ = self._region(binding.name, binding.index - 1)
                    binding.loss = (previous is not None and self._binding_is_loss(previous)) \
                        or self.is_loss_value(binding.value)
                else:
                    binding.loss = self.is_loss_value(binding.value)
        return binding.loss

    def is_loss_call(self, call: cst.Call) -> bool:
        """``F.cross_entropy(...)``, ``criterion(...)``, ``self.loss_fn(...)``, ``nn.MSELoss()(...)``,
        a call of a name bound to a loss module in this file."""
        func = call.func
        if isinstance(func, cst.Call):  # ``nn.MSELoss()(out, y)``
            constructed = _unwrap_same_object(func)
            return isinstance(constructed, cst.Call) and _is_loss_class(constructed.func)
        text = dotted(func)
        if text is None:
            return False
        qualified = self.context.qualified_name(func)
        if qualified is not None and qualified.startswith("torch.nn.functional."):
            last = qualified.rpartition(".")[2]
            return last.endswith("_loss") or last in _FUNCTIONAL_LOSSES
        if qualified is not None and not qualified.startswith("torch."):
            return False  # sklearn.metrics.log_loss and friends return numbers
        return text in self._loss_modules or bool(_LOSS_CALLABLE.match(text.rpartition(".")[2]))

    def is_loss_value(self, expression: cst.BaseExpression) -> bool:
        """Whether ``expression`` evaluates to a loss tensor (``loss``, ``loss * n``, ``criterion(out, y).mean()``)."""
        if isinstance(expression, cst.Call):
            if self.is_loss_call(expression):
                return True
            target = receiver(expression)
            return target is not None and method_name(expression) in GRAPH_KEEPING_METHODS \
                and self.is_loss_value(target)
        if isinstance(expression, cst.Name):
            return self.holds_loss(expression)
        if isinstance(expression, cst.Attribute):
            return expression.attr.value == "loss"  # ``outputs.loss`` (a HuggingFace ModelOutput)
        if isinstance(expression, cst.BinaryOperation):
            return self.is_loss_value(expression.left) or self.is_loss_value(expression.right)
        if isinstance(expression, cst.UnaryOperation):
            return self.is_loss_value(expression.expression)
        return False

    def graph_sources(self, expression: cst.BaseExpression, through_detach: bool = False) -> List[cst.Name]:
        """Names whose tensor the value of ``expression`` still is or holds the graph of: ``loss``,
        ``loss * n``, ``loss.mean()``; with ``through_detach``, also ``loss.detach()`` / ``loss.data``
        (a tensor still, without the graph). Never ``loss.item()``, ``float(loss)``, ``loss.tolist()``."""
        if isinstance(expression, cst.Name):
            return [expression]
        if isinstance(expression, cst.Call):
            target = receiver(expression)
            method = method_name(expression)
            if target is not None and (method in GRAPH_KEEPING_METHODS or through_detach and method == "detach"):
                return self.graph_sources(target, through_detach)
            return []
        if isinstance(expression, cst.Attribute) and through_detach and expression.attr.value == "data":
            return self.graph_sources(expression.value, through_detach)
        if isinstance(expression, cst.BinaryOperation):
            return self.graph_sources(expression.left, through_detach) \
                + self.graph_sources(expression.right, through_detach)
        if isinstance(expression, cst.UnaryOperation):
            return self.graph_sources(expression.expression, through_detach)
        return []
