"""The plugin's options: every one from the command line, pytest.ini and pyproject.toml, and their precedence.

tests/test_plugin.py covers the basics (``--trainsafe``, ``--trainsafe-warn``,
``--trainsafe-json``, ``trainsafe = true`` in pytest.ini, an ignore marker, an
unknown code in ``--trainsafe-ignore`` / ini ``trainsafe_select`` / a marker);
this file covers the rest: selection, every ini key in both ini files,
marker > command line > ini, the header and the summary.
"""

from __future__ import annotations

import json

import pytest

pytest.importorskip("torch")

BUGGY = """
    import torch

    def test_counts_with_builtin_sum():
        assert float(sum(torch.ones(4))) == 4.0
"""
#: Two more TS005 findings and one TS010, in two tests.
MORE_BUGS = """
    import torch
    import torch.nn.functional as F

    def test_sums_rows_and_columns():
        m = torch.ones(2, 2)
        assert sum(m).shape == (2,)
        assert sum(m.t()).shape == (2,)

    def test_softmax_fed_to_cross_entropy():
        logits = torch.randn(4, 3, requires_grad=True)
        F.cross_entropy(F.softmax(logits, dim=1), torch.tensor([0, 1, 2, 0])).backward()
"""
CLEAN = """
    import torch

    def test_counts_with_tensor_sum():
        assert float(torch.ones(4).sum()) == 4.0
"""


def _findings(path) -> list:
    return json.loads(path.read_text(encoding="utf-8"))["findings"]


def _header(result: pytest.RunResult) -> str:
    """The plugin's header line ("" if there is none)."""
    return next((line for line in result.stdout.lines if line.startswith("trainsafe:")), "")


# -- selection on the command line ----------------------------------------------------------


def test_select_on_the_command_line_checks_only_those_rules(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_buggy=BUGGY)
    result = pytester.runpytest_inprocess("--trainsafe", "--trainsafe-select", "TS001,TS010")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["trainsafe: on (fail), rules TS001, TS010"])


def test_select_accepts_a_rule_name_and_ignore_a_code_prefix(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_buggy=BUGGY)
    result = pytester.runpytest_inprocess("--trainsafe", "--trainsafe-select", "builtin-sum-on-tensor TS010",
                                          "--trainsafe-ignore", "TS01")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["trainsafe: on (fail), rules TS005"])


def test_an_unknown_code_in_select_names_the_command_line_option(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_clean=CLEAN)
    result = pytester.runpytest_inprocess("--trainsafe", "--trainsafe-select", "TS001,zero-grad-forgotten")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*unknown rule code 'zero-grad-forgotten' in --trainsafe-select*"])


# -- every option from an ini file ----------------------------------------------------------


def test_every_option_can_be_set_in_pytest_ini(pytester: pytest.Pytester) -> None:
    pytester.makeini("""
        [pytest]
        trainsafe = true
        trainsafe_warn = true
        trainsafe_json = from-ini.json
        trainsafe_select = TS00
        trainsafe_ignore = TS001, TS002
    """)
    pytester.makepyfile(test_buggy=BUGGY)
    result = pytester.runpytest_inprocess()
    result.assert_outcomes(passed=1, warnings=1)
    header = _header(result)
    assert header.startswith("trainsafe: on (warn), rules TS003, TS004, TS005, ") and "TS010" not in header
    assert [f["code"] for f in _findings(pytester.path / "from-ini.json")] == ["TS005"]


def test_every_option_can_be_set_in_pyproject_ini_options(pytester: pytest.Pytester) -> None:
    pytester.makepyprojecttoml("""
        [tool.pytest.ini_options]
        trainsafe = true
        trainsafe_warn = true
        trainsafe_json = "from-pyproject.json"
        trainsafe_select = "TS005, TS010"
        trainsafe_ignore = "TS010"
    """)
    pytester.makepyfile(test_buggy=BUGGY)
    result = pytester.runpytest_inprocess()
    result.assert_outcomes(passed=1, warnings=1)
    result.stdout.fnmatch_lines(["trainsafe: on (warn), rules TS005", "configfile: pyproject.toml"])
    assert [f["code"] for f in _findings(pytester.path / "from-pyproject.json")] == ["TS005"]


def test_an_unknown_code_in_pyproject_names_the_ini_option(pytester: pytest.Pytester) -> None:
    pytester.makepyprojecttoml("""
        [tool.pytest.ini_options]
        trainsafe_ignore = "TS005 TS05"
    """)
    pytester.makepyfile(test_clean=CLEAN)
    result = pytester.runpytest_inprocess("--trainsafe")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*unknown rule code 'TS05' in the trainsafe_ignore ini option*"])


@pytest.mark.parametrize("table", ["tool.pytest.ini_options", "tool.pytest"])
def test_codes_can_be_a_toml_list(pytester: pytest.Pytester, table: str) -> None:
    pytester.makepyprojecttoml(f"""
        [{table}]
        trainsafe = true
        trainsafe_select = ["TS005", "TS010"]
    """)
    pytester.makepyfile(test_clean=CLEAN)
    result = pytester.runpytest_inprocess("-W", "error::pytest.PytestRemovedIn10Warning")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["trainsafe: on (fail), rules TS005, TS010"])


def test_a_bad_boolean_in_the_ini_file_names_the_option(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\ntrainsafe = maybe\n")
    pytester.makepyfile(test_clean=CLEAN)
    result = pytester.runpytest_inprocess()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    error = result.stderr.str()
    assert "'maybe'" in error and "trainsafe ini option" in error and "tox.ini" in error, error


# -- precedence: marker > command line > ini ------------------------------------------------


def test_the_command_line_overrides_the_ini_file(pytester: pytest.Pytester) -> None:
    pytester.makeini("""
        [pytest]
        trainsafe = true
        trainsafe_json = from-ini.json
        trainsafe_select = TS001
    """)
    pytester.makepyfile(test_buggy=BUGGY)
    result = pytester.runpytest_inprocess("--trainsafe-select", "TS005", "--trainsafe-json", "from-cli.json")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["trainsafe: on (fail), rules TS005"])
    assert [f["code"] for f in _findings(pytester.path / "from-cli.json")] == ["TS005"]
    assert not (pytester.path / "from-ini.json").exists()


def test_a_command_line_ignore_replaces_the_ini_ignore(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\ntrainsafe_ignore = TS005\n")
    pytester.makepyfile(test_buggy=BUGGY)
    pytester.runpytest_inprocess("--trainsafe", "--trainsafe-ignore", "TS001").assert_outcomes(failed=1)


def test_a_marker_overrides_the_command_line(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_marked=BUGGY + """

    import pytest

    @pytest.mark.trainsafe(select=["TS005"])
    def test_selected_again():
        sum(torch.ones(2))
""")
    result = pytester.runpytest_inprocess("--trainsafe", "--trainsafe-ignore", "TS005")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["FAILED test_marked.py::test_selected_again*"])


def test_the_closest_marker_wins(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_marked="""
        import pytest
        import torch

        pytestmark = pytest.mark.trainsafe(ignore=["TS005"])

        def test_module_marker_applies():
            sum(torch.ones(2))

        @pytest.mark.trainsafe(select="TS005")
        def test_function_marker_wins():
            sum(torch.ones(2))
    """)
    result = pytester.runpytest_inprocess("--trainsafe")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["FAILED test_marked.py::test_function_marker_wins*"])


# -- header and summary ---------------------------------------------------------------------


def test_the_header_says_warn_mode_and_is_absent_when_off(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_clean=CLEAN)
    on = pytester.runpytest_inprocess("--trainsafe", "--trainsafe-warn", "--trainsafe-select", "TS005")
    on.stdout.fnmatch_lines(["trainsafe: on (warn), rules TS005"])
    off = pytester.runpytest_inprocess()
    assert _header(off) == ""


def test_the_header_lists_only_rules_checked_at_runtime(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_clean=CLEAN)
    result = pytester.runpytest_inprocess("--trainsafe", "--trainsafe-select", "TS00")
    assert "TS009" not in _header(result)


def test_the_summary_counts_findings_per_code_over_the_session(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_buggy=BUGGY, test_more=MORE_BUGS)
    result = pytester.runpytest_inprocess("--trainsafe", "--trainsafe-warn")
    result.assert_outcomes(passed=3, warnings=3)
    result.stdout.fnmatch_lines([
        "*= trainsafe =*",
        "TS005 builtin-sum-on-tensor: 3",
        "TS010 softmax-before-cross-entropy: 1",
    ])


def test_no_summary_section_and_an_empty_json_report_without_findings(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_clean=CLEAN)
    result = pytester.runpytest_inprocess("--trainsafe", "--trainsafe-json", "report.json")
    result.assert_outcomes(passed=1)
    assert "= trainsafe =" not in result.stdout.str()
    assert _findings(pytester.path / "report.json") == []
