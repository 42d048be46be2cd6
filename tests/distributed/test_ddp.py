"""The DistributedDataParallel reference loop (gloo, two processes on CPU) under both detectors.

Findings made in the ranks reach the test through the runtime's wrapper of
``torch.multiprocessing.start_processes`` (pytest_trainsafe/runtime/distributed.py),
each tagged with its rank. The ranks are started with ``fork`` in most tests:
a ``spawn``-ed rank imports torch (and DDP imports torch._dynamo) from scratch,
several seconds on an idle machine and close to a minute on a loaded one. One
test goes through ``torch.multiprocessing.spawn`` itself, the way a user's
script does, and proves that a spawned rank's finding comes back.

An injected copy of the loop is written under an importable name to a directory
on ``sys.path``: a spawned rank imports ``_worker``'s module by name, as it
would import a user's training script.
"""

from __future__ import annotations

import importlib
import importlib.util
import math
import sys
from pathlib import Path
from types import ModuleType
from typing import Iterator, List, Optional

import pytest

from helpers import lint, watch
from pytest_trainsafe.finding import Finding
from pytest_trainsafe.loops.inject import clean, inject

torch = pytest.importorskip("torch")
dist = pytest.importorskip("torch.distributed")

pytestmark = [
    pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="no gloo backend"),
    pytest.mark.skipif(sys.platform != "linux", reason="the fork start method is Linux-only"),
]

SOURCE = Path(importlib.util.find_spec("pytest_trainsafe.loops.ddp").origin).read_text(encoding="utf-8")


def _line(source: str, text: str) -> int:
    """The 1-based number of the only line of ``source`` that contains ``text``."""
    numbers = [n for n, line in enumerate(source.splitlines(), start=1) if text in line]
    assert len(numbers) == 1, (text, numbers)
    return numbers[0]


#: Where each injected bug must be reported: the line a user must change (the line
#: iterating the loader that replays its order; the step that consumes stale gradients).
BATCH_LOOP = _line(SOURCE, "for x, y in loader:")
STEP = _line(SOURCE, "optimizer.step()")


@pytest.fixture
def loop_copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator:
    """``make(code)``: the loop with ``code``'s bug (None: none), imported from an importable file."""
    made: List[str] = []

    def make(code: Optional[str]) -> ModuleType:
        name = f"trainsafe_ddp_{(code or 'clean').lower()}"
        (tmp_path / f"{name}.py").write_text(clean(SOURCE) if code is None else inject(SOURCE, code), encoding="utf-8")
        made.append(name)
        return importlib.import_module(name)

    monkeypatch.syspath_prepend(str(tmp_path))  # inherited by spawned ranks (multiprocessing passes sys.path)
    yield make
    for name in made:
        sys.modules.pop(name, None)


def _by_rank(findings: List[Finding], code: str, path: str, line: int) -> None:
    """Exactly one ``code`` finding per rank, at ``path:line``, the rank in both ``extra`` and ``detail``."""
    assert {f.code for f in findings} == {code}, [f.format() for f in findings]
    assert sorted(f.extra.get("rank") for f in findings) == [0, 1]
    for finding in findings:
        assert (Path(finding.path), finding.line) == (Path(path), line), finding.format()
        assert finding.detail.startswith(f"rank {finding.extra['rank']}: ")


# -- static ---------------------------------------------------------------------------


def test_the_linter_is_silent_on_the_ddp_loop() -> None:
    assert lint(SOURCE) == []


@pytest.mark.parametrize("code, line", [("TS017", BATCH_LOOP), ("TS001", STEP)])
def test_the_linter_reports_the_injected_bug_on_the_runtime_line(code: str, line: int) -> None:
    assert [(f.code, f.line) for f in lint(inject(SOURCE, code))] == [(code, line)]


# -- runtime --------------------------------------------------------------------------


def test_the_monitor_is_silent_on_the_ddp_loop() -> None:
    from pytest_trainsafe.loops import ddp

    results = {}
    findings = watch(lambda: results.update(ddp.run(start_method="fork")))
    assert [f.format() for f in findings] == []
    assert math.isfinite(results["train_loss"])


def test_a_rank_that_replays_its_shuffle_is_reported_with_its_rank(loop_copy) -> None:
    module = loop_copy("TS017")
    _by_rank(watch(module.run, start_method="fork"), "TS017", module.__file__, BATCH_LOOP)


def test_stale_gradients_under_ddp_are_reported_from_every_rank(loop_copy) -> None:
    module = loop_copy("TS001")
    _by_rank(watch(module.run, start_method="fork"), "TS001", module.__file__, STEP)


def test_a_finding_comes_back_from_ranks_started_by_torch_multiprocessing_spawn(loop_copy) -> None:
    """The user's way: ``mp.spawn(_worker, ...)``, fresh interpreters, nothing else reported."""
    module = loop_copy("TS017")
    _by_rank(watch(module.run), "TS017", module.__file__, BATCH_LOOP)


def test_pytest_trainsafe_fails_a_ddp_test_and_names_each_rank(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(trainsafe_ddp_e2e=inject(SOURCE, "TS017"))
    pytester.makepyfile(test_train="""
        from trainsafe_ddp_e2e import run

        def test_trains():
            run(start_method="fork")
    """)
    pytester.syspathinsert()
    try:
        result = pytester.runpytest_inprocess("--trainsafe", "-p", "no:cacheprovider")
    finally:
        sys.modules.pop("trainsafe_ddp_e2e", None)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([
        "*trainsafe found 2 training pitfall(s):",
        f"trainsafe_ddp_e2e.py:{BATCH_LOOP}: TS017 *(rank 0: *",
        f"trainsafe_ddp_e2e.py:{BATCH_LOOP}: TS017 *(rank 1: *",
    ])
