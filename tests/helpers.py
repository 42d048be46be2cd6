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


def watch(function, *args, codes: Optional[Sequence[str]] = None, **kwargs) -> List[Finding]:
    """Run ``function(*args, **kwargs)`` under the runtime monitor; its findings (exceptions propagate)."""
    from pytest_trainsafe.runtime.monitor import Monitor, runtime_checks

    monitor = Monitor(codes or list(runtime_checks()))
    monitor.start()
    try:
        function(*args, **kwargs)
    finally:
        monitor.stop()
    return monitor.findings


def watch_codes(function, *args, codes: Optional[Sequence[str]] = None, **kwargs) -> Set[str]:
    return {f.code for f in watch(function, *args, codes=codes, **kwargs)}


def load_script(path, name: Optional[str] = None):
    """Import a script file as a fresh module (its ``if __name__ == '__main__'`` block does not run)."""
    import importlib.util
    import sys
    from pathlib import Path

    path = Path(path)
    module_name = name or f"trainsafe_example_{path.parent.name}_{path.stem}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module
