"""A whole lint run's result and its output formats."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable, Dict, List

from pytest_trainsafe.finding import Finding

from .engine import FileResult, LintError


@dataclass
class Report:
    findings: List[Finding] = field(default_factory=list)
    errors: List[LintError] = field(default_factory=list)
    files: int = 0

    def add(self, result: FileResult) -> None:
        self.files += 1
        self.findings.extend(result.findings)
        self.errors.extend(result.errors)

    @property
    def exit_code(self) -> int:
        """0 clean, 1 findings, 2 a file could not be checked (that outranks findings)."""
        if self.errors:
            return 2
        return 1 if self.findings else 0


def format_text(report: Report) -> str:
    lines = [finding.format(with_hint=True) for finding in report.findings]
    lines += [f"{error.path}:{error.line}: error: {error.message}" for error in report.errors]
    summary = f"{len(report.findings)} finding(s) in {report.files} file(s) checked"
    if report.errors:
        summary += f", {len(report.errors)} error(s)"
    lines.append(summary + ".")
    return "\n".join(lines)


def format_json(report: Report) -> str:
    return json.dumps({
        "findings": [
            {"code": f.code, "name": f.name, "path": f.path, "line": f.line, "col": f.col, "message": f.message}
            for f in report.findings
        ],
        "errors": [{"path": e.path, "line": e.line, "message": e.message} for e in report.errors],
        "files": report.files,
    }, indent=2)


def format_statistics(report: Report) -> str:
    counts = Counter((f.code, f.name) for f in report.findings)
    return "\n".join(f"{count:5d}  {code}  {name}" for (code, name), count in sorted(counts.items()))


FORMATTERS: Dict[str, Callable[[Report], str]] = {"text": format_text, "json": format_json}
