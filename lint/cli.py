"""The ``trainsafe`` command: ``lint``, ``rule CODE`` and ``rules``."""

from __future__ import annotations

import argparse
import os
import sys
from typing import List, Optional, Sequence

from pytest_trainsafe.catalog import RULES, BY_NAME
from pytest_trainsafe.detectors import sides


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="trainsafe", description="Catch PyTorch training-loop pitfalls.")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    lint = commands.add_parser("lint", help="lint Python files for training pitfalls")
    lint.add_argument("paths", nargs="*", default=["."], metavar="PATH", help="files or directories (default: .)")
    lint.add_argument("--select", default=None, help="comma-separated codes or prefixes to check")
    lint.add_argument("--ignore", default=None, help="comma-separated codes or prefixes to skip")
    lint.add_argument("--extend-select", default=None, help="codes to add to the selection (e.g. off-by-default rules)")
    lint.add_argument("--per-file-ignores", action="append", default=None, metavar="GLOB:CODES",
                      help="skip codes in files matching a glob (repeatable)")
    lint.add_argument("--exclude", default=None, help="comma-separated globs of files/directories to skip")
    lint.add_argument("--force-exclude", action="store_true",
                      help="apply exclude to files named on the command line too (for pre-commit)")
    lint.add_argument("--config", default=None, metavar="PYPROJECT",
                      help="the pyproject.toml to read [tool.trainsafe] from (default: the nearest one)")
    lint.add_argument("--format", choices=["text", "json", "sarif", "github"], default="text", help="output format")
    lint.add_argument("--statistics", action="store_true", help="print a count per code after the findings")
    lint.add_argument("--jobs", "-j", type=int, default=0, help="worker processes (default: one per core)")
    lint.add_argument("--no-cache", action="store_true", help="neither read nor write the result cache")
    lint.add_argument("--fix", action="store_true", help="apply the fixes that cannot change behaviour")
    lint.add_argument("--diff", action="store_true", help="print the fixes as a diff instead of writing them")
    lint.add_argument("--unsafe-fixes", action="store_true", help="with --fix/--diff, apply every available fix")

    rule = commands.add_parser("rule", help="print one rule's documentation")
    rule.add_argument("code", metavar="CODE", help="a code (TS001) or a rule name (zero-grad-missing)")

    commands.add_parser("rules", help="list every rule")
    return parser


def _lint(args: argparse.Namespace) -> int:
    from . import config as configuration
    from .results import LintError
    from .files import discover
    from .report import FORMATTERS, format_statistics
    from .runner import run

    try:
        cli = {
            "select": configuration.parse_cli_codes(args.select),
            "ignore": configuration.parse_cli_codes(args.ignore),
            "extend-select": configuration.parse_cli_codes(args.extend_select),
            "per-file-ignores": configuration.parse_per_file_ignores(args.per_file_ignores),
            "exclude": configuration.parse_cli_codes(args.exclude),
        }
        config = configuration.load(cli, args.config)
    except configuration.ConfigError as exc:
        print(f"trainsafe: error: {exc}", file=sys.stderr)
        return 2

    files, problems = discover(args.paths, config.is_excluded, args.force_exclude)
    fix_errors: List[LintError] = []
    if args.diff or args.fix:
        from .fixing import fix_files

        fixes = fix_files(files, config, unsafe=args.unsafe_fixes, write=not args.diff)
        if args.diff:
            sys.stdout.write("".join(fixes.diffs))
            for error in fixes.errors:
                print(f"{error.path}:{error.line}: error: {error.message}", file=sys.stderr)
            print(f"{fixes.fixed} fix(es) available.", file=sys.stderr)
            return 1 if fixes.diffs else (2 if fixes.errors else 0)
        print(f"Fixed {fixes.fixed} finding(s).", file=sys.stderr)
        fix_errors = fixes.errors
    report = run(files, config, jobs=args.jobs, use_cache=not args.no_cache)
    report.errors[:0] = [LintError(path, 0, problem) for path, problem in problems] + fix_errors
    output = FORMATTERS[args.format](report)
    if output:
        print(output)
    if args.statistics and report.findings and args.format == "text":
        print(format_statistics(report))
    return report.exit_code


def _rule(args: argparse.Namespace) -> int:
    rule = RULES.get(args.code.upper()) or BY_NAME.get(args.code)
    if rule is None:
        print(f"trainsafe: error: unknown rule {args.code!r} (see `trainsafe rules`)", file=sys.stderr)
        return 2
    print(rule.doc().rstrip())
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
    try:
        return {"lint": _lint, "rule": _rule, "rules": _rules}[args.command](args)
    except BrokenPipeError:  # `trainsafe rule TS001 | head`: the reader left, which is fine
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
