"""The reference loops prove trainsafe end to end, on CPU and (where there is one) on CUDA.

For each loop: the correct loop gives no finding from either detector; each bug
injected into it (see pytest_trainsafe/loops/inject.py) is reported with its
code by every detector the rule has, and nothing else is reported.

Where a rule's static side is only best effort (RULES.md: "(S)"; TS003), the
linter is not required to catch the injected bug: ``x.to(other_device(device))``
names no device a linter could compare with. It must still report nothing else.
TS003's injected run crashes inside torch, as a real device mismatch does; the
finding is recorded before the crash, so the test catches the exception and
still asserts the finding.
"""

from __future__ import annotations

import importlib.util
import math
import runpy
import sys
from pathlib import Path
from typing import Iterator, List, Set, Tuple

import pytest

from conftest import devices
from helpers import lint, single_thread, watch
from pytest_trainsafe import detectors
from pytest_trainsafe.catalog import RULES
from pytest_trainsafe.finding import Finding
from pytest_trainsafe.loops import LOOPS, load
from pytest_trainsafe.loops.inject import inject, injectable, injected_module

torch = pytest.importorskip("torch")

# A check that crashes is skipped with a warning (never raised into user code); on the
# canonical loops that would be a silent hole in the net, so here it is an error.
pytestmark = pytest.mark.filterwarnings("error:trainsafe:RuntimeWarning")


def _source(name: str) -> str:
    """A reference loop's source, read without importing it (and torch)."""
    return Path(importlib.util.find_spec(f"pytest_trainsafe.loops.{name}").origin).read_text(encoding="utf-8")


CASES: List[Tuple[str, str]] = [(name, code) for name in LOOPS for code in sorted(injectable(_source(name)))]
CASE_IDS = [f"{name}-{code}" for name, code in CASES]


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """Tiny models run fastest on one thread, above all on a shared, busy machine."""
    with single_thread():
        yield


def _static_codes() -> Set[str]:
    from trainsafe_lint.rules import all_rules

    return set(all_rules())


def _static_required(code: str) -> bool:
    """Whether RULES.md requires the rule to be caught statically (``S``, not best-effort ``(S)``)."""
    return code in _static_codes() and "S" in RULES[code].required


def _run_injected(module, code: str, device: str) -> List[Finding]:
    def run() -> None:
        if code == "TS003":  # a real device mismatch crashes in torch, after the monitor has seen it
            with pytest.raises(RuntimeError):
                module.run(device)
        else:
            module.run(device)

    return watch(run)


@pytest.fixture
def injected(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator:
    name, code = request.param
    module = injected_module(load(name), code, tmp_path)
    yield module
    sys.modules.pop(module.__name__, None)


# -- the correct loops ----------------------------------------------------------------


@pytest.mark.parametrize("name", LOOPS)
def test_the_linter_is_silent_on_the_reference_loop(name: str) -> None:
    assert lint(_source(name)) == []


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("name", LOOPS)
def test_the_monitor_is_silent_on_the_reference_loop(name: str, device: str) -> None:
    results = {}
    findings = watch(lambda: results.update(load(name).run(device)))
    assert [f.format() for f in findings] == []
    assert results and all(math.isfinite(value) for value in results.values())


@pytest.mark.parametrize("name", LOOPS)
def test_the_reference_loop_runs_as_a_script(name: str, capsys: pytest.CaptureFixture) -> None:
    runpy.run_path(load(name).__file__, run_name="__main__")
    assert capsys.readouterr().out.startswith("{")


# -- each injected bug ----------------------------------------------------------------


@pytest.mark.parametrize("name, code", CASES, ids=CASE_IDS)
def test_the_linter_reports_the_injected_bug_and_nothing_else(name: str, code: str) -> None:
    codes = {f.code for f in lint(inject(_source(name), code))}
    assert codes <= {code}
    if _static_required(code):
        assert code in codes


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("injected, code", [((name, code), code) for name, code in CASES], ids=CASE_IDS,
                         indirect=["injected"])
def test_the_monitor_reports_the_injected_bug_and_nothing_else(injected, code: str, device: str) -> None:
    findings = _run_injected(injected, code, device)
    assert {f.code for f in findings} <= {code}, [f.format() for f in findings]
    if code in detectors.runtime_codes():
        own = [f for f in findings if f.code == code]
        assert own, f"{code} was not reported"
        assert {Path(f.path) for f in own} == {Path(injected.__file__)}


@pytest.mark.parametrize("injected, code", [((name, code), code) for name, code in CASES], ids=CASE_IDS,
                         indirect=["injected"])
def test_both_detectors_point_at_the_same_line(injected, code: str) -> None:
    if not (_static_required(code) and code in detectors.runtime_codes()):
        pytest.skip(f"{code} does not have both detectors")
    static = {f.line for f in lint(Path(injected.__file__).read_text(encoding="utf-8")) if f.code == code}
    runtime = {f.line for f in _run_injected(injected, code, "cpu") if f.code == code}
    assert runtime and runtime <= static
