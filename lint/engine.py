"""Lint one file: parse once, run every selected rule in one traversal, locate findings.

The traversal is a hand-written walk over the nodes' dataclass fields that
dispatches straight to the rules' methods by node type; positions are computed only for
files that have findings, and a rule that crashes on a file is switched off for
that file and reported as an error, never stopping the others.
"""

from __future__ import annotations

import ast
import io
import re
import tokenize
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Type

import libcst as cst
from libcst.metadata import MetadataWrapper, PositionProvider

from pytest_trainsafe.finding import Finding

from .results import FileResult, LintError
from .rule import FileContext, LintRule, RawFinding
from .tree import fields_of, is_node, walk_nodes

_NOQA = re.compile(r"#\s*noqa(?::[\s]?(?P<codes>[A-Z]+[0-9]+(?:[,\s]+[A-Z]+[0-9]+)*))?", re.IGNORECASE)


class _Walker:
    """Depth-first walk calling the rules' ``visit_<Node>``/``leave_<Node>`` methods by node type."""

    def __init__(self, context: FileContext, rules: Sequence[LintRule],
                 on_crash: Callable[[LintRule, BaseException], None]) -> None:
        self._context = context
        self._on_crash = on_crash
        self._visits: Dict[type, List[Callable]] = defaultdict(list)
        self._leaves: Dict[type, List[Callable]] = defaultdict(list)
        self._owner: Dict[Callable, LintRule] = {}
        for rule in rules:
            for attribute in dir(rule):
                prefix, _, node_name = attribute.partition("_")
                if prefix not in ("visit", "leave") or not node_name:
                    continue
                node_type = getattr(cst, node_name, None)
                if not isinstance(node_type, type):
                    continue
                method = getattr(rule, attribute)
                (self._visits if prefix == "visit" else self._leaves)[node_type].append(method)
                self._owner[method] = rule

    def _run(self, methods: List[Callable], node: cst.CSTNode) -> None:
        for method in list(methods):
            try:
                method(node)
            except Exception as exc:  # one rule's bug must not stop the others
                rule = self._owner[method]
                self._disable(rule)
                self._on_crash(rule, exc)

    def _disable(self, rule: LintRule) -> None:
        for table in (self._visits, self._leaves):
            for methods in table.values():
                methods[:] = [m for m in methods if self._owner[m] is not rule]

    def walk(self, node: cst.CSTNode) -> None:
        context = self._context
        kind = type(node)
        scoped = kind is cst.FunctionDef or kind is cst.Lambda or kind is cst.ClassDef or kind is cst.Module
        if scoped:
            if kind is cst.ClassDef:
                context.resolver.push_class(node)  # type: ignore[arg-type]
            elif kind is cst.Module:
                context.resolver.push_module(node)  # type: ignore[arg-type]
            else:
                context.resolver.push_function(node)  # type: ignore[arg-type]
        context.stack.append(node)
        methods = self._visits.get(kind)
        if methods:
            self._run(methods, node)
        for name in fields_of(kind):
            value = getattr(node, name)
            value_kind = type(value)
            if value_kind is tuple or value_kind is list:
                for child in value:
                    if is_node(type(child)):
                        self.walk(child)
            elif is_node(value_kind):
                self.walk(value)
        methods = self._leaves.get(kind)
        if methods:
            self._run(methods, node)
        context.stack.pop()
        if scoped and kind is not cst.Module:
            context.resolver.pop()


def decode(data: bytes) -> str:
    """Source text per PEP 263 (a coding cookie, else UTF-8); raises UnicodeDecodeError/SyntaxError."""
    encoding, _ = tokenize.detect_encoding(io.BytesIO(data).readline)
    text = data.decode(encoding)
    return text[1:] if text.startswith("\ufeff") else text


def _noqa_allows(line_text: str, code: str) -> bool:
    """True if the line's ``# noqa`` comment (bare, or naming ``code``) suppresses it."""
    match = _NOQA.search(line_text)
    if match is None:
        return False
    codes = match.group("codes")
    return codes is None or code in re.split(r"[,\s]+", codes.upper())


def lint_source(source: str, path: str, rule_types: Iterable[Type[LintRule]]) -> FileResult:
    """Lint ``source`` (the text of ``path``) with the given rules."""
    return _analyse(source, path, rule_types)[0]


def _analyse(source: str, path: str,
             rule_types: Iterable[Type[LintRule]]) -> Tuple[FileResult, Optional[cst.Module], List[RawFinding]]:
    """The file's result, plus its tree and the raw findings that survived ``# noqa`` (for fixes)."""
    result = FileResult(path)
    module: Optional[cst.Module] = None
    active = [rule_type for rule_type in rule_types if rule_type.wants(source)]
    if not active:
        # No rule can fire here, but a file that does not parse must still be
        # reported: CPython's own parser checks that for a fraction of libcst's cost.
        try:
            compile(source, path, "exec", ast.PyCF_ONLY_AST, dont_inherit=True)
        except SyntaxError as exc:
            result.errors.append(LintError(path, exc.lineno or 1, f"syntax error: {exc.msg}"))
        except ValueError as exc:  # e.g. a NUL byte in the source
            result.errors.append(LintError(path, 1, f"cannot parse: {exc}"))
        return result, None, []
    try:
        module = cst.parse_module(source)
    except cst.ParserSyntaxError as exc:
        result.errors.append(LintError(path, exc.raw_line, f"syntax error: {exc.message}"))
        return result, None, []
    except Exception as exc:  # libcst can raise other errors on exotic input
        result.errors.append(LintError(path, 1, f"cannot parse: {type(exc).__name__}: {exc}"))
        return result, None, []

    context = FileContext(path, source)
    rules = [rule_type(context) for rule_type in active]
    crashes: List[tuple] = []

    def crashed(rule: LintRule, exc: BaseException) -> None:
        crashes.append((rule.CODE, exc, context.stack[-1] if context.stack else module))

    try:
        _Walker(context, rules, crashed).walk(module)
    except RecursionError:
        result.errors.append(LintError(path, 1, "too deeply nested to analyse"))
        return result, module, []
    if not (context.raw_findings or crashes):
        return result, module, []
    positions = locate(module, [raw.node for raw in context.raw_findings] + [node for _, _, node in crashes])
    for code, exc, node in crashes:
        line = positions[node][0] if node in positions else 1
        result.errors.append(LintError(
            path, line, f"rule {code} crashed ({type(exc).__name__}: {exc}); the other rules still ran"))
    kept = _unsuppressed(positions, source, context.raw_findings)
    result.findings = _unique(sorted(
        (Finding(raw.code, path, positions[raw.node][0], positions[raw.node][1] + 1, raw.detail)
         for raw in kept), key=lambda f: (f.line, f.col, f.code)))
    return result, module, kept


def locate(module: cst.Module, nodes: Sequence[cst.CSTNode]) -> Dict[cst.CSTNode, Tuple[int, int]]:
    """(line, 0-based column) of each node.

    libcst's PositionProvider tracks every node of the whole file, several
    times the cost of parsing it; here only the top-level statements that hold
    a wanted node are positioned, each on its own, and shifted by the number of
    lines before it (plain code generation, no tracking).
    """
    wanted = set(nodes)
    found: Dict[cst.CSTNode, Tuple[int, int]] = {}
    if module in wanted:
        found[module] = (1, 0)
    holders: Dict[int, List[cst.CSTNode]] = {}
    for index, statement in enumerate(module.body):
        for node in walk_nodes(statement):
            if node in wanted:
                holders.setdefault(index, []).append(node)
    if not holders:
        return found
    line = 1 + sum(module.code_for_node(empty).count("\n") for empty in module.header)
    for index, statement in enumerate(module.body):
        if index in holders:
            alone = module.with_changes(body=[statement], header=[], footer=[])
            positions = MetadataWrapper(alone, unsafe_skip_copy=True).resolve(PositionProvider)
            for node in holders[index]:
                start = positions[node].start
                found[node] = (line + start.line - 1, start.column)
        line += module.code_for_node(statement).count("\n")
    return found


def _unsuppressed(positions: Mapping[cst.CSTNode, Tuple[int, int]], source: str,
                  raw_findings: List[RawFinding]) -> List[RawFinding]:
    """The raw findings whose line carries no ``# noqa`` that covers their code."""
    lines = source.splitlines()
    kept = []
    for raw in raw_findings:
        line = positions[raw.node][0]
        text = lines[line - 1] if 0 < line <= len(lines) else ""
        if not _noqa_allows(text, raw.code):
            kept.append(raw)
    return kept


def _unique(findings: List[Finding]) -> List[Finding]:
    seen = set()
    unique = []
    for finding in findings:
        key = (finding.code, finding.line, finding.col)
        if key not in seen:
            seen.add(key)
            unique.append(finding)
    return unique


def decode_and_lint(path: str, data: bytes, rule_types: Sequence[Type[LintRule]]) -> FileResult:
    """Lint a file's bytes; a decode problem becomes an error, never an exception."""
    try:
        source = decode(data)
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        return FileResult(path, errors=[LintError(path, line, f"not valid {exc.encoding}: {exc.reason}")])
    except SyntaxError as exc:  # a bad coding cookie
        return FileResult(path, errors=[LintError(path, exc.lineno or 1, f"bad encoding declaration: {exc.msg}")])
    return lint_source(source, path, rule_types)


class _Replace(cst.CSTTransformer):
    def __init__(self, replacements: Dict[cst.CSTNode, cst.CSTNode]) -> None:
        super().__init__()
        self._replacements = replacements

    def on_leave(self, original_node: cst.CSTNode, updated_node: cst.CSTNode):  # type: ignore[override]
        return self._replacements.get(original_node, updated_node)


@dataclass
class FixOutcome:
    source: str
    applied: List[str] = field(default_factory=list)  # fix titles, in order
    error: Optional[str] = None


def fix_source(source: str, path: str, rule_types: Sequence[Type[LintRule]], unsafe: bool = False,
               rounds: int = 4) -> FixOutcome:
    """Apply the available fixes (safe ones, or all with ``unsafe``) until none is left.

    Each round re-lints the fixed text; a round whose output would not parse is
    discarded and reported, so a fix can never leave a broken file behind.
    """
    outcome = FixOutcome(source)
    for _ in range(rounds):
        _, module, kept = _analyse(outcome.source, path, rule_types)
        fixable = [raw for raw in kept if raw.fix is not None and (raw.fix.safe or unsafe)]
        if module is None or not fixable:
            break
        replacements: Dict[cst.CSTNode, cst.CSTNode] = {}
        titles = []
        for raw in fixable:
            if raw.node not in replacements:
                replacements[raw.node] = raw.fix.replacement  # type: ignore[union-attr]
                titles.append(raw.fix.title)  # type: ignore[union-attr]
        new_source = module.visit(_Replace(replacements)).code
        try:  # the next round re-lints the fixed text with libcst
            compile(new_source, path, "exec", ast.PyCF_ONLY_AST, dont_inherit=True)
        except (SyntaxError, ValueError) as exc:
            outcome.error = f"a fix produced code that does not parse ({exc}); file left unchanged by it"
            break
        if new_source == outcome.source:
            break
        outcome.source = new_source
        outcome.applied.extend(titles)
    return outcome
