"""Where a value comes from, within one file: ValueTracer and the binding that reaches a use.

Used by TS003, TS005, TS010, TS012, TS013, TS019. Questions are asked at the node
being visited; the tracer reads the rest of the file itself, lazily, with exact-type
checks (libcst's ``children`` and ABC isinstance are slow).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, Hashable, Iterator, List, Optional, Sequence, Set, Tuple, TypeVar, Union

import libcst as cst

from .names import LOCAL, bound_names, canonical, collect_bindings, dotted
from .rule import FileContext
from .tree import child_nodes

# ---------------------------------------------------------------------------------------
# Where a value comes from, within one file (ValueTracer: TS010, TS019, TS013), and an
# activation fed to a loss that applies that activation itself (ActivationBeforeLoss:
# TS010 softmax-before-cross-entropy, TS019 sigmoid-before-bce-with-logits). Questions
# are asked at the node being visited; the tracer reads the rest of the file itself,
# lazily, with exact-type checks (libcst's ``children`` and ABC isinstance are slow).



#: Where an expression is evaluated: its function (or the module) and, for a method, its class.
@dataclass(frozen=True)
class Frame:
    scope: Union[cst.FunctionDef, cst.Module]
    cls: Optional[cst.ClassDef] = None

    @property
    def self_name(self) -> Optional[str]:
        """The name of a method's first parameter (``self``), else None."""
        if self.cls is None or not isinstance(self.scope, cst.FunctionDef):
            return None
        params = (*self.scope.params.posonly_params, *self.scope.params.params)
        return params[0].name.value if params else None


def frame_of(stack: Sequence[cst.CSTNode]) -> Frame:
    """The frame of the innermost node of ``stack`` (``FileContext.stack``)."""
    for index in range(len(stack) - 1, -1, -1):
        node = stack[index]
        if isinstance(node, cst.FunctionDef):
            owner = stack[index - 2] if index >= 2 else None
            return Frame(node, owner if isinstance(owner, cst.ClassDef) else None)
    module = stack[0]
    assert isinstance(module, cst.Module)
    return Frame(module)


_SUITES = (cst.If, cst.Else, cst.For, cst.While, cst.Try, cst.TryStar, cst.ExceptHandler, cst.ExceptStarHandler,
           cst.Finally, cst.With, cst.IndentedBlock, cst.SimpleStatementSuite, cst.Match, cst.MatchCase)
_COMPREHENSIONS = (cst.ListComp, cst.SetComp, cst.DictComp, cst.GeneratorExp)


class _Found(Exception):
    """Stops the walk of :class:`_Bindings` at the use."""


def _is_main_guard(node: cst.CSTNode) -> bool:
    """``if __name__ == "__main__":`` (its body runs unconditionally when the file is a script)."""
    return isinstance(node, cst.If) and isinstance(node.test, cst.Comparison) \
        and isinstance(node.test.left, cst.Name) and node.test.left.value == "__name__"


class _Bindings:
    """The bindings of one name in one scope, in source order, up to a use of it (or the whole scope).

    Nested functions and classes are other scopes (only their own name is bound
    here); comprehension targets and lambda parameters shadow the name inside them.
    """

    def __init__(self, name: str, use: Optional[cst.CSTNode]) -> None:
        self.name = name
        self.use = use
        self.found: List[Tuple[Optional[cst.BaseExpression], Tuple[cst.CSTNode, ...]]] = []
        self.use_path: Optional[Tuple[cst.CSTNode, ...]] = None
        self.opaque = False
        self._path: List[cst.CSTNode] = []
        self._shadow = 0

    def run(self, scope: Union[cst.FunctionDef, cst.Module]) -> "_Bindings":
        body = scope.body if isinstance(scope, cst.Module) else tuple(child_nodes(scope.body))
        try:
            self._path.append(scope)
            for statement in body:
                self._visit(statement)
        except _Found:
            pass
        return self

    def _bind(self, name: str, value: Optional[cst.BaseExpression]) -> None:
        if name == self.name and not self._shadow:
            self.found.append((value, tuple(self._path)))

    def _bind_target(self, target: cst.BaseExpression, value: Optional[cst.BaseExpression]) -> None:
        if isinstance(target, cst.Name):
            self._bind(target.value, value)
        else:
            for name in bound_names(target):
                self._bind(name, None)

    def _children(self, node: cst.CSTNode) -> None:
        for child in child_nodes(node):
            self._visit(child)

    def _visit(self, node: cst.CSTNode) -> None:
        if node is self.use:
            if self._shadow:
                self.opaque = True
            self.use_path = tuple(self._path)
            raise _Found
        kind = type(node)
        self._path.append(node)
        try:
            if kind is cst.FunctionDef or kind is cst.ClassDef:
                self._bind(node.name.value, None)  # type: ignore[attr-defined]
            elif kind is cst.Lambda or kind in _COMPREHENSIONS:
                names: Set[str] = set()
                if isinstance(node, cst.Lambda):
                    names.update(p.name.value for p in (*node.params.posonly_params, *node.params.params,
                                                        *node.params.kwonly_params))
                else:
                    clause = node.for_in  # type: ignore[attr-defined]
                    while clause is not None:
                        names.update(bound_names(clause.target))
                        clause = clause.inner_for_in
                shadowed = self.name in names
                self._shadow += shadowed
                self._children(node)
                self._shadow -= shadowed
            elif kind is cst.Assign:
                self._visit(node.value)  # type: ignore[attr-defined]
                for target in node.targets:  # type: ignore[attr-defined]
                    self._visit(target.target)
                for target in node.targets:  # type: ignore[attr-defined]
                    self._bind_target(target.target, node.value)  # type: ignore[attr-defined]
            elif kind is cst.AnnAssign:
                if node.value is not None:  # type: ignore[attr-defined]
                    self._visit(node.value)  # type: ignore[attr-defined]
                    self._bind_target(node.target, node.value)  # type: ignore[attr-defined]
            elif kind is cst.AugAssign or kind is cst.NamedExpr:
                self._visit(node.value)  # type: ignore[attr-defined]
                self._bind_target(node.target, None)  # type: ignore[attr-defined]
            elif kind is cst.For:
                self._visit(node.iter)  # type: ignore[attr-defined]
                self._bind_target(node.target, None)  # type: ignore[attr-defined]
                self._visit(node.body)  # type: ignore[attr-defined]
                if node.orelse is not None:  # type: ignore[attr-defined]
                    self._visit(node.orelse)  # type: ignore[attr-defined]
            elif kind is cst.WithItem:
                self._visit(node.item)  # type: ignore[attr-defined]
                if node.asname is not None:  # type: ignore[attr-defined]
                    self._bind_target(node.asname.name, None)  # type: ignore[attr-defined]
            elif kind is cst.ExceptHandler or kind is cst.ExceptStarHandler:
                name = node.name  # type: ignore[attr-defined]
                if name is not None and isinstance(name.name, cst.Name):
                    self._bind(name.name.value, None)
                self._children(node)
            elif kind is cst.Import or kind is cst.ImportFrom:
                bound: Dict[str, str] = {}
                collect_bindings([cst.SimpleStatementLine(body=[node])], bound)  # type: ignore[list-item]
                for name in bound:
                    self._bind(name, None)
            elif kind is cst.Del:
                self._bind_target(node.target, None)  # type: ignore[attr-defined]
            elif kind is cst.Global or kind is cst.Nonlocal:
                if any(n.name.value == self.name for n in node.names):  # type: ignore[attr-defined]
                    self.opaque = True
            elif kind is cst.Match:
                self.opaque = True  # pattern captures are not tracked
                self._children(node)
            else:
                self._children(node)
        finally:
            self._path.pop()

    @staticmethod
    def unconditional(path: Tuple[cst.CSTNode, ...], use_path: Tuple[cst.CSTNode, ...] = ()) -> bool:
        """Whether a binding at ``path`` runs whenever the use at ``use_path`` runs (before it in source order).

        Blocks shared with the use, ``with`` bodies, ``try`` bodies and the
        ``if __name__ == "__main__":`` body do; a branch, a loop body or an
        ``except`` clause the use is not in may not.
        """
        shared = {id(node) for node in use_path}
        for index, node in enumerate(path):
            if id(node) in shared or not isinstance(node, _SUITES):
                continue
            parent = path[index - 1] if index else None
            if isinstance(node, (cst.With, cst.Try, cst.TryStar)) or _is_main_guard(node):
                continue
            if isinstance(node, cst.IndentedBlock) and (
                    isinstance(parent, cst.With) or _is_main_guard(parent)  # type: ignore[arg-type]
                    or (isinstance(parent, (cst.Try, cst.TryStar)) and parent.body is node)):
                continue
            return False
        return True


#: Nodes whose ``value`` is used as a value (a Name there is passed, stored or returned, not called).
_VALUE_HOLDERS = frozenset({cst.Arg, cst.Element, cst.DictElement, cst.Assign, cst.AnnAssign, cst.Return})
_Answer = TypeVar("_Answer", bound=Hashable)
Value = Tuple[cst.BaseExpression, Frame]


class ValueTracer:
    """Answers "where does this value come from?" inside one file, without running it.

    A name is followed to the assignment that reaches it in its function (the
    last one before it in source order, when nothing between them is
    conditional), to the one assignment of a module-level name, to every
    ``self.attr = ...`` of a method's class, and, for a parameter of a
    module-level function, to the argument passed at every call site of that
    function in the file. An answer is given only when every path agrees; any
    doubt gives None. One instance per file (per rule instance).
    """

    MAX_DEPTH = 12

    def __init__(self, context: FileContext) -> None:
        self.context = context
        self._module_bindings: Optional[Dict[str, str]] = None
        self._function_bindings: Dict[int, Dict[str, str]] = {}
        self._classes: Optional[Dict[str, cst.ClassDef]] = None
        self._call_sites: Optional[Dict[str, List[Tuple[cst.Call, Frame]]]] = None
        self._top_functions: Optional[Dict[str, cst.FunctionDef]] = None
        #: Names used as values (passed, stored, returned): a function among them has unknown callers.
        self._references: Set[str] = set()

    @property
    def module(self) -> cst.Module:
        module = self.context.stack[0]
        assert isinstance(module, cst.Module)
        return module

    def here(self) -> Frame:
        """The frame of the node being visited."""
        return frame_of(self.context.stack)

    # -- names ---------------------------------------------------------------------------------------

    def _bindings_of(self, scope: Union[cst.FunctionDef, cst.Module]) -> Dict[str, str]:
        if isinstance(scope, cst.Module):
            if self._module_bindings is None:
                self._module_bindings = {}
                collect_bindings(scope.body, self._module_bindings)
            return self._module_bindings
        found = self._function_bindings.get(id(scope))
        if found is None:
            found = self._function_bindings[id(scope)] = {}
            params = scope.params
            for param in (*params.posonly_params, *params.params, *params.kwonly_params):
                found[param.name.value] = LOCAL
            for star in (params.star_arg, params.star_kwarg):
                if isinstance(star, cst.Param):
                    found[star.name.value] = LOCAL
            if isinstance(scope.body, cst.IndentedBlock):
                collect_bindings(scope.body.body, found)
        return found

    def qualified(self, expr: cst.BaseExpression, frame: Frame) -> Optional[str]:
        """The import-resolved name of a Name/Attribute chain evaluated in ``frame`` (None for locals)."""
        text = dotted(expr)
        if text is None:
            return None
        head, _, rest = text.partition(".")
        bound = self._bindings_of(frame.scope).get(head) if isinstance(frame.scope, cst.FunctionDef) else None
        if bound is None:
            bound = self._bindings_of(self.module).get(head)
        if bound is None or bound == LOCAL:
            return None
        return canonical(f"{bound}.{rest}" if rest else bound)

    def local_class(self, expr: cst.BaseExpression, frame: Frame) -> Optional[cst.ClassDef]:
        """The class defined at the top of this file that a Name refers to (not shadowed where it is used)."""
        if not isinstance(expr, cst.Name):
            return None
        if self._classes is None:
            self._classes = {}
            counts: Dict[str, int] = {}
            for statement in self.module.body:
                for name in self._statement_names(statement):
                    counts[name] = counts.get(name, 0) + 1
            for statement in self.module.body:
                if isinstance(statement, cst.ClassDef) and counts.get(statement.name.value) == 1:
                    self._classes[statement.name.value] = statement
        if isinstance(frame.scope, cst.FunctionDef) and expr.value in self._bindings_of(frame.scope):
            return None
        return self._classes.get(expr.value)

    @staticmethod
    def _statement_names(statement: cst.CSTNode) -> List[str]:
        bound: Dict[str, str] = {}
        collect_bindings([statement], bound)
        return list(bound)

    def values(self, expr: cst.BaseExpression, frame: Frame) -> Optional[List[Value]]:
        """The expressions a Name or ``self.attr`` may hold where it is used; None when unknown."""
        if isinstance(expr, cst.Attribute):
            self_name = frame.self_name
            if self_name is None or not (isinstance(expr.value, cst.Name) and expr.value.value == self_name):
                return None
            assert frame.cls is not None
            return self.attribute_values(frame.cls, expr.attr.value)
        if not isinstance(expr, cst.Name):
            return None
        scope = frame.scope
        if isinstance(scope, cst.FunctionDef) and expr.value in self._bindings_of(scope):
            walk = _Bindings(expr.value, expr).run(scope)
            if walk.opaque or walk.use_path is None:
                return None
            if not walk.found:
                return self.parameter_values(scope, expr.value, frame)
            value, path = walk.found[-1]
            if value is None or not _Bindings.unconditional(path, walk.use_path):
                return None
            return [(value, frame)]
        module = self.module
        if isinstance(scope, cst.Module):
            walk = _Bindings(expr.value, expr).run(module)
            if walk.opaque or walk.use_path is None or not walk.found:
                return None
            value, path = walk.found[-1]
            if value is None or not _Bindings.unconditional(path, walk.use_path):
                return None
            return [(value, Frame(module))]
        # A global read from a function: trusted only when the module binds it exactly once.
        walk = _Bindings(expr.value, None).run(module)
        if walk.opaque or len(walk.found) != 1:
            return None
        value, path = walk.found[0]
        if value is None or not _Bindings.unconditional(path):
            return None
        return [(value, Frame(module))]

    def attribute_values(self, cls: cst.ClassDef, attr: str, depth: int = 0) -> Optional[List[Value]]:
        """Every value assigned to ``self.<attr>`` in the methods of ``cls`` (or of a base in this file)."""
        found: List[Value] = []
        for statement in cls.body.body if isinstance(cls.body, cst.IndentedBlock) else ():
            if not isinstance(statement, cst.FunctionDef):
                continue
            frame = Frame(statement, cls)
            self_name = frame.self_name
            if self_name is None:
                continue
            for small in _small_statements(statement):
                targets: Sequence[cst.BaseExpression]
                if isinstance(small, cst.Assign):
                    targets = [t.target for t in small.targets]
                    value: Optional[cst.BaseExpression] = small.value
                elif isinstance(small, (cst.AnnAssign, cst.AugAssign)):
                    targets, value = [small.target], small.value if isinstance(small, cst.AnnAssign) else None
                else:
                    continue
                for target in targets:
                    hit = _is_self_attribute(target, self_name, attr)
                    if hit is None:
                        return None  # a tuple target that may bind it: unknown
                    if hit:
                        if value is None:
                            return None
                        found.append((value, frame))
        if found or depth > 3:
            return found or None
        module_frame = Frame(self.module)
        for base in cls.bases:
            base_class = self.local_class(base.value, module_frame)
            if base_class is not None and base_class is not cls:
                return self.attribute_values(base_class, attr, depth + 1)
        return None

    def parameter_values(self, function: cst.FunctionDef, name: str, frame: Frame) -> Optional[List[Value]]:
        """The arguments passed for parameter ``name`` at every call of a module-level function in this file."""
        if frame.cls is not None or self._function_named(function.name.value) is not function:
            return None
        sites = self.call_sites(function.name.value)
        if function.name.value in self._references:
            return None  # also passed around as a callback: its callers are unknown
        params = function.params
        positional = [p.name.value for p in (*params.posonly_params, *params.params)]
        keyword_ok = name not in [p.name.value for p in params.posonly_params]
        if name not in positional and name not in [p.name.value for p in params.kwonly_params]:
            return None
        index = positional.index(name) if name in positional else None
        found: List[Value] = []
        for call, caller in sites:
            argument: Optional[cst.BaseExpression] = None
            for position, arg in enumerate(call.args):
                if arg.star:
                    return None
                if arg.keyword is None and position == index:
                    argument = arg.value
                elif arg.keyword is not None and keyword_ok and arg.keyword.value == name:
                    argument = arg.value
            if argument is None:
                return None  # the default is used somewhere
            found.append((argument, caller))
        return found or None

    def returned_values(self, func: cst.BaseExpression, frame: Frame) -> Optional[List[Value]]:
        """What a call of ``func`` returns, when it names a module-level function of this file (every
        ``return``'s value, in that function's frame); None if unknown or if one ``return`` is bare."""
        if not isinstance(func, cst.Name):
            return None
        if isinstance(frame.scope, cst.FunctionDef) and func.value in self._bindings_of(frame.scope):
            return None
        function = self._function_named(func.value)
        if function is None:
            return None
        values = returned_values(function)
        if not values or any(value is None for value in values):
            return None
        inner = Frame(function)
        return [(value, inner) for value in values if value is not None]

    def _function_named(self, name: str) -> Optional[cst.FunctionDef]:
        if self._top_functions is None:
            counts: Dict[str, int] = {}
            for statement in self.module.body:
                for bound in self._statement_names(statement):
                    counts[bound] = counts.get(bound, 0) + 1
            self._top_functions = {s.name.value: s for s in self.module.body
                                   if isinstance(s, cst.FunctionDef) and counts.get(s.name.value) == 1}
        return self._top_functions.get(name)

    def call_sites(self, name: str) -> List[Tuple[cst.Call, Frame]]:
        """Every ``name(...)`` call in the file, with the frame it is made in."""
        if self._call_sites is None:
            self._call_sites = {}
            self._index(self.module)
        return self._call_sites.get(name, [])

    def _index(self, root: cst.Module) -> None:
        """Every ``name(...)`` call of the module, by name, with its frame (one walk; exact types, no ABC checks)."""
        assert self._call_sites is not None
        stack: List[Tuple[cst.CSTNode, Frame, Optional[cst.ClassDef]]] = [(root, Frame(root), None)]
        while stack:
            node, frame, cls = stack.pop()
            for child in child_nodes(node):
                kind = type(child)
                if kind is cst.Call and type(child.func) is cst.Name:  # type: ignore[attr-defined]
                    self._call_sites.setdefault(child.func.value, []).append((child, frame))  # type: ignore
                elif kind in _VALUE_HOLDERS and type(getattr(child, "value", None)) is cst.Name:
                    self._references.add(child.value.value)  # type: ignore[attr-defined]
                if kind is cst.FunctionDef:
                    stack.append((child, Frame(child, cls), None))  # type: ignore[arg-type]
                elif kind is cst.ClassDef:
                    stack.append((child, frame, child))  # type: ignore[arg-type]
                elif kind is cst.IndentedBlock and cls is not None:
                    stack.append((child, frame, cls))
                else:
                    stack.append((child, frame, None))
        for sites in self._call_sites.values():
            sites.reverse()

    # -- generic resolution --------------------------------------------------------------------------

    def agree(self, values: Optional[List[Value]],
              classify: Callable[[cst.BaseExpression, Frame, int], Optional[_Answer]],
              depth: int) -> Optional[_Answer]:
        """``classify`` of every value, if they all give the same non-None answer."""
        if not values or depth > self.MAX_DEPTH:
            return None
        answers = {classify(value, frame, depth + 1) for value, frame in values}
        if len(answers) != 1:
            return None
        return answers.pop()


def _small_statements(function: cst.FunctionDef) -> Iterator[cst.BaseSmallStatement]:
    """Small statements of a function body, nested blocks included, nested functions and classes not."""
    stack: List[cst.CSTNode] = [function.body]
    while stack:
        node = stack.pop()
        if isinstance(node, cst.SimpleStatementLine) or isinstance(node, cst.SimpleStatementSuite):
            yield from node.body
            continue
        for child in child_nodes(node):
            if not isinstance(child, (cst.FunctionDef, cst.ClassDef)) and isinstance(
                    child, (cst.BaseSuite, cst.BaseCompoundStatement, cst.SimpleStatementLine, cst.Else,
                            cst.ExceptHandler, cst.ExceptStarHandler, cst.Finally, cst.MatchCase)):
                stack.append(child)


def _is_self_attribute(target: cst.BaseExpression, self_name: str, attr: str) -> Optional[bool]:
    """True for ``self.<attr>``; None for a tuple target that contains it; False otherwise."""
    if isinstance(target, cst.Attribute):
        return isinstance(target.value, cst.Name) and target.value.value == self_name and target.attr.value == attr
    if isinstance(target, (cst.Tuple, cst.List)):
        for element in target.elements:
            inner = element.value.value if isinstance(element.value, cst.StarredElement) else element.value
            if _is_self_attribute(inner, self_name, attr) is not False:
                return None
    return False


#: Base classes (import-resolved) that make a class an ``nn.Module``.
_MODULE_BASES = frozenset({
    "torch.nn.Module", "pytorch_lightning.LightningModule", "lightning.LightningModule",
    "lightning.pytorch.LightningModule", "pytorch_lightning.core.LightningModule",
    "lightning.pytorch.core.LightningModule", "pytorch_lightning.core.module.LightningModule",
    "lightning.pytorch.core.module.LightningModule",
})
_NOT_MODULES = frozenset({"Parameter", "Buffer", "UninitializedParameter", "UninitializedBuffer"})


def is_torch_module_base(qualified: Optional[str]) -> bool:
    """Whether an import-resolved base class name is ``nn.Module`` or one of torch.nn's module classes."""
    if qualified is None:
        return False
    if qualified in _MODULE_BASES:
        return True
    parts = qualified.split(".")
    return len(parts) == 3 and parts[:2] == ["torch", "nn"] and parts[2][:1].isupper() and parts[2] not in _NOT_MODULES


def is_module_class(tracer: ValueTracer, cls: cst.ClassDef, _depth: int = 0) -> bool:
    """Whether a class derives from ``torch.nn.Module``: directly, through imports, or via classes of this file."""
    frame = Frame(tracer.module)
    for base in cls.bases:
        if base.keyword is not None:
            continue
        if is_torch_module_base(tracer.qualified(base.value, frame)):
            return True
        local = tracer.local_class(base.value, frame)
        if local is not None and local is not cls and _depth < 8 and is_module_class(tracer, local, _depth + 1):
            return True
    return False



# ---------------------------------------------------------------------------------------
# The statement that binds a name where it is used (TS012 to-device-result-discarded): a
# loop target, a with-target, an assignment... Same reaching rules as ValueTracer.values.

def reaching_binding(tracer: ValueTracer, name: cst.Name, frame: Frame) -> Optional[cst.CSTNode]:
    """The node that last binds ``name`` before this use of it in its function (or module): an
    ``Assign``, a ``For`` (its target), a ``WithItem``...; None for a parameter, a global, or when
    a conditional binding may come between them."""
    scope = frame.scope
    if isinstance(scope, cst.FunctionDef) and name.value not in tracer._bindings_of(scope):
        return None
    walk = _Bindings(name.value, name).run(scope)
    if walk.opaque or walk.use_path is None or not walk.found:
        return None
    _value, path = walk.found[-1]
    if not path or not _Bindings.unconditional(path, walk.use_path):
        return None
    return path[-1]


def enclosing_scope(context: FileContext) -> cst.CSTNode:
    """The innermost function (or the module) around the node being visited.

    Rules that analyse one function body at a time (TS011, TS015, TS018) note in
    ``visit_Call`` which scopes hold a call worth it, and analyse only those in
    ``leave_FunctionDef`` / ``leave_Module``.
    """
    return next(n for n in reversed(context.stack) if isinstance(n, (cst.FunctionDef, cst.Module)))


def returned_values(function: cst.FunctionDef) -> List[Optional[cst.BaseExpression]]:
    """The values of a function's ``return`` statements (None for a bare return)."""
    return [s.value for s in _small_statements(function) if isinstance(s, cst.Return)]
