"""Which files a lint run reads: explicit files as given, directories walked for ``*.py``."""

from __future__ import annotations

import os
from typing import Iterator, List, Tuple

# Directories that hold someone else's code or build output, never the user's sources.
SKIPPED_DIRS = frozenset({
    ".git", ".hg", ".svn", "__pycache__", ".mypy_cache", ".pytest_cache", ".ruff_cache", ".tox", ".nox",
    ".venv", "venv", "node_modules", "build", "dist", "site-packages", ".eggs", ".trainsafe_cache",
})


def _is_virtualenv(path: str) -> bool:
    return os.path.exists(os.path.join(path, "pyvenv.cfg"))


def discover(paths: List[str]) -> Tuple[List[str], List[Tuple[str, str]]]:
    """(files to lint, [(path, problem)]) for the given command-line paths, in a stable order."""
    files: List[str] = []
    problems: List[Tuple[str, str]] = []
    seen = set()
    for path in paths:
        if os.path.isdir(path):
            candidates: Iterator[str] = _walk(path)
        elif os.path.lexists(path) and not os.path.exists(path):
            problems.append((path, "broken symbolic link"))
            continue
        elif os.path.exists(path):
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


def _walk(root: str) -> Iterator[str]:
    for directory, subdirs, names in os.walk(root):
        subdirs[:] = sorted(
            d for d in subdirs
            if d not in SKIPPED_DIRS and not d.endswith(".egg-info") and not _is_virtualenv(os.path.join(directory, d))
        )
        for name in sorted(names):
            if name.endswith(".py"):
                full = os.path.join(directory, name)
                yield os.path.normpath(full) if root != "." else os.path.relpath(full)
