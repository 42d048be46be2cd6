"""Which files a lint run reads.

Directories are walked for ``*.py``, skipping what git ignores (asked of git
itself, so nested .gitignore files and global excludes behave as in git),
virtual environments and caches, and the configured ``exclude`` globs. A file
named explicitly is linted even if excluded, unless ``force_exclude`` is set
(ruff's convention: pre-commit passes every staged file explicitly).
"""

from __future__ import annotations

import os
import subprocess
from typing import Callable, Iterator, List, Optional, Tuple

# Directories that hold someone else's code or build output, never the user's sources.
SKIPPED_DIRS = frozenset({
    ".git", ".hg", ".svn", "__pycache__", ".mypy_cache", ".pytest_cache", ".ruff_cache", ".tox", ".nox",
    ".venv", "venv", "node_modules", "build", "dist", "site-packages", ".eggs", ".trainsafe_cache",
})


def _is_virtualenv(path: str) -> bool:
    return os.path.exists(os.path.join(path, "pyvenv.cfg"))


def discover(paths: List[str], is_excluded: Callable[[str], bool] = lambda path: False,
             force_exclude: bool = False) -> Tuple[List[str], List[Tuple[str, str]]]:
    """(files to lint, [(path, problem)]) for the given command-line paths, in a stable order."""
    files: List[str] = []
    problems: List[Tuple[str, str]] = []
    seen = set()
    for path in paths:
        if os.path.isdir(path):
            if is_excluded(path) and force_exclude:
                continue
            candidates: Iterator[str] = (c for c in _walk(path) if not is_excluded(c))
        elif os.path.lexists(path) and not os.path.exists(path):
            problems.append((path, "broken symbolic link"))
            continue
        elif os.path.exists(path):
            if force_exclude and is_excluded(path):
                continue
            candidates = iter([path])
        else:
            problems.append((path, "no such file or directory"))
            continue
        for candidate in candidates:
            key = os.path.normpath(candidate)
            if key not in seen:
                seen.add(key)
                files.append(candidate)
    return files, problems


def _join(root: str, relative: str) -> str:
    joined = os.path.join(root, relative)
    return os.path.relpath(joined) if root == "." else os.path.normpath(joined)


def _git_files(root: str) -> Optional[List[str]]:
    """Files under ``root`` that git does not ignore, or None if ``root`` is not in a git work tree."""
    try:
        listed = subprocess.run(
            ["git", "-C", root, "ls-files", "-z", "--cached", "--others", "--exclude-standard", "--", "."],
            capture_output=True, timeout=60,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if listed.returncode != 0:
        return None
    return sorted(name for name in listed.stdout.decode("utf-8", "surrogateescape").split("\0") if name)


def _skipped(relative: str, root: str) -> bool:
    parts = relative.split("/")[:-1]
    for index, part in enumerate(parts):
        if part in SKIPPED_DIRS or part.endswith(".egg-info"):
            return True
        if _is_virtualenv(os.path.join(root, *parts[: index + 1])):
            return True
    return False


def _walk(root: str) -> Iterator[str]:
    tracked = _git_files(root)
    if tracked is not None:
        for relative in tracked:
            if relative.endswith(".py") and not _skipped(relative, root):
                full = _join(root, relative)
                if os.path.lexists(full):  # deleted but still in the index: nothing to lint
                    yield full
        return
    for directory, subdirs, names in os.walk(root):
        subdirs[:] = sorted(
            d for d in subdirs
            if d not in SKIPPED_DIRS and not d.endswith(".egg-info") and not _is_virtualenv(os.path.join(directory, d))
        )
        for name in sorted(names):
            if name.endswith(".py"):
                yield os.path.normpath(os.path.join(directory, name))
