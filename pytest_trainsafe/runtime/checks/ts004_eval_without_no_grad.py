"""TS004 eval-without-no-grad at runtime: an evaluation pass builds autograd graphs nobody uses.

What is watched: every *root* module call (the outermost model call)
that finishes with the module in eval mode, autograd on (not ``no_grad``, not
``inference_mode``) and an output that has a ``grad_fn``. Such a call is a *candidate*:
the model is being evaluated, yet a graph was recorded. A candidate is harmless when
its output is backpropagated after all (adversarial examples, saliency maps,
input-gradient attribution, a model trained while in eval mode - TS007's business), so
an autograd pre-hook on the output's ``grad_fn`` marks the candidate as used when a
backward reaches it. A root call during which a backward ran (``torch.autograd.grad``
inside ``forward``: an interatomic potential that differentiates its energy) needs
autograd: its module is never reported.

After the test, a root module is reported when two of its candidates come from the
*same* user line with the same batch size (the leading size of the first input tensor)
and no optimizer step between them: a loop over batches, an evaluation pass - not the
single forward or the two-call determinism check of a unit test, not a loop over batch
sizes in a shape test, not a one-batch check repeated after each epoch - and
none of its candidates was backpropagated (a module whose eval-mode outputs are
sometimes backpropagated is doing gradient work: silent).

Cost: a few attribute reads per module call; for a candidate, a dict lookup and, for the
first 8 candidates of each root module only, a stack walk and an autograd pre-hook per
output tensor (at most 4). Backwards are counted by one Python call each, through a
wrapper of ``torch.autograd._engine_run_backward``, which both ``backward()`` and
``autograd.grad()`` go through. No tensor, graph node or module is kept alive (modules
are tracked through weak references): the memory the user's code uses is unchanged.
"""

from __future__ import annotations

import weakref
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

from ..events import Events
from ..hooks import HookSet
from ..location import Location, user_location
from ..monitor import RuntimeCheck
from ..torchutil import first_tensor, is_compiling, module_label

#: Candidates per root module that are located and hooked; later ones are only counted.
_WATCHED = 8
#: Output tensors (of a tuple / dict output) whose ``grad_fn`` gets the "was used" hook.
_HOOKED_OUTPUTS = 4


class _Candidate:
    """One eval-mode root forward that recorded a graph: where it ran, and whether a backward used it."""

    __slots__ = ("where", "batch", "steps", "used")

    def __init__(self, where: Location, batch: Optional[int], steps: int) -> None:
        self.where = where
        self.batch = batch
        #: Optimizer steps taken before it: a pass over batches has no training step inside it.
        self.steps = steps
        self.used = False

    def mark_used(self, grad_outputs: Any) -> None:
        """Autograd pre-hook: a backward reached this output. Returns None: gradients are untouched."""
        self.used = True
        return None


class _ModuleRecord:
    """Candidates of one root module; the module itself only through a weak reference."""

    __slots__ = ("module", "label", "count", "watched", "needs_grad")

    def __init__(self, module: Any) -> None:
        self.module: Callable[[], Any] = weakref.ref(module)
        self.label = module_label(module)
        self.count = 0
        self.watched: List[_Candidate] = []
        #: A backward ran inside one of its forwards: the model itself needs autograd.
        self.needs_grad = False


def _output_nodes(output: Any, first: Any) -> Iterator[Any]:
    """``grad_fn`` of the first tensor and of a few more top-level tensors of a tuple / list / dict output."""
    yield first.grad_fn
    items = output.values() if isinstance(output, dict) else output if isinstance(output, (tuple, list)) else ()
    count = 1
    for item in items:
        if count >= _HOOKED_OUTPUTS:
            return
        node = getattr(item, "grad_fn", None)
        if item is not first and node is not None:
            count += 1
            yield node


def _batch_size(args: tuple, output: Any) -> Optional[int]:
    """Leading size of the first input tensor (of the output where the inputs hold none, as with ``**batch``).

    The inputs' rather than the output's: a detector's output has one row per detection.
    """
    tensor = first_tensor(args)
    if tensor is None or not tensor.dim():
        tensor = output
    return int(tensor.shape[0]) if tensor.dim() else None


class EvalWithoutNoGrad(RuntimeCheck):
    CODE = "TS004"

    def install(self, events: Events, hooks: HookSet) -> None:
        import torch

        self._torch = torch
        self._hooks = hooks
        #: id(module) -> record; a record whose module died (and whose id may be reused) is retired.
        self._records: Dict[int, _ModuleRecord] = {}
        self._retired: List[_ModuleRecord] = []
        #: Backward passes run so far, and that count when the running root forward began.
        self._backwards = 0
        self._backwards_at_root = 0
        events.root_forward_pre.append(self._on_forward_pre)
        events.root_forward_post.append(self._on_forward)
        #: Optimizer steps so far: one forward per epoch from one line (a single-batch check between
        #: epochs) is not a pass over batches; the same line repeating with no step in between is.
        self._events = events
        events.count_steps()
        original = getattr(torch.autograd, "_engine_run_backward", None)
        if original is not None:  # every backward() and autograd.grad() goes through it (torch >= 2.4)

            def counting_engine_run_backward(*args: Any, **kwargs: Any) -> Any:
                self._backwards += 1
                return original(*args, **kwargs)

            hooks.patch(torch.autograd, "_engine_run_backward", counting_engine_run_backward)

    def _on_forward_pre(self, module: Any, args: tuple) -> None:
        self._backwards_at_root = self._backwards

    def _on_forward(self, module: Any, args: tuple, output: Any) -> None:
        try:
            if module.training:
                return
            torch = self._torch
            if not torch.is_grad_enabled() or torch.is_inference_mode_enabled():
                return
            if torch._C._is_tracing() or is_compiling():
                return  # jit.trace / torch.compile / export: touching the output would be recorded
            if self._backwards != self._backwards_at_root:
                self._record(module).needs_grad = True  # autograd.grad inside forward: autograd is wanted
                return
            tensor = first_tensor(output)
            if tensor is None or tensor.grad_fn is None or not tensor.requires_grad:
                return
            self._candidate(module, args, output, tensor)
        except Exception:  # a bug here must never break the user's forward
            pass

    def _record(self, module: Any) -> _ModuleRecord:
        record = self._records.get(id(module))
        if record is None or record.module() is not module:
            if record is not None:
                self._retired.append(record)
            record = self._records[id(module)] = _ModuleRecord(module)
        return record

    def _candidate(self, module: Any, args: tuple, output: Any, tensor: Any) -> None:
        record = self._record(module)
        record.count += 1
        if len(record.watched) >= _WATCHED:
            return
        candidate = _Candidate(user_location(), _batch_size(args, tensor), self._events.steps_done)
        record.watched.append(candidate)
        for node in _output_nodes(output, tensor):
            handle = node.register_prehook(candidate.mark_used)
            if handle is not None and hasattr(handle, "remove"):
                self._hooks.add(handle)

    def finish(self) -> None:
        for record in (*self._retired, *self._records.values()):
            try:
                self._judge(record)
            except Exception:
                pass
        self._records.clear()
        self._retired.clear()

    def _judge(self, record: _ModuleRecord) -> None:
        if record.needs_grad or any(candidate.used for candidate in record.watched):
            return  # gradient work through an eval-mode model: adversarial, saliency, eval-mode training
        seen: Dict[Tuple[Location, Optional[int], int], _Candidate] = {}
        for candidate in record.watched:
            key = (candidate.where, candidate.batch, candidate.steps)
            if key in seen:
                self.report(f"{record.label} in eval mode ran {record.count} forward passes with autograd on; "
                            "none of their outputs was backpropagated", where=seen[key].where)
                return
            seen[key] = candidate
