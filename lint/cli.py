"""The ``trainsafe`` command: ``lint``, ``rule CODE`` and ``rules``."""

from __future__ import annotations

import argparse
import sys
from typing import List, Optional, Sequence

from pytest_trainsafe.catalog import RULES, UnknownCodeError, expand_codes
from pytest_trainsafe.detectors import sides


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="trainsafe", description="Catch PyTorch training-loop pitfalls.")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    lint = commands.add_parser("lint", help="lint Python files for training pitfalls")
    lint.add_argument("paths", nargs="*", default=["."], metavar="PATH", help="files or directories (default: .)")
    lint.add_argument("--select", default=None, help="comma-separated codes or prefixes to check")
    lint.add_argument("--ignore", default=None, help="comma-separated codes or prefixes to skip")
    lint.add_argument("--format", choices=["text", "json"], default="text", help="output format")
    lint.add_argument("--statistics", action="store_true", help="print a count per code after the findings")

    rule = commands.add_parser("rule", help="print one rule's documentation")
    rule.add_argument("code", metavar="CODE", help="a code (TS001) or a rule name (zero-grad-missing)")

    commands.add_parser("rules", help="list every rule")
    return parser


def _split(value: Optional[str]) -> List[str]:
    return [part for part in (value or "").replace(",", " ").split() if part]


def _lint(args: argparse.Namespace) -> int:
    from .engine import lint_file
    from .files import discover
    from .report import FORMATTERS, Report, format_statistics
    from .engine import LintError
    from .rules import all_rules

    rules = all_rules()
    try:
        selected = expand_codes(_split(args.select), "--select") if args.select else [
            code for code, rule in RULES.items() if rule.default_enabled]
        ignored = set(expand_codes(_split(args.ignore), "--ignore"))
    except UnknownCodeError as exc:
        print(f"trainsafe: error: {exc}", file=sys.stderr)
        return 2
    rule_types = [rules[code] for code in selected if code in rules and code not in ignored]

    files, problems = discover(args.paths)
    report = Report()
    for path, problem in problems:
        report.errors.append(LintError(path, 0, problem))
    for path in files:
        report.add(lint_file(path, rule_types))
    print(FORMATTERS[args.format](report))
    if args.statistics and report.findings:
        print(format_statistics(report))
    return report.exit_code


def _rule(args: argparse.Namespace) -> int:
    try:
        (code,) = expand_codes([args.code], "the command line") if args.code.upper() != "TS" else ("",)
    except (UnknownCodeError, ValueError):
        print(f"trainsafe: error: unknown rule {args.code!r} (see `trainsafe rules`)", file=sys.stderr)
        return 2
    print(RULES[code].doc().rstrip())
    return 0


def _rules(_: argparse.Namespace) -> int:
    width = max(len(rule.name) for rule in RULES.values())
    for rule in RULES.values():
        state = "" if rule.default_enabled else "  (off by default)"
        print(f"{rule.code}  {rule.name:<{width}}  {sides(rule.code):<14}{state}".rstrip())
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    return {"lint": _lint, "rule": _rule, "rules": _rules}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
