"""``[tool.trainsafe]`` configuration and the command-line flags of the same names."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from trainsafe_lint.cli import main

BAD = "import torch.functional as F\ny = F.relu(x)\n"


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)


def lint(capsys, *argv: str):
    code = main(["lint", "--no-cache", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def pyproject(tmp_path: Path, body: str) -> None:
    (tmp_path / "pyproject.toml").write_text("[tool.trainsafe]\n" + body)


def test_ignore_in_pyproject_silences_a_code(tmp_path: Path, capsys) -> None:
    (tmp_path / "bad.py").write_text(BAD)
    pyproject(tmp_path, 'ignore = ["TS014"]\n')
    assert lint(capsys, ".")[0] == 0


def test_the_command_line_overrides_the_file(tmp_path: Path, capsys) -> None:
    (tmp_path / "bad.py").write_text(BAD)
    pyproject(tmp_path, 'select = ["TS001"]\n')
    assert lint(capsys, ".")[0] == 0
    assert lint(capsys, "--select", "TS014", ".")[0] == 1


def test_extend_select_adds_to_the_default_selection(tmp_path: Path, capsys) -> None:
    (tmp_path / "bad.py").write_text(BAD)
    pyproject(tmp_path, 'select = ["TS001"]\nextend-select = ["TS014"]\n')
    assert lint(capsys, ".")[0] == 1


def test_per_file_ignores_apply_by_glob(tmp_path: Path, capsys) -> None:
    (tmp_path / "scripts").mkdir()
    (tmp_path / "scripts" / "old.py").write_text(BAD)
    (tmp_path / "new.py").write_text(BAD)
    pyproject(tmp_path, '[tool.trainsafe.per-file-ignores]\n"scripts/*" = ["TS014"]\n')
    code, out, _ = lint(capsys, ".")
    assert code == 1
    assert "new.py:1:1: TS014" in out and "old.py" not in out


def test_per_file_ignores_on_the_command_line(tmp_path: Path, capsys) -> None:
    (tmp_path / "new.py").write_text(BAD)
    assert lint(capsys, "--per-file-ignores", "new.py:TS014", ".")[0] == 0


def test_exclude_skips_directories_but_explicit_files_are_still_linted(tmp_path: Path, capsys) -> None:
    (tmp_path / "generated").mkdir()
    (tmp_path / "generated" / "bad.py").write_text(BAD)
    pyproject(tmp_path, 'exclude = ["generated"]\n')
    assert lint(capsys, ".")[0] == 0
    assert lint(capsys, "generated/bad.py")[0] == 1
    assert lint(capsys, "--force-exclude", "generated/bad.py")[0] == 0


def test_gitignored_files_are_skipped(tmp_path: Path, capsys) -> None:
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    (tmp_path / ".gitignore").write_text("scratch/\n")
    (tmp_path / "scratch").mkdir()
    (tmp_path / "scratch" / "bad.py").write_text(BAD)
    (tmp_path / "kept.py").write_text(BAD)
    code, out, _ = lint(capsys, ".")
    assert code == 1
    assert "kept.py" in out and "scratch" not in out


@pytest.mark.parametrize("body, message", [
    ('selct = ["TS001"]\n', "unknown key 'selct' in [tool.trainsafe] in "),
    ('select = ["TS001", "TS0X1"]\n', "unknown rule code 'TS0X1' in 'select' in [tool.trainsafe] in "),
    ('ignore = ["TS404"]\n', "unknown rule code 'TS404' in 'ignore' in [tool.trainsafe]"),
    ('[tool.trainsafe.per-file-ignores]\n"a.py" = ["NOPE"]\n', "unknown rule code 'NOPE' in 'per-file-ignores'"),
    ('select = "TS001" "x"\n', "is not valid TOML"),
])
def test_configuration_mistakes_are_errors_that_say_what_and_where(tmp_path: Path, capsys, body: str,
                                                                   message: str) -> None:
    (tmp_path / "good.py").write_text("x = 1\n")
    pyproject(tmp_path, body)
    code, out, err = lint(capsys, ".", "--config", "pyproject.toml")
    assert code == 2
    assert message in err
    assert out == ""


def test_the_nearest_pyproject_with_a_trainsafe_table_is_used(tmp_path: Path, capsys,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    pyproject(tmp_path, 'ignore = ["TS014"]\n')
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "bad.py").write_text(BAD)
    monkeypatch.chdir(tmp_path / "pkg")
    assert lint(capsys, ".")[0] == 0
