"""``--fix``, ``--diff`` and ``--unsafe-fixes``: each fix, and that a fixed file is re-linted and parses."""

from __future__ import annotations

import textwrap
from pathlib import Path

import libcst
import pytest

from trainsafe_lint.cli import main


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)


FIXES = {
    "TS014 import": (
        "import torch.functional as F\ny = F.relu(x)\n",
        "import torch.nn.functional as F\ny = F.relu(x)\n",
    ),
    "TS014 from-import": (
        "from torch import functional as F\ny = F.relu(x)\n",
        "from torch.nn import functional as F\ny = F.relu(x)\n",
    ),
    "TS014 attribute": (
        "import torch\ny = torch.functional.gelu(x)\n",
        "import torch\ny = torch.nn.functional.gelu(x)\n",
    ),
    "TS009 direct forward": (
        """\
        import torch
        from torch import nn
        model = nn.Linear(4, 2)
        out = model.forward(torch.randn(1, 4))
        """,
        """\
        import torch
        from torch import nn
        model = nn.Linear(4, 2)
        out = model(torch.randn(1, 4))
        """,
    ),
    "TS011 accumulated loss": (
        """\
        import torch.nn.functional as F
        def train(model, loader, opt):
            total = 0.0
            for x, y in loader:
                opt.zero_grad()
                loss = F.mse_loss(model(x), y)
                loss.backward()
                opt.step()
                total += loss
            return total
        """,
        """\
        import torch.nn.functional as F
        def train(model, loader, opt):
            total = 0.0
            for x, y in loader:
                opt.zero_grad()
                loss = F.mse_loss(model(x), y)
                loss.backward()
                opt.step()
                total += loss.item()
            return total
        """,
    ),
    "TS012 discarded move": (
        """\
        import torch
        def step(model, loader, device):
            for x, y in loader:
                x.to(device)
                model(x)
        """,
        """\
        import torch
        def step(model, loader, device):
            for x, y in loader:
                x = x.to(device)
                model(x)
        """,
    ),
}


@pytest.mark.parametrize("name", list(FIXES))
def test_fix_rewrites_the_file_and_leaves_no_finding(name: str, tmp_path: Path, capsys) -> None:
    before, after = (textwrap.dedent(text) for text in FIXES[name])
    target = tmp_path / "train.py"
    target.write_text(before)
    assert main(["lint", "--no-cache", "train.py"]) == 1
    code = main(["lint", "--no-cache", "--fix", "train.py"])
    assert target.read_text() == after
    libcst.parse_module(after)
    assert code == 0, capsys.readouterr().out


def test_diff_shows_the_fix_without_writing(tmp_path: Path, capsys) -> None:
    before, after = FIXES["TS014 import"]
    (tmp_path / "train.py").write_text(before)
    code = main(["lint", "--no-cache", "--diff", "train.py"])
    out = capsys.readouterr().out
    assert code == 1
    assert "-import torch.functional as F\n+import torch.nn.functional as F\n" in out
    assert (tmp_path / "train.py").read_text() == before


def test_a_noqa_line_is_not_fixed(tmp_path: Path) -> None:
    text = "import torch.functional as F  # noqa: TS014\ny = F.relu(x)\n"
    (tmp_path / "train.py").write_text(text)
    assert main(["lint", "--no-cache", "--fix", "train.py"]) == 0
    assert (tmp_path / "train.py").read_text() == text


def test_a_fix_that_would_not_parse_is_refused(tmp_path: Path) -> None:
    from trainsafe_lint.engine import fix_source
    from trainsafe_lint.rule import Fix, LintRule

    class Breaker(LintRule):
        CODE = "TS014"

        def visit_Name(self, node: libcst.Name) -> None:
            if node.value == "x":
                self.report(node, fix=Fix(libcst.Name("lambda"), "break it"))  # a keyword: cannot parse

    outcome = fix_source("x = 1\n", "t.py", [Breaker])
    assert outcome.source == "x = 1\n"
    assert outcome.error and "does not parse" in outcome.error


def test_unsafe_fixes_are_applied_only_when_asked(tmp_path: Path) -> None:
    from trainsafe_lint.engine import fix_source
    from trainsafe_lint.rule import Fix, LintRule

    class Renamer(LintRule):
        CODE = "TS014"

        def visit_Name(self, node: libcst.Name) -> None:
            if node.value == "old":
                self.report(node, fix=Fix(libcst.Name("new"), "rename", safe=False))

    assert fix_source("old = 1\n", "t.py", [Renamer]).source == "old = 1\n"
    assert fix_source("old = 1\n", "t.py", [Renamer], unsafe=True).source == "new = 1\n"
