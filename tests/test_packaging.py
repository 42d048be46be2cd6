"""Packaging promises: cheap plugin import, the linter's import name, the entry points."""

from __future__ import annotations

import subprocess
import sys
from importlib import metadata


def _imported_after(statement: str) -> set:
    code = f"import sys; {statement}; print(' '.join(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return set(out.split())


def test_importing_the_plugin_imports_neither_torch_nor_libcst() -> None:
    modules = _imported_after("import pytest_trainsafe.plugin")
    assert "pytest_trainsafe.plugin" in modules
    assert "torch" not in modules
    assert "libcst" not in modules


def test_the_linter_imports_without_torch() -> None:
    modules = _imported_after("import trainsafe_lint.cli, trainsafe_lint.rules as r; r.all_rules()")
    assert "libcst" in modules
    assert "torch" not in modules


def test_the_linter_is_not_installed_as_a_top_level_lint_module() -> None:
    distribution = metadata.distribution("pytest-trainsafe")
    top_level = {name for name in (distribution.read_text("top_level.txt") or "").split()}
    assert "lint" not in top_level
    assert subprocess.run([sys.executable, "-c", "import lint"], capture_output=True, cwd="/").returncode != 0


def test_entry_points_name_the_plugin_and_the_command() -> None:
    entry_points = metadata.distribution("pytest-trainsafe").entry_points
    assert {(e.group, e.name, e.value) for e in entry_points} >= {
        ("pytest11", "trainsafe", "pytest_trainsafe.plugin"),
        ("console_scripts", "trainsafe", "trainsafe_lint.cli:main"),
    }
