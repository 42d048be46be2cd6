"""TS005 builtin-sum-on-tensor at runtime: Python's ``sum()`` walks a tensor row by row.

For the test's duration ``builtins.sum`` is replaced by a wrapper that calls
the original with exactly the same arguments and returns its result (or lets
its exception through) unchanged. Before that, the first positional argument
is looked at, with type checks only:

* a ``torch.Tensor`` with at least one dimension: ``sum(t)`` iterates it
  (``Tensor.__iter__`` is ``iter(self.unbind(0))``), one Python-level add per
  row, and gives a tensor of shape ``t.shape[1:]``, not a scalar;
* a generator whose iterable is a tensor (``sum(x.item() for x in t)``,
  ``sum(row.norm() for row in w)``): the generator's hidden ``.0`` local is
  the ``tuple_iterator`` that ``Tensor.__iter__`` returned. Its items are read
  through ``__reduce__`` (which does not advance it) and it counts as a tensor
  when it holds exactly the rows of one tensor: at least two views of one base,
  each the ``i``-th slice along dim 0 of that base. ``sum(x.item() for x in t)``
  is reported too: it is the same row-by-row loop, with a device sync per row.

Silent on: lists and tuples (``sum(losses)`` over per-batch scalar losses),
generators over lists, ranges or ``model.parameters()``, ``t.tolist()``,
``torch.sum`` / ``tensor.sum()`` (they never call the builtin), numpy arrays,
and calls made from torch, other frameworks or installed packages (a finding
must point at a line the user can change). Known misses: generators over a
tensor that is itself a view with fewer dimensions than its base, or created
under ``torch.inference_mode()`` (no view tracking there), ``zip``/``enumerate``
over a tensor, and list comprehensions (``sum([x for x in t])``).
"""

from __future__ import annotations

import builtins
import sys
from types import FrameType, GeneratorType
from typing import Any, Callable

import torch

from ..events import Events
from ..hooks import HookSet
from ..location import user_location
from ..monitor import RuntimeCheck
from ..torchutil import is_compiling

_TupleIterator = type(iter(()))
_compiling = is_compiling
_Tensor = torch.Tensor
_INSTALLED_PACKAGES = ("site-packages", "dist-packages")


def _rows_of_one_tensor(items: Any) -> bool:
    """Whether ``items`` (a tuple) is exactly ``t.unbind(0)`` for some tensor ``t``, as far as is provable.

    With autograd recording, every row shares one ``UnbindBackward0`` node along
    dim 0. Otherwise the rows must be the ``i``-th slices along dim 0 of their
    view base (``t`` itself, not a reshaped view of another tensor: a view's rows
    look like ``base.chunk(n)``, which is a deliberate split, never reported).
    """
    if type(items) is not tuple or len(items) < 2:
        return False
    first = items[0]
    if not isinstance(first, _Tensor):
        return False
    node = first.grad_fn
    if node is not None:
        if node.name() != "UnbindBackward0" or getattr(node, "_saved_dim", None) != 0:
            return False
        return all(isinstance(item, _Tensor) and item.grad_fn is node and item.output_nr == index
                   for index, item in enumerate(items))
    base = first._base
    if base is None or base.dim() != first.dim() + 1 or base.shape[0] != len(items):
        return False
    row_shape, row_stride = base.shape[1:], base.stride(0)
    origin = base.storage_offset()
    for index, item in enumerate(items):
        if not isinstance(item, _Tensor) or item._base is not base or item.shape != row_shape \
                or item.storage_offset() != origin + index * row_stride:
            return False
    return True


def _iterates_tensor(value: Any) -> str:
    """"tensor" / "generator" when ``sum(value)`` walks a tensor row by row, else ""."""
    if isinstance(value, _Tensor):
        return "tensor" if value.dim() >= 1 else ""
    if type(value) is GeneratorType:
        frame = value.gi_frame
        if frame is None:
            return ""
        source = frame.f_locals.get(".0")
        if type(source) is _TupleIterator:
            reduced = source.__reduce__()  # (iter, (items,), position): reading it does not advance it
            if len(reduced) == 3 and len(reduced[1]) == 1 and _rows_of_one_tensor(reduced[1][0]):
                return "generator"
    return ""


class _Sum:
    """Stands in for ``builtins.sum``: checks the first argument, then calls the original.

    A callable object rather than a function: it does not bind as a method when
    stored as a class attribute (``reduce = sum``), it hashes and compares equal
    to the original (dispatch tables keyed by ``builtins.sum``, as pandas keeps,
    still find it) and it pickles as ``builtins.sum``.
    """

    __slots__ = ("_original", "_check")
    __name__ = "sum"

    def __init__(self, original: Callable[..., Any], check: "BuiltinSumOnTensor") -> None:
        self._original = original
        self._check = check

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if args and not _compiling():  # under torch.compile, trace the plain builtin
            try:
                kind = _iterates_tensor(args[0])
                if kind:
                    self._check.found(kind, args[0], sys._getframe(1))
            except Exception:  # the check must never change what sum() does
                pass
        return self._original(*args, **kwargs)

    @property
    def __wrapped__(self) -> Callable[..., Any]:
        return self._original

    def __eq__(self, other: object) -> bool:
        return other is self or other is self._original

    def __hash__(self) -> int:
        return hash(self._original)

    def __reduce__(self) -> str:
        return "sum"

    def __repr__(self) -> str:
        return repr(self._original)


_Sum.__module__ = "builtins"  # pickle finds it as builtins.sum (see __reduce__)


class BuiltinSumOnTensor(RuntimeCheck):
    CODE = "TS005"

    def install(self, events: Events, hooks: HookSet) -> None:
        # Modules imported while the stand-in is in place would capture it for good.
        # torch._dynamo registers a polyfill keyed on builtins.sum when first imported (which
        # the first optimizer built in a process triggers): import it with the real builtin.
        if "torch._dynamo" not in sys.modules:
            try:
                import torch._dynamo  # noqa: F401
            except Exception:
                pass
        hooks.patch(builtins, "sum", _Sum(builtins.sum, self))

    def found(self, kind: str, value: Any, caller: FrameType) -> None:
        """Report a ``sum()`` call over a tensor made directly by user code at ``caller``."""
        where = user_location(caller)
        if where != (caller.f_code.co_filename, caller.f_lineno):
            return  # called from torch, a framework or trainsafe itself: not the user's line
        if any(part in where[0] for part in _INSTALLED_PACKAGES):
            return  # inside an installed package: nothing the user can change
        if kind == "tensor":
            detail = f"sum() over a tensor of shape {tuple(value.shape)}: {value.shape[0]} Python-level additions"
        else:
            detail = "sum() over a generator that iterates a tensor row by row"
        self.report(detail, where=where)
