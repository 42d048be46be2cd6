"""The pre-commit hook, installed for real by the pre-commit package from this repository."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("pre_commit")
ROOT = Path(__file__).resolve().parent.parent
BAD = "import torch.functional as F\ny = F.relu(x)\n"
GOOD = "import torch.nn.functional as F\n"


@pytest.fixture(scope="module")
def pre_commit_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("pre-commit-home")


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    return tmp_path


def stage(repo: Path, name: str, text: str) -> None:
    (repo / name).write_text(text)
    subprocess.run(["git", "-C", str(repo), "add", name], check=True)


def try_hook(repo: Path, home: Path, hook: str = "trainsafe-lint") -> subprocess.CompletedProcess:
    # try-repo installs the hook from this checkout, uncommitted changes included, into
    # pre-commit's own environment, then runs it on the staged files as `git commit` would.
    env = {**os.environ, "PRE_COMMIT_HOME": str(home), "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}
    return subprocess.run([sys.executable, "-m", "pre_commit", "try-repo", str(ROOT), hook],
                          cwd=repo, env=env, capture_output=True, text=True, timeout=600)


def test_the_hook_fails_on_a_bad_file(repo: Path, pre_commit_home: Path) -> None:
    stage(repo, "train.py", BAD)
    result = try_hook(repo, pre_commit_home)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "train.py:1:1: TS014" in result.stdout


def test_the_hook_passes_on_a_good_file(repo: Path, pre_commit_home: Path) -> None:
    stage(repo, "train.py", GOOD)
    result = try_hook(repo, pre_commit_home)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Passed" in result.stdout


def test_the_hook_passes_when_no_python_file_is_staged(repo: Path, pre_commit_home: Path) -> None:
    stage(repo, "notes.txt", "import torch.functional as F\n")
    result = try_hook(repo, pre_commit_home)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no files to check" in result.stdout
