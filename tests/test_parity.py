"""Parity: each rule's documented Example is caught by every detector the rule has, and the
documented fix ("Use instead") by none. The docs are the contract users read; this keeps them true."""

from __future__ import annotations

import re
import sys
import textwrap
from pathlib import Path

import pytest

from helpers import load_script, lint, watch
from pytest_trainsafe import detectors
from pytest_trainsafe.catalog import RULES

pytest.importorskip("torch")


def _block(doc: str, section: str) -> str:
    match = re.search(rf"^## {re.escape(section)}\n(.*?)(?=^## |\Z)", doc, flags=re.MULTILINE | re.DOTALL)
    assert match, f"no section {section!r}"
    code = re.search(r"```python\n(.*?)```", match.group(1), flags=re.DOTALL)
    assert code, f"section {section!r} has no python block"
    return code.group(1)


def _documented() -> list:
    return [code for code in RULES if code in detectors.static_codes() | detectors.runtime_codes()]


def _static_codes(source: str) -> set:
    return {f.code for f in lint(source)}


def _runtime_codes(source: str, tmp_path: Path, name: str) -> set:
    script = tmp_path / f"{name}.py"
    script.write_text(source)
    module = load_script(script, name=f"trainsafe_parity_{name}")
    try:
        def run() -> None:
            try:
                module.main()
            except Exception:
                pass  # a device mismatch crashes in torch; its finding is recorded before
        return {f.code for f in watch(run)}
    finally:
        sys.modules.pop(f"trainsafe_parity_{name}", None)


@pytest.mark.parametrize("code", _documented())
def test_the_documented_example_is_caught_by_every_detector(code: str, tmp_path: Path) -> None:
    example = _block(RULES[code].doc(), "Example")
    if code in detectors.static_codes() and "S" in RULES[code].required:
        assert code in _static_codes(example)
    if code in detectors.runtime_codes():
        assert code in _runtime_codes(example, tmp_path, f"{code}_example")


@pytest.mark.parametrize("code", _documented())
def test_the_documented_fix_is_clean_for_every_detector(code: str, tmp_path: Path) -> None:
    fixed = _block(RULES[code].doc(), "Use instead")
    assert _static_codes(fixed) == set()
    if detectors.runtime_codes():
        assert _runtime_codes(fixed, tmp_path, f"{code}_fixed") == set()
