"""Benchmark: trainsafe lint on the torchvision package source vs a bare libcst parse.

Not a test: it prints figures and ratios. Run it with the test environment's
interpreter (it needs torchvision installed):

    .venv/bin/python benchmarks/lint_speed.py [--repeat N]

Figures:
- bare parse: CPU seconds of ``libcst.parse_module`` over every file, in this process;
- lint, 1 job: CPU seconds of trainsafe's full run (all rules, cache off) in this process;
- lint, N jobs: wall and CPU (parent + workers) of the ``trainsafe lint`` command, cache off;
- warm re-run: wall seconds of the command on the unchanged tree with its cache filled.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _command(args, cwd: str) -> tuple:
    cpu0, wall0 = _children_cpu(), time.perf_counter()
    subprocess.run(args, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
    return time.perf_counter() - wall0, _children_cpu() - cpu0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=1, help="best of N for each in-process figure")
    options = parser.parse_args()

    import libcst
    import torchvision

    from trainsafe_lint.config import build
    from trainsafe_lint.runner import run

    source_root = Path(torchvision.__file__).parent
    work = Path(tempfile.mkdtemp(prefix="trainsafe-bench-"))
    tree = work / "torchvision"
    shutil.copytree(source_root, tree, ignore=shutil.ignore_patterns("*.so", "*.pyc", "__pycache__", "*.pyd"))
    files = sorted(str(p) for p in tree.rglob("*.py"))
    texts = [Path(f).read_text(encoding="utf-8") for f in files]
    lines = sum(text.count("\n") for text in texts)

    def best(function) -> float:
        timings = []
        for _ in range(options.repeat):
            start = time.process_time()
            function()
            timings.append(time.process_time() - start)
        return min(timings)

    parse_cpu = best(lambda: [libcst.parse_module(text) for text in texts])
    config = build({}, {}, None, str(work))
    lint_cpu = best(lambda: run(files, config, jobs=1, use_cache=False))

    command = [sys.executable, "-m", "trainsafe_lint", "lint", "torchvision"]
    jobs = os.cpu_count() or 1
    cold_wall_1, cold_cpu_1 = _command(command + ["--no-cache", "--jobs", "1"], str(work))
    cold_wall_n, cold_cpu_n = _command(command + ["--no-cache", "--jobs", str(jobs)], str(work))
    _command(command, str(work))  # fill the cache
    warm_wall, warm_cpu = _command(command, str(work))
    shutil.rmtree(work, ignore_errors=True)

    print(f"files                     {len(files)}")
    print(f"lines                     {lines}")
    print(f"bare libcst parse, CPU s  {parse_cpu:8.2f}")
    print(f"trainsafe lint, CPU s     {lint_cpu:8.2f}   ratio to bare parse {lint_cpu / parse_cpu:5.2f}x  (in-process, 1 job)")
    print(f"command, 1 job            wall {cold_wall_1:6.2f} s   CPU {cold_cpu_1:6.2f} s")
    print(f"command, {jobs} jobs           wall {cold_wall_n:6.2f} s   CPU {cold_cpu_n:6.2f} s   "
          f"wall speed-up {cold_wall_1 / cold_wall_n:4.2f}x")
    print(f"warm re-run (cache)       wall {warm_wall:6.2f} s   CPU {warm_cpu:6.2f} s")


if __name__ == "__main__":
    main()
