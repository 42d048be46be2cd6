"""The bug-injection mechanism: marker comments in a reference loop's source become one rule's bug."""

from __future__ import annotations

import importlib.util
import textwrap
from pathlib import Path

import pytest

from pytest_trainsafe.loops import LOOPS, load, other_device
from pytest_trainsafe.loops.inject import clean, inject, injectable, injected_module

SOURCE = textwrap.dedent("""\
    import torch
    # inject TS004: import contextlib

    def train(model, optimizer, batches):
        for x, y in batches:
            optimizer.zero_grad(set_to_none=True)  # inject TS001: pass
            loss = model(x).sum()
            loss.backward()
            optimizer.step()

    @torch.no_grad()  # inject TS004:
    def evaluate(model, batches):
        with torch.no_grad():  # inject TS004: with contextlib.nullcontext():
            return [model(x) for x in batches]
""")


def _source(name: str) -> str:
    """A reference loop's source, read without importing it (and torch)."""
    return Path(importlib.util.find_spec(f"pytest_trainsafe.loops.{name}").origin).read_text(encoding="utf-8")


def test_the_marked_line_is_replaced_keeping_its_indentation() -> None:
    lines = inject(SOURCE, "TS001").splitlines()
    assert lines[5] == "        pass"


def test_every_line_marked_for_the_code_is_replaced() -> None:
    lines = inject(SOURCE, "TS004").splitlines()
    assert lines[1] == "import contextlib"  # a marker on its own line adds that line
    assert lines[10] == ""  # an empty replacement drops the code (here: a decorator)
    assert lines[12] == "    with contextlib.nullcontext():"


def test_lines_marked_for_other_codes_keep_their_code_without_the_marker() -> None:
    lines = inject(SOURCE, "TS001").splitlines()
    assert lines[1] == ""
    assert lines[10] == "@torch.no_grad()"
    assert lines[12] == "    with torch.no_grad():"


@pytest.mark.parametrize("code", [None, "TS001", "TS004"])
def test_every_marker_comment_is_removed_and_no_line_is_added_or_lost(code) -> None:
    result = clean(SOURCE) if code is None else inject(SOURCE, code)
    assert "inject" not in result
    assert len(result.splitlines()) == len(SOURCE.splitlines())
    compile(result, "<injected>", "exec")


def test_clean_leaves_the_correct_code() -> None:
    assert clean(SOURCE).splitlines()[5] == "        optimizer.zero_grad(set_to_none=True)"


def test_a_code_without_a_marker_is_refused() -> None:
    with pytest.raises(ValueError, match=r"no '# inject TS005:' marker.*injectable: TS001, TS004"):
        inject(SOURCE, "TS005")


def test_a_malformed_code_is_refused() -> None:
    with pytest.raises(ValueError, match="not a rule code"):
        inject(SOURCE, "ts001")


def test_injectable_lists_the_codes_with_markers() -> None:
    assert injectable(SOURCE) == {"TS001", "TS004"}
    assert injectable("x = 1  # an ordinary comment\n") == set()


def test_crlf_line_endings_are_kept() -> None:
    result = inject(SOURCE.replace("\n", "\r\n"), "TS001")
    assert result.splitlines(keepends=True)[5] == "        pass\r\n"


def test_every_bug_can_be_injected_into_the_mlp_loop() -> None:
    assert injectable(_source("mlp")) >= {"TS001", "TS002", "TS003", "TS004", "TS005"}


@pytest.mark.parametrize("name", LOOPS)
def test_every_injection_into_every_loop_compiles(name: str) -> None:
    source = _source(name)
    assert injectable(source), f"{name} has no injection marker"
    for code in injectable(source):
        result = inject(source, code)
        assert "inject" not in result
        compile(result, f"{name}_{code}.py", "exec")


def test_injected_module_imports_the_buggy_source_from_a_file(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    module = injected_module(load("mlp"), "TS001", tmp_path)
    path = Path(module.__file__)
    assert path.parent == tmp_path
    assert path.read_text(encoding="utf-8") == inject(_source("mlp"), "TS001")
    assert callable(module.run)
    assert module is not load("mlp")


def test_other_device_is_never_the_device_itself() -> None:
    assert other_device("cpu") == "meta"
    assert other_device("cuda") == "cpu"
    assert other_device("cuda:1") == "cpu"
