"""Findings made in child processes (DDP ranks) reach the parent test's report.

``torch.multiprocessing.spawn`` / ``start_processes`` are wrapped for the test:
each child runs its function under its own Monitor (same codes) and writes its
findings, with its rank, to a per-test directory; the parent reads them back
when the test ends. Only the process-start function is wrapped: what the child
computes is untouched.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from typing import TYPE_CHECKING, Any, Callable, Sequence

from .hooks import HookSet

if TYPE_CHECKING:
    from .monitor import Monitor


def _watched_child(rank: int, fn: Callable[..., Any], codes: Sequence[str], report_dir: str, *args: Any) -> None:
    """Entry point of a spawned rank (module level, so that it pickles by reference)."""
    from .monitor import Monitor

    monitor = Monitor(codes)
    monitor.start()
    try:
        fn(rank, *args)
    finally:
        monitor.stop()
        findings = [{"code": f.code, "path": f.path, "line": f.line, "detail": f.detail} for f in monitor.findings]
        path = os.path.join(report_dir, f"rank-{rank}-{os.getpid()}.json")
        with open(path, "w", encoding="utf-8") as handle:
            json.dump({"rank": rank, "findings": findings}, handle)


class ChildRanks:
    """Wraps process spawning for one test and merges the children's findings into ``monitor``."""

    def __init__(self, monitor: "Monitor") -> None:
        self.monitor = monitor
        self.report_dir = ""

    def install(self, hooks: HookSet) -> None:
        spawn_module = sys.modules.get("torch.multiprocessing.spawn")
        if spawn_module is None:
            return
        import torch.multiprocessing as torch_mp

        hooks.on_remove(lambda: self.report_dir and shutil.rmtree(self.report_dir, ignore_errors=True))
        original = spawn_module.start_processes
        codes = sorted(self.monitor.codes)

        def start_processes(fn: Callable[..., Any], args: tuple = (), nprocs: int = 1, join: bool = True,
                            daemon: bool = False, start_method: str = "spawn") -> Any:
            if not self.report_dir:  # made on first use: most tests never spawn a process
                self.report_dir = tempfile.mkdtemp(prefix="trainsafe-ranks-")
            return original(_watched_child, (fn, codes, self.report_dir, *args), nprocs, join, daemon,
                            start_method)

        # spawn() calls the module-level name; users may call either public name.
        hooks.patch(spawn_module, "start_processes", start_processes)
        hooks.patch(torch_mp, "start_processes", start_processes)

    def collect(self) -> None:
        """Add every child's findings to the monitor, each tagged with its rank."""
        if not self.report_dir or not os.path.isdir(self.report_dir):
            return
        for name in sorted(os.listdir(self.report_dir)):
            try:
                with open(os.path.join(self.report_dir, name), encoding="utf-8") as handle:
                    data = json.load(handle)
            except (OSError, ValueError):
                continue
            for finding in data.get("findings", []):
                detail = f"rank {data['rank']}" + (f": {finding['detail']}" if finding.get("detail") else "")
                self.monitor.report(finding["code"], detail, where=(finding["path"], finding["line"]),
                                    rank=data["rank"])
