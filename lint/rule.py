"""The base class of a static rule, and the per-file context rules see.

A rule is one class in ``rules/tsNNN_<name>.py`` (Fixit's shape): ``visit_<Node>``
/ ``leave_<Node>`` methods called during the single shared traversal, plus
``VALID`` / ``INVALID`` source examples that the test suite turns into tests.
In ``INVALID`` examples, each line that must be reported ends in
``# expect: TSNNN``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, List, Optional, Sequence, Tuple, Type, TypeVar

import libcst as cst

from .names import Resolver, canonical

N = TypeVar("N", bound=cst.CSTNode)


@dataclass(frozen=True)
class Fix:
    """Replace the reported node with ``replacement``.

    ``safe`` fixes cannot change what the program computes and are applied by
    ``--fix``; the others need ``--unsafe-fixes`` too.
    """

    replacement: cst.CSTNode
    title: str
    safe: bool = True


@dataclass
class RawFinding:
    code: str
    node: cst.CSTNode
    detail: str
    fix: Optional[Fix] = None


class FileContext:
    """What every rule may ask about the file being linted, at the current node."""

    def __init__(self, path: str, source: str) -> None:
        self.path = path
        self.source = source
        self.resolver = Resolver()
        #: The nodes from the module down to the node being visited (inclusive).
        self.stack: List[cst.CSTNode] = []
        self.raw_findings: List[RawFinding] = []

    def report(self, code: str, node: cst.CSTNode, detail: str = "", fix: Optional[Fix] = None) -> None:
        self.raw_findings.append(RawFinding(code, node, detail, fix))

    def qualified_name(self, node: cst.BaseExpression) -> Optional[str]:
        """The import-resolved dotted name of a Name/Attribute (``torch.nn.Linear``), or None."""
        return canonical(self.resolver.qualified_name(node))

    def is_builtin(self, node: cst.BaseExpression, name: str) -> bool:
        return self.resolver.is_builtin(node, name)

    def nearest(self, kind: Type[N], skip: int = 0) -> Optional[N]:
        """The innermost enclosing node of ``kind`` (ancestors only when ``skip`` is 1)."""
        for node in reversed(self.stack[: len(self.stack) - skip] if skip else self.stack):
            if isinstance(node, kind):
                return node
        return None

    def ancestors(self) -> Sequence[cst.CSTNode]:
        """Enclosing nodes, innermost first, excluding the current node."""
        return self.stack[-2::-1]


class LintRule:
    """One rule's static side. One instance per file; state on ``self`` is per file."""

    CODE: ClassVar[str]
    #: Substrings of which at least one must occur in a file for the rule to run on it
    #: (a cheap pre-filter: most files cannot contain most findings). Empty: always run.
    TRIGGERS: ClassVar[Tuple[str, ...]] = ()
    VALID: ClassVar[List[str]] = []
    INVALID: ClassVar[List[str]] = []

    def __init__(self, context: FileContext) -> None:
        self.context = context

    def report(self, node: cst.CSTNode, detail: str = "", fix: Optional[Fix] = None) -> None:
        self.context.report(self.CODE, node, detail, fix)

    @classmethod
    def wants(cls, source: str) -> bool:
        return not cls.TRIGGERS or any(trigger in source for trigger in cls.TRIGGERS)
