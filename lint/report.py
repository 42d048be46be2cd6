"""A whole lint run's result and its output formats."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable, Dict, List

from pytest_trainsafe.finding import Finding

from .results import FileResult, LintError


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




def _github_escape(text: str, property_value: bool = False) -> str:
    text = text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")
    return text.replace(":", "%3A").replace(",", "%2C") if property_value else text


def format_github(report: Report) -> str:
    """GitHub Actions workflow commands: each finding becomes an annotation on the PR diff."""
    lines = [
        f"::error file={_github_escape(f.path, True)},line={f.line},col={f.col},title={f.code}"
        f"::{_github_escape(f'{f.code} {f.message}')}"
        for f in report.findings
    ]
    lines += [
        f"::error file={_github_escape(e.path, True)},line={max(e.line, 1)},title=trainsafe"
        f"::{_github_escape(e.message)}"
        for e in report.errors
    ]
    return "\n".join(lines)


def format_sarif(report: Report) -> str:
    """SARIF 2.1.0: one run, every catalog rule with its help text, results pointing at rules by index."""
    from pytest_trainsafe import __version__
    from pytest_trainsafe.catalog import RULES

    codes = list(RULES)
    rules = [{
        "id": code,
        "name": rule.name,
        "shortDescription": {"text": rule.message},
        "help": {"text": f"{rule.hint}\n\nSee `trainsafe rule {code}`.", "markdown": rule.doc()},
        "defaultConfiguration": {"level": "error", "enabled": rule.default_enabled},
    } for code, rule in RULES.items()]
    results = [{
        "ruleId": f.code,
        "ruleIndex": codes.index(f.code),
        "level": "error",
        "message": {"text": f"{f.message}. Hint: {f.hint}"},
        "locations": [{"physicalLocation": {
            "artifactLocation": {"uri": f.path.replace("\\", "/")},
            "region": {"startLine": f.line, "startColumn": max(f.col, 1)},
        }}],
    } for f in report.findings]
    notifications = [{
        "level": "error",
        "message": {"text": e.message},
        "locations": [{"physicalLocation": {
            "artifactLocation": {"uri": e.path.replace("\\", "/")},
            **({"region": {"startLine": e.line}} if e.line > 0 else {}),
        }}],
    } for e in report.errors]
    return json.dumps({
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "version": "2.1.0",
        "runs": [{
            "tool": {"driver": {
                "name": "trainsafe", "version": __version__, "semanticVersion": __version__,
                "informationUri": "https://github.com/trainsafe/pytest-trainsafe", "rules": rules,
            }},
            "invocations": [{"executionSuccessful": not report.errors,
                             "toolExecutionNotifications": notifications}],
            "results": results,
        }],
    }, indent=2)


FORMATTERS: Dict[str, Callable[[Report], str]] = {
    "text": format_text, "json": format_json, "sarif": format_sarif, "github": format_github,
}
