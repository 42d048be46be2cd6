"""``pytest --trainsafe -n 2`` (pytest-xdist) reports exactly what a serial run reports.

The test files avoid optimizers on purpose: their first use imports torch._dynamo,
seconds per worker process.

Findings are made in the xdist workers and travel to the controller in each
test report's ``user_properties``; the controller writes the summary and the
JSON file.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any, Dict, List, Tuple

import pytest

pytest.importorskip("torch")
pytest.importorskip("xdist")

#: Several files and several tests per file, so that both workers get some of each.
FILES = {
    "test_sums": """
        import torch

        def test_builtin_sum():
            assert float(sum(torch.ones(4))) == 4.0

        def test_tensor_sum():
            assert float(torch.ones(4).sum()) == 4.0

        def test_builtin_sum_of_rows():
            assert sum(torch.ones(2, 3)).shape == (3,)
    """,
    "test_losses": """
        import torch
        import torch.nn as nn
        import torch.nn.functional as F

        def _batch():
            torch.manual_seed(0)
            return nn.Linear(4, 3), torch.randn(8, 4), torch.randint(0, 3, (8,))

        def test_softmax_fed_to_cross_entropy():
            model, x, y = _batch()
            F.cross_entropy(F.softmax(model(x), dim=1), y).backward()

        def test_logits_fed_to_cross_entropy():
            model, x, y = _batch()
            F.cross_entropy(model(x), y).backward()
    """,
    "test_clean": """
        import torch

        def test_nothing_to_train():
            assert torch.zeros(2).tolist() == [0.0, 0.0]

        def test_plain_python():
            assert sum([1, 2, 3]) == 6
    """,
}

def _run(pytester: pytest.Pytester, name: str, *extra: str) -> Tuple[pytest.RunResult, List[Dict[str, Any]]]:
    report = pytester.path / f"{name}.json"
    # Plugins this comparison does not need cost seconds per xdist worker on a busy machine.
    args = ("--trainsafe", "--trainsafe-json", str(report), "-p", "no:cacheprovider", "-p", "no:hypothesispytest",
            "-p", "no:anyio", *extra)
    # xdist starts processes: a subprocess run. The serial run can stay in this process (torch is loaded).
    result = pytester.runpytest_subprocess(*args) if extra else pytester.runpytest_inprocess(*args)
    return result, json.loads(report.read_text(encoding="utf-8"))["findings"]


def _rows(findings: List[Dict[str, Any]]) -> Counter:
    """The findings as a multiset: the same findings in any order compare equal."""
    return Counter(tuple(sorted(f.items())) for f in findings)


def test_xdist_reports_the_same_findings_as_a_serial_run(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(**FILES)

    serial, serial_findings = _run(pytester, "serial")
    parallel, parallel_findings = _run(pytester, "parallel", "-n", "2")

    serial.assert_outcomes(passed=4, failed=3)
    parallel.assert_outcomes(passed=4, failed=3)
    assert {(f["nodeid"], f["code"]) for f in serial_findings} == {
        ("test_sums.py::test_builtin_sum", "TS005"),
        ("test_sums.py::test_builtin_sum_of_rows", "TS005"),
        ("test_losses.py::test_softmax_fed_to_cross_entropy", "TS010"),
    }
    assert _rows(parallel_findings) == _rows(serial_findings)
    # The controller, not a worker, prints the session's summary, counted over both workers.
    for result in (serial, parallel):
        result.stdout.fnmatch_lines(["*= trainsafe =*", "TS005 builtin-sum-on-tensor: 2", "TS010 softmax-before-cross-entropy: 1"])
    parallel.stdout.fnmatch_lines(["*2 workers*"])  # xdist really ran
