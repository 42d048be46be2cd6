"""A stand-in accelerator for CPU-only CI: a model's forward, run once more on fake "cuda" tensors.

The problem: CPU-only CI never sees the tensor that a GPU run would find on the
wrong device, because on a machine without a GPU every device is the CPU.

What is sound, and what is not (see also the closing notes of the task that
added this module):

* A *transparent* stand-in device (make ``torch.cuda.is_available()`` true and
  let "cuda" tensors compute on the CPU, through a PrivateUse1 backend, a
  tensor subclass or a dispatch mode) is not sound: the user's code then takes
  its GPU branch (AMP, cudnn flags, pinned memory, streams, ``torch.cuda.*``
  calls that cannot be emulated), so the test computes something else than it
  does today, and it fails for reasons that are not device mismatches. It also
  costs ~3x per step for a do-nothing dispatch mode alone.
* An *explicit* probe is sound: :func:`check_device_portable` runs the model's
  ``forward`` once on fake tensors (``torch._subclasses.FakeTensorMode``: shapes,
  dtypes and devices, no data, no kernels) whose parameters, buffers and inputs
  claim to live on "cuda", and reports what torch's own device propagation for
  fake tensors rejects: a tensor created in ``forward`` without a device
  (``torch.zeros(n)``, ``torch.arange(n)``, ``torch.tensor([...])``), a tensor kept
  as a plain attribute instead of a registered buffer (``Module.to()`` never
  moves it), a hard-coded ``.cpu()``. The user's model and the test's values are
  untouched: parameters and buffers are swapped for fakes by
  ``torch.func.functional_call`` and put back, module attributes assigned during
  the probe are restored, module hooks (the user's and trainsafe's) do not run,
  warnings raised on fake tensors are not shown, and the random number
  generator state is restored.

What the probe does not see: the caller's placement (a target or a mask never
moved to the device, optimizer state): inputs are assumed to be placed as the
GPU run would place them, which is the caller's responsibility and TS003's
runtime check on a real GPU. A forward that needs data (``.item()``, a branch on
a value, ``nonzero``) or an op without a fake implementation makes the probe
*inconclusive*, never a finding: precision first. Python side effects of
``forward`` outside its modules (a global counter, a list a module mutates in
place) happen once more, as they do when ``torch.compile`` or ``torch.export``
trace the model.
"""

from __future__ import annotations

import contextlib
import sys
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Collection, Dict, Iterator, List, Optional

from ..finding import Finding
from .location import Location, is_user_frame

CODE = "TS003"

#: Per-module hook tables emptied for the probe (module hooks must not see fake tensors).
#: Per-module containers that forward may fill (a layer built lazily on first call): restored in place.
_MODULE_CONTAINERS = ("_parameters", "_buffers", "_modules", "_non_persistent_buffers_set")
_MODULE_HOOK_TABLES = (
    "_forward_pre_hooks", "_forward_pre_hooks_with_kwargs", "_forward_hooks", "_forward_hooks_with_kwargs",
    "_forward_hooks_always_called", "_backward_pre_hooks", "_backward_hooks",
)
#: Global module hook tables (``torch.nn.modules.module``), emptied likewise: trainsafe's own included
#: (trainsafe watches module calls through ``nn.Module._call_impl``, which is reset to torch's own too).
_GLOBAL_HOOK_TABLES = (
    "_global_forward_pre_hooks", "_global_forward_hooks", "_global_forward_hooks_always_called",
    "_global_backward_pre_hooks", "_global_backward_hooks", "_global_module_registration_hooks",
    "_global_parameter_registration_hooks", "_global_buffer_registration_hooks",
)


@dataclass
class PortabilityReport:
    """What the probe concluded: findings (a mismatch), or why it could not conclude, or a clean forward."""

    findings: List[Finding] = field(default_factory=list)
    #: Why nothing could be concluded (an op that needs data, an op without a fake kernel), else None.
    inconclusive: Optional[str] = None

    @property
    def clean(self) -> bool:
        """The forward ran to the end on the stand-in device without a device mismatch."""
        return not self.findings and self.inconclusive is None


def _innermost_user_line(traceback: Optional[TracebackType]) -> Optional[Location]:
    """The deepest user frame of a traceback: the line in ``forward`` that mixed the devices."""
    found: Optional[Location] = None
    while traceback is not None:
        frame = traceback.tb_frame
        if is_user_frame(frame):
            found = (frame.f_code.co_filename, traceback.tb_lineno)
        traceback = traceback.tb_next
    return found


@contextlib.contextmanager
def _isolated(model: Any) -> Iterator[None]:
    """Run the probe without hooks or warnings, and undo what it assigns to modules and to the RNG."""
    import warnings

    import torch
    from torch.nn.modules import module as torch_module

    modules = list(model.modules())
    saved_attributes = [(m, dict(m.__dict__)) for m in modules]
    saved_containers = [(container, container.copy()) for m in modules for name in _MODULE_CONTAINERS
                        if (container := m.__dict__.get(name)) is not None]
    saved_globals: Dict[str, Any] = {name: getattr(torch_module, name) for name in _GLOBAL_HOOK_TABLES
                                     if hasattr(torch_module, name)}
    module_call = torch.nn.Module.__dict__["_call_impl"]
    torch_call = module_call
    while getattr(torch_call, "trainsafe_wrapper", False):  # trainsafe's wrapper (events.py)
        torch_call = torch_call.__wrapped__
    rng = torch.random.get_rng_state()
    caught = warnings.catch_warnings()  # fake tensors make torch warn (data_ptr...): not the user's business
    caught.__enter__()
    warnings.simplefilter("ignore")
    try:
        for m in modules:
            for name in _MODULE_HOOK_TABLES:
                table = m.__dict__.get(name)
                if table is not None:
                    m.__dict__[name] = type(table)()
        for name, table in saved_globals.items():
            setattr(torch_module, name, type(table)())
        torch.nn.Module._call_impl = torch_call
        yield
    finally:
        torch.nn.Module._call_impl = module_call
        for name, table in saved_globals.items():
            setattr(torch_module, name, table)
        for m, attributes in saved_attributes:  # drops what forward cached on a module (fake tensors)
            m.__dict__.clear()
            m.__dict__.update(attributes)
        for container, content in saved_containers:  # and the layers or buffers it registered
            container.clear()
            container.update(content)
        torch.random.set_rng_state(rng)
        caught.__exit__(None, None, None)


def check_device_portable(model: Any, *args: Any, device: str = "cuda", keep_on_cpu: Collection[Any] = (),
                          **kwargs: Any) -> PortabilityReport:
    """Run ``model(*args, **kwargs)``'s forward on fake tensors placed on ``device``; report device mismatches.

    Needs no GPU. Every tensor argument (nested in lists, tuples and dicts too)
    is placed on ``device`` as a correct GPU run would place it, except the
    arguments named in ``keep_on_cpu`` (keyword names, or positions of positional
    arguments: sequence lengths, say), which stay where they are. The
    model's parameters and buffers are placed there as ``model.to(device)``
    would. A finding is TS003 at the user's line in ``forward`` where torch's
    fake-tensor device propagation saw two devices; anything else that stops
    the forward makes the report inconclusive.
    """
    import torch

    try:  # private API (torch.compile's fake tensors): absent or moved in some torch versions
        from torch._subclasses.fake_tensor import FakeTensorDeviceMismatchError, FakeTensorMode
        from torch.func import functional_call
        from torch.utils._pytree import tree_map
    except ImportError as error:
        return PortabilityReport(inconclusive=f"fake tensors are not available in torch {torch.__version__}: {error}")

    mode = FakeTensorMode(allow_non_fake_inputs=True)
    target = torch.device(device)

    def placed(value: Any) -> Any:
        return mode.from_tensor(value).to(target) if isinstance(value, torch.Tensor) else value

    report = PortabilityReport()
    with _isolated(model), mode:
        try:
            # What model.to(device) moves: every parameter and buffer, non-persistent ones included
            # (tied weights once: functional_call ties them again).
            tensors = {**dict(model.named_parameters()), **dict(model.named_buffers())}
            state = {name: placed(value) for name, value in tensors.items()}
            fake_args = tuple(value if index in keep_on_cpu else tree_map(placed, value)
                              for index, value in enumerate(args))
            fake_kwargs = {key: (value if key in keep_on_cpu else tree_map(placed, value))
                           for key, value in kwargs.items()}
            functional_call(model, state, fake_args, fake_kwargs, strict=False, tie_weights=True)
        except FakeTensorDeviceMismatchError as error:
            where = _innermost_user_line(sys.exc_info()[2])
            message = str(error).splitlines()[0] if str(error) else type(error).__name__
            if where is None:
                report.inconclusive = f"device mismatch outside user code: {message}"
            else:
                detail = f"{type(model).__name__}.forward on a stand-in {target.type} device: {message}"
                report.findings.append(Finding(CODE, where[0], where[1], 0, detail,
                                               {"device": str(target), "standin": True}))
        except Exception as error:  # data-dependent shapes, ops without a fake kernel, a CUDA-only call
            first = str(error).splitlines()[0] if str(error) else ""
            report.inconclusive = f"{type(error).__name__}: {first}"[:300]
    return report


__all__ = ["PortabilityReport", "check_device_portable"]
