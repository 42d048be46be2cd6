"""A whole lint run: files -> (cache | worker pool) -> one Report.

Unchanged files come from the cache; the rest are linted in a pool of worker
processes when there are enough of them to pay for the pool's start-up.
"""

from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from typing import TYPE_CHECKING, List, Optional, Sequence, Tuple, Type

from .cache import Cache, digest
from .config import Config
from .report import Report
from .results import FileResult, LintError

if TYPE_CHECKING:
    from .rule import LintRule

_WORKER_RULES: Sequence[Type["LintRule"]] = ()
#: Below this many files to lint, a pool costs more than it saves.
POOL_THRESHOLD = 16


def rule_types(codes: Sequence[str]) -> List[Type["LintRule"]]:
    from .rules import all_rules

    available = all_rules()
    return [available[code] for code in codes if code in available]


def _init_worker(codes: Sequence[str]) -> None:
    global _WORKER_RULES
    _WORKER_RULES = rule_types(codes)


def _lint_in_worker(task: Tuple[str, bytes]) -> FileResult:
    from .engine import decode_and_lint

    path, data = task
    return decode_and_lint(path, data, _WORKER_RULES)


def _read(path: str) -> Tuple[Optional[bytes], Optional[FileResult]]:
    try:
        with open(path, "rb") as handle:
            return handle.read(), None
    except OSError as exc:
        return None, FileResult(path, errors=[LintError(path, 0, f"cannot read: {exc.strerror or exc}")])


def run(files: Sequence[str], config: Config, jobs: int = 0, use_cache: bool = True) -> Report:
    """Lint ``files`` with ``config``; ``jobs`` 0 means one worker per core."""
    cache = Cache(config.root, config.key()) if use_cache else None
    results: List[Optional[FileResult]] = [None] * len(files)
    todo: List[Tuple[int, str, bytes, str]] = []
    for index, path in enumerate(files):
        data, failure = _read(path)
        if failure is not None:
            results[index] = failure
            continue
        assert data is not None
        content = digest(data)
        cached = cache.get(path, content) if cache else None
        if cached is not None:
            results[index] = cached
        else:
            todo.append((index, path, data, content))

    workers = jobs or os.cpu_count() or 1
    if workers > 1 and len(todo) >= POOL_THRESHOLD:
        context = multiprocessing.get_context("fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn")
        with ProcessPoolExecutor(max_workers=workers, mp_context=context,
                                 initializer=_init_worker, initargs=(config.codes,)) as pool:
            chunk = max(1, len(todo) // (workers * 8))
            linted = list(pool.map(_lint_in_worker, [(path, data) for _, path, data, _ in todo], chunksize=chunk))
    elif todo:
        from .engine import decode_and_lint  # imports libcst: only when something must be parsed

        types = rule_types(config.codes)
        linted = [decode_and_lint(path, data, types) for _, path, data, _ in todo]
    else:
        linted = []

    for (index, path, _, content), result in zip(todo, linted):
        results[index] = result
        if cache is not None:
            cache.put(path, content, result)
    if cache is not None:
        cache.save()

    report = Report()
    for path, result in zip(files, results):
        assert result is not None
        ignored = config.ignored_codes_for(path)
        if ignored:
            result = FileResult(result.path, [f for f in result.findings if f.code not in ignored], result.errors)
        report.add(result)
    return report
