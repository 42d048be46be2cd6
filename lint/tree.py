"""Walking libcst trees fast: the one table of which node fields hold child nodes.

libcst's own visitor and ``node.children`` visit every whitespace and
punctuation node and re-check each child against an abstract base class; the
linter needs neither, and reading the dataclass fields directly is about ten
times faster. The engine's traversal and the rules' local walks share this.
"""

from __future__ import annotations

import dataclasses
from typing import Dict, Iterator, Tuple

import libcst as cst

# Fields that hold only whitespace, punctuation or comments: no rule looks inside them.
# (Every field whose name starts with "whitespace" is skipped too.)
SKIPPED_FIELDS = frozenset({
    "lpar", "rpar", "lbracket", "rbracket", "lbrace", "rbrace", "comma", "semicolon", "colon", "equal",
    "dot", "header", "footer", "leading_lines", "lines_after_decorators", "newline", "trailing_whitespace",
    "operator", "star_tok", "first_line", "empty_lines", "asynchronous", "default_newline", "default_indent",
})
# Fields visited first so that walks follow source order where dataclass order does not.
_FIRST_FIELDS = {cst.FunctionDef: ("decorators",), cst.ClassDef: ("decorators",)}
_FIELDS: Dict[type, Tuple[str, ...]] = {}
_NODE_TYPES: Dict[type, bool] = {}
SCOPES = (cst.FunctionDef, cst.Lambda, cst.ClassDef)


def fields_of(kind: type) -> Tuple[str, ...]:
    """Names of the fields of node type ``kind`` that may hold child nodes, in source order."""
    names = _FIELDS.get(kind)
    if names is None:
        first = _FIRST_FIELDS.get(kind, ())
        rest = [f.name for f in dataclasses.fields(kind)  # type: ignore[arg-type]
                if not f.name.startswith("whitespace") and f.name not in SKIPPED_FIELDS and f.name not in first]
        names = _FIELDS[kind] = (*first, *rest)
    return names


def is_node(kind: type) -> bool:
    """``issubclass(kind, cst.CSTNode)``, cached: the ABC check is otherwise a walk's main cost."""
    known = _NODE_TYPES.get(kind)
    if known is None:
        known = _NODE_TYPES[kind] = issubclass(kind, cst.CSTNode)
    return known


def child_nodes(node: cst.CSTNode) -> Iterator[cst.CSTNode]:
    """The child nodes of ``node`` in source order, without whitespace and punctuation."""
    for name in fields_of(type(node)):
        value = getattr(node, name)
        kind = type(value)
        if kind is tuple or kind is list:
            for item in value:
                if is_node(type(item)):
                    yield item
        elif is_node(kind):
            yield value


def walk_nodes(node: cst.CSTNode, *, into_scopes: bool = True) -> Iterator[cst.CSTNode]:
    """``node`` and every node below it, depth first; nested defs/lambdas/classes only if ``into_scopes``."""
    stack = [node]
    while stack:
        current = stack.pop()
        yield current
        children = list(child_nodes(current))
        if not into_scopes:
            children = [child for child in children if not isinstance(child, SCOPES)]
        stack.extend(reversed(children))
