"""Every example script, checked by both detectors, whatever scripts exist.

``examples/bad/tsNNN_<name>.py`` is a realistic buggy script: the linter must
report exactly its lines marked ``# expect: TSNNN``, and running its ``main()``
under the monitor must report TSNNN when the rule has a runtime check (at a
marked line where the rule has both detectors: the two sides agree on the line
to change). ``examples/fixed/tsNNN_<name>.py`` is the same script corrected:
nothing from either side.

Then the example model repository, as its CI runs it: ``trainsafe lint`` finds
nothing, and ``pytest --trainsafe`` passes.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Dict, Iterator, List, Set

import pytest

from helpers import expected, lint, load_script, single_thread, watch_outcome
from pytest_trainsafe import detectors
from pytest_trainsafe.finding import Finding

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
BAD = sorted((EXAMPLES / "bad").glob("*.py"))
FIXED = sorted((EXAMPLES / "fixed").glob("*.py"))
MODEL_REPO = EXAMPLES / "model_repo"
_NAME = re.compile(r"^ts(\d{3})_\w+$")
#: Codes that a bad example's bug may also truthfully trigger. A layer built in forward() and
#: kept (``self.head = nn.Linear(...)`` inside forward) holds parameters that get gradients and
#: belong to no optimizer: TS015's statement, on the same line.
ALSO_TRUE: Dict[str, Set[str]] = {"TS002": {"TS015"}}


def _ids(paths: List[Path]) -> List[str]:
    return [path.stem for path in paths]


def _code_of(script: Path) -> str:
    match = _NAME.match(script.stem)
    assert match, f"{script.name}: example scripts are named tsNNN_<rule_name>.py"
    return f"TS{match.group(1)}"


@pytest.fixture
def one_thread() -> Iterator[None]:
    """Tiny models run fastest on one thread, above all on a shared, busy machine."""
    pytest.importorskip("torch")
    with single_thread():
        yield


def _run_main(script: Path, *, may_raise: bool) -> List[Finding]:
    module = load_script(script)
    assert callable(getattr(module, "main", None)), f"{script.name} defines no main()"

    try:
        findings, error = watch_outcome(module.main)
        if error is not None and not may_raise:
            raise error  # a fixed script must run cleanly
        return findings
    finally:
        sys.modules.pop(module.__name__, None)


# -- the linter -----------------------------------------------------------------------


@pytest.mark.parametrize("script", BAD, ids=_ids(BAD))
def test_the_linter_reports_exactly_the_marked_lines_of_a_bad_example(script: Path) -> None:
    source = script.read_text(encoding="utf-8")
    found = {(f.line, f.code) for f in lint(source, path=str(script))}
    assert sorted(found) == sorted(expected(source))


@pytest.mark.parametrize("script", FIXED, ids=_ids(FIXED))
def test_the_linter_is_silent_on_a_fixed_example(script: Path) -> None:
    assert [f.format() for f in lint(script.read_text(encoding="utf-8"), path=str(script))] == []


# -- the runtime monitor --------------------------------------------------------------


@pytest.mark.parametrize("script", BAD, ids=_ids(BAD))
def test_the_monitor_reports_a_bad_example(script: Path, one_thread: None) -> None:
    code = _code_of(script)
    marks = expected(script.read_text(encoding="utf-8"))
    findings = _run_main(script, may_raise=True)
    codes = {f.code for f in findings}
    # A buggy script may carry a second, marked bug; anything else is a false alarm.
    allowed: Set[str] = {code} | {c for _, c in marks} | ALSO_TRUE.get(code, set())
    assert codes <= allowed, [f.format() for f in findings]
    if code not in detectors.runtime_codes():
        return
    own = [f for f in findings if f.code == code]
    assert own, f"{code} was not reported at runtime"
    assert {Path(f.path).resolve() for f in own} == {script.resolve()}
    marked_lines = {line for line, c in marks if c == code}
    if marked_lines:  # both detectors exist: they must point at the same line
        assert {f.line for f in own} <= marked_lines


@pytest.mark.parametrize("script", FIXED, ids=_ids(FIXED))
def test_the_monitor_is_silent_on_a_fixed_example(script: Path, one_thread: None) -> None:
    assert [f.format() for f in _run_main(script, may_raise=False)] == []


def test_every_bad_example_has_its_fix() -> None:
    assert {p.name for p in BAD} <= {p.name for p in FIXED}
    for script in BAD + FIXED:
        _code_of(script)


# -- the example model repository -------------------------------------------------------


def test_the_linter_finds_nothing_in_the_model_repository(capsys: pytest.CaptureFixture) -> None:
    from trainsafe_lint.cli import main

    status = main(["lint", "--no-cache", str(MODEL_REPO)])
    out, err = capsys.readouterr()
    assert status == 0, out + err
    assert " TS0" not in out and err == ""


def test_the_model_repository_passes_under_pytest_trainsafe() -> None:
    pytest.importorskip("torch")
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONDONTWRITEBYTECODE": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "--trainsafe", "-p", "no:cacheprovider", str(MODEL_REPO / "tests")],
        cwd=MODEL_REPO, capture_output=True, text=True, env=environment, timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "trainsafe: on" in result.stdout
    assert re.search(r"\b\d+ passed\b", result.stdout), result.stdout
