"""Output formats: SARIF validated against the official 2.1.0 schema, GitHub annotations, statistics."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from trainsafe_lint.cli import main

jsonschema = pytest.importorskip("jsonschema")
SCHEMA = json.loads((Path(__file__).parent / "data" / "sarif-schema-2.1.0.json").read_text())
BAD = "import torch.functional as F\ny = F.relu(x)\n"


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "bad.py").write_text("import torch\n" + BAD)


def lint(capsys, *argv: str):
    code = main(["lint", "--no-cache", *argv])
    return code, capsys.readouterr().out


def test_sarif_is_valid_against_the_official_schema(capsys, tmp_path: Path) -> None:
    (tmp_path / "broken.py").write_text("def f(:\n")
    code, out = lint(capsys, "--format", "sarif", ".")
    sarif = json.loads(out)
    jsonschema.validate(sarif, SCHEMA)
    (run,) = sarif["runs"]
    (result,) = run["results"]
    rules = run["tool"]["driver"]["rules"]
    assert rules[result["ruleIndex"]]["id"] == result["ruleId"] == "TS014"
    assert all(rule["help"]["text"] and rule["help"]["markdown"] for rule in rules)
    region = result["locations"][0]["physicalLocation"]["region"]
    assert (region["startLine"], region["startColumn"]) == (2, 1)
    assert run["invocations"][0]["executionSuccessful"] is False
    assert code == 2


def test_github_format_emits_one_error_annotation_per_finding(capsys) -> None:
    code, out = lint(capsys, "--format", "github", ".")
    assert code == 1
    assert out.strip() == (
        "::error file=bad.py,line=2,col=1,title=TS014::TS014 torch.functional is imported where "
        "torch.nn.functional was meant (relu is not in torch.functional: use torch.nn.functional)"
    )


def test_statistics_count_findings_per_code(capsys, tmp_path: Path) -> None:
    (tmp_path / "other.py").write_text(BAD)
    code, out = lint(capsys, "--statistics", ".")
    assert code == 1
    assert out.rstrip().endswith("2  TS014  wrong-functional-module")


def test_the_cache_returns_the_same_report_for_an_unchanged_tree(capsys, tmp_path: Path) -> None:
    first = main(["lint", "--format", "json", "."]), capsys.readouterr().out
    assert (tmp_path / ".trainsafe_cache").is_dir()
    second = main(["lint", "--format", "json", "."]), capsys.readouterr().out
    assert first == second
    (tmp_path / "bad.py").write_text("import torch.nn.functional as F\n")
    assert main(["lint", "."]) == 0


def test_many_files_are_linted_by_a_worker_pool_with_the_same_result(capsys, tmp_path: Path) -> None:
    for index in range(40):
        (tmp_path / f"m{index:02d}.py").write_text(BAD if index % 3 == 0 else "x = 1\n")
    pooled = lint(capsys, "--jobs", "2", "--format", "json", ".")
    serial = lint(capsys, "--jobs", "1", "--format", "json", ".")
    assert pooled == serial
    assert len(json.loads(pooled[1])["findings"]) == 15
