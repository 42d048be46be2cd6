"""Property-based proof: generated training programs, checked against both detectors.

Each program is composed by ``generated.programs`` from fragments whose findings are
known by construction (see that module's docstring for the truth table). The
properties, for every code that has the side in question:

* the linter reports exactly the ground-truth codes on the source, each on its marked line;
* running ``main()`` under the runtime monitor reports exactly the ground-truth codes,
  each pointing at its marked line of the program's file;
* where a code has both sides, the two report the same codes at the same lines (up to the
  side-specific limitations each rule documents, listed in ``programs.LIMITATIONS``).

Profiles: ``bounded`` (default; deterministic: the same 100 + 100 + 33 programs on every run,
about 30 s) and ``long`` (``TRAINSAFE_HYPOTHESIS_PROFILE=long``; random, 2,000 programs per
property unless ``TRAINSAFE_HYPOTHESIS_EXAMPLES`` says otherwise; reproduce a failure with
the printed ``@reproduce_failure`` blob or ``--hypothesis-seed``). Add
``--hypothesis-show-statistics`` to see how many programs ran and which codes they expected.
"""

from __future__ import annotations

import itertools
import os
import sys
import tempfile
from pathlib import Path
from typing import Dict, List, Set, Tuple

import pytest
from hypothesis import HealthCheck, event, given, settings

from generated.programs import Program, programs
from helpers import lint, load_script, watch
from pytest_trainsafe.detectors import runtime_codes, static_codes
from pytest_trainsafe.finding import Finding

_COMMON = dict(deadline=None, database=None, print_blob=True,
               suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.register_profile("trainsafe-bounded", max_examples=100, derandomize=True, **_COMMON)
settings.register_profile("trainsafe-long", derandomize=False,
                          max_examples=int(os.environ.get("TRAINSAFE_HYPOTHESIS_EXAMPLES", "2000")), **_COMMON)
PROFILE_NAME = os.environ.get("TRAINSAFE_HYPOTHESIS_PROFILE", "bounded")
#: Applied to each property (``settings.load_profile`` would change every other hypothesis test too).
PROFILE = settings.get_profile(f"trainsafe-{PROFILE_NAME}")
#: The agreement property runs both detectors on each program: a third as many in the bounded profile.
AGREEMENT = settings(PROFILE, max_examples=PROFILE.max_examples if PROFILE_NAME == "long"
                     else PROFILE.max_examples // 3)

# A program that accumulates the loss tensor (TS011) converts it with float() at the end, as users do.
pytestmark = pytest.mark.filterwarnings("ignore:Converting a tensor with requires_grad=True to a scalar")

_names = itertools.count()


def lint_program(program: Program) -> List[Finding]:
    """The linter's findings on the program's source."""
    return lint(program.source)


def run_program(program: Program) -> Tuple[List[Finding], Path]:
    """Write the program to a file, import it, run ``main()`` under the monitor: (findings, the file)."""
    with tempfile.TemporaryDirectory(prefix="trainsafe-generated-") as folder:
        path = Path(folder) / "generated_program.py"
        path.write_text(program.source)
        name = f"trainsafe_generated_{next(_names)}"
        raised: List[BaseException] = []

        def run() -> None:
            try:
                module.main()
            except RuntimeError as error:  # the device-mismatch probe: torch's own error, after the finding
                if not program.raises:
                    raise
                raised.append(error)

        try:
            module = load_script(path, name)
            findings = watch(run)
        finally:
            sys.modules.pop(name, None)
    assert bool(raised) == program.raises, f"main() {'did not raise' if program.raises else 'raised'}"
    return findings, path


def _lines(findings: List[Finding], codes: Set[str]) -> Dict[str, Set[int]]:
    lines: Dict[str, Set[int]] = {}
    for finding in findings:
        if finding.code in codes:
            lines.setdefault(finding.code, set()).add(finding.line)
    return lines


def _describe(findings: List[Finding]) -> str:
    return "\n".join(f"  {f.path}:{f.line}: {f.code} {f.message}" for f in findings) or "  (none)"


def check_static(program: Program) -> Dict[str, Set[int]]:
    codes = set(static_codes())
    findings = lint_program(program)
    reported = _lines(findings, codes)
    expected = {code: {program.marks[code]} for code in program.static & codes}
    assert reported == expected, f"linter: expected {expected}, reported:\n{_describe(findings)}"
    return reported


def check_runtime(program: Program) -> Dict[str, Set[int]]:
    codes = set(runtime_codes())
    findings, path = run_program(program)
    reported = _lines(findings, codes)
    expected = {code: {program.marks[code]} for code in program.runtime & codes}
    assert reported == expected, f"plugin: expected {expected}, reported:\n{_describe(findings)}"
    elsewhere = [f for f in findings if f.code in codes and Path(f.path).name != path.name]
    assert not elsewhere, f"plugin findings outside the program:\n{_describe(elsewhere)}"
    return reported


def _events(program: Program) -> None:
    for code in sorted(program.static | program.runtime):
        event(f"expects {code}")
    if not program.static and not program.runtime:
        event("expects nothing")


@PROFILE
@given(programs())
def test_linter_reports_exactly_the_ground_truth(program: Program) -> None:
    _events(program)
    check_static(program)


@PROFILE
@given(programs())
def test_plugin_reports_exactly_the_ground_truth(program: Program) -> None:
    _events(program)
    check_runtime(program)


@AGREEMENT
@given(programs())
def test_linter_and_plugin_agree_where_both_exist(program: Program) -> None:
    """On codes with both sides: the same codes at the same lines, unless a documented limitation says otherwise."""
    both = set(static_codes()) & set(runtime_codes())
    static = {code: lines for code, lines in check_static(program).items() if code in both}
    runtime = {code: lines for code, lines in check_runtime(program).items() if code in both}
    documented = (program.static ^ program.runtime) & both
    for code in both - documented:
        assert static.get(code) == runtime.get(code), (code, static.get(code), runtime.get(code))
