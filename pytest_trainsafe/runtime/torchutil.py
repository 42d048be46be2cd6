"""Small torch helpers the runtime checks share. Imports torch."""

from __future__ import annotations

from typing import Any, Optional

import torch

from .identitymap import IdentityMap


def first_tensor(value: Any, depth: int = 0) -> Optional[torch.Tensor]:
    """The first tensor in a module output (a tensor, tuple/list, dict or ModelOutput), else None."""
    if isinstance(value, torch.Tensor):
        return value
    if depth > 2:
        return None
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, (tuple, list)):
        for item in value:
            found = first_tensor(item, depth + 1)
            if found is not None:
                return found
    return None


def module_label(module: torch.nn.Module) -> str:
    """How a finding names a module: its class, e.g. ``Linear(in_features=4, ...)`` shortened to ``Linear``."""
    return type(module).__name__


# ---------------------------------------------------------------------------------------
# backward() calls (TS011 loss-accumulated-with-graph, TS016 non-finite-loss). torch has no
# global hook for "a backward pass starts/ends", so ``torch.autograd.backward`` (which
# ``Tensor.backward`` calls through the module attribute) is wrapped ONCE per test,
# however many checks subscribe: one Python call per backward plus one per subscriber.

import functools  # noqa: E402  (appended section)
import weakref  # noqa: E402
from typing import Callable, List, Tuple  # noqa: E402

#: ``subscriber(roots, create_graph)``: the tensors a backward pass started from.
BackwardSubscriber = Callable[[Tuple[torch.Tensor, ...], bool], None]


class Backwards:
    """One test's ``backward()`` calls: how many completed (read it; it costs nothing), and who is told."""

    __slots__ = ("count", "listeners", "before")

    def __init__(self) -> None:
        self.count = 0
        self.listeners: List[BackwardSubscriber] = []
        #: Called with no argument before each backward pass runs (to put hooks in place just in time).
        self.before: List[Callable[[], None]] = []


_backwards: "weakref.WeakKeyDictionary[Any, Backwards]" = weakref.WeakKeyDictionary()


def backwards(hooks: Any) -> Backwards:
    """The test's :class:`Backwards`: ``torch.autograd.backward`` is wrapped ONCE per test, on first use.

    ``hooks`` is the test's HookSet: the wrapper is removed with the test's other
    hooks. The wrapper is transparent: it returns what torch returns, lets
    torch's exceptions through untouched, and a subscriber's own exception never
    reaches the user. Roots passed as something else than a tensor or a
    list/tuple of tensors (a generator, gradient edges) are counted but not
    shown to subscribers.
    """
    source = _backwards.get(hooks)
    if source is not None:
        return source
    source = _backwards[hooks] = Backwards()
    original = torch.autograd.backward
    listeners = source.listeners
    before = source.before

    @functools.wraps(original)
    def backward(tensors: Any, *args: Any, **kwargs: Any) -> Any:
        for prepare in before:
            try:
                prepare()
            except Exception:  # a check's bug must never break the user's training
                pass
        result = original(tensors, *args, **kwargs)
        source.count += 1
        if listeners:
            roots = (tensors,) if isinstance(tensors, torch.Tensor) else \
                tuple(t for t in tensors if isinstance(t, torch.Tensor)) if isinstance(tensors, (list, tuple)) else ()
            if roots:
                create_graph = bool(args[2] if len(args) > 2 else kwargs.get("create_graph", False))
                for listener in listeners:
                    try:
                        listener(roots, create_graph)
                    except Exception:  # a check's bug must never break the user's training
                        pass
        return result

    hooks.patch(torch.autograd, "backward", backward)
    hooks.on_remove(lambda: _backwards.pop(hooks, None))
    return source


def on_backward(hooks: Any, subscriber: BackwardSubscriber) -> None:
    """Call ``subscriber(roots, create_graph)`` after every ``backward()`` that completes in this test."""
    backwards(hooks).listeners.append(subscriber)


# ---------------------------------------------------------------------------------------
# Train / eval mode (TS006 eval-mode-missing, TS007 train-mode-not-restored): which
# submodules of a model compute differently in the two modes.


def _mode_dependent(module: torch.nn.Module) -> bool:
    """Whether ``module`` itself computes differently in train and eval mode (as configured now)."""
    from torch.nn.modules.batchnorm import _NormBase
    from torch.nn.modules.dropout import _DropoutNd

    if isinstance(module, _DropoutNd):
        return module.p > 0
    if isinstance(module, _NormBase):  # batch-norm, sync batch-norm, instance-norm with running stats
        return bool(module.track_running_stats)
    if isinstance(module, (torch.nn.MultiheadAttention, torch.nn.RNNBase)):
        return bool(getattr(module, "dropout", 0))
    return False


class ModeIndex:
    """Per root module, the submodules whose behaviour depends on train/eval mode (computed once).

    Call :meth:`invalidate` when modules are registered (``events.module_registered``):
    a cached answer can only go stale when a submodule is added or replaced.
    """

    def __init__(self) -> None:
        self._cache: Any = IdentityMap()

    def invalidate(self, *args: Any) -> None:
        if self._cache:
            self._cache.clear()

    def modules(self, root: torch.nn.Module) -> List[torch.nn.Module]:
        found = self._cache.get(root)
        if found is None:
            found = self._cache[root] = [m for m in root.modules() if _mode_dependent(m)]
        return found

    def training(self, root: torch.nn.Module) -> List[torch.nn.Module]:
        """Those of them currently in train mode (and still configured to differ: dropout p > 0)."""
        return [m for m in self.modules(root) if m.training and _mode_dependent(m)]


# ---------------------------------------------------------------------------------------
# Calls of torch functions, and what produced a tensor (TS010 softmax-before-cross-entropy,
# TS019 sigmoid-before-bce-with-logits: an activation fed to a loss that applies it itself).
# A loss module's forward calls its functional form through the module attribute
# (``F.cross_entropy``), so wrapping that one attribute sees both spellings.

import types  # noqa: E402  (appended section)
from typing import Dict, FrozenSet  # noqa: E402

#: ``subscriber(args, kwargs)``: the arguments of one call, before it runs.
CallSubscriber = Callable[[tuple, dict], None]
_call_subscribers: "weakref.WeakKeyDictionary[Any, Dict[Tuple[int, str], List[CallSubscriber]]]" = \
    weakref.WeakKeyDictionary()


#: Whether torch.compile is tracing the code that runs now (a function dynamo folds to True while tracing),
#: or torch.export is.
is_compiling = torch.compiler.is_compiling
#: Whether dynamo is tracing the code that runs now: folded to True while tracing, a bare ``return False``
#: otherwise (one Python call, where ``is_compiling`` makes two): for the wrapper run on every module call.
is_dynamo_compiling = getattr(torch.compiler, "is_dynamo_compiling", torch.compiler.is_compiling)
#: Whether torch.export is running the code (on fake tensors) now.
is_exporting = getattr(torch.compiler, "is_exporting", torch.compiler.is_compiling)


def on_call(hooks: Any, owner: Any, attribute: str, subscriber: CallSubscriber) -> None:
    """Call ``subscriber(args, kwargs)`` before every call of ``owner.<attribute>`` in this test.

    The function is wrapped once per test however many checks subscribe, and the
    wrapper is removed with the test's other hooks. It is transparent: same
    arguments, same result, torch's own exceptions untouched; a subscriber's
    exception never reaches the user, and nothing is observed while
    ``torch.compile`` traces. The wrapper is built on the original's globals
    with ``__wrapped__`` set, so TorchScript, which compiles the original's
    source, still scripts code (a loss module, say) that calls it.
    """
    table = _call_subscribers.get(hooks)
    if table is None:
        table = _call_subscribers[hooks] = {}
        hooks.on_remove(lambda: _call_subscribers.pop(hooks, None))
    key = (id(owner), attribute)
    subscribers = table.get(key)
    if subscribers is not None:
        subscribers.append(subscriber)
        return
    subscribers = table[key] = [subscriber]
    original = getattr(owner, attribute)
    listeners = subscribers
    compiling = is_compiling
    # A graph compiled during the test may keep calling the wrapper after it is unpatched:
    # it then only forwards to the original.
    hooks.on_remove(listeners.clear)

    def watched(*args: Any, **kwargs: Any) -> Any:
        if not compiling():
            for listener in listeners:
                try:
                    listener(args, kwargs)
                except Exception:  # a check's bug must never break the user's training
                    pass
        return original(*args, **kwargs)

    namespace = getattr(original, "__globals__", None)
    if isinstance(namespace, dict):
        watched = types.FunctionType(watched.__code__, namespace, watched.__name__, watched.__defaults__,
                                     watched.__closure__)
    functools.update_wrapper(watched, original)
    hooks.patch(owner, attribute, watched)


def call_argument(args: tuple, kwargs: dict, position: int, name: str) -> Any:
    """The argument passed for parameter ``name`` (at ``position``), or None."""
    return args[position] if len(args) > position else kwargs.get(name)


#: Autograd nodes whose output holds the same values as their input (shape, dtype, device,
#: layout, indexing): looked through when asking what produced a tensor.
VALUE_PRESERVING_NODES = frozenset({
    "ViewBackward0", "UnsafeViewBackward0", "ReshapeAliasBackward0", "PermuteBackward0", "TransposeBackward0",
    "TransposeBackward1", "TBackward0", "SqueezeBackward0", "SqueezeBackward1", "SqueezeBackward2",
    "SqueezeBackward3", "SqueezeBackward4", "UnsqueezeBackward0", "ToCopyBackward0", "CloneBackward0",
    "AliasBackward0", "SelectBackward0", "SliceBackward0", "ExpandBackward0", "MovedimBackward0",
})


def produced_by(tensor: Any, nodes: FrozenSet[str], through: int = 4) -> Optional[str]:
    """The autograd node name (one of ``nodes``) of the op that produced ``tensor``'s values, else None.

    Reads ``grad_fn`` and at most ``through`` value-preserving nodes behind it
    (``view``, ``float()``, indexing): O(1), and exact whenever autograd recorded
    the tensor (no ``grad_fn`` under ``no_grad``: None).
    """
    node = getattr(tensor, "grad_fn", None)
    for _ in range(through + 1):
        if node is None:
            return None
        name = type(node).__name__
        if name in nodes:
            return name
        if name not in VALUE_PRESERVING_NODES:
            return None
        following = node.next_functions
        node = following[0][0] if following else None
    return None


# ``module.train(mode)`` / ``module.eval()`` calls (TS006 eval-mode-missing, TS007
# train-mode-not-restored). ``nn.Module.train`` is wrapped ONCE per test; subscribers see
# only the outermost call (the module the user called it on, not the recursion into its
# children), after it has run.

#: ``subscriber(module, mode)``.
ModeSubscriber = Callable[[torch.nn.Module, bool], None]
_mode_subscribers: "weakref.WeakKeyDictionary[Any, List[ModeSubscriber]]" = weakref.WeakKeyDictionary()


def on_mode_change(hooks: Any, subscriber: ModeSubscriber) -> None:
    """Call ``subscriber(module, mode)`` after every outermost ``train(mode)`` / ``eval()`` in this test.

    Transparent like :func:`on_backward`: the wrapper returns what torch returns
    and never lets a subscriber's exception reach the user. Classes that override
    ``train`` without calling ``super().train`` are not seen.
    """
    subscribers = _mode_subscribers.get(hooks)
    if subscribers is None:
        subscribers = _mode_subscribers[hooks] = []
        original = torch.nn.Module.train
        listeners = subscribers
        running = [False]

        @functools.wraps(original)
        def train(module: Any, mode: bool = True) -> Any:
            if running[0]:
                return original(module, mode)
            running[0] = True
            try:
                result = original(module, mode)
            finally:
                running[0] = False
            for listener in listeners:
                try:
                    listener(module, mode)
                except Exception:  # a check's bug must never break the user's code
                    pass
            return result

        hooks.patch(torch.nn.Module, "train", train)
        hooks.on_remove(lambda: _mode_subscribers.pop(hooks, None))
    subscribers.append(subscriber)


# ---------------------------------------------------------------------------------------
# Calls observed after they return (TS015 reads an optimizer's parameters once its
# ``__init__`` ran; TS016 recognises the tensors ``GradScaler.scale`` returns). The
# counterpart of :func:`on_call`, for subscribers that need the finished object or result.

#: ``subscriber(args, kwargs, result)``: one call's arguments and what it returned.
ReturnSubscriber = Callable[[tuple, dict, Any], None]
_return_subscribers: "weakref.WeakKeyDictionary[Any, Dict[Tuple[int, str], List[ReturnSubscriber]]]" = \
    weakref.WeakKeyDictionary()


def on_return(hooks: Any, owner: Any, attribute: str, subscriber: ReturnSubscriber) -> None:
    """Call ``subscriber(args, kwargs, result)`` after every call of ``owner.<attribute>`` that returns.

    Wrapped once per test however many checks subscribe, removed with the test's
    other hooks; transparent (same arguments, the same result returned, the
    original's exceptions untouched, a subscriber's exception swallowed), and
    silent while ``torch.compile`` traces. For a method patched on a class,
    ``args[0]`` is the instance.
    """
    table = _return_subscribers.get(hooks)
    if table is None:
        table = _return_subscribers[hooks] = {}
        hooks.on_remove(lambda: _return_subscribers.pop(hooks, None))
    key = (id(owner), attribute)
    if key in table:
        table[key].append(subscriber)
        return
    listeners = table[key] = [subscriber]
    original = getattr(owner, attribute)
    hooks.on_remove(listeners.clear)

    @functools.wraps(original)
    def returned(*args: Any, **kwargs: Any) -> Any:
        result = original(*args, **kwargs)
        if not is_compiling():
            for listener in listeners:
                try:
                    listener(args, kwargs, result)
                except Exception:  # a check's bug must never break the user's code
                    pass
        return result

    hooks.patch(owner, attribute, returned)
