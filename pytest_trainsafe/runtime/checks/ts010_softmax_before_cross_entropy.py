"""TS010 softmax-before-cross-entropy at runtime: cross-entropy fed a softmax / log_softmax output.

What is watched: every call of ``torch.nn.functional.cross_entropy`` (``nn.CrossEntropyLoss``
calls it too). The input's ``grad_fn`` (looking through a few view / dtype /
indexing nodes) tells exactly which op produced it: ``SoftmaxBackward0`` or
``LogSoftmaxBackward0`` is the finding. Reading ``grad_fn`` builds a Python
wrapper of the graph node (a few microseconds, more than the rest of the check),
so it is read on each of the first ``_FIRST_CALLS`` calls of a test, then on
every ``_EVERY``-th: the same code feeds the loss on every step, and a code path
first taken later is found within ``_EVERY`` calls.

Under ``no_grad`` / ``inference_mode`` (an evaluation pass) there is no ``grad_fn``;
then, for the first few such calls of a test only, the values are checked: rows
(along the class dimension) that are all probabilities summing to 1, or all
log-probabilities whose ``logsumexp`` is 0, are what softmax / log_softmax produce
and what real logits never are. One-hot rows are left alone (a hand-made "perfect
prediction" is not a softmax output). That check reads at most ``_ROWS`` rows and
syncs once; training (autograd on) never pays for it.
"""

from __future__ import annotations

from typing import Optional

import torch

from ..events import Events
from ..hooks import HookSet
from ..monitor import RuntimeCheck
from ..sampling import sampled
from ..torchutil import call_argument, on_call, produced_by

_NODES = frozenset({"SoftmaxBackward0", "LogSoftmaxBackward0"})
_LABELS = {"SoftmaxBackward0": "softmax", "LogSoftmaxBackward0": "log_softmax"}
#: Calls whose input's grad_fn is read: each of the first few of a test, then one in every so many.
_FIRST_CALLS = 8
_EVERY = 8
#: Calls under no_grad whose values are checked, per test; rows read per check.
_VALUE_CHECKS = 2
_ROWS = 256
_TOLERANCE = 1e-3


def _class_rows(tensor: torch.Tensor) -> Optional[torch.Tensor]:
    """The input as (rows, classes), the class dimension last, or None when it has fewer than 2 classes."""
    if tensor.dim() == 1:
        rows = tensor.unsqueeze(0)
    elif tensor.dim() == 2:
        rows = tensor[:_ROWS]
    else:  # (N, C, d1, ...): classes on dim 1
        rows = tensor[:1].movedim(1, -1).reshape(-1, tensor.shape[1])[:_ROWS]
    return rows if rows.shape[-1] >= 2 and rows.numel() > 0 else None


def looks_normalized(tensor: torch.Tensor) -> Optional[str]:
    """``softmax`` / ``log_softmax`` when every row is a probability / log-probability distribution.

    The range is read first (one sync): rows with negative and positive values, as
    logits have, are neither. Otherwise all the conditions are reduced on the device
    and read back at once (a second sync).
    """
    rows = _class_rows(tensor)
    if rows is None:
        return None
    rows = rows.detach().float()
    with torch.no_grad():
        low, high = torch.stack(torch.aminmax(rows)).tolist()
        if low < 0 < high:  # real logits, nearly always: neither kind of distribution (one cheap look)
            return None
        one_hot = ((rows == 0) | (rows == 1) | (rows == float("-inf"))).all()
        probabilities = ((rows >= 0) & (rows <= 1)).all() & ((rows.sum(-1) - 1).abs() < _TOLERANCE).all()
        log_probabilities = (rows <= 0).all() & (torch.logsumexp(rows, -1).abs() < _TOLERANCE).all()
        one_hot, probabilities, log_probabilities = torch.stack((one_hot, probabilities, log_probabilities)).tolist()
    if one_hot:
        return None
    if probabilities:
        return "softmax"
    return "log_softmax" if log_probabilities else None


class SoftmaxBeforeCrossEntropyCheck(RuntimeCheck):
    """Reports a cross-entropy call whose input comes from softmax / log_softmax."""

    CODE = "TS010"

    def install(self, events: Events, hooks: HookSet) -> None:
        self._value_checks = 0
        self._calls = 0
        on_call(hooks, torch.nn.functional, "cross_entropy", self._on_cross_entropy)

    def _on_cross_entropy(self, args: tuple, kwargs: dict) -> None:
        tensor = call_argument(args, kwargs, 0, "input")
        if not isinstance(tensor, torch.Tensor):
            return
        self._calls += 1
        node = produced_by(tensor, _NODES) if sampled(self._calls, _FIRST_CALLS, _EVERY) else None
        if node is not None:
            self._report(_LABELS[node])
        elif self._value_checks < _VALUE_CHECKS and not torch.is_grad_enabled() and tensor.grad_fn is None:
            self._value_checks += 1
            if type(tensor) is torch.Tensor and tensor.is_floating_point() and tensor.device.type != "meta":
                label = looks_normalized(tensor)
                if label is not None:
                    self._report(label, by_value=True)

    def _report(self, label: str, by_value: bool = False) -> None:
        if not by_value:
            detail = f"the input is a {label} output"
        elif label == "softmax":
            detail = "every row of the input is already a probability distribution, as softmax outputs are"
        else:
            detail = "every row of the input already has logsumexp 0, as log_softmax outputs do"
        if label == "log_softmax":
            detail += ": redundant, use F.nll_loss / nn.NLLLoss or pass the logits"
        self.report(detail)
