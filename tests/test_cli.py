"""The ``trainsafe`` command: exit codes, output formats, bad input, rule documentation."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pytest_trainsafe.catalog import RULES
from trainsafe_lint.cli import main

BAD = "import torch.functional as F\ny = F.relu(x)\n"
GOOD = "import torch.nn.functional as F\n"


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # the result cache lives in the working directory


def run(capsys: pytest.CaptureFixture, *argv: str):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_a_clean_tree_exits_0(tmp_path: Path, capsys) -> None:
    (tmp_path / "good.py").write_text(GOOD)
    code, out, _ = run(capsys, "lint", str(tmp_path))
    assert code == 0
    assert "0 finding(s) in 1 file(s) checked." in out


def test_findings_exit_1_with_path_line_col_code_and_hint(tmp_path: Path, capsys) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("import torch\n" + BAD)
    code, out, _ = run(capsys, "lint", str(bad))
    assert code == 1
    assert f"{bad}:2:1: TS014 torch.functional is imported where torch.nn.functional was meant" in out
    assert "    hint: import torch.nn.functional as F" in out


def test_json_output_has_exactly_the_documented_schema(tmp_path: Path, capsys) -> None:
    (tmp_path / "bad.py").write_text(BAD)
    (tmp_path / "broken.py").write_text("def f(:\n")
    code, out, _ = run(capsys, "lint", "--format", "json", str(tmp_path))
    report = json.loads(out)
    assert code == 2
    assert set(report) == {"findings", "errors", "files"}
    assert report["files"] == 2
    (finding,) = report["findings"]
    assert set(finding) == {"code", "name", "path", "line", "col", "message"}
    assert (finding["code"], finding["name"], finding["line"], finding["col"]) == ("TS014", "wrong-functional-module", 1, 1)
    (error,) = report["errors"]
    assert set(error) == {"path", "line", "message"}
    assert error["path"].endswith("broken.py") and error["line"] == 1


def test_a_file_that_does_not_parse_is_reported_and_the_others_are_still_linted(tmp_path: Path, capsys) -> None:
    (tmp_path / "a_broken.py").write_text("x = 1\n\ndef f(:\n    pass\n")
    (tmp_path / "b_bad.py").write_text(BAD)
    code, out, _ = run(capsys, "lint", str(tmp_path))
    assert code == 2
    assert "a_broken.py:3: error: syntax error" in out
    assert "b_bad.py:1:1: TS014" in out


def test_a_file_that_is_not_utf8_is_an_error_with_its_line(tmp_path: Path, capsys) -> None:
    (tmp_path / "latin.py").write_bytes(b"x = 1\ny = '\xe9'\n")
    code, out, _ = run(capsys, "lint", str(tmp_path))
    assert code == 2
    assert "latin.py:2: error: not valid utf-8" in out


def test_a_missing_path_and_a_broken_link_are_errors(tmp_path: Path, capsys) -> None:
    os.symlink(tmp_path / "nowhere.py", tmp_path / "dangling.py")
    (tmp_path / "bad.py").write_text(BAD)
    code, out, _ = run(capsys, "lint", str(tmp_path), str(tmp_path / "missing.py"))
    assert code == 2
    assert "dangling.py:0: error: cannot read" in out
    assert "missing.py:0: error: no such file or directory" in out
    assert "bad.py:1:1: TS014" in out


def test_an_empty_file_is_clean(tmp_path: Path, capsys) -> None:
    (tmp_path / "empty.py").write_text("")
    assert run(capsys, "lint", str(tmp_path))[0] == 0


def test_an_unknown_code_in_select_is_an_error_that_names_it(tmp_path: Path, capsys) -> None:
    code, _, err = run(capsys, "lint", "--select", "TS001,TS777", str(tmp_path))
    assert code == 2
    assert "unknown rule code 'TS777' in --select" in err


def test_select_and_ignore_narrow_the_rules(tmp_path: Path, capsys) -> None:
    (tmp_path / "bad.py").write_text(BAD)
    assert run(capsys, "lint", "--ignore", "TS014", str(tmp_path))[0] == 0
    assert run(capsys, "lint", "--select", "TS001", str(tmp_path))[0] == 0
    assert run(capsys, "lint", "--select", "TS01", str(tmp_path))[0] == 1


def test_noqa_silences_a_finding_on_its_line(tmp_path: Path, capsys) -> None:
    (tmp_path / "a.py").write_text("import torch.functional as F  # noqa: TS014\nF.relu(x)\n")
    (tmp_path / "b.py").write_text("import torch.functional as F  # noqa\nF.relu(x)\n")
    (tmp_path / "c.py").write_text("import torch.functional as F  # noqa: TS001\nF.relu(x)\n")
    code, out, _ = run(capsys, "lint", str(tmp_path))
    assert code == 1
    assert "c.py:1:1: TS014" in out and "a.py" not in out.replace("checked", "") and "b.py:" not in out


def test_rule_prints_the_documentation(capsys) -> None:
    code, out, _ = run(capsys, "rule", "TS014")
    assert code == 0
    assert out.startswith("# TS014 wrong-functional-module")
    assert run(capsys, "rule", "wrong-functional-module")[1] == out


def test_rule_with_an_unknown_code_fails(capsys) -> None:
    code, _, err = run(capsys, "rule", "TS404")
    assert code == 2
    assert "unknown rule 'TS404'" in err


def test_rules_lists_every_code_with_its_detectors(capsys) -> None:
    code, out, _ = run(capsys, "rules")
    assert code == 0
    lines = out.splitlines()
    assert [line.split()[0] for line in lines] == list(RULES)
    assert any(line.startswith("TS014") and "static" in line for line in lines)


def test_the_console_script_runs_as_a_module(tmp_path: Path) -> None:
    (tmp_path / "bad.py").write_text(BAD)
    result = subprocess.run([sys.executable, "-m", "trainsafe_lint", "lint", str(tmp_path)], capture_output=True, text=True)
    assert result.returncode == 1
    assert "TS014" in result.stdout
