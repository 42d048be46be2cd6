"""TS002 layer-in-forward at runtime: a module with parameters is constructed while a forward() runs.

What is watched: parameter registrations (``Module.register_parameter``, which
``nn.Linear.__init__`` and every other parameterized layer go through) that happen
while a module call is running (``events.root`` is set). Correct code almost never
does this, so only then is the stack looked at, up to the innermost running
module call:

* if an ``nn.Module.__init__`` is on the way, the registration belongs to a module
  being *constructed* inside forward. The outermost such constructor gives the
  constructed module (a user ``Block`` whose ``__init__`` builds ``nn.Linear``\\ s is
  one construction, located at the line that calls ``Block(...)``), and its caller
  gives the construction line, which must be user code (a module torch builds
  internally, e.g. while compiling, is not the user's doing). Each constructed
  module is recorded once (weakly), with the module whose forward was running
  (the *owner*);
* when the outermost module call finishes, each module constructed during it is
  judged:

  a. already garbage-collected: it was used and thrown away within the call
     (``nn.Linear(4, 4)(x)``, ``nn.Sequential(nn.Linear(...), ...)(x)``): TS002,
     unless none of the parameters it was built with is left trainable on its own
     storage (``requires_grad_(False)``, ``conv.weight.data = kernel``,
     ``conv.weight = nn.Parameter(k, requires_grad=False)``: a module used as a
     function with fixed weights). Its ``__dict__`` is held until then to tell;
  b. alive (attached to the model, or cached): legitimate so far (a lazy
     initialisation ``if self.proj is None: self.proj = nn.Linear(...)``, per-task
     heads added to a ``ModuleDict``). It becomes TS002 when a later call of the same
     owner constructs again at the same line a module of the same type and
     parameter shapes while the earlier one has died in between: the layer is
     re-created on every call (``self.fc = nn.Linear(...)`` in forward). A rebuild
     for a new input size (other shapes), per-key heads (the earlier one is still
     alive) and other model instances (another owner) stay silent;

* without a constructor on the way, a Parameter is assigned to an existing module
  (``self.scale = nn.Parameter(...)`` in forward): TS002 when a later call of the
  same module replaces that parameter, from the same line, by a different one of
  the same shape (weight tying re-assigns the *same* object: silent).

Lazy modules (``nn.LazyLinear``) materialise their parameters in place on their
first call, which registers nothing: silent. Buffers are not parameters.
Parameter-free modules (``nn.ReLU()``, ``nn.Dropout()``) register nothing: silent.

Cost: one attribute test per parameter registration outside forward (model
construction); one comparison per module call. The stack walk, bounded by the
innermost module call, happens only for registrations inside a forward, once per
module that receives parameters there. Modules and parameters are referenced weakly;
a module constructed inside a forward has its ``__dict__`` held until that call returns.
"""

from __future__ import annotations

import sys
import weakref
from types import FrameType
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Tuple

from ..events import Events
from ..hooks import HookSet
from ..identitymap import IdentityMap
from ..location import Location, user_location
from ..monitor import RuntimeCheck

_OWN_PACKAGE = "pytest_trainsafe.runtime"
#: Frames walked at most looking for the innermost module call (deeper: give up, stay silent).
_MAX_FRAMES = 200


class _Birth:
    """A module constructed during the running outermost forward.

    The module itself is held weakly (whether it dies by the end of the call is the
    question); its instance ``__dict__`` is held until then, so that its final
    parameters can still be read after it died: a module whose fresh parameters were
    all frozen or replaced (a blur kernel, a teacher loaded from a state dict) was used
    as a function with fixed weights, not built to be trained.
    """

    __slots__ = ("module", "owner", "where", "label", "owner_label", "state", "fresh")

    def __init__(self, module: Any, owner: Any, where: Location) -> None:
        self.module: Callable[[], Any] = weakref.ref(module)
        self.owner: Callable[[], Any] = weakref.ref(owner)
        self.where = where
        # Class objects, not strings: no formatting per construction.
        self.label = type(module)
        self.owner_label = type(owner)
        self.state: Dict[str, Any] = module.__dict__
        #: Parameters registered while it was constructed, with their storage then (None: lazy).
        self.fresh: List[Tuple[Callable[[], Any], Optional[int]]] = []

    def add(self, param: Any) -> None:
        try:
            pointer: Optional[int] = None if _is_lazy(param) else param.data_ptr()
            self.fresh.append((weakref.ref(param), pointer))
        except Exception:
            pass

    def trainable(self, parameters: Iterable[Any]) -> bool:
        """Whether one of ``parameters`` is one of its fresh ones, still trainable, on its own storage."""
        fresh: Dict[int, Optional[int]] = {}
        for reference, pointer in self.fresh:
            param = reference()
            if param is not None:
                fresh[id(param)] = pointer
        for param in parameters:
            if id(param) in fresh and param.requires_grad:
                pointer = fresh[id(param)]
                if pointer is None or _is_lazy(param) or param.data_ptr() == pointer:
                    return True
        return False

    def release(self) -> None:
        """Drop the held ``__dict__`` once judged: nothing of the user's is kept alive past the call."""
        self.state = {}
        self.fresh = []

    def final_parameters(self) -> Iterator[Any]:
        """Its parameters as they were when it died, read from the held ``__dict__``."""
        for param in self.state.get("_parameters", {}).values():
            if param is not None:
                yield param
        for child in self.state.get("_modules", {}).values():
            if child is not None:
                yield from child.parameters()


class _Previous:
    """The last module one owner constructed at one line: its shape signature and whether it still lives."""

    __slots__ = ("module", "signature", "serial")

    def __init__(self, module: Any, signature: Any, serial: int) -> None:
        self.module: Callable[[], Any] = weakref.ref(module)
        self.signature = signature
        self.serial = serial


def _signature(module: Any) -> Any:
    """Type and parameter shapes (None where a lazy parameter is not materialised yet)."""
    shapes: List[Any] = []
    for parameter in module.parameters():
        try:
            shapes.append(tuple(parameter.shape))
        except Exception:  # UninitializedParameter
            shapes.append(None)
    return type(module), tuple(shapes)


class LayerInForward(RuntimeCheck):
    CODE = "TS002"

    def install(self, events: Events, hooks: HookSet) -> None:
        from torch import nn

        self._events = events
        self._module_type = nn.Module
        self._boundaries = frozenset({nn.Module._call_impl.__code__, nn.Module._wrapped_call_impl.__code__})
        # The file of nn.Module itself (not of __setattr__, which another check may wrap).
        self._module_file = nn.Module._call_impl.__code__.co_filename
        #: Outermost forwards finished so far: tells one call from the next.
        self._serial = 0
        #: Modules already located during this outermost forward: registering module -> (serial, birth or None).
        self._handled: Any = IdentityMap()
        #: Constructed modules already recorded: root module -> birth (None: not built by user code).
        self._roots: Any = IdentityMap()
        self._births: List[_Birth] = []
        #: owner -> {construction line: _Previous}
        self._previous: Any = IdentityMap()
        #: module -> {parameter name: (line, serial, parameter ref, shape)} for Parameters assigned in forward.
        self._assigned: Any = IdentityMap()
        events.parameter_registered.append(self._on_parameter)
        events.root_forward_post.append(self._on_forward_post)

    def finish(self) -> None:
        try:
            self._settle()
        except Exception:
            pass

    # -- events ----------------------------------------------------------------------

    def _on_parameter(self, module: Any, name: str, param: Any) -> None:
        if self._events.root is None:
            return
        try:
            handled = self._handled.get(module)
            if handled is not None and handled[0] == self._serial:
                if handled[1] is not None:
                    handled[1].add(param)
                return
            self._registered_in_forward(module, name, param, sys._getframe(1))
        except Exception:  # a bug here must never break the user's model construction
            pass

    def _on_forward_post(self, module: Any, args: tuple, output: Any) -> None:
        try:
            if self._births:
                self._settle()
        except Exception:
            pass
        finally:
            self._serial += 1

    # -- registrations inside a forward ----------------------------------------------

    def _registered_in_forward(self, module: Any, name: str, param: Any, frame: Optional[FrameType]) -> None:
        constructor: Optional[FrameType] = None
        root: Any = None
        owner: Any = None
        assigner: Optional[FrameType] = None  # the frame that called setattr / register_parameter
        for _ in range(_MAX_FRAMES):
            if frame is None:
                return  # no module call on this thread's stack: not inside a forward
            code = frame.f_code
            if code in self._boundaries:
                owner = frame.f_locals.get("self")
                break
            if assigner is None and code.co_filename != self._module_file \
                    and not frame.f_globals.get("__name__", "").startswith(_OWN_PACKAGE):
                assigner = frame
            if code.co_name == "__init__" and code.co_argcount:
                candidate = frame.f_locals.get(code.co_varnames[0])
                if isinstance(candidate, self._module_type):
                    constructor, root = frame, candidate
            frame = frame.f_back
        else:
            return
        if owner is None:
            return
        if constructor is None:
            if assigner is not None:
                self._assigned_in_forward(module, name, param, assigner)
            return
        if root in self._roots:
            birth = self._roots[root]
        else:
            birth = self._birth(root, owner, constructor.f_back)
            self._roots[root] = birth
        self._handled[module] = (self._serial, birth)
        if birth is not None:
            birth.add(param)

    def _birth(self, root: Any, owner: Any, caller: Optional[FrameType]) -> Optional[_Birth]:
        if caller is None:
            return None
        where = user_location(caller)
        if where != (caller.f_code.co_filename, caller.f_lineno):
            return None  # built by library code (torch.compile's graph modules...): not the user's line
        birth = _Birth(root, owner, where)
        self._births.append(birth)
        return birth

    def _assigned_in_forward(self, module: Any, name: str, param: Any, assigner: FrameType) -> None:
        """A Parameter assigned to an existing module inside forward: reported when a later call replaces it."""
        if not getattr(param, "requires_grad", True):
            return  # nn.Parameter(t, requires_grad=False): a constant, nothing to train
        where = user_location(assigner)
        if where != (assigner.f_code.co_filename, assigner.f_lineno):
            return  # assigned by library code (a parametrisation, a compiler): not the user's line
        slots: Optional[Dict[str, Tuple[Location, int, Callable[[], Any], Any]]] = self._assigned.get(module)
        if slots is None:
            slots = self._assigned[module] = {}
        shape = _shape(param)
        previous = slots.get(name)
        slots[name] = (where, self._serial, weakref.ref(param), shape)
        if previous is None:
            return
        old_where, old_serial, old_param, old_shape = previous
        current = module._parameters.get(name)  # still the old one: the hook runs before the assignment
        if (old_where == where and old_serial < self._serial and current is not None and current is old_param()
                and current is not param and old_shape == shape):
            self.report(f"nn.Parameter {name!r} of {type(module).__name__} is replaced by a new one on every "
                        "forward() call", where=where)

    # -- the end of an outermost forward ---------------------------------------------

    def _settle(self) -> None:
        births, self._births = self._births, []
        for birth in births:
            try:
                self._judge(birth)
            finally:
                birth.release()

    def _judge(self, birth: _Birth) -> None:
        """Report a module built during the outermost call that just returned, if it is TS002."""
        module = birth.module()
        if module is None:  # (a) used and thrown away within the call
            if birth.trainable(birth.final_parameters()):
                self.report(f"{birth.label.__name__} built in {birth.owner_label.__name__}.forward() was thrown "
                            "away when the call returned", where=birth.where)
            return
        owner = birth.owner()
        if owner is None:
            return
        lines = self._previous.get(owner)
        if lines is None:
            lines = self._previous[owner] = {}
        signature = _signature(module)
        previous = lines.get(birth.where)
        lines[birth.where] = _Previous(module, signature, self._serial)
        # (b) the same line of the same module built the same layer in an earlier call, and that one is gone.
        if previous is not None and previous.serial < self._serial and previous.module() is None \
                and previous.signature == signature and birth.trainable(module.parameters()):
            self.report(f"{birth.label.__name__} is re-created by every {birth.owner_label.__name__}.forward() "
                        "call", where=birth.where)


def _is_lazy(param: Any) -> bool:
    from torch.nn.parameter import is_lazy

    return is_lazy(param)


def _shape(param: Any) -> Any:
    try:
        return tuple(param.shape)
    except Exception:  # UninitializedParameter
        return None
