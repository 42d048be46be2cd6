"""The pytest plugin, end to end, through pytester (each test runs a small pytest session)."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("torch")

BUGGY = """
    import torch

    def test_counts_with_builtin_sum():
        t = torch.ones(4)
        total = sum(t)
        assert float(total) == 4.0
"""
CLEAN = """
    import torch

    def test_counts_with_tensor_sum():
        assert float(torch.ones(4).sum()) == 4.0
"""


def test_a_finding_fails_the_test_with_code_location_and_hint(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_buggy=BUGGY)
    result = pytester.runpytest_inprocess("--trainsafe")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([
        "*trainsafe found 1 training pitfall(s):",
        "*test_buggy.py:5: TS005 Python's builtin sum() iterates over a tensor*",
        "*hint: use tensor.sum()*",
    ])


def test_without_the_flag_nothing_is_watched(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_buggy=BUGGY)
    pytester.runpytest_inprocess().assert_outcomes(passed=1)


def test_a_clean_test_passes_and_the_header_names_the_rules(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_clean=CLEAN)
    result = pytester.runpytest_inprocess("--trainsafe")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["trainsafe: on (fail), rules *TS005*"])


def test_warn_mode_reports_without_failing(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_buggy=BUGGY)
    result = pytester.runpytest_inprocess("--trainsafe", "--trainsafe-warn")
    result.assert_outcomes(passed=1, warnings=1)
    result.stdout.fnmatch_lines(["*TrainsafeWarning: trainsafe found 1 training pitfall(s):", "*test_buggy.py:5: TS005 *"])


def test_the_ini_option_turns_it_on(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\ntrainsafe = true\n")
    pytester.makepyfile(test_buggy=BUGGY)
    pytester.runpytest_inprocess().assert_outcomes(failed=1)


def test_the_marker_silences_a_code_for_one_test(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_buggy=BUGGY + """

    import pytest

    @pytest.mark.trainsafe(ignore=["TS005"])
    def test_silenced():
        assert float(sum(torch.ones(2))) == 2.0
""")
    result = pytester.runpytest_inprocess("--trainsafe")
    result.assert_outcomes(passed=1, failed=1)


def test_an_unknown_code_is_a_usage_error_that_names_it(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_clean=CLEAN)
    result = pytester.runpytest_inprocess("--trainsafe", "--trainsafe-ignore", "TS999")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*unknown rule code 'TS999' in --trainsafe-ignore*"])


def test_an_unknown_code_in_ini_names_the_ini_option(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\ntrainsafe_select = TS001, TSX\n")
    pytester.makepyfile(test_clean=CLEAN)
    result = pytester.runpytest_inprocess("--trainsafe")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*unknown rule code 'TSX' in the trainsafe_select ini option*"])


def test_an_unknown_code_in_a_marker_names_the_test(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_marked="""
        import pytest

        @pytest.mark.trainsafe(ignore=["TS0099"])
        def test_marked():
            pass
    """)
    result = pytester.runpytest_inprocess("--trainsafe")
    assert result.ret != 0
    result.stdout.fnmatch_lines(["*unknown rule code 'TS0099' in @pytest.mark.trainsafe on test_marked.py::test_marked*"])


def test_the_json_report_holds_every_finding_of_the_session(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_buggy=BUGGY, test_clean=CLEAN)
    report = pytester.path / "trainsafe.json"
    pytester.runpytest_inprocess("--trainsafe", "--trainsafe-json", str(report)).assert_outcomes(passed=1, failed=1)
    findings = json.loads(report.read_text())["findings"]
    assert findings == [{
        "nodeid": "test_buggy.py::test_counts_with_builtin_sum", "code": "TS005", "name": "builtin-sum-on-tensor",
        "path": "test_buggy.py", "line": 5,
        "message": findings[0]["message"],
    }]
    assert findings[0]["message"].startswith("Python's builtin sum() iterates over a tensor")


def test_the_terminal_summary_counts_findings_by_code(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_buggy=BUGGY)
    result = pytester.runpytest_inprocess("--trainsafe")
    result.stdout.fnmatch_lines(["*= trainsafe =*", "TS005 builtin-sum-on-tensor: 1"])


def test_the_fixture_exposes_findings_and_owns_them(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_fixture="""
        import torch

        def test_buggy_example_is_flagged(trainsafe):
            sum(torch.ones(3))
            assert trainsafe.codes == {"TS005"}
            assert trainsafe.findings[0].line == 4
    """)
    # No --trainsafe: the fixture alone turns watching on for its test.
    pytester.runpytest_inprocess().assert_outcomes(passed=1)


def test_a_failing_test_keeps_its_own_error_and_gains_the_finding(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_both="""
        import torch

        def test_fails_anyway():
            sum(torch.ones(3))
            raise ValueError("the test's own error")
    """)
    result = pytester.runpytest_inprocess("--trainsafe")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*ValueError: the test's own error*", "*Captured trainsafe call*",
                                 "trainsafe found 1 training pitfall(s):", "test_both.py:4: TS005 *"])


def test_the_error_a_test_fails_with_is_explained_by_the_check_that_knows_it(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_init="""
        from torch import nn

        class Net(nn.Module):
            def __init__(self):
                self.fc = nn.Linear(2, 2)

        def test_builds_the_model():
            Net()
    """)
    result = pytester.runpytest_inprocess("--trainsafe", "--tb=short")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["E   AttributeError: cannot assign module before Module.__init__() call",
                                 "*Captured trainsafe call*", "trainsafe found 1 training pitfall(s):",
                                 "test_init.py:4: TS013 *(Net.__init__ assigns a layer or parameter before super*"])


def test_a_skipped_test_stays_skipped(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_skip="""
        import pytest, torch

        def test_skips():
            sum(torch.ones(3))
            pytest.skip("not today")
    """)
    pytester.runpytest_inprocess("--trainsafe").assert_outcomes(skipped=1)


def test_the_fixture_sees_conclusions_drawn_at_the_end_of_a_run(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_eval="""
        import torch

        def test_eval_loop_without_no_grad_is_flagged(trainsafe):
            model = torch.nn.Linear(4, 2)
            model.eval()
            for _ in range(3):
                model(torch.randn(2, 4))
            assert trainsafe.codes == {"TS004"}
    """)
    pytester.runpytest_inprocess().assert_outcomes(passed=1)


def test_the_fixture_probes_a_model_on_a_stand_in_gpu(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_portable="""
        import torch
        from torch import nn

        class Positional(nn.Module):
            def __init__(self):
                super().__init__()
                self.proj = nn.Linear(4, 4)

            def forward(self, x):
                position = torch.arange(x.shape[1]).float()
                return self.proj(x) + position

        def test_a_cpu_only_tensor_in_forward_is_found_without_a_gpu(trainsafe):
            trainsafe.check_device_portable(Positional(), torch.randn(2, 4))
            assert trainsafe.codes == {"TS003"}
            assert trainsafe.findings[0].line == 11

        def test_a_portable_model_is_clean(trainsafe):
            report = trainsafe.check_device_portable(nn.Linear(4, 2), torch.randn(2, 4))
            assert report.findings == [] and trainsafe.codes == set()
    """)
    pytester.runpytest_inprocess().assert_outcomes(passed=2)
