"""pytest plugin: ``pytest --trainsafe`` watches every test's training and evaluation loops.

Modelled on pytest's own faulthandler plugin: global torch hooks are installed
around each test's call phase by a ``wrapper=True`` hook and removed in
``finally``; per-test state lives in ``item.stash``. torch is imported only
when a test is actually watched.
"""

from __future__ import annotations

import json
import os
import warnings
from collections import Counter
from typing import TYPE_CHECKING, Any, Dict, Generator, List, Optional

import pytest

from .catalog import UnknownCodeError
from .finding import Finding
from .settings import OPTIONS, Settings, resolve, split_codes

if TYPE_CHECKING:
    from .runtime.monitor import Monitor


class TrainsafeFailure(pytest.fail.Exception):  # type: ignore[misc,name-defined]
    """Fails a test whose run showed a training pitfall, after the test body has finished.

    It carries only the findings (pytrace off): the user's lines are in the
    message, and a traceback into the plugin would point at the wrong code.
    """

    def __init__(self, text: str) -> None:
        super().__init__(text, pytrace=False)


class TrainsafeWarning(UserWarning):
    """Emitted instead of a failure with ``--trainsafe-warn``."""


SETTINGS_KEY = pytest.StashKey[Settings]()
REPORTED_KEY = pytest.StashKey[List[Dict[str, Any]]]()
MONITOR_KEY = pytest.StashKey["Monitor"]()
EXPLICIT_KEY = pytest.StashKey[bool]()
USER_PROPERTY = "trainsafe_findings"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("trainsafe", "trainsafe: PyTorch training pitfalls")
    for option in OPTIONS:
        if option.kind == "bool":
            group.addoption(option.flag, action="store_true", default=None, dest=option.name, help=option.help)
            parser.addini(option.name, option.help, type="bool", default=False)
        else:
            group.addoption(option.flag, action="store", default=None, dest=option.name, help=option.help)
            # Codes may be a TOML list or a comma/space separated string.
            parser.addini(option.name, option.help, type="args" if option.kind == "codes" else "string",
                          default=[] if option.kind == "codes" else "")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "trainsafe(ignore=[...], select=[...]): narrow the trainsafe rules checked in this test",
    )
    cli = {o.name: config.getoption(o.name) for o in OPTIONS}
    ini = {}
    for option in OPTIONS:
        try:
            ini[option.name] = config.getini(option.name)
        except (ValueError, pytest.UsageError) as exc:  # e.g. "invalid truth value 'maybe'"
            raise pytest.UsageError(
                f"trainsafe: invalid value for the {option.name} ini option in {config.inipath}: {exc}") from None
    try:
        config.stash[SETTINGS_KEY] = resolve(cli, ini)
    except UnknownCodeError as exc:
        raise pytest.UsageError(f"trainsafe: {exc}") from None
    config.stash[REPORTED_KEY] = []
    config.pluginmanager.register(_FindingCollector(config.stash[REPORTED_KEY]), "trainsafe-findings")


def pytest_report_header(config: pytest.Config) -> Optional[str]:
    settings = config.stash[SETTINGS_KEY]
    if not settings.enabled:
        return None
    mode = "warn" if settings.warn else "fail"
    rules = ", ".join(sorted(settings.codes)) or "none (no selected rule has a runtime check)"
    return f"trainsafe: on ({mode}), rules {rules}"


def _settings_for(item: pytest.Item) -> Settings:
    settings = item.config.stash[SETTINGS_KEY]
    for marker in reversed(list(item.iter_markers("trainsafe"))):  # closest marker wins
        origin = f"@pytest.mark.trainsafe on {item.nodeid}"
        try:
            settings = settings.narrowed(split_codes(marker.kwargs.get("select")),
                                         split_codes(marker.kwargs.get("ignore")), origin)
        except UnknownCodeError as exc:
            raise pytest.UsageError(f"trainsafe: {exc}") from None
    return settings


def _monitor_for(item: pytest.Item) -> "Monitor":
    monitor = item.stash.get(MONITOR_KEY, None)
    if monitor is None:
        from .runtime.monitor import Monitor

        monitor = Monitor(_settings_for(item).codes)
        item.stash[MONITOR_KEY] = monitor
    return monitor


class TrainsafeFixture:
    """What the ``trainsafe`` fixture gives a test: explicit control over the findings.

    A test that asks for it takes responsibility for its findings: they are
    collected, exposed here, and do not fail the test on their own.
    """

    def __init__(self, monitor: "Monitor") -> None:
        self._monitor = monitor

    @property
    def findings(self) -> List[Finding]:
        """Findings so far, including conclusions that need the whole run (drawn now)."""
        if self._monitor.running:
            self._monitor.conclude()
        return list(self._monitor.findings)

    @property
    def codes(self) -> set:
        return {finding.code for finding in self.findings}

    def check_device_portable(self, model: Any, *args: Any, **kwargs: Any) -> Any:
        """Run ``model(*args, **kwargs)`` once on a stand-in CUDA device (fake tensors, no GPU needed).

        Code that would put a tensor on the wrong device on a GPU (a tensor made
        in forward without ``device=``, a hard-coded ``.cpu()``) is reported as
        TS003 at its line; the model and the test's own state are left untouched.
        """
        from .runtime.standin_device import check_device_portable

        report = check_device_portable(model, *args, **kwargs)
        for finding in report.findings:
            self._monitor.report(finding.code, finding.detail, where=(finding.path, finding.line), **finding.extra)
        return report

    def clear(self) -> None:
        self._monitor.clear()


@pytest.fixture
def trainsafe(request: pytest.FixtureRequest) -> TrainsafeFixture:
    """Watch this test with trainsafe (even without ``--trainsafe``) and expose its findings."""
    item = request.node
    item.stash[EXPLICIT_KEY] = True
    return TrainsafeFixture(_monitor_for(item))


def _relative(path: str, root: str) -> str:
    try:
        rel = os.path.relpath(path, root)
    except ValueError:
        return path
    return path if rel.startswith("..") else rel


def _failure_text(findings: List[Finding], root: str) -> str:
    lines = [f"trainsafe found {len(findings)} training pitfall(s):"]
    for finding in findings:
        shown = Finding(finding.code, _relative(finding.path, root), finding.line, 0, finding.detail)
        lines.append(shown.format())
    return "\n".join(lines)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, object, object]:
    settings = item.config.stash[SETTINGS_KEY]
    explicit = item.stash.get(EXPLICIT_KEY, False)
    if not (settings.enabled or explicit):
        return (yield)

    monitor = _monitor_for(item)
    monitor.start()
    error: Optional[BaseException] = None
    try:
        result = yield
    except BaseException as exc:  # re-raised below, after the findings are handled
        error = exc
    finally:
        monitor.stop(error)

    findings = monitor.findings
    root = str(item.config.rootpath)
    if findings:
        # user_properties travel with the test report, also from pytest-xdist workers
        # to the controller, which is where the summary and the JSON file are written.
        item.user_properties.append((USER_PROPERTY, [
            {"nodeid": item.nodeid, "code": f.code, "name": f.name, "path": _relative(f.path, root),
             "line": f.line, "message": f.message}
            for f in findings
        ]))
    if findings and not explicit:
        text = _failure_text(findings, root)
        if settings.warn:
            warnings.warn(TrainsafeWarning(text), stacklevel=1)
        elif error is None:
            raise TrainsafeFailure(text)
        else:
            # The test failed on its own (torch's device error, say): keep that error
            # exactly as it is and show the findings beside it.
            item.add_report_section("call", "trainsafe", text)
    if error is not None:
        raise error
    return result


class _FindingCollector:
    """Gathers findings from test reports (local or from xdist workers) into the session list."""

    def __init__(self, findings: List[Dict[str, Any]]) -> None:
        self.findings = findings

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.when != "call":
            return
        for name, value in report.user_properties:
            if name == USER_PROPERTY:
                self.findings.extend(value)


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    reported = config.stash.get(REPORTED_KEY, [])
    if not reported or hasattr(config, "workerinput"):
        return
    terminalreporter.section("trainsafe")
    counts = Counter((r["code"], r["name"]) for r in reported)
    for (code, name), count in sorted(counts.items()):
        terminalreporter.write_line(f"{code} {name}: {count}")


def pytest_sessionfinish(session: pytest.Session) -> None:
    config = session.config
    settings = config.stash.get(SETTINGS_KEY, None)
    if settings is None or not settings.json_path or hasattr(config, "workerinput"):
        return  # an xdist worker: its findings reach the controller through the reports
    with open(settings.json_path, "w", encoding="utf-8") as handle:
        json.dump({"findings": config.stash[REPORTED_KEY]}, handle, indent=2)
        handle.write("\n")
