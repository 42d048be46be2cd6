"""TS013 module-init-broken at runtime: a module class whose initialiser never initialised it.

What is watched:

- ``torch.nn.Module.__setattr__`` is wrapped for the test. The wrapper calls the
  original and does nothing else, unless torch raises its own "cannot assign
  module / parameters before Module.__init__() call": then the ``__init__`` being run
  is the finding (located at its ``def`` line, like the linter), and torch's error
  propagates unchanged. This catches an ``__init__`` that assigns a layer before
  ``super().__init__()`` or never calls it.
- On the first call of each module class in the test (``events.module_class``), the
  class is examined: a user class that defines no ``__init__`` but a method whose
  name is a near miss of it (``__int__``, ``_init_``...) and that does what an
  initialiser does (stores attributes, calls an ``__init__``), never called by name
  from the class, is the finding, located at that method's ``def`` line. The forward
  runs after this hook, so the finding is made even though that forward then fails
  on the missing layer.

Cost: one extra Python call per module attribute assignment (construction, ``train()``);
no work of its own per module call; the class analysis (reading a few code objects)
once per class.
"""

from __future__ import annotations

import dis
import inspect
import sys
import weakref
from types import FrameType, FunctionType
from typing import Any, Callable, Optional

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


def _running_init(module: Any, frame: Optional[FrameType]) -> Optional[Location]:
    """The ``def`` line of the ``__init__`` being run for ``module`` (the innermost one on the stack)."""
    while frame is not None:
        code = frame.f_code
        if code.co_name == "__init__" and code.co_argcount and frame.f_locals.get(code.co_varnames[0]) is module:
            return code.co_filename, code.co_firstlineno
        frame = frame.f_back
    return None


class ModuleInitBrokenCheck(RuntimeCheck):
    """Reports module classes whose ``__init__`` is misspelled or skips ``Module.__init__``."""

    CODE = "TS013"

    def install(self, events: Events, hooks: HookSet) -> None:
        events.module_class.append(self._on_module_class)
        original = torch.nn.Module.__setattr__
        report = self._on_uninitialised

        def __setattr__(module: Any, name: str, value: Any) -> None:
            try:
                original(module, name, value)
            except AttributeError as error:
                if str(error) in _BEFORE_INIT:
                    report(module)
                raise

        __setattr__.__wrapped__ = original  # type: ignore[attr-defined]
        __setattr__.__qualname__ = original.__qualname__
        hooks.patch(torch.nn.Module, "__setattr__", __setattr__)

    def _on_uninitialised(self, module: Any) -> None:
        try:
            where = _running_init(module, sys._getframe(2))
            detail = f"{type(module).__name__}.__init__ assigns a layer or parameter before super().__init__()"
            if where is not None and not where[0].startswith("<"):
                self.report(detail, where=where)
            else:  # generated code (a dataclass __init__): the user's line that built the module
                self.report(detail)
        except Exception:  # never let the check itself hide torch's error
            pass

    def _on_module_class(self, cls: type) -> Optional[Callable[[Any, tuple], None]]:
        """Examine each module class on its first call: report it there if its ``__init__`` is misspelled."""
        where = _analysed(cls)
        if where is not None:
            self.report(f"{cls.__name__} defines a misspelled __init__, which never runs", where=where)
        return None  # nothing to do per call
