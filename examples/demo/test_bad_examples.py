"""Runs every script in examples/bad: under ``pytest --trainsafe`` each test fails with its rule's code.

This is a demonstration, not part of trainsafe's own test suite (which checks
the same scripts with explicit assertions in tests/test_examples.py).
"""

import importlib.util
from pathlib import Path

import pytest

BAD = sorted((Path(__file__).parent.parent / "bad").glob("ts*.py"))


@pytest.mark.parametrize("script", BAD, ids=[p.stem for p in BAD])
def test_bad_example(script: Path) -> None:
    spec = importlib.util.spec_from_file_location(f"bad_{script.stem}", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    # A script that crashes (a device mismatch in torch, a module never initialised) fails
    # its test with that error; the plugin shows its finding beside it.
    module.main()
