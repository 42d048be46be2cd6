"""The per-test runtime detector: checks, shared events, findings."""

from __future__ import annotations

import importlib
import pkgutil
import sys
from functools import lru_cache
from types import FrameType
from typing import Callable, ClassVar, Dict, Iterable, List, Optional, Set, Tuple, Type

from ..finding import Finding
from .distributed import ChildRanks
from .events import Events
from .hooks import HookSet
from .location import Location, user_location


class RuntimeCheck:
    """One rule's runtime side. Subclasses live in ``runtime/checks/tsNNN_<name>.py``.

    ``install`` subscribes to :class:`Events` or adds its own hooks to ``hooks``;
    ``finish`` runs after the test for conclusions that need the whole run
    (an output that was never backpropagated, say).
    """

    CODE: ClassVar[str]

    def __init__(self, monitor: "Monitor") -> None:
        self.monitor = monitor

    def install(self, events: Events, hooks: HookSet) -> None:
        raise NotImplementedError

    def explain(self, error: BaseException) -> None:
        """The test raised ``error``: report it if it is the symptom of this check's bug.

        Called before :meth:`finish`, for the exception the test body ended with
        (not for one the test caught itself). Free until a test fails, where a
        hook would cost something on every event.
        """

    def finish(self) -> None:
        """Draw end-of-run conclusions, before hooks are removed.

        Called after the test body, and also when a test reads
        ``trainsafe.findings`` mid-run: it may run more than once, so it must
        not report the same thing twice (the monitor deduplicates by location).
        """

    def report(self, detail: str = "", *, where: Optional[Location] = None,
               frame: Optional[FrameType] = None, **extra: object) -> None:
        self.monitor.report(self.CODE, detail, where=where, frame=frame, **extra)


@lru_cache(maxsize=None)
def runtime_checks() -> Dict[str, Type[RuntimeCheck]]:
    """Every runtime check, by code, discovered once per process from the ``checks`` package."""
    from . import checks

    found: Dict[str, Type[RuntimeCheck]] = {}
    for info in sorted(pkgutil.iter_modules(checks.__path__), key=lambda i: i.name):
        module = importlib.import_module(f"{checks.__name__}.{info.name}")
        for value in vars(module).values():
            if isinstance(value, type) and issubclass(value, RuntimeCheck) and value is not RuntimeCheck \
                    and value.__module__ == module.__name__:
                found[value.CODE] = value
    return found


class Monitor:
    """Watches one test: installs the selected checks' hooks, collects findings, removes the hooks."""

    def __init__(self, codes: Iterable[str]) -> None:
        available = runtime_checks()
        self.codes: Set[str] = set(codes)
        self.findings: List[Finding] = []
        self._seen: Set[Tuple[str, str, int, object]] = set()
        self.events = Events()
        self.hooks = HookSet()
        self.checks = [available[code](self) for code in sorted(self.codes) if code in available]
        self.children = ChildRanks(self)
        self.running = False

    def start(self) -> None:
        if self.running:
            return
        self.running = True
        try:
            for check in self.checks:
                check.install(self.events, self.hooks)
            self.events.install(self.hooks)
            self.children.install(self.hooks)
        except BaseException:
            self.stop()
            raise

    def _each_check(self, action: Callable[[RuntimeCheck], None]) -> None:
        """``action(check)`` for every check; a check's bug is kept for the warning, never raised."""
        for check in self.checks:
            try:
                action(check)
            except Exception as exc:  # a check's bug must not fail the user's test or hide its error
                self.events.errors.append(f"{check.CODE}: {type(exc).__name__}: {exc}")

    def conclude(self) -> None:
        """Draw the conclusions that need the run so far (``finish`` of every check); hooks stay."""
        self._each_check(lambda check: check.finish())

    def stop(self, error: Optional[BaseException] = None) -> None:
        """Finish every check (shown ``error``, the test's exception, if any), then remove every hook."""
        if not self.running:
            return
        try:
            if isinstance(error, Exception):
                self._each_check(lambda check: check.explain(error))
            self.conclude()
            self.children.collect()
        finally:
            self.running = False
            self.hooks.remove_all()
        if self.events.errors:
            import warnings

            warnings.warn("trainsafe: a check failed internally and was skipped: " + "; ".join(self.events.errors),
                          RuntimeWarning, stacklevel=2)

    def clear(self) -> None:
        """Forget the findings so far (the same location may be reported again)."""
        self.findings.clear()
        self._seen.clear()

    def report(self, code: str, detail: str = "", *, where: Optional[Location] = None,
               frame: Optional[FrameType] = None, **extra: object) -> None:
        """Record a finding once per (code, file, line); locate it on the user's line if not given."""
        if where is None:
            where = user_location(frame if frame is not None else sys._getframe(1))
        key = (code, where[0], where[1], extra.get("rank"))
        if key in self._seen:
            return
        self._seen.add(key)
        self.findings.append(Finding(code, where[0], where[1], 0, detail, dict(extra)))
