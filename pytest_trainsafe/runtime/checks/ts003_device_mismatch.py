"""TS003 device-mismatch at runtime: a torch module, or an optimizer, is handed tensors on another device.

What is watched:

* every forward that raises, of a module whose class is one of torch's own
  (its ``__module__`` starts with ``torch.nn.modules``: ``nn.Linear``,
  ``nn.LSTM``, ``nn.CrossEntropyLoss``...), as the exception passes through
  (``events.module_raised``, innermost module first). torch's built-in modules
  never move their inputs, so when a positional tensor argument (or a tensor
  directly inside a plain list/tuple argument, such as an LSTM's ``(h0, c0)``)
  lives on another device than the module's own direct parameters or buffers,
  that is why it raised: the finding is certain. A module with neither
  parameters nor buffers (a loss) has its tensor arguments compared with each
  other (input against target). The check only records the finding; the plugin
  then fails the test with TS003 chained to torch's error, and the finding
  names the module, the argument and both devices, which torch's message does
  not. A call that does not raise costs nothing: torch raises on every CPU/CUDA
  mix of its modules' inputs; ``meta`` tensors, which some kernels (embedding
  lookups) accept next to CPU ones, are the exception, and are not reported;
* every ``step()`` of a ``torch.optim`` optimizer: the first parameter with
  state in each parameter group is compared with its state tensors (Adam's
  ``exp_avg``, SGD's ``momentum_buffer``...): a state dict loaded, or a model
  moved, so that the state lives elsewhere.

Deliberately not checked: user-defined modules (their forward may move inputs
itself: ``x.to(self.w.device)``), subclasses of torch modules defined outside
torch, wrappers that scatter inputs (``DataParallel`` lives in
``torch.nn.parallel``; its replicas own no parameters), modules whose
``forward`` was replaced on the instance (accelerate's offloading hooks load
the weights there), lazy modules before their first forward, ``nn.CTCLoss``
(its lengths and, for cuDNN, targets belong on the CPU), namedtuples such as
``PackedSequence`` (``batch_sizes`` is always on the CPU), 0-dim CPU tensors
(torch accepts CPU scalars next to tensors on any device), and optimizers
defined outside ``torch.optim`` (some keep their state on the CPU on purpose).

Cost: nothing per module call; per ``step()``, a look at the first state entry
of each parameter group.
"""

from __future__ import annotations

from typing import Any, Dict, Optional

import torch

from ..events import Events
from ..hooks import HookSet
from ..monitor import RuntimeCheck

_TORCH_MODULES = "torch.nn.modules"
_CPU = torch.device("cpu")
# Torch modules whose tensor arguments legitimately live on different devices.
_EXEMPT = frozenset({"CTCLoss"})
#: Optimizer state entries checked per parameter group (a bound on the per-step cost).
_STATE_PROBES = 8
_LAZY = object()
_Uninitialized = torch.nn.parameter.UninitializedTensorMixin


def _checked_class(cls: type) -> bool:
    """Whether instances of ``cls`` are torch's own modules whose inputs are never moved."""
    module = getattr(cls, "__module__", "") or ""
    return module.startswith(_TORCH_MODULES) and cls.__name__ not in _EXEMPT and cls is not torch.nn.Module


def _own_device(module: Any) -> Any:
    """(device, "parameters"/"buffers") of the module's own first parameter or buffer.

    None when it owns neither; ``_LAZY`` when its parameters are not materialised yet.
    """
    for value in module._parameters.values():
        if value is not None:
            if isinstance(value, _Uninitialized):
                return _LAZY  # shape and device are decided by the first forward
            return value.device, "parameters"
    for value in module._buffers.values():
        if value is not None:
            return value.device, "buffers"
    return None


class DeviceMismatch(RuntimeCheck):
    CODE = "TS003"

    def install(self, events: Events, hooks: HookSet) -> None:
        self._events = events
        self._optimizer_classes: Dict[type, bool] = {}
        events.module_raised.append(self._on_raised)
        events.step_pre.append(self._on_step_pre)

    # -- modules ------------------------------------------------------------------------

    def _on_raised(self, module: Any, args: tuple, exc: Exception) -> None:
        """A module of one of torch's own classes raised: report it if its arguments are on another device."""
        if not args or not _checked_class(type(module)):
            return
        attributes = module.__dict__
        if "forward" in attributes or "_hf_hook" in attributes or attributes.get("_is_replica"):
            return
        if len(args) == 1 and not attributes["_parameters"] and not attributes["_buffers"] \
                and type(args[0]) is not list and type(args[0]) is not tuple:
            return  # one tensor and nothing of its own to compare it with (ReLU, Dropout, Sequential)
        self._check_arguments(module, args)

    def _check_arguments(self, module: Any, args: tuple) -> None:
        """Report the first argument on another device than the module's own tensors (or the first argument's)."""
        own = _own_device(module)
        if own is _LAZY:
            return
        reference: Optional[torch.device] = own[0] if own is not None else None
        reference_index = -1
        for index, argument in enumerate(args):
            kind = type(argument)
            if kind is list or kind is tuple:
                tensors = [a for a in argument if isinstance(a, torch.Tensor)]
            elif isinstance(argument, torch.Tensor):
                tensors = (argument,)
            else:
                continue
            for tensor in tensors:
                device = tensor.device
                if device == reference:
                    continue
                if device == _CPU and tensor.dim() == 0:
                    continue  # a CPU scalar: accepted next to tensors on any device
                if reference is None:
                    reference, reference_index = device, index
                else:
                    self._report_module(module, index, device, reference, own, reference_index)
                    return

    def _report_module(self, module: Any, index: int, device: torch.device, reference: torch.device,
                       own: Optional[tuple], reference_index: int) -> None:
        name = self._module_name(module)
        if own is not None:
            detail = f"{name} got argument {index} on {device}, its {own[1]} are on {reference}"
        else:
            detail = f"{name} got argument {index} on {device}, argument {reference_index} is on {reference}"
        self.report(detail, module=type(module).__name__, argument=index,
                    device=str(device), expected_device=str(reference))

    def _module_name(self, module: Any) -> str:
        """``Linear (Net.head)``: the class, and where it sits in the model being called, if found."""
        label = type(module).__name__
        root = self._events.root
        if root is None or root is module:
            return label
        try:
            for path, candidate in root.named_modules():
                if candidate is module:
                    return f"{label} ({type(root).__name__}.{path})"
        except Exception:
            pass
        return label

    # -- optimizers ---------------------------------------------------------------------

    def _on_step_pre(self, optimizer: Any) -> None:
        try:
            cls = type(optimizer)
            checked = self._optimizer_classes.get(cls)
            if checked is None:
                checked = self._optimizer_classes[cls] = (cls.__module__ or "").startswith("torch.optim")
            if not checked:
                return
            state = optimizer.state
            for group in optimizer.param_groups:
                for param in group["params"][:_STATE_PROBES]:
                    entries = state.get(param)
                    if not entries:
                        continue
                    self._check_state(optimizer, param, entries)
                    break
        except Exception:
            return

    def _check_state(self, optimizer: Any, param: Any, entries: Dict[str, Any]) -> None:
        device = param.device
        for key, value in entries.items():
            if not isinstance(value, torch.Tensor):
                continue
            where = value.device
            if where != device and not (where == _CPU and value.dim() == 0):  # Adam's CPU step counter
                shape = "x".join(str(size) for size in param.shape) or "0-dim"
                self.report(f"{type(optimizer).__name__} state {key!r} of a {shape} parameter is on "
                            f"{where}, the parameter is on {device}",
                            optimizer=type(optimizer).__name__, state=key, device=str(where),
                            expected_device=str(device))
                return
