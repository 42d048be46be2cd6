"""``--fix`` / ``--diff``: rewrite files with the rules' fixes, or show what would change."""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import List, Sequence

from .config import Config
from .engine import decode, fix_source
from .results import LintError
from .runner import rule_types


@dataclass
class FixRun:
    diffs: List[str] = field(default_factory=list)
    errors: List[LintError] = field(default_factory=list)
    fixed: int = 0  # number of fixes applied (or that would be, with --diff)


def fix_files(files: Sequence[str], config: Config, unsafe: bool, write: bool) -> FixRun:
    types = rule_types(config.codes)
    outcome = FixRun()
    for path in files:
        ignored = set(config.ignored_codes_for(path))
        try:
            with open(path, "rb") as handle:
                original = decode(handle.read())
        except (OSError, UnicodeDecodeError, SyntaxError):
            continue  # the lint run that follows reports it
        result = fix_source(original, path, [t for t in types if t.CODE not in ignored], unsafe=unsafe)
        if result.error:
            outcome.errors.append(LintError(path, 1, result.error))
        if result.source == original:
            continue
        outcome.fixed += len(result.applied)
        if write:
            with open(path, "w", encoding="utf-8", newline="") as handle:
                handle.write(result.source)
        else:
            outcome.diffs.append("".join(difflib.unified_diff(
                original.splitlines(keepends=True), result.source.splitlines(keepends=True),
                fromfile=f"a/{path}", tofile=f"b/{path}")))
    return outcome
