"""Name resolution without libcst's ScopeProvider.

ScopeProvider and QualifiedNameProvider are exact but cost several times the
parse itself; the rules only need two answers: "what does this dotted name
refer to through the imports?" (``nn.Linear`` -> ``torch.nn.Linear``) and "is
this ``sum`` the builtin?". Scopes are tracked during the single traversal, and
each scope's bindings are collected up front by a shallow walk over its
statements, so a name assigned anywhere in a function is local to all of it, as
in Python.
"""

from __future__ import annotations

import builtins
from typing import Dict, Iterable, List, Optional, Union

import libcst as cst

#: Marks a name bound by something other than an import (assignment, def, parameter...).
LOCAL = "<local>"

_BUILTINS = frozenset(dir(builtins))


def dotted(node: cst.BaseExpression) -> Optional[str]:
    """``a.b.c`` as text for a Name/Attribute chain, else None."""
    parts: List[str] = []
    while isinstance(node, cst.Attribute):
        parts.append(node.attr.value)
        node = node.value
    if not isinstance(node, cst.Name):
        return None
    parts.append(node.value)
    return ".".join(reversed(parts))


def _module_name(node: Union[cst.Attribute, cst.Name]) -> str:
    return dotted(node) or ""


def bound_names(target: cst.CSTNode) -> Iterable[str]:
    """Names an assignment target binds: ``a``, ``a, (b, *c)`` -> a, b, c (attributes and subscripts bind none)."""
    if isinstance(target, cst.Name):
        yield target.value
    elif isinstance(target, (cst.Tuple, cst.List)):
        for element in target.elements:
            yield from bound_names(element.value)
    elif isinstance(target, cst.StarredElement):
        yield from bound_names(target.value)


def _import_bindings(node: Union[cst.Import, cst.ImportFrom], into: Dict[str, str]) -> None:
    if isinstance(node, cst.Import):
        for alias in node.names:
            full = _module_name(alias.name)
            if alias.asname is not None:
                into[alias.asname.name.value] = full  # type: ignore[union-attr]
            else:
                top = full.partition(".")[0]
                into[top] = top
        return
    if isinstance(node.names, cst.ImportStar):
        return
    module = "." * len(node.relative) + (_module_name(node.module) if node.module else "")
    for alias in node.names:
        name = alias.name.value if isinstance(alias.name, cst.Name) else _module_name(alias.name)
        bound = alias.asname.name.value if alias.asname is not None else name  # type: ignore[union-attr]
        into[bound] = f"{module}.{name}" if not module.endswith(".") else f"{module}{name}"


def collect_bindings(body: Iterable[cst.CSTNode], into: Dict[str, str]) -> None:
    """Names bound directly in a block (not inside nested functions or classes)."""
    for statement in body:
        if isinstance(statement, cst.SimpleStatementLine):
            for small in statement.body:
                _small_binding(small, into)
        elif isinstance(statement, (cst.FunctionDef, cst.ClassDef)):
            into[statement.name.value] = LOCAL
        elif isinstance(statement, (cst.For,)):
            for name in bound_names(statement.target):
                into[name] = LOCAL
            collect_bindings(statement.body.body, into)
            if statement.orelse is not None:
                collect_bindings(statement.orelse.body.body, into)
        elif isinstance(statement, cst.While):
            collect_bindings(statement.body.body, into)
            if statement.orelse is not None:
                collect_bindings(statement.orelse.body.body, into)
        elif isinstance(statement, cst.If):
            collect_bindings(statement.body.body, into)
            orelse = statement.orelse
            while orelse is not None:
                collect_bindings(orelse.body.body, into)
                orelse = orelse.orelse if isinstance(orelse, cst.If) else None
        elif isinstance(statement, cst.With):
            for item in statement.items:
                if item.asname is not None:
                    for name in bound_names(item.asname.name):
                        into[name] = LOCAL
            collect_bindings(statement.body.body, into)
        elif isinstance(statement, (cst.Try, cst.TryStar)):
            collect_bindings(statement.body.body, into)
            for handler in statement.handlers:
                if handler.name is not None and isinstance(handler.name.name, cst.Name):
                    into[handler.name.name.value] = LOCAL
                collect_bindings(handler.body.body, into)
            for extra in (statement.orelse, statement.finalbody):
                if extra is not None:
                    collect_bindings(extra.body.body, into)


def _small_binding(small: cst.BaseSmallStatement, into: Dict[str, str]) -> None:
    if isinstance(small, (cst.Import, cst.ImportFrom)):
        _import_bindings(small, into)
    elif isinstance(small, cst.Assign):
        for target in small.targets:
            for name in bound_names(target.target):
                into[name] = LOCAL
    elif isinstance(small, (cst.AnnAssign, cst.AugAssign)):
        for name in bound_names(small.target):
            into[name] = LOCAL


class Scope:
    """Bindings of one module, class or function body."""

    __slots__ = ("kind", "bindings", "parent", "global_names")

    def __init__(self, kind: str, parent: Optional["Scope"]) -> None:
        self.kind = kind  # "module", "class" or "function"
        self.bindings: Dict[str, str] = {}
        self.parent = parent
        self.global_names: set = set()


class Resolver:
    """Tracks the scope stack during the traversal and answers name questions."""

    def __init__(self) -> None:
        self.scope: Optional[Scope] = None

    def push_module(self, module: cst.Module) -> None:
        self.scope = Scope("module", None)
        collect_bindings(module.body, self.scope.bindings)

    def push_function(self, node: Union[cst.FunctionDef, cst.Lambda]) -> None:
        scope = Scope("function", self.scope)
        params = node.params
        for param in (*params.posonly_params, *params.params, *params.kwonly_params):
            scope.bindings[param.name.value] = LOCAL
        for star in (params.star_arg, params.star_kwarg):
            if isinstance(star, cst.Param):
                scope.bindings[star.name.value] = LOCAL
        if isinstance(node, cst.FunctionDef) and isinstance(node.body, cst.IndentedBlock):
            collect_bindings(node.body.body, scope.bindings)
            _collect_globals(node.body.body, scope.global_names)
        self.scope = scope

    def push_class(self, node: cst.ClassDef) -> None:
        scope = Scope("class", self.scope)
        if isinstance(node.body, cst.IndentedBlock):
            collect_bindings(node.body.body, scope.bindings)
        self.scope = scope

    def pop(self) -> None:
        assert self.scope is not None
        self.scope = self.scope.parent

    def lookup(self, name: str) -> Optional[str]:
        """What ``name`` is bound to here: an import's qualified name, LOCAL, ``builtins.X`` or None."""
        scope = self.scope
        first = True
        while scope is not None:
            if name in scope.global_names:
                scope = _module_scope(scope)
                first = False
                continue
            # Class bodies are visible only from the class body itself, not from its methods.
            if (first or scope.kind != "class") and name in scope.bindings:
                return scope.bindings[name]
            first = False
            scope = scope.parent
        return f"builtins.{name}" if name in _BUILTINS else None

    def qualified_name(self, node: cst.BaseExpression) -> Optional[str]:
        """``torch.nn.Linear`` for ``nn.Linear`` after ``from torch import nn``; None if not import-rooted."""
        text = dotted(node)
        if text is None:
            return None
        head, _, rest = text.partition(".")
        bound = self.lookup(head)
        if bound is None or bound == LOCAL:
            return None
        return f"{bound}.{rest}" if rest else bound

    def is_builtin(self, node: cst.BaseExpression, name: str) -> bool:
        return isinstance(node, cst.Name) and node.value == name and self.lookup(name) == f"builtins.{name}"


def _module_scope(scope: Scope) -> Scope:
    while scope.parent is not None:
        scope = scope.parent
    return scope


def _collect_globals(body: Iterable[cst.CSTNode], into: set) -> None:
    for statement in body:
        if isinstance(statement, cst.SimpleStatementLine):
            for small in statement.body:
                if isinstance(small, cst.Global):
                    into.update(n.name.value for n in small.names)


def canonical(qualified: Optional[str]) -> Optional[str]:
    """Fold torch's implementation paths onto the public ones.

    ``torch.nn.modules.linear.Linear`` -> ``torch.nn.Linear``, so rules compare
    against one spelling.
    """
    if qualified is None:
        return None
    if qualified.startswith("torch.nn.modules."):
        parts = qualified.split(".")
        return "torch.nn." + parts[-1] if len(parts) >= 5 else qualified
    if qualified.startswith("torch.nn.parameter."):
        return "torch.nn." + qualified.rsplit(".", 1)[-1]
    return qualified
