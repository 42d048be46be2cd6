"""Inject one rule's bug into a reference loop, through marker comments in its source.

A line of a reference loop that can carry a bug ends in a marker comment::

    optimizer.zero_grad(set_to_none=True)  # inject TS001: pass

``inject(source, "TS001")`` replaces the code part of every line marked for
TS001 by the text after the colon (keeping the line's indentation) and strips
every other marker comment, so the result is the loop with exactly that one
bug. A marker on a line of its own adds a line that only the bug needs (an
import, say); an empty replacement removes the line's code (a decorator, say).
Lines are never added or removed (a dropped line becomes blank), so a line
number means the same thing in the reference loop and in every injected copy.

The injected source is what both detectors are tested on: the linter reads it,
and :func:`injected_module` writes it to a file and imports it, so the runtime
monitor runs it and locates its findings in that file.
"""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path
from types import ModuleType
from typing import FrozenSet, List, Optional, Tuple, Union

_CODE = re.compile(r"^TS\d{3}$")
_MARKER = re.compile(
    r"^(?P<indent>[ \t]*)(?P<code>.*?)[ \t]*#[ \t]*inject[ \t]+(?P<rule>TS\d{3})[ \t]*:[ \t]?(?P<replacement>.*?)[ \t]*$"
)


def injectable(source: str) -> FrozenSet[str]:
    """The codes that ``source`` has markers for."""
    codes = set()
    for line in source.splitlines():
        match = _MARKER.match(line)
        if match:
            codes.add(match.group("rule"))
    return frozenset(codes)


def _rewrite(source: str, code: Optional[str]) -> str:
    lines: List[str] = []
    for line in source.splitlines(keepends=True):
        match = _MARKER.match(line.rstrip("\r\n"))
        if match is None:
            lines.append(line)
            continue
        ending = line[len(line.rstrip("\r\n")):]
        text = match.group("replacement") if match.group("rule") == code else match.group("code")
        lines.append((match.group("indent") + text if text else "") + ending)
    return "".join(lines)


def clean(source: str) -> str:
    """``source`` with every marker comment removed and no bug injected."""
    return _rewrite(source, None)


def inject(source: str, code: str) -> str:
    """``source`` with ``code``'s bug injected and every marker comment removed.

    Raises ValueError if ``code`` is not a rule code or ``source`` has no marker for it.
    """
    if not _CODE.match(code):
        raise ValueError(f"not a rule code: {code!r} (expected TSNNN)")
    available = injectable(source)
    if code not in available:
        listed = ", ".join(sorted(available)) or "none"
        raise ValueError(f"no '# inject {code}:' marker in this source (injectable: {listed})")
    return _rewrite(source, code)


def _source_of(loop: Union[ModuleType, str, Path]) -> Tuple[str, str]:
    if isinstance(loop, ModuleType):
        path = Path(loop.__file__ or "")
    else:
        path = Path(loop)
    return path.stem, path.read_text(encoding="utf-8")


def injected_module(loop: Union[ModuleType, str, Path], code: Optional[str], directory: Union[str, Path]) -> ModuleType:
    """Write ``loop`` (a module or a file) with ``code``'s bug (None: no bug) to ``directory`` and import it.

    The module is imported fresh, under a name of its own, from a real file, so
    the linter can read what runs and runtime findings point into that file
    (``module.__file__``). Its ``if __name__ == "__main__"`` block does not run.
    """
    stem, source = _source_of(loop)
    text = clean(source) if code is None else inject(source, code)
    suffix = code.lower() if code else "clean"
    path = Path(directory) / f"{stem}_{suffix}.py"
    path.write_text(text, encoding="utf-8")
    name = f"trainsafe_injected_{stem}_{suffix}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:  # pragma: no cover - a .py file always has a loader
        raise ImportError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses, pickling and inspect look modules up here
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    return module


__all__ = ["clean", "inject", "injectable", "injected_module"]
