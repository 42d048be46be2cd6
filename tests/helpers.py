"""Helpers shared by the test suite (imported explicitly, not a plugin)."""

from __future__ import annotations

import re
import textwrap
from typing import List, Optional, Sequence, Set, Tuple

from pytest_trainsafe.finding import Finding

_EXPECT = re.compile(r"#\s*expect:\s*(?P<codes>TS\d{3}(?:[,\s]+TS\d{3})*)")


def lint(source: str, codes: Optional[Sequence[str]] = None, path: str = "example.py") -> List[Finding]:
    """Findings of the static rules (all, or ``codes``) on ``source`` (dedented)."""
    from trainsafe_lint.engine import lint_source
    from trainsafe_lint.rules import all_rules

    rules = all_rules()
    selected = [rules[c] for c in (codes or rules) if c in rules]
    result = lint_source(textwrap.dedent(source), path, selected)
    assert not result.errors, result.errors
    return result.findings


def found(source: str, codes: Optional[Sequence[str]] = None) -> Set[Tuple[int, str]]:
    """{(line, code)} the linter reports on ``source``."""
    return {(f.line, f.code) for f in lint(source, codes)}


def expected(source: str) -> Set[Tuple[int, str]]:
    """{(line, code)} marked in ``source`` with ``# expect: TSNNN`` comments."""
    marks = set()
    for number, line in enumerate(textwrap.dedent(source).splitlines(), start=1):
        match = _EXPECT.search(line)
        if match:
            marks.update((number, code) for code in re.split(r"[,\s]+", match.group("codes")))
    return marks
