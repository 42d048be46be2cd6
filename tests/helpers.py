"""Helpers shared by the test suite (imported explicitly, not a plugin)."""

from __future__ import annotations

import contextlib
import re
import textwrap
from typing import TYPE_CHECKING, Callable, Iterable, Iterator, List, Optional, Sequence, Set, Tuple

from pytest_trainsafe.finding import Finding

if TYPE_CHECKING:  # torch is imported inside the runtime helpers only: the static tests run without it
    import torch

_EXPECT = re.compile(r"#\s*expect:\s*(?P<codes>TS\d{3}(?:[,\s]+TS\d{3})*)")


def lint(source: str, codes: Optional[Sequence[str]] = None, path: str = "example.py") -> List[Finding]:
    """Findings of the static rules (all, or ``codes``) on ``source`` (dedented)."""
    from trainsafe_lint.engine import lint_source
    from trainsafe_lint.rules import all_rules

    rules = all_rules()
    selected = [rules[c] for c in (codes or rules) if c in rules]
    result = lint_source(textwrap.dedent(source), path, selected)
    assert not result.errors, result.errors
    return result.findings


def found(source: str, codes: Optional[Sequence[str]] = None) -> Set[Tuple[int, str]]:
    """{(line, code)} the linter reports on ``source``."""
    return {(f.line, f.code) for f in lint(source, codes)}


def expected(source: str) -> Set[Tuple[int, str]]:
    """{(line, code)} marked in ``source`` with ``# expect: TSNNN`` comments."""
    marks = set()
    for number, line in enumerate(textwrap.dedent(source).splitlines(), start=1):
        match = _EXPECT.search(line)
        if match:
            marks.update((number, code) for code in re.split(r"[,\s]+", match.group("codes")))
    return marks


def watch_outcome(function, *args, codes: Optional[Sequence[str]] = None,
                  **kwargs) -> Tuple[List[Finding], Optional[Exception]]:
    """Run ``function`` as the plugin runs a test body: (findings, the exception it ended with, or None).

    The monitor is shown that exception, as the plugin shows it the test's.
    """
    from pytest_trainsafe.runtime.monitor import Monitor, runtime_checks

    monitor = Monitor(codes or list(runtime_checks()))
    monitor.start()
    error: Optional[Exception] = None
    try:
        function(*args, **kwargs)
    except Exception as exc:
        error = exc
    finally:
        monitor.stop(error)
    return monitor.findings, error


def watch(function, *args, codes: Optional[Sequence[str]] = None, **kwargs) -> List[Finding]:
    """Run ``function(*args, **kwargs)`` under the runtime monitor; its findings (exceptions propagate)."""
    findings, error = watch_outcome(function, *args, codes=codes, **kwargs)
    if error is not None:
        raise error
    return findings


def watch_codes(function, *args, codes: Optional[Sequence[str]] = None, **kwargs) -> Set[str]:
    return {f.code for f in watch(function, *args, codes=codes, **kwargs)}


def load_script(path, name: Optional[str] = None):
    """Import a script file as a fresh module (its ``if __name__ == '__main__'`` block does not run)."""
    import importlib.util
    import sys
    from pathlib import Path

    path = Path(path)
    module_name = name or f"trainsafe_example_{path.parent.name}_{path.stem}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module


# -- runtime rule tests: where findings are expected, and the tiny models and data they train -----------


def marked_lines(*objects: object, codes: Sequence[str], tag: str = "") -> Set[Tuple[str, int]]:
    """{(path, line)} of the source lines of ``objects`` (functions, classes) marked ``# TSNNN here``.

    A runtime test marks the line its finding must point at right next to the code, for any code
    in ``codes`` (the ones it watches), so the expectation survives edits that move lines. With
    ``tag``, only the lines marked ``# TSNNN here (tag)`` count: one function, several scenarios.
    """
    import inspect

    suffix = f" ({tag})" if tag else ""
    markers = [f"# {code} here{suffix}" for code in codes]
    marks = set()
    for obj in objects:
        lines, start = inspect.getsourcelines(obj)  # type: ignore[arg-type]
        path = inspect.getsourcefile(obj)  # type: ignore[arg-type]
        marks |= {(path, start + i) for i, line in enumerate(lines) if any(m in line for m in markers)}
    return marks


def finding_lines(findings: Iterable[Finding]) -> Set[Tuple[str, int]]:
    """{(path, line)} of ``findings``: what a runtime test compares with :func:`marked_lines`."""
    return {(f.path, f.line) for f in findings}


def found_lines(function: Callable, *args: object, codes: Optional[Sequence[str]] = None) -> Set[Tuple[str, int]]:
    """{(path, line)} of the findings of ``function(*args)`` run under the monitor (see :func:`watch`)."""
    return finding_lines(watch(function, *args, codes=codes))


def regression_batches(device: str = "cpu", n: int = 3, *, batch: int = 8, features: int = 4, outputs: int = 1,
                       seed: int = 0) -> List[Tuple["torch.Tensor", "torch.Tensor"]]:
    """``n`` seeded random (x, y) float batches, x ``(batch, features)``, y ``(batch, outputs)``.

    Drawn on the CPU from one generator (the same values on every device), then moved to ``device``.
    """
    import torch

    generator = torch.Generator().manual_seed(seed)
    return [(torch.randn(batch, features, generator=generator).to(device),
             torch.randn(batch, outputs, generator=generator).to(device)) for _ in range(n)]


def classification_batches(device: str = "cpu", n: int = 3, *, batch: int = 8, features: int = 4, classes: int = 2,
                           seed: int = 0) -> List[Tuple["torch.Tensor", "torch.Tensor"]]:
    """``n`` seeded random (x, labels) batches, x ``(batch, features)`` floats, labels in ``[0, classes)``.

    Drawn on the CPU from one generator (the same values on every device), then moved to ``device``.
    """
    import torch

    generator = torch.Generator().manual_seed(seed)
    return [(torch.randn(batch, features, generator=generator).to(device),
             torch.randint(0, classes, (batch,), generator=generator).to(device)) for _ in range(n)]


def tiny_mlp(device: str = "cpu", outputs: int = 1) -> "torch.nn.Module":
    """``Linear(4, 8) -> ReLU -> Linear(8, outputs)`` on ``device``, seeded: the same weights every call."""
    import torch
    from torch import nn

    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, outputs)).to(device)


@contextlib.contextmanager
def single_thread() -> Iterator[None]:
    """Run torch on one thread inside the block, restoring the thread count after it.

    Tiny models run fastest on one thread, above all on a shared, busy machine (for ``one_thread`` fixtures).
    """
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def injected_line(path: str, code: str) -> int:
    """The line of file ``path`` that ends with ``# injected: <code>``: where a framework test wrote the pitfall
    that the finding must point at."""
    from pathlib import Path

    marker = f"# injected: {code}"
    for number, text in enumerate(Path(path).read_text().splitlines(), start=1):
        if text.rstrip().endswith(marker):
            return number
    raise AssertionError(f"no line ends with {marker!r}")


def run_pytest_trainsafe(directory, name: str, source: str, **environment: str) -> Tuple[int, str]:
    """Run ``pytest --trainsafe`` in a fresh process on a test file ``name`` holding ``source`` (dedented),
    written to ``directory`` with its own ``pytest.ini``; (exit status, stdout + stderr).

    The child does not inherit this suite's ``PYTEST_ADDOPTS`` / ``PYTEST_DISABLE_PLUGIN_AUTOLOAD``, so
    it loads the plugin the way a user's run does; ``environment`` adds variables.
    """
    import os
    import subprocess
    import sys
    from pathlib import Path

    directory = Path(directory)
    (directory / "pytest.ini").write_text("[pytest]\n")
    test_file = directory / name
    test_file.write_text(textwrap.dedent(source))
    env = {k: v for k, v in os.environ.items() if k not in ("PYTEST_ADDOPTS", "PYTEST_DISABLE_PLUGIN_AUTOLOAD")}
    env.update(environment)
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "--trainsafe", "-p", "no:cacheprovider", "-q", "-rA", str(test_file)],
        cwd=directory, env=env, capture_output=True, text=True, timeout=300,
    )
    return result.returncode, result.stdout + result.stderr
