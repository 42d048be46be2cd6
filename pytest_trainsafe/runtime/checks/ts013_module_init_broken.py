"""TS013 module-init-broken at runtime: a module class whose initialiser never initialised it.

What is watched:

- A test that fails with torch's own "cannot assign module / parameters before
  Module.__init__() call" (``RuntimeCheck.explain``): the ``__init__`` that was
  running when ``Module.__setattr__`` raised, found in the error's traceback, is
  the finding (located at its ``def`` line, like the linter); torch's error is
  the test's failure, untouched. This catches an ``__init__`` that assigns a
  layer before ``super().__init__()`` or never calls it. Nothing is patched for
  it: wrapping ``Module.__setattr__`` (a dunder) would make CPython rewrite a
  slot of every Module subclass, twice per test, and add a call to every
  attribute assignment of every module.
- On the first call of each module class in the test (``events.module_class``), the
  class is examined: a user class that defines no ``__init__`` but a method whose
  name is a near miss of it (``__int__``, ``_init_``...) and that does what an
  initialiser does (stores attributes, calls an ``__init__``), never called by name
  from the class, is the finding, located at that method's ``def`` line. The forward
  runs after this hook, so the finding is made even though that forward then fails
  on the missing layer.

Cost: nothing per module call or attribute assignment; the class analysis
(reading a few code objects) once per class; a traceback walk when a test fails.
"""

from __future__ import annotations

import dis
import inspect
import weakref
from types import FrameType, FunctionType, TracebackType
from typing import Any, Callable, List, Optional

import torch

from ..events import Events
from ..hooks import HookSet
from ..location import Location
from ..monitor import RuntimeCheck

_BEFORE_INIT = ("cannot assign module before Module.__init__() call",
                "cannot assign parameters before Module.__init__() call")


def _stores_or_inits(function: FunctionType) -> bool:
    """Whether a function's code stores an attribute or calls something's ``__init__``."""
    code = function.__code__
    if "__init__" in code.co_names:
        return True
    return any(instruction.opname == "STORE_ATTR" for instruction in dis.get_instructions(code))


#: Module class -> where its misspelled ``__init__`` is (None: none). The analysis reads the class's
#: code and source file: done once per class and process, not once per test.
_ANALYSED: "weakref.WeakKeyDictionary[type, Optional[Location]]" = weakref.WeakKeyDictionary()


def _analysed(cls: type) -> Optional[Location]:
    try:
        return _ANALYSED[cls]
    except KeyError:
        pass
    try:
        where = _misspelled_init(cls)
    except Exception:
        where = None
    _ANALYSED[cls] = where
    return where


def _misspelled_init(cls: type) -> Optional[Location]:
    """Where the misspelled ``__init__`` of a module class is defined, if it has one."""
    from trainsafe_lint.rules.ts013_module_init_broken import is_init_misspelling

    user_classes = [k for k in cls.__mro__ if k is not torch.nn.Module and not k.__module__.startswith("torch.")
                    and issubclass(k, torch.nn.Module)]
    called = set()
    for klass in user_classes:
        for value in vars(klass).values():
            if isinstance(value, FunctionType):
                called.update(value.__code__.co_names)
    for klass in user_classes:
        namespace = vars(klass)
        if "__init__" in namespace:
            return None  # the first initialiser in the MRO exists
        for name, value in namespace.items():
            if isinstance(value, FunctionType) and is_init_misspelling(name) and name not in called \
                    and _stores_or_inits(value) and not _called_in_file(value, name):
                path = inspect.getsourcefile(value) or value.__code__.co_filename
                return path, value.__code__.co_firstlineno
    return None


def _called_in_file(function: FunctionType, name: str) -> bool:
    """Whether the function's source file calls a method of that name (a hook, as the linter judges it)."""
    path = inspect.getsourcefile(function)
    if path is None:
        return False
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except (OSError, UnicodeDecodeError):
        return False
    return f".{name}(" in text or f".{name})" in text


def _causes(error: BaseException, limit: int = 5) -> List[BaseException]:
    """The error and the exceptions it was raised from or while handling (a few, no cycles)."""
    found: List[BaseException] = []
    current: Optional[BaseException] = error
    while current is not None and len(found) < limit and all(current is not seen for seen in found):
        found.append(current)
        current = current.__cause__ or current.__context__
    return found


def _setattr_frame(traceback: Optional[TracebackType]) -> Optional[FrameType]:
    """The frame of torch's ``Module.__setattr__`` that raised, from the error's traceback."""
    setattr_code = torch.nn.Module.__setattr__.__code__
    found = None
    while traceback is not None:
        if traceback.tb_frame.f_code is setattr_code:
            found = traceback.tb_frame
        traceback = traceback.tb_next
    return found


def _running_init(module: Any, frame: Optional[FrameType]) -> Optional[FrameType]:
    """The frame of the ``__init__`` being run for ``module`` (the innermost one on the stack)."""
    while frame is not None:
        code = frame.f_code
        if code.co_name == "__init__" and code.co_argcount and frame.f_locals.get(code.co_varnames[0]) is module:
            return frame
        frame = frame.f_back
    return None


class ModuleInitBrokenCheck(RuntimeCheck):
    """Reports module classes whose ``__init__`` is misspelled or skips ``Module.__init__``."""

    CODE = "TS013"

    def install(self, events: Events, hooks: HookSet) -> None:
        events.module_class.append(self._on_module_class)

    def explain(self, error: BaseException) -> None:
        for exc in _causes(error):
            if isinstance(exc, AttributeError) and str(exc) in _BEFORE_INIT:
                self._on_uninitialised(exc)
                return

    def _on_uninitialised(self, error: AttributeError) -> None:
        raised = _setattr_frame(error.__traceback__)
        if raised is None:
            return
        module = raised.f_locals.get("self")
        init = _running_init(module, raised.f_back)
        detail = f"{type(module).__name__}.__init__ assigns a layer or parameter before super().__init__()"
        if init is None:
            self.report(detail, frame=raised)
        elif init.f_code.co_filename.startswith("<"):  # generated (a dataclass): the line that built the module
            self.report(detail, frame=init.f_back)
        else:
            self.report(detail, where=(init.f_code.co_filename, init.f_code.co_firstlineno))

    def _on_module_class(self, cls: type) -> Optional[Callable[[Any, tuple], None]]:
        """Examine each module class on its first call: report it there if its ``__init__`` is misspelled."""
        where = _analysed(cls)
        if where is not None:
            self.report(f"{cls.__name__} defines a misspelled __init__, which never runs", where=where)
        return None  # nothing to do per call
